//! How traffic leaves a subnet of the default VPC, as Kube-OVN routes it on `ovn-cluster`:
//! - priority 31000 `allow` for destinations inside the cluster's subnets (pod to pod stays
//!   routed normally);
//! - distributed gateway: priority 29000, per node, `ip4.src == $<node port group>_ip4` reroutes
//!   to that node's `ovn0` address on the join switch; the port group holds the node's pods
//!   of distributed subnets;
//! - centralized gateway: priority 29000, per subnet, `ip4.src == <cidr>` reroutes to the
//!   gateway node(s) (several next hops = ECMP).

use std::net::IpAddr;

use ipnet::IpNet;
use ovsdb::models::ovn_northbound::{
    LogicalRouter, LogicalRouterPolicy, LogicalRouterPolicyAction, PortGroup,
};
use ovsdb::{Atom, Cache, Condition, Transaction};

use super::owned::{OwnedRow, Parent, Synced, owner, sync_owned_rows};
use super::{VENDOR, find, ip_family};

pub const PRIORITY_SUBNET_ALLOW: i64 = 31000;
pub const PRIORITY_GATEWAY: i64 = 29000;

/// A node port group's name: OVN names (and the address sets derived from them) allow
/// letters, digits, `_` and `.`; Kube-OVN turns dashes into dots.
pub fn node_port_group(node: &str) -> String {
    format!("node.{}", node.replace('-', "."))
}

fn family(net: &IpNet) -> &'static str {
    ip_family(net.addr())
}

/// A router policy row; its key is the same for equal content, whoever builds it.
pub(crate) fn policy_row(
    priority: i64,
    matches: String,
    action: LogicalRouterPolicyAction,
    nexthops: Vec<String>,
) -> OwnedRow<LogicalRouterPolicy> {
    OwnedRow {
        key: format!(
            "{priority}|{matches}|{}|{}",
            action.as_str(),
            nexthops.join(",")
        ),
        row: LogicalRouterPolicy {
            priority,
            r#match: matches,
            action,
            nexthops,
            ..LogicalRouterPolicy::default()
        },
    }
}

fn hops(nexthops: &[IpAddr]) -> Vec<String> {
    nexthops.iter().map(ToString::to_string).collect()
}

fn router_parent(cache: &Cache, router: &str) -> Option<Parent<LogicalRouter>> {
    let r: LogicalRouter = find(cache, router)?;
    Some(Parent {
        row: Atom::Uuid(r.uuid),
        children: LogicalRouter::POLICIES,
    })
}

/// The subnet's own router policies on its router: the 31000 allow for its CIDRs and, for a
/// centralized subnet, the 29000 reroute to its gateway nodes' join addresses.
pub fn subnet_policy_ops(
    cache: &Cache,
    t: &mut Transaction,
    router: &str,
    subnet: &str,
    cidrs: &[IpNet],
    centralized_next_hops: &[IpAddr],
) -> Synced {
    let Some(parent) = router_parent(cache, router) else {
        return Synced::default();
    };
    let mut desired: Vec<OwnedRow<LogicalRouterPolicy>> = cidrs
        .iter()
        .map(|c| {
            policy_row(
                PRIORITY_SUBNET_ALLOW,
                format!("{}.dst == {c}", family(c)),
                LogicalRouterPolicyAction::Allow,
                Vec::new(),
            )
        })
        .collect();
    for c in cidrs {
        let next_hops: Vec<IpAddr> = centralized_next_hops
            .iter()
            .copied()
            .filter(|h| h.is_ipv4() == c.addr().is_ipv4())
            .collect();
        if !next_hops.is_empty() {
            desired.push(policy_row(
                PRIORITY_GATEWAY,
                format!("{}.src == {c}", family(c)),
                LogicalRouterPolicyAction::Reroute,
                hops(&next_hops),
            ));
        }
    }
    sync_owned_rows(cache, t, &parent, &owner("subnet", subnet), desired)
}

/// Removes every policy a subnet owns.
pub fn delete_subnet_policy_ops(cache: &Cache, t: &mut Transaction, router: &str, subnet: &str) {
    if let Some(parent) = router_parent(cache, router) {
        sync_owned_rows(
            cache,
            t,
            &parent,
            &owner("subnet", subnet),
            Vec::<OwnedRow<LogicalRouterPolicy>>::new(),
        );
    }
}

/// A node's distributed-gateway state: its port group with exactly `ports` (the LSPs of its
/// pods in distributed subnets) and the reroute policy to its join addresses. With
/// `network_policy`, the group also carries the ACLs that let the node's own join addresses
/// reach its pods whatever policies isolate them (kubelet probes), as in Kube-OVN.
pub fn node_gateway_ops(
    cache: &Cache,
    t: &mut Transaction,
    router: &str,
    node: &str,
    join_ips: &[IpAddr],
    ports: &[String],
    network_policy: bool,
) -> Synced {
    let pg_name = node_port_group(node);
    let existing = find::<PortGroup>(cache, &pg_name);
    let external_ids = [("node", node), VENDOR]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (pg_ref, mut sync) =
        super::port_group_ops(cache, t, existing.as_ref(), &pg_name, ports, external_ids);
    let node_acls = if network_policy {
        super::network_policy::node_acl_rows(&pg_name, join_ips)
    } else {
        Vec::new()
    };
    sync = sync.and(sync_owned_rows(
        cache,
        t,
        &Parent {
            row: pg_ref,
            children: PortGroup::ACLS,
        },
        &owner("node-acl", node),
        node_acls,
    ));
    if let Some(parent) = router_parent(cache, router) {
        let desired = join_ips
            .iter()
            .map(|ip| {
                let fam = ip_family(*ip);
                policy_row(
                    PRIORITY_GATEWAY,
                    format!("{fam}.src == ${pg_name}_{fam}"),
                    LogicalRouterPolicyAction::Reroute,
                    hops(&[*ip]),
                )
            })
            .collect();
        sync = sync.and(sync_owned_rows(
            cache,
            t,
            &parent,
            &owner("node", node),
            desired,
        ));
    }
    sync
}

/// Removes a node's port group and policies.
pub fn delete_node_gateway_ops(cache: &Cache, t: &mut Transaction, router: &str, node: &str) {
    if let Some(pg) = find::<PortGroup>(cache, &node_port_group(node)) {
        t.delete_where::<PortGroup>(&[Condition::uuid(pg.uuid)]);
    }
    if let Some(parent) = router_parent(cache, router) {
        sync_owned_rows(
            cache,
            t,
            &parent,
            &owner("node", node),
            Vec::<OwnedRow<LogicalRouterPolicy>>::new(),
        );
    }
}
