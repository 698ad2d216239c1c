//! The pod's OVS port: `<id>_o` on br-int, its Interface bound to the pod's
//! Logical_Switch_Port with `external_ids:iface-id=<pod>.<namespace>` (what ovn-controller
//! matches) and the pod's [`LocalPod`] record, written through the node's Open_vSwitch
//! database.

use std::collections::BTreeMap;

use ovsdb::models::open_vswitch::{Bridge, Interface, Port};
use ovsdb::{
    Cache, Client, ClientConfig, Condition, Datum, Model, MonitorRequest, Mutation, Transaction,
};

use super::NetworkError;
use crate::local_pod::{LocalPod, VENDOR};

const DB: &str = "Open_vSwitch";

/// The client configuration the agent's port management needs.
pub fn client_config(remote: &str) -> ClientConfig {
    ClientConfig::new(&[remote], DB)
        .monitor(MonitorRequest::table(Bridge::TABLE).columns(&[
            "name",
            "ports",
            "external_ids",
            "datapath_type",
        ]))
        .monitor(MonitorRequest::table(Port::TABLE).columns(&[
            "name",
            "interfaces",
            "external_ids",
        ]))
        .monitor(MonitorRequest::table(Interface::TABLE).columns(&[
            "name",
            "external_ids",
            "ofport",
        ]))
}

pub(crate) fn by_name<M: Model>(cache: &Cache, name: &str) -> Option<M> {
    let row = cache
        .table(M::TABLE)?
        .rows()
        .find(|r| r.string("name") == Some(name))?;
    M::from_row(row).ok()
}

fn ovsdb_error(what: &str) -> impl FnOnce(ovsdb::Error) -> NetworkError {
    let what = what.to_owned();
    move |e| NetworkError::Ovsdb(format!("{what}: {e}"))
}

/// Adds the pod's port to `bridge` (or updates its record if it is there already).
pub async fn bind(client: &Client, bridge: &str, pod: &LocalPod) -> Result<(), NetworkError> {
    let port_name = pod.links().ovs_port;
    let mut t = Transaction::new(DB);
    let ids = Datum::map(pod.external_ids());
    let existing = client.read(|c| by_name::<Interface>(c, &port_name));
    if let Some(interface) = existing {
        t.update(
            Interface::TABLE,
            &[Condition::uuid(interface.uuid)],
            [("external_ids", ids)],
        );
    } else {
        let bridge_row = client
            .read(|c| by_name::<Bridge>(c, bridge))
            .ok_or_else(|| NetworkError::Ovsdb(format!("no bridge {bridge} on this node")))?;
        let (_, interface) = t.insert_named(
            Interface::TABLE,
            "iface",
            [
                ("name", Datum::atom(port_name.as_str())),
                ("external_ids", ids.clone()),
            ],
        );
        let (_, port) = t.insert_named(
            Port::TABLE,
            "port",
            [
                ("name", Datum::atom(port_name.as_str())),
                ("interfaces", Datum::set([interface])),
                ("external_ids", Datum::map([VENDOR])),
            ],
        );
        t.mutate(
            Bridge::TABLE,
            &[Condition::uuid(bridge_row.uuid)],
            &[Mutation::insert("ports", Datum::set([port]))],
        );
    }
    client
        .transact_synced(&t)
        .await
        .map_err(ovsdb_error(&format!("binding {port_name}")))?;
    Ok(())
}

/// Removes the port from whatever bridge holds it (its Interface goes with it). Idempotent.
pub async fn unbind(client: &Client, port_name: &str) -> Result<(), NetworkError> {
    let found = client.read(|c| {
        let port = by_name::<Port>(c, port_name)?;
        let bridge = c
            .table(Bridge::TABLE)?
            .typed::<Bridge>()
            .into_iter()
            .find(|b| b.ports.contains(&port.uuid));
        Some((bridge, port))
    });
    let Some((bridge, port)) = found else {
        return Ok(());
    };
    // A Port row is only ever referenced by a bridge: not finding it means this client does
    // not see `Bridge.ports`, and pretending success would leave the port behind.
    let bridge = bridge.ok_or_else(|| {
        NetworkError::Ovsdb(format!(
            "{port_name}: no bridge holds it in this client's view"
        ))
    })?;
    let mut t = Transaction::new(DB);
    t.mutate(
        Bridge::TABLE,
        &[Condition::uuid(bridge.uuid)],
        &[Mutation::delete("ports", Datum::set([port.uuid]))],
    );
    client
        .transact_synced(&t)
        .await
        .map_err(ovsdb_error(&format!("removing {port_name}")))?;
    Ok(())
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
                        Some((
                            i.name.clone(),
                            LocalPod::from_external_ids(&i.external_ids)?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}
