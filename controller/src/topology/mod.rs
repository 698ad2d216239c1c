//! The OVN logical topology of subnets and pods, named as Kube-OVN names it:
//! - router `ovn-cluster`;
//! - a switch per subnet, attached through router port `<router>-<subnet>` (the gateway) and
//!   switch port `<subnet>-<router>`;
//! - pod ports `<pod>.<namespace>` with addresses and port security.
//!
//! Each function is pure: it compares the desired state with the observed NB cache and
//! returns the transaction that closes the gap (None when there is nothing to do), so a
//! reconciler can run it any number of times.

pub mod acl;
pub mod gateway;
pub mod load_balancer;
pub mod owned;
pub mod vpc;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use ovsdb::models::ovn_northbound::{
    Acl, LoadBalancer, LogicalRouter, LogicalRouterPolicy, LogicalRouterPort,
    LogicalRouterStaticRoute, LogicalSwitch, LogicalSwitchPort, NbGlobal, PortGroup,
};
use ovsdb::{Atom, Cache, Condition, Datum, IndexSpec, Model, Mutation, Mutator, Transaction};

pub const NB: &str = "OVN_Northbound";
/// external_ids marking rows kovn owns (Kube-OVN writes `vendor=kube-ovn`).
const VENDOR: (&str, &str) = ("vendor", "kube-ovn");

/// The NB tables a topology client must monitor.
pub fn monitored_tables() -> [&'static str; 10] {
    [
        LogicalSwitch::TABLE,
        LogicalSwitchPort::TABLE,
        LogicalRouter::TABLE,
        LogicalRouterPort::TABLE,
        NbGlobal::TABLE,
        Acl::TABLE,
        LogicalRouterPolicy::TABLE,
        LogicalRouterStaticRoute::TABLE,
        PortGroup::TABLE,
        LoadBalancer::TABLE,
    ]
}

/// An NB client configuration that monitors what the reconcilers read, with their indexes.
pub fn nb_client_config(remotes: &[&str]) -> ovsdb::ClientConfig {
    let mut config = ovsdb::ClientConfig::new(remotes, NB);
    for table in monitored_tables() {
        config = config.monitor(ovsdb::MonitorRequest::table(table));
    }
    for index in indexes() {
        config = config.index(index);
    }
    config
}

/// The cache indexes the reconcilers look rows up by (name lookups in tables without a schema
/// index, and the owner of derived rows): without them every lookup is a scan, which at
/// 50,000 ports is what makes a controller take hours.
pub fn indexes() -> Vec<IndexSpec> {
    let owner = format!("external_ids:{}", owned::OWNER);
    vec![
        IndexSpec::new(LogicalSwitch::TABLE, &["name"]),
        IndexSpec::new(LogicalRouter::TABLE, &["name"]),
        IndexSpec::new(LoadBalancer::TABLE, &["name"]),
        IndexSpec::new(LogicalSwitchPort::TABLE, &["external_ids:node"]),
        IndexSpec::new(Acl::TABLE, &[&owner]),
        IndexSpec::new(LogicalRouterPolicy::TABLE, &[&owner]),
        IndexSpec::new(LogicalRouterStaticRoute::TABLE, &[&owner]),
    ]
}

/// A MAC derived from an address (stable across restarts, unique per address).
pub fn mac_for(ip: IpAddr) -> String {
    let bytes = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    format!(
        "0a:58:{:02x}:{:02x}:{:02x}:{:02x}",
        bytes[0], bytes[1], bytes[2], bytes[3]
    )
}

/// What a subnet should look like in NB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPlan {
    pub name: String,
    pub router: String,
    pub cidrs: Vec<IpNet>,
    /// One per CIDR, same order.
    pub gateways: Vec<IpAddr>,
}

impl SubnetPlan {
    fn router_port(&self) -> String {
        format!("{}-{}", self.router, self.name)
    }

    fn switch_port(&self) -> String {
        format!("{}-{}", self.name, self.router)
    }

