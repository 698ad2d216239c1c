//! The node's own port `ovn0` on br-int: an internal interface bound to the node's join port
//! (`iface-id=node-<name>`) with the join MAC the controller allocated.

use std::collections::BTreeMap;

use ovsdb::models::open_vswitch::Interface;
use ovsdb::{Client, Condition, Transaction};

use super::{DB, OvsError, add_port_ops, bridge, by_name, transact_error};
use crate::local_pod::VENDOR;

/// The node's internal port, named as Kube-OVN names it.
pub const NODE_PORT: &str = "ovn0";

/// Makes `ovn0` exist on `bridge_name`, bound to `join_port` with `mac`. Idempotent.
pub async fn bind(
    client: &Client,
    bridge_name: &str,
    join_port: &str,
    mac: &str,
) -> Result<(), OvsError> {
    let external_ids: BTreeMap<String, String> = [("iface-id", join_port), VENDOR]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut t = Transaction::new(DB);
    match client.read(|c| by_name::<Interface>(c, NODE_PORT)) {
        Some(interface) => {
            t.update_where(
                &[Condition::uuid(interface.uuid)],
                [
                    Interface::EXTERNAL_IDS.to(external_ids),
                    Interface::MAC.to(Some(mac.to_owned())),
                ],
            );
        }
        None => add_port_ops(
            &mut t,
            &bridge(client, bridge_name)?,
            &Interface {
                name: NODE_PORT.to_owned(),
                r#type: "internal".to_owned(),
                mac: Some(mac.to_owned()),
                external_ids,
                ..Interface::default()
            },
            BTreeMap::new(),
        ),
    }
    client
        .transact_synced(&t)
        .await
        .map_err(transact_error(format!("binding {NODE_PORT}")))?;
    Ok(())
}
