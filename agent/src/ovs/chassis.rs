//! The chassis settings ovn-controller reads from the node's `Open_vSwitch` row, as Kube-OVN's
//! ovs-ovn writes them: where OVN's Southbound is, how and from where to tunnel, the chassis
//! name.
//!
//! The chassis name (`system-id`) is the node's identity in OVN's Southbound: a node that
//! already has one (from Kube-OVN, whose ovs-ovn keeps it in `/etc/openvswitch/system-id.conf`,
//! or from kovn's own ovs-ovn) keeps it, so moving a node to kovn does not register a new
//! chassis and leave the old one's port bindings behind.

use ovsdb::models::open_vswitch::OpenVswitch;
use ovsdb::{Client, Condition, Model, Transaction};

use super::{DB, OvsError, transact_error};

/// What the node's ovn-controller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnChassisSettings {
    pub ovn_remote: String,
    pub encap_type: String,
    pub encap_ip: Option<String>,
    /// `ovn-encap-csum`: checksums in the tunnel's outer UDP header.
    pub encap_checksum: bool,
    /// The chassis name written only when the row has no `system-id` yet.
    pub default_system_id: String,
    pub hostname: String,
    /// `netdev` for the userspace datapath (no openvswitch kernel module).
    pub datapath_type: Option<String>,
}

/// Writes the chassis settings into the Open_vSwitch row's external_ids, keeping every other
/// key. Idempotent.
pub async fn configure(client: &Client, settings: &OvnChassisSettings) -> Result<(), OvsError> {
    let row = client
        .read(|c| {
            c.table(OpenVswitch::TABLE)
                .and_then(|t| t.typed::<OpenVswitch>().into_iter().next())
        })
        .ok_or_else(|| {
            OvsError::Missing("no Open_vSwitch row (is ovs-vswitchd initialised?)".into())
        })?;
    let mut ids = row.external_ids.clone();
    let has_chassis_name = ids.get("system-id").is_some_and(|id| !id.is_empty());
    let mut set = |k: &str, v: &str| {
        ids.insert(k.to_owned(), v.to_owned());
    };
    set("ovn-remote", &settings.ovn_remote);
    set("ovn-encap-type", &settings.encap_type);
    set(
        "ovn-encap-csum",
        if settings.encap_checksum {
            "true"
        } else {
            "false"
        },
    );
    if !has_chassis_name {
        set("system-id", &settings.default_system_id);
    }
    set("hostname", &settings.hostname);
    if let Some(ip) = &settings.encap_ip {
        set("ovn-encap-ip", ip);
    }
    if let Some(datapath_type) = &settings.datapath_type {
        set("ovn-bridge-datapath-type", datapath_type);
    }
    if ids == row.external_ids {
        return Ok(());
    }
    let mut t = Transaction::new(DB);
    t.update_where(
        &[Condition::uuid(row.uuid)],
        [OpenVswitch::EXTERNAL_IDS.to(ids)],
    );
    client
        .transact_synced(&t)
        .await
        .map_err(transact_error("setting the chassis external_ids"))?;
    Ok(())
}