    /// `10.16.0.1/16` etc.: the router port's networks.
    fn networks(&self) -> Vec<String> {
        self.cidrs
            .iter()
            .zip(&self.gateways)
            .map(|(net, gw)| format!("{gw}/{}", net.prefix_len()))
            .collect()
    }

    fn other_config_subnet(&self) -> String {
        self.cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// OVN's match prefix for an address family: `ip4` or `ip6`.
pub(crate) fn ip_family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip4" } else { "ip6" }
}

pub(crate) fn find<M: Model>(cache: &Cache, name: &str) -> Option<M> {
    let table = cache.table(M::TABLE)?;
    let row = if table.has_index(&["name"]) {
        table.find_one("name", name)
    } else {
        // Tables without a name index (a client that did not ask for [`indexes`]): scan.
        table.rows().find(|r| r.string("name") == Some(name))
    }?;
    M::from_row(row).ok()
}

/// Appends to `t` the removal of a subnet: its switch (with its ports and ACLs) and its
/// router port. Bumps the NB config generation: every pod of the subnet loses connectivity.
pub fn delete_subnet_ops(cache: &Cache, t: &mut Transaction, subnet: &str, router: &str) {
    if let Some(switch) = find::<LogicalSwitch>(cache, subnet) {
        t.delete(LogicalSwitch::TABLE, &[Condition::uuid(switch.uuid)]);
    }
    let port_name = format!("{router}-{subnet}");
    if let Some(port) = find::<LogicalRouterPort>(cache, &port_name) {
        let owners: Vec<LogicalRouter> = cache
            .table(LogicalRouter::TABLE)
            .map(|table| table.typed::<LogicalRouter>())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.ports.contains(&port.uuid))
            .collect();
        for r in owners {
            t.mutate(
                LogicalRouter::TABLE,
                &[Condition::uuid(r.uuid)],
                &[Mutation::new(
                    "ports",
                    Mutator::Delete,
                    Datum::atom(port.uuid),
                )],
            );
        }
    }
    gateway::delete_subnet_policy_ops(cache, t, router, subnet);
    if !t.is_empty() {
        bump_nb_cfg(t);
    }
}

fn vendor_ids() -> Datum {
    Datum::map([VENDOR])
}

/// A uuid-name unique within `t`, so several reconcilers' operations can share one batched
/// transaction.
pub(crate) fn uuid_name(t: &Transaction, base: &str) -> String {
    format!("{base}{}", t.len())
}

/// The transaction that makes NB match `plan`, if anything differs.
pub fn reconcile_subnet(cache: &Cache, plan: &SubnetPlan) -> Option<Transaction> {
    let mut t = Transaction::new(NB);
    subnet_ops(cache, plan, &mut t);
    (!t.is_empty()).then_some(t)
}

