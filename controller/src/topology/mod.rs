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
pub mod nat;
pub mod network_policy;
pub mod owned;
pub mod vpc;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use ovsdb::models::ovn_northbound::{
    Acl, AddressSet, GatewayChassis, LoadBalancer, LogicalRouter, LogicalRouterPolicy,
    LogicalRouterPort, LogicalRouterStaticRoute, LogicalSwitch, LogicalSwitchPort, Nat, NbGlobal,
    PortGroup,
};
use ovsdb::{Atom, Cache, Condition, IndexSpec, Model, Transaction};

pub const NB: &str = "OVN_Northbound";
/// external_ids marking rows kovn owns (Kube-OVN writes `vendor=kube-ovn`).
const VENDOR: (&str, &str) = ("vendor", "kube-ovn");

/// The NB tables a topology client must monitor.
pub fn monitored_tables() -> [&'static str; 13] {
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
        AddressSet::TABLE,
        Nat::TABLE,
        GatewayChassis::TABLE,
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
        IndexSpec::new(Nat::TABLE, &[&owner]),
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
    /// An underlay subnet's physical network: its switch is bridged there by a localnet
    /// port, and has no port on the VPC's router unless it has a logical gateway.
    pub localnet: Option<Localnet>,
}

/// Where an underlay switch meets the physical network: the provider network's name (each
/// node's `ovn-bridge-mappings` maps it to `br-<name>`) and the VLAN tag (0: untagged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localnet {
    pub network: String,
    pub tag: u32,
    /// Kube-OVN's `logicalGateway`: the switch keeps its port on the VPC's router, which is
    /// its pods' gateway (a layer-2-only physical network has none).
    pub logical_gateway: bool,
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

    /// Kube-OVN's name of an underlay switch's localnet port.
    pub fn localnet_port(&self) -> String {
        format!("localnet.{}", self.name)
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
        t.delete_where::<LogicalSwitch>(&[Condition::uuid(switch.uuid)]);
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
            t.mutate_where(
                &[Condition::uuid(r.uuid)],
                [LogicalRouter::PORTS.delete([port.uuid])],
            );
        }
    }
    gateway::delete_subnet_policy_ops(cache, t, router, subnet);
    if !t.is_empty() {
        bump_nb_cfg(t);
    }
}

pub(crate) fn vendor_ids() -> BTreeMap<String, String> {
    BTreeMap::from([(VENDOR.0.to_owned(), VENDOR.1.to_owned())])
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
        None => t.insert_model_with(
            &uuid_name(t, "router"),
            &LogicalRouter {
                name: plan.router.clone(),
                external_ids: vendor_ids(),
                ..LogicalRouter::default()
            },
            [],
        ),
    };
    let switch_ref: Atom = match &switch {
        Some(s) => {
            if s.other_config.get("subnet").map(String::as_str) != Some(&plan.other_config_subnet())
            {
                t.mutate_where(
                    &[Condition::uuid(s.uuid)],
                    [
                        LogicalSwitch::OTHER_CONFIG.delete_keys(["subnet"]),
                        LogicalSwitch::OTHER_CONFIG
                            .insert([("subnet", plan.other_config_subnet())]),
                    ],
                );
            }
            Atom::Uuid(s.uuid)
        }
        None => t.insert_model_with(
            &uuid_name(t, "switch"),
            &LogicalSwitch {
                name: plan.name.clone(),
                other_config: BTreeMap::from([("subnet".to_owned(), plan.other_config_subnet())]),
                external_ids: vendor_ids(),
                ..LogicalSwitch::default()
            },
            [],
        ),
    };
    match &plan.localnet {
        Some(localnet) => localnet_ops(cache, plan, localnet, &switch_ref, t),
        None => {
            if let Some(p) = find::<LogicalSwitchPort>(cache, &plan.localnet_port()) {
                t.mutate_where(
                    &[Condition::row(&switch_ref)],
                    [LogicalSwitch::PORTS.delete([p.uuid])],
                );
            }
        }
    }
    if plan.localnet.as_ref().is_some_and(|l| !l.logical_gateway) {
        // The physical gateway routes it: the router's ports for it go (ports are not root
        // rows: dropped from their router and switch, OVSDB removes them).
        if let Some(p) = &router_port {
            t.mutate_where(
                &[Condition::row(&router_ref)],
                [LogicalRouter::PORTS.delete([p.uuid])],
            );
        }
        if let Some(p) = &switch_port {
            t.mutate_where(
                &[Condition::row(&switch_ref)],
                [LogicalSwitch::PORTS.delete([p.uuid])],
            );
        }
        return;
    }
    let mac = mac_for(plan.gateways[0]);
    match &router_port {
        Some(p) => {
            let mut networks = p.networks.clone();
            networks.sort();
            let mut wanted = plan.networks();
            wanted.sort();
            if networks != wanted || p.mac != mac {
                t.update_where(
                    &[Condition::uuid(p.uuid)],
                    [
                        LogicalRouterPort::NETWORKS.to(wanted),
                        LogicalRouterPort::MAC.to(mac),
                    ],
                );
            }
        }
        None => {
            let port = t.insert_model_with(
                &uuid_name(t, "lrp"),
                &LogicalRouterPort {
                    name: plan.router_port(),
                    mac,
                    networks: plan.networks(),
                    external_ids: vendor_ids(),
                    ..LogicalRouterPort::default()
                },
                [],
            );
            t.mutate_where(
                &[Condition::row(&router_ref)],
                [LogicalRouter::PORTS.insert([port])],
            );
        }
    }
    if switch_port.is_none() {
        let port = t.insert_model_with(
            &uuid_name(t, "lsp"),
            &LogicalSwitchPort {
                name: plan.switch_port(),
                r#type: "router".into(),
                addresses: vec!["router".into()],
                options: BTreeMap::from([("router-port".to_owned(), plan.router_port())]),
                external_ids: vendor_ids(),
                ..LogicalSwitchPort::default()
            },
            [],
        );
        t.mutate_where(
            &[Condition::row(&switch_ref)],
            [LogicalSwitch::PORTS.insert([port])],
        );
    }
}

