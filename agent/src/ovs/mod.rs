//! The node's Open vSwitch, through one OVSDB client to the node's `Open_vSwitch` database:
//! pod ports ([`pod_port`]), the node port `ovn0` ([`node_port`]), the chassis settings
//! ovn-controller reads ([`chassis`]), the NB config ovn-controller reports as installed
//! ([`nb_cfg`]), and ovs-vswitchd's conntrack setting the fast path needs ([`conntrack`]).
//! Every write goes through the generated models' typed columns.

pub mod chassis;
pub mod conntrack;
pub mod nb_cfg;
pub mod node_port;
pub mod pod_port;
pub mod provider_bridge;

use std::collections::BTreeMap;

use ovsdb::models::open_vswitch::{Bridge, Interface, OpenVswitch, Port};
use ovsdb::{Cache, Client, ClientConfig, Condition, Model, MonitorRequest, Transaction};

/// The node's database.
pub const DB: &str = "Open_vSwitch";

/// What can go wrong talking to the node's OVS.
#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    #[error("cannot reach the node's Open_vSwitch database at {remote}: {source}")]
    Connect {
        remote: String,
        #[source]
        source: ovsdb::Error,
    },
    #[error("Open_vSwitch database: {what}: {source}")]
    Transact {
        what: String,
        #[source]
        source: ovsdb::Error,
    },
    /// Something the agent needs is not in the database (a bridge, the Open_vSwitch row).
    #[error("Open_vSwitch database: {0}")]
    Missing(String),
    #[error("ovs-vswitchd: {0}")]
    Vswitchd(String),
    #[error("{what}: {source}")]
    Sysctl {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn transact_error(what: impl Into<String>) -> impl FnOnce(ovsdb::Error) -> OvsError {
    let what = what.into();
    move |source| OvsError::Transact { what, source }
}

/// The one client configuration of the agent: the tables and columns every part reads.
pub fn client_config(remote: &str) -> ClientConfig {
    ClientConfig::new(&[remote], DB)
        .monitor(MonitorRequest::table(OpenVswitch::TABLE).columns(&["external_ids"]))
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
            "mac",
        ]))
}

/// Connects the one client.
pub async fn connect(remote: &str) -> Result<Client, OvsError> {
    Client::connect(client_config(remote))
        .await
        .map_err(|source| OvsError::Connect {
            remote: remote.to_owned(),
            source,
        })
}

pub(crate) fn by_name<M: Model>(cache: &Cache, name: &str) -> Option<M> {
    let row = cache
        .table(M::TABLE)?
        .rows()
        .find(|r| r.string("name") == Some(name))?;
    M::from_row(row).ok()
}

/// The one place a port is made: appends to `t` the insertion of `interface` with a Port of
/// the same name holding it, on `bridge`.
pub(crate) fn add_port_ops(
    t: &mut Transaction,
    bridge: &Bridge,
    interface: &Interface,
    port_external_ids: BTreeMap<String, String>,
) {
    let interface_ref = t.insert_model_with("iface", interface, []);
    let port = t.insert_model_with(
        "port",
        &Port {
            name: interface.name.clone(),
            external_ids: port_external_ids,
            ..Port::default()
        },
        [Port::INTERFACES.to_elements([interface_ref])],
    );
    t.mutate_where(
        &[Condition::uuid(bridge.uuid)],
        [Bridge::PORTS.insert([port])],
    );
}

/// The NICs this node's packets to `interface`'s network leave through: the system interfaces
/// of the bridge whose internal port `interface` is (OVS's userspace datapath sends its
/// tunnels out of them), else `interface` itself (the kernel routes them out of it).
pub fn egress_nics(client: &Client, interface: &str) -> Vec<String> {
    let of_bridge = client.read(|c| {
        let bridge = by_name::<Bridge>(c, interface)?;
        let ports = c.table(Port::TABLE)?.typed::<Port>();
        let interfaces = c.table(Interface::TABLE)?.typed::<Interface>();
        Some(
            ports
                .iter()
                .filter(|p| bridge.ports.contains(&p.uuid))
                .flat_map(|p| {
                    // A split uplink's port stands in for its NIC, which packets leave through.
                    let split = p.external_ids.get(crate::split_uplink::UPLINK_OF).cloned();
                    p.interfaces.iter().map(move |u| (u, split.clone()))
                })
                .filter_map(|(u, split)| {
                    let i = interfaces.iter().find(|i| i.uuid == *u)?;
                    // The bridge's local port is the node's side, not a NIC (its type may be
                    // left empty: OVS makes it internal).
                    (i.name != bridge.name && (i.r#type.is_empty() || i.r#type == "system"))
                        .then(|| split.unwrap_or_else(|| i.name.clone()))
                })
                .collect::<Vec<_>>(),
        )
    });
    of_bridge.unwrap_or_else(|| vec![interface.to_owned()])
}

/// The bridge named `name`, or an error that says it is missing.
pub(crate) fn bridge(client: &Client, name: &str) -> Result<Bridge, OvsError> {
    client
        .read(|c| by_name::<Bridge>(c, name))
        .ok_or_else(|| OvsError::Missing(format!("no bridge {name} on this node")))
}

/// Removes port `name` from whatever bridge holds it (its Interface goes with it). Idempotent.
pub async fn remove_port(client: &Client, name: &str) -> Result<(), OvsError> {
    let found = client.read(|c| {
        let port = by_name::<Port>(c, name)?;
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
        OvsError::Missing(format!("{name}: no bridge holds it in this client's view"))
    })?;
    let mut t = Transaction::new(DB);
    t.mutate_where(
        &[Condition::uuid(bridge.uuid)],
        [Bridge::PORTS.delete([port.uuid])],
    );
    client
        .transact_synced(&t)
        .await
        .map_err(transact_error(format!("removing {name}")))?;
    Ok(())
}