/// Appends to `t` what makes NB match `plan`.
pub fn subnet_ops(cache: &Cache, plan: &SubnetPlan, t: &mut Transaction) {
    let router: Option<LogicalRouter> = find(cache, &plan.router);
    let switch: Option<LogicalSwitch> = find(cache, &plan.name);
    let router_port: Option<LogicalRouterPort> = find(cache, &plan.router_port());
    let switch_port: Option<LogicalSwitchPort> = find(cache, &plan.switch_port());

    let router_ref: Atom = match &router {
        Some(r) => Atom::Uuid(r.uuid),
        None => {
            t.insert_named(
                LogicalRouter::TABLE,
                &uuid_name(t, "router"),
                [
                    ("name", Datum::atom(plan.router.as_str())),
                    ("external_ids", vendor_ids()),
                ],
            )
            .1
        }
    };
    let switch_ref: Atom = match &switch {
        Some(s) => {
            if s.other_config.get("subnet").map(String::as_str) != Some(&plan.other_config_subnet())
            {
                t.mutate(
                    LogicalSwitch::TABLE,
                    &[Condition::uuid(s.uuid)],
                    &[
                        Mutation::delete("other_config", Datum::set(["subnet"])),
                        Mutation::insert(
                            "other_config",
                            Datum::map([("subnet", plan.other_config_subnet())]),
                        ),
                    ],
                );
            }
            Atom::Uuid(s.uuid)
        }
        None => {
            t.insert_named(
                LogicalSwitch::TABLE,
                &uuid_name(t, "switch"),
                [
                    ("name", Datum::atom(plan.name.as_str())),
                    (
                        "other_config",
                        Datum::map([("subnet", plan.other_config_subnet())]),
                    ),
                    ("external_ids", vendor_ids()),
                ],
            )
            .1
        }
    };
    let mac = mac_for(plan.gateways[0]);
    match &router_port {
        Some(p) => {
            let mut networks = p.networks.clone();
            networks.sort();
            let mut wanted = plan.networks();
            wanted.sort();
            if networks != wanted || p.mac != mac {
                t.update(
                    LogicalRouterPort::TABLE,
                    &[Condition::uuid(p.uuid)],
                    [
                        ("networks", Datum::set(wanted)),
                        ("mac", Datum::atom(mac.as_str())),
                    ],
                );
            }
        }
        None => {
            let (_, port) = t.insert_named(
                LogicalRouterPort::TABLE,
                &uuid_name(t, "lrp"),
                [
                    ("name", Datum::atom(plan.router_port())),
                    ("mac", Datum::atom(mac.as_str())),
                    ("networks", Datum::set(plan.networks())),
                    ("external_ids", vendor_ids()),
                ],
            );
            t.mutate(
                LogicalRouter::TABLE,
                &[Condition::new(
                    "_uuid",
                    ovsdb::Function::Eq,
                    Datum::atom(router_ref.clone()),
                )],
                &[Mutation::new("ports", Mutator::Insert, Datum::atom(port))],
            );
        }
    }
    if switch_port.is_none() {
        let (_, port) = t.insert_named(
            LogicalSwitchPort::TABLE,
            &uuid_name(t, "lsp"),
            [
                ("name", Datum::atom(plan.switch_port())),
                ("type", Datum::atom("router")),
                ("addresses", Datum::set(["router"])),
                ("options", Datum::map([("router-port", plan.router_port())])),
                ("external_ids", vendor_ids()),
            ],
        );
        t.mutate(
            LogicalSwitch::TABLE,
            &[Condition::new(
                "_uuid",
                ovsdb::Function::Eq,
                Datum::atom(switch_ref),
            )],
            &[Mutation::new("ports", Mutator::Insert, Datum::atom(port))],
        );
    }
}

/// What a pod's port should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPortPlan {
    /// The pod (port `<pod>.<namespace>`) or node (port `node-<name>`).
    pub owner: api::Owner,
    pub switch: String,
    pub mac: String,
    pub ips: Vec<IpAddr>,
    /// The node the pod runs on (empty: not scheduled yet).
    pub node: String,
    /// Whether OVN drops what the port sends from other addresses. True for pods; false for
    /// a node's join port, which forwards traffic of other sources (hostPorts, replies to
    /// traffic that entered through the node), as Kube-OVN's node ports do.
    pub port_security: bool,
}

impl PodPortPlan {
    /// `"<mac> <ip> [<ip>]"`, the form of both addresses and port_security.
    fn address(&self) -> String {
        let mut parts = vec![self.mac.clone()];
        parts.extend(self.ips.iter().map(ToString::to_string));
        parts.join(" ")
    }
}

/// The transaction that creates or corrects the pod's port, if needed. A changed
/// port_security revokes traffic: the NB config generation is bumped with it, so node agents
/// invalidate their fast paths.
pub fn reconcile_pod_port(cache: &Cache, plan: &PodPortPlan) -> Option<Transaction> {
    let mut t = Transaction::new(NB);
    pod_port_ops(cache, plan, &mut t).ok()?;
    (!t.is_empty()).then_some(t)
}

