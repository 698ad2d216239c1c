//! The split uplink: what the receive side of the cross-node fast path needs from a NIC that
//! OVS's userspace datapath reads. OVS reads such a NIC with AF_PACKET taps, which the kernel
//! runs before TC ingress, so a program there that delivers a packet itself would deliver it
//! twice (DESIGN.md, the split port). As with a pod's port, the NIC leaves OVS and a veth pair
//! takes its place:
//!
//! ```text
//! fabric ── NIC (TC ingress: kovn_uplink_ingress: into a pod, or out of the pair's end)
//!                ╰── pair end  (TC ingress: kovn_uplink_return: out of the NIC) ── OVS port ∈ bridge
//! ```
//!
//! The OVS port's name and the NIC's are kept on the Port (`external_ids:kovn.io/uplink-of`), so
//! a restarted agent, and [`crate::ovs::egress_nics`], find the NIC again. The swap in OVS is one
//! transaction, made after the programs are attached (until then OVS still reads the NIC and
//! what the NIC's program hands to the pair is dropped there, unread).

use ovsdb::{Condition, Model, Transaction};

use crate::netlink::{connect, index_of, netlink};
use ovsdb::models::open_vswitch::{Bridge, Interface, Port};

use crate::ovs::{self, OvsError};
use crate::pod_network::NetworkError;

/// The Port external id naming the NIC an OVS port of a split uplink stands in for.
pub const UPLINK_OF: &str = "kovn.io/uplink-of";

/// The interfaces of one split uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitUplink {
    pub nic: String,
    /// The veth end in the bridge, in the NIC's place.
    pub ovs_port: String,
    /// Its peer: slow-path packets go out of it, OVS's come in through it.
    pub pair: String,
}

impl SplitUplink {
    /// The one place the names are made: `ku-<nic>` in the bridge, `kp-<nic>` its peer
    /// (truncated to the kernel's 15 bytes).
    pub fn of(nic: &str) -> SplitUplink {
        let name = |prefix: &str| {
            let mut name = format!("{prefix}{nic}");
            name.truncate(15);
            name
        };
        SplitUplink {
            nic: nic.to_owned(),
            ovs_port: name("ku-"),
            pair: name("kp-"),
        }
    }
}

/// Creates the pair (again, if an earlier one is gone), up, with the NIC's MTU, and puts the
/// NIC in promiscuous mode (OVS did while it read it: it receives for the bridge's MACs).
/// Leaves OVS as it is.
pub async fn prepare(uplink: &SplitUplink) -> Result<(), NetworkError> {
    let handle = connect()?;
    let nic_index = index_of(&handle, &uplink.nic)
        .await?
        .ok_or_else(|| NetworkError::Check(format!("no link {}", uplink.nic)))?;
    let mtu = crate::tunnel::node_links()
        .await
        .map_err(NetworkError::Check)?
        .into_iter()
        .find(|l| l.name == uplink.nic)
        .map_or(1500, |l| l.mtu);
    let present = (
        index_of(&handle, &uplink.ovs_port).await?,
        index_of(&handle, &uplink.pair).await?,
    );
    if !matches!(present, (Some(_), Some(_))) {
        for index in [present.0, present.1].into_iter().flatten() {
            let _ = handle.link().del(index).execute().await;
        }
        handle
            .link()
            .add(
                rtnetlink::LinkVeth::new(&uplink.ovs_port, &uplink.pair)
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("creating {}", uplink.ovs_port)))?;
    }
    for name in [&uplink.ovs_port, &uplink.pair] {
        let index = index_of(&handle, name)
            .await?
            .ok_or_else(|| NetworkError::Check(format!("{name} vanished")))?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("setting {name} up")))?;
    }
    // Slow-path packets are redirected into the pair: the kernel finishes their checksums
    // and segments them there (a GSO packet from another node's fast path included), before
    // OVS reads them, as for a pod's OVS port.
    crate::pod_network::links::offloads_off(&uplink.pair)?;
    handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(nic_index)
                .promiscuous(true)
                .build(),
        )
        .execute()
        .await
        .map_err(netlink(format!("{}: promiscuous mode", uplink.nic)))?;
    Ok(())
}

