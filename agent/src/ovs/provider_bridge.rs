//! A provider network's bridge on this node, as Kube-OVN lays one: an OVS bridge
//! `br-<provider>` holding the node's NIC for that network, and the mapping
//! `<provider>:br-<provider>` in `ovn-bridge-mappings`, through which ovn-controller connects
//! the localnet ports of that network's logical switches. kovn's bridges carry `vendor=kovn`;
//! a bridge of that name that is not kovn's is refused, never taken over.

use std::collections::BTreeMap;

use ovsdb::models::open_vswitch::{Bridge, Interface, OpenVswitch, Port};
use ovsdb::{Client, Condition, Model, Transaction};

use super::{DB, OvsError, add_port_ops, by_name, transact_error};
use crate::local_pod::VENDOR;

/// Kube-OVN's bridge name for a provider network.
pub fn bridge_name(provider: &str) -> String {
    format!("br-{provider}")
}

const MAPPINGS: &str = "ovn-bridge-mappings";

fn open_vswitch(client: &Client) -> Result<OpenVswitch, OvsError> {
    client
        .read(|c| {
            c.table(OpenVswitch::TABLE)
                .and_then(|t| t.typed::<OpenVswitch>().into_iter().next())
        })
        .ok_or_else(|| OvsError::Missing("no Open_vSwitch row".into()))
}

/// `ovn-bridge-mappings` with `provider` mapped to `bridge` (`None`: unmapped), the other
/// providers' mappings kept in their order.
fn with_mapping(current: &str, provider: &str, bridge: Option<&str>) -> String {
    let mut out: Vec<String> = current
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && m.split(':').next() != Some(provider))
        .map(str::to_owned)
        .collect();
    if let Some(bridge) = bridge {
        out.push(format!("{provider}:{bridge}"));
    }
    out.join(",")
}

/// Appends to `t` the write that maps `provider` to `bridge` (`None`: unmaps it) in the
/// Open_vSwitch row; returns whether there was anything to write.
fn map_ops(t: &mut Transaction, ovs: &OpenVswitch, provider: &str, bridge: Option<&str>) -> bool {
    let current = ovs.external_ids.get(MAPPINGS).cloned().unwrap_or_default();
    let wanted = with_mapping(&current, provider, bridge);
    if wanted == current {
        return false;
    }
    let mut ids = ovs.external_ids.clone();
    if wanted.is_empty() {
        ids.remove(MAPPINGS);
    } else {
        ids.insert(MAPPINGS.to_owned(), wanted);
    }
    t.update_where(
        &[Condition::uuid(ovs.uuid)],
        [OpenVswitch::EXTERNAL_IDS.to(ids)],
    );
    true
}

fn is_kovns(bridge: &Bridge) -> bool {
    bridge.external_ids.get(VENDOR.0).map(String::as_str) == Some(VENDOR.1)
}