/// Appends to `t` what creates or corrects the pod's port. Fails when the switch does not
/// exist (yet).
pub fn pod_port_ops(
    cache: &Cache,
    plan: &PodPortPlan,
    t: &mut Transaction,
) -> Result<Atom, MissingSwitch> {
    let switch: LogicalSwitch =
        find(cache, &plan.switch).ok_or_else(|| MissingSwitch(plan.switch.clone()))?;
    let name = plan.owner.port_name();
    let port: Option<LogicalSwitchPort> = find(cache, &name);
    let address = plan.address();
    let security: Vec<String> = if plan.port_security {
        vec![address.clone()]
    } else {
        Vec::new()
    };
    let reference = match port {
        None => {
            let (_, port) = t.insert_named(
                LogicalSwitchPort::TABLE,
                &uuid_name(t, "pod"),
                [
                    ("name", Datum::atom(name.as_str())),
                    ("addresses", Datum::set([address.as_str()])),
                    (
                        "port_security",
                        Datum::set(security.iter().map(String::as_str)),
                    ),
                    (
                        "external_ids",
                        Datum::map([
                            (api::PORT_OWNER_KEY, plan.owner.port_owner_id()),
                            ("ls", plan.switch.clone()),
                            ("node", plan.node.clone()),
                            (VENDOR.0, VENDOR.1.to_owned()),
                        ]),
                    ),
                ],
            );
            t.mutate(
                LogicalSwitch::TABLE,
                &[Condition::uuid(switch.uuid)],
                &[Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Datum::atom(port.clone()),
                )],
            );
            port
        }
        Some(p) if p.addresses != [address.clone()] || p.port_security != security => {
            t.update(
                LogicalSwitchPort::TABLE,
                &[Condition::uuid(p.uuid)],
                [
                    ("addresses", Datum::set([address.as_str()])),
                    (
                        "port_security",
                        Datum::set(security.iter().map(String::as_str)),
                    ),
                ],
            );
            bump_nb_cfg(t);
            Atom::Uuid(p.uuid)
        }
        Some(p) => Atom::Uuid(p.uuid),
    };
    Ok(reference)
}

/// A pod's subnet has no logical switch (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("logical switch {0} does not exist")]
pub struct MissingSwitch(pub String);

/// The transaction that deletes a pod's port (and bumps the NB config generation: removing a
/// port revokes traffic).
pub fn delete_pod_port(cache: &Cache, name: &str) -> Option<Transaction> {
    let mut t = Transaction::new(NB);
    delete_port_ops(cache, name, &mut t);
    (!t.is_empty()).then_some(t)
}

/// Appends to `t` the deletion of port `name`, if it exists.
pub fn delete_port_ops(cache: &Cache, name: &str, t: &mut Transaction) {
    let Some(port): Option<LogicalSwitchPort> = find(cache, name) else {
        return;
    };
    let owners: Vec<LogicalSwitch> = cache
        .table(LogicalSwitch::TABLE)
        .map(|table| table.typed::<LogicalSwitch>())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.ports.contains(&port.uuid))
        .collect();
    for switch in owners {
        // Ports are not a root table: dropping the reference deletes the row.
        t.mutate(
            LogicalSwitch::TABLE,
            &[Condition::uuid(switch.uuid)],
            &[Mutation::new(
                "ports",
                Mutator::Delete,
                Datum::atom(port.uuid),
            )],
        );
    }
    bump_nb_cfg(t);
}

/// Increments NB_Global.nb_cfg: ovn-controller reports it back once installed, and node
/// agents invalidate their fast paths when they see it advance.
pub fn bump_nb_cfg(t: &mut Transaction) {
    t.mutate(
        NbGlobal::TABLE,
        &[],
        &[Mutation::new("nb_cfg", Mutator::Add, Datum::atom(1i64))],
    );
}

/// The owner kovn recorded on one of its ports (`None`: not a pod's or node's port).
pub fn port_owner(port: &LogicalSwitchPort) -> Option<api::Owner> {
    api::Owner::from_port_owner_id(port.external_ids.get(api::PORT_OWNER_KEY)?)
}

/// The switches and ports kovn owns, by name (for garbage collection and checks).
pub fn owned_ports(cache: &Cache) -> BTreeMap<String, LogicalSwitchPort> {
    cache
        .table(LogicalSwitchPort::TABLE)
        .map(|t| t.typed::<LogicalSwitchPort>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.external_ids.get(VENDOR.0).map(String::as_str) == Some(VENDOR.1))
        .map(|p| (p.name.clone(), p))
        .collect()
}