/// The underlay switch's localnet port, as `localnet` says.
fn localnet_ops(
    cache: &Cache,
    plan: &SubnetPlan,
    localnet: &Localnet,
    switch_ref: &Atom,
    t: &mut Transaction,
) {
    let name = plan.localnet_port();
    let options = BTreeMap::from([("network_name".to_owned(), localnet.network.clone())]);
    let tag = (localnet.tag != 0).then_some(i64::from(localnet.tag));
    match find::<LogicalSwitchPort>(cache, &name) {
        Some(p) if p.options == options && p.tag == tag && p.r#type == "localnet" => {}
        Some(p) => {
            t.update_where(
                &[Condition::uuid(p.uuid)],
                [
                    LogicalSwitchPort::TYPE.to("localnet".to_owned()),
                    LogicalSwitchPort::OPTIONS.to(options),
                    LogicalSwitchPort::TAG.to(tag),
                ],
            );
        }
        None => {
            let port = t.insert_model_with(
                &uuid_name(t, "localnet"),
                &LogicalSwitchPort {
                    name,
                    r#type: "localnet".into(),
                    addresses: vec!["unknown".into()],
                    options,
                    tag,
                    external_ids: vendor_ids(),
                    ..LogicalSwitchPort::default()
                },
                [],
            );
            t.mutate_where(
                &[Condition::row(switch_ref)],
                [LogicalSwitch::PORTS.insert([port])],
            );
        }
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

/// Appends to `t` what makes a port group exist with exactly the ports named `ports` (those
/// NB has): `existing` is the group as the cache holds it, inserted as `name` with
/// `external_ids` when there is none. Returns its reference, and `inserted` or `removed`
/// (ports changed: adding a port to an isolating group revokes traffic as well).
pub(crate) fn port_group_ops(
    cache: &Cache,
    t: &mut Transaction,
    existing: Option<&PortGroup>,
    name: &str,
    ports: &[String],
    external_ids: BTreeMap<String, String>,
) -> (Atom, owned::Synced) {
    let mut wanted: Vec<ovsdb::Uuid> = ports
        .iter()
        .filter_map(|p| find::<LogicalSwitchPort>(cache, p))
        .map(|p| p.uuid)
        .collect();
    wanted.sort();
    let mut sync = owned::Synced::default();
    let reference = match existing {
        None => {
            sync.inserted = true;
            t.insert_model_with(
                &uuid_name(t, "pg"),
                &PortGroup {
                    name: name.to_owned(),
                    ports: wanted,
                    external_ids,
                    ..PortGroup::default()
                },
                [],
            )
        }
        Some(pg) => {
            let mut have = pg.ports.clone();
            have.sort();
            if have != wanted {
                t.update_where(&[Condition::uuid(pg.uuid)], [PortGroup::PORTS.to(wanted)]);
                sync.removed = true;
            }
            Atom::Uuid(pg.uuid)
        }
    };
    (reference, sync)
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
            let external_ids = [
                (api::PORT_OWNER_KEY, plan.owner.port_owner_id()),
                ("ls", plan.switch.clone()),
                ("node", plan.node.clone()),
                (VENDOR.0, VENDOR.1.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let port = t.insert_model_with(
                &uuid_name(t, "pod"),
                &LogicalSwitchPort {
                    name,
                    addresses: vec![address],
                    port_security: security,
                    external_ids,
                    ..LogicalSwitchPort::default()
                },
                [],
            );
            t.mutate_where(
                &[Condition::uuid(switch.uuid)],
                [LogicalSwitch::PORTS.insert([&port])],
            );
            port
        }
        Some(p) if p.addresses != [address.clone()] || p.port_security != security => {
            t.update_where(
                &[Condition::uuid(p.uuid)],
                [
                    LogicalSwitchPort::ADDRESSES.to(vec![address]),
                    LogicalSwitchPort::PORT_SECURITY.to(security),
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
        t.mutate_where(
            &[Condition::uuid(switch.uuid)],
            [LogicalSwitch::PORTS.delete([port.uuid])],
        );
    }
    bump_nb_cfg(t);
}

/// Increments NB_Global.nb_cfg: ovn-controller reports it back once installed, and node
/// agents invalidate their fast paths when they see it advance.
pub fn bump_nb_cfg(t: &mut Transaction) {
    t.mutate_where(&[], [NbGlobal::NB_CFG.increment_by(1)]);
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
