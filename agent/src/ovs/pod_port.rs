//! The pod's OVS port: `<id>_o` on br-int, its Interface bound to the pod's
//! Logical_Switch_Port with `external_ids:iface-id=<pod>.<namespace>` (what ovn-controller
//! matches) and the pod's [`LocalPod`] record.

use std::collections::BTreeMap;

use ovsdb::models::open_vswitch::Interface;
use ovsdb::{Client, Condition, Model, Transaction};

use super::{DB, OvsError, add_port_ops, bridge, by_name, transact_error};
use crate::local_pod::{LocalPod, VENDOR};

/// Adds the pod's port to `bridge_name` (or updates its record if it is there already).
pub async fn bind(client: &Client, bridge_name: &str, pod: &LocalPod) -> Result<(), OvsError> {
    let port_name = pod.links().ovs_port;
    let mut t = Transaction::new(DB);
    let external_ids = pod.external_ids();
    match client.read(|c| by_name::<Interface>(c, &port_name)) {
        Some(interface) => {
            t.update_where(
                &[Condition::uuid(interface.uuid)],
                [Interface::EXTERNAL_IDS.to(external_ids)],
            );
        }
        None => add_port_ops(
            &mut t,
            &bridge(client, bridge_name)?,
            &Interface {
                name: port_name.clone(),
                external_ids,
                ..Interface::default()
            },
            BTreeMap::from([(VENDOR.0.to_owned(), VENDOR.1.to_owned())]),
        ),
    }
    client
        .transact_synced(&t)
        .await
        .map_err(transact_error(format!("binding {port_name}")))?;
    Ok(())
}

/// Removes the pod's port. Idempotent.
pub async fn unbind(client: &Client, port_name: &str) -> Result<(), OvsError> {
    super::remove_port(client, port_name).await
}

/// The binding's `external_ids` of a port, if the port is there.
pub fn bound(client: &Client, port_name: &str) -> Option<BTreeMap<String, String>> {
    client.read(|c| by_name::<Interface>(c, port_name).map(|i| i.external_ids))
}

/// Every pod attachment kovn made on the node, by OVS port name (for adoption after a
/// restart and for garbage collection).
pub fn kovn_ports(client: &Client) -> BTreeMap<String, LocalPod> {
    client.read(|c| {
        c.table(Interface::TABLE)
            .map(|t| {
                t.typed::<Interface>()
                    .into_iter()
                    // Pods' ports only (ovn0 is kovn's too, and records no pod).
                    .filter_map(|i| {
                        let pod = LocalPod::from_external_ids(&i.external_ids)?;
                        Some((i.name, pod))
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// What Kube-OVN's daemon writes as `external_ids:vendor` on the pod ports it plugs.
pub const KUBE_OVN_VENDOR: &str = "kube-ovn";

/// Pod ports Kube-OVN's daemon plugged (a node moved from Kube-OVN, its pods still running):
/// the pod's host veth `<id>_h` itself is the OVS port, with `iface-id`, `pod_name` and
/// `pod_namespace`. kovn adopts them as they are: they keep working through OVS (no fast path:
/// OVS reads that veth, so no redirecting program may sit on it), and DEL and garbage
/// collection remove them as they remove kovn's own. By port name, with the pod's owner.
pub fn kube_ovn_ports(client: &Client) -> BTreeMap<String, api::Owner> {
    client.read(|c| {
        c.table(Interface::TABLE)
            .map(|t| {
                t.typed::<Interface>()
                    .into_iter()
                    .filter(|i| {
                        i.external_ids.get(VENDOR.0).map(String::as_str) == Some(KUBE_OVN_VENDOR)
                    })
                    .filter_map(|i| {
                        let name = i.external_ids.get("pod_name")?;
                        let namespace = i.external_ids.get("pod_namespace")?;
                        let owner = api::Owner::pod(namespace, name);
                        Some((i.name, owner))
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}