/// Whether `bridge` holds the NIC itself (not split yet), the pair's OVS port (split), or
/// neither.
pub fn state(client: &ovsdb::Client, uplink: &SplitUplink) -> Option<bool> {
    client.read(|c| {
        let port = |name: &str| ovs::by_name::<Port>(c, name);
        match (port(&uplink.ovs_port), port(&uplink.nic)) {
            (Some(_), _) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    })
}

/// Swaps the NIC's port on `bridge` for the pair's, in one transaction. Idempotent.
pub async fn swap_in(
    client: &ovsdb::Client,
    bridge_name: &str,
    uplink: &SplitUplink,
) -> Result<(), OvsError> {
    if state(client, uplink) == Some(true) {
        return Ok(());
    }
    let bridge: Bridge = ovs::bridge(client, bridge_name)?;
    let nic_port = client.read(|c| ovs::by_name::<Port>(c, &uplink.nic));
    let mut t = Transaction::new(ovs::DB);
    if let Some(port) = nic_port {
        t.mutate_where(
            &[Condition::uuid(bridge.uuid)],
            [Bridge::PORTS.delete([port.uuid])],
        );
    }
    ovs::add_port_ops(
        &mut t,
        &bridge,
        &Interface {
            name: uplink.ovs_port.clone(),
            ..Interface::default()
        },
        [(UPLINK_OF.to_owned(), uplink.nic.clone())].into(),
    );
    client
        .transact_synced(&t)
        .await
        .map_err(ovs::transact_error(format!(
            "{bridge_name}: {} in {}'s place",
            uplink.ovs_port, uplink.nic
        )))?;
    Ok(())
}

/// Every split uplink in this node's OVS: the bridge holding the pair's port, and the uplink
/// (from the port's `kovn.io/uplink-of`).
pub fn split_uplinks(client: &ovsdb::Client) -> Vec<(String, SplitUplink)> {
    client
        .read(|c| {
            let ports = c.table(Port::TABLE)?.typed::<Port>();
            let bridges = c.table(Bridge::TABLE)?.typed::<Bridge>();
            Some(
                ports
                    .iter()
                    .filter_map(|p| {
                        let nic = p.external_ids.get(UPLINK_OF)?;
                        let bridge = bridges.iter().find(|b| b.ports.contains(&p.uuid))?;
                        Some((bridge.name.clone(), SplitUplink::of(nic)))
                    })
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// Puts the NIC back into `bridge` in the pair's place (uninstall), in one transaction.
/// Idempotent. The pair's links are the caller's to delete.
pub async fn swap_out(
    client: &ovsdb::Client,
    bridge_name: &str,
    uplink: &SplitUplink,
) -> Result<(), OvsError> {
    if state(client, uplink) == Some(false) {
        return Ok(());
    }
    let bridge: Bridge = ovs::bridge(client, bridge_name)?;
    let pair_port = client.read(|c| ovs::by_name::<Port>(c, &uplink.ovs_port));
    let mut t = Transaction::new(ovs::DB);
    if let Some(port) = pair_port {
        t.mutate_where(
            &[Condition::uuid(bridge.uuid)],
            [Bridge::PORTS.delete([port.uuid])],
        );
    }
    ovs::add_port_ops(
        &mut t,
        &bridge,
        &Interface {
            name: uplink.nic.clone(),
            ..Interface::default()
        },
        Default::default(),
    );
    client
        .transact_synced(&t)
        .await
        .map_err(ovs::transact_error(format!(
            "{bridge_name}: {} back in {}'s place",
            uplink.nic, uplink.ovs_port
        )))?;
    Ok(())
}