/// Makes `br-<provider>` exist with `nic` as its one uplink and the provider mapped to it.
/// Idempotent; a NIC changed in the config replaces the old one.
pub async fn ensure(
    client: &Client,
    provider: &str,
    nic: &str,
    datapath_type: Option<&str>,
) -> Result<(), OvsError> {
    let name = bridge_name(provider);
    let mut t = Transaction::new(DB);
    let mut changed = false;
    let existing = client.read(|c| by_name::<Bridge>(c, &name));
    match &existing {
        Some(b) if !is_kovns(b) => {
            return Err(OvsError::Missing(format!(
                "bridge {name} exists and is not kovn's: left alone, provider {provider} not mapped"
            )));
        }
        Some(b) => {
            // Its uplinks: every port but the bridge's own internal one.
            let ports: Vec<Port> = client.read(|c| {
                b.ports
                    .iter()
                    .filter_map(|u| {
                        c.table(Port::TABLE)?
                            .typed::<Port>()
                            .into_iter()
                            .find(|p| p.uuid == *u)
                    })
                    .collect()
            });
            let stale: Vec<_> = ports
                .iter()
                .filter(|p| p.name != name && p.name != nic)
                .map(|p| p.uuid)
                .collect();
            if !stale.is_empty() {
                t.mutate_where(&[Condition::uuid(b.uuid)], [Bridge::PORTS.delete(stale)]);
                changed = true;
            }
            if !ports.iter().any(|p| p.name == nic) {
                add_port_ops(&mut t, b, &uplink(nic), BTreeMap::new());
                changed = true;
            }
        }
        None => {
            let own = t.insert_model_with("own_iface", &internal(&name), []);
            let own_port = t.insert_model_with(
                "own_port",
                &Port {
                    name: name.clone(),
                    ..Port::default()
                },
                [Port::INTERFACES.to_elements([own])],
            );
            let nic_iface = t.insert_model_with("nic_iface", &uplink(nic), []);
            let nic_port = t.insert_model_with(
                "nic_port",
                &Port {
                    name: nic.to_owned(),
                    ..Port::default()
                },
                [Port::INTERFACES.to_elements([nic_iface])],
            );
            let bridge = t.insert_model_with(
                "bridge",
                &Bridge {
                    name: name.clone(),
                    datapath_type: datapath_type.unwrap_or_default().to_owned(),
                    external_ids: [(VENDOR.0.to_owned(), VENDOR.1.to_owned())].into(),
                    ..Bridge::default()
                },
                [Bridge::PORTS.to_elements([own_port, nic_port])],
            );
            let ovs = open_vswitch(client)?;
            t.mutate_where(
                &[Condition::uuid(ovs.uuid)],
                [OpenVswitch::BRIDGES.insert([bridge])],
            );
            changed = true;
        }
    }
    changed |= map_ops(&mut t, &open_vswitch(client)?, provider, Some(&name));
    if !changed {
        return Ok(());
    }
    client
        .transact_synced(&t)
        .await
        .map_err(transact_error(format!("provider bridge {name} on {nic}")))?;
    Ok(())
}

/// Unmaps `provider` and removes kovn's `br-<provider>` (a bridge that is not kovn's stays).
/// Idempotent.
pub async fn remove(client: &Client, provider: &str) -> Result<(), OvsError> {
    let name = bridge_name(provider);
    let ovs = open_vswitch(client)?;
    let mut t = Transaction::new(DB);
    let mut changed = map_ops(&mut t, &ovs, provider, None);
    if let Some(b) = client.read(|c| by_name::<Bridge>(c, &name))
        && is_kovns(&b)
    {
        t.mutate_where(
            &[Condition::uuid(ovs.uuid)],
            [OpenVswitch::BRIDGES.delete([b.uuid])],
        );
        changed = true;
    }
    if !changed {
        return Ok(());
    }
    client
        .transact_synced(&t)
        .await
        .map_err(transact_error(format!("removing provider bridge {name}")))?;
    Ok(())
}

/// The providers whose bridges kovn made on this node (mapped to a `vendor=kovn` bridge).
pub fn kovn_providers(client: &Client) -> Vec<String> {
    let Ok(ovs) = open_vswitch(client) else {
        return Vec::new();
    };
    let mappings = ovs.external_ids.get(MAPPINGS).cloned().unwrap_or_default();
    mappings
        .split(',')
        .filter_map(|m| m.trim().split_once(':'))
        .filter(|(_, bridge)| {
            client
                .read(|c| by_name::<Bridge>(c, bridge))
                .is_some_and(|b| is_kovns(&b))
        })
        .map(|(provider, _)| provider.to_owned())
        .collect()
}

fn internal(name: &str) -> Interface {
    Interface {
        name: name.to_owned(),
        r#type: "internal".to_owned(),
        ..Interface::default()
    }
}

fn uplink(nic: &str) -> Interface {
    Interface {
        name: nic.to_owned(),
        ..Interface::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_added_replaced_and_removed_keeping_the_others() {
        assert_eq!(
            with_mapping("", "external", Some("br-external")),
            "external:br-external"
        );
        assert_eq!(
            with_mapping(
                "physnet:br-phys, external:br-old",
                "external",
                Some("br-external")
            ),
            "physnet:br-phys,external:br-external"
        );
        assert_eq!(
            with_mapping("physnet:br-phys,external:br-external", "external", None),
            "physnet:br-phys"
        );
    }
}
