//! A VPC's way out and its NAT, as Kube-OVN's OVN-native NAT lays them:
//! - the VPC router's port on the external subnet's switch, `<vpc>-<external subnet>` (peer
//!   switch port `<external subnet>-<vpc>`), a distributed gateway port: its Gateway_Chassis
//!   rows (`<port>-<node>`, the first gateway node with the highest priority) say which
//!   chassis carries the router's traffic to and from the external network, OVN failing over
//!   to the next when one goes;
//! - NAT rows on the router for FIP rules (`dnat_and_snat`) and SNAT rules (`snat`), each
//!   owned by its object ([`super::owned`]), applied by OVN on the gateway chassis;
//! - a load balancer on the router per DNAT rule (`EIP:port` to `pod:port`; OVN's NAT rows
//!   cannot translate ports).
//!
//! Both Kube-OVN's OVN-native kinds (`Ovn*`) and its VPC NAT gateway's (`Iptables*`) are
//! written here the same way.

use std::collections::BTreeMap;

use ovsdb::models::ovn_northbound::{
    GatewayChassis, LoadBalancer, LoadBalancerProtocol, LogicalRouter, LogicalRouterPort,
    LogicalSwitch, LogicalSwitchPort, Nat, NatType,
};
use ovsdb::{Atom, Cache, Condition, Model, Transaction, Uuid};

use super::owned::{
    OwnedModel, OwnedRow, Parent, Synced, remove_owned_rows_elsewhere, sync_owned_rows,
};
use super::{MissingSwitch, find, uuid_name, vendor_ids};

impl OwnedModel for Nat {
    const EXTERNAL_IDS: ovsdb::Column<Self, BTreeMap<String, String>> = Self::EXTERNAL_IDS;
}

/// The router port of a VPC on its external subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPortPlan {
    pub router: String,
    /// The external subnet (its logical switch).
    pub switch: String,
    pub mac: String,
    /// `<address>/<prefix>`.
    pub network: String,
    /// The gateway nodes (chassis names), highest priority first.
    pub chassis: Vec<String>,
}

/// Kube-OVN's names of the two ends.
pub fn external_router_port(router: &str, switch: &str) -> String {
    format!("{router}-{switch}")
}

fn external_switch_port(router: &str, switch: &str) -> String {
    format!("{switch}-{router}")
}

/// The highest Gateway_Chassis priority (OVN's range is 0..=32767).
const TOP_PRIORITY: i64 = 100;

/// Appends to `t` what makes the VPC's external port match `plan`. Fails when the external
/// switch does not exist (yet).
pub fn external_port_ops(
    cache: &Cache,
    t: &mut Transaction,
    plan: &ExternalPortPlan,
) -> Result<(), MissingSwitch> {
    let switch: LogicalSwitch =
        find(cache, &plan.switch).ok_or_else(|| MissingSwitch(plan.switch.clone()))?;
    let router = super::vpc::router_ops(cache, t, &plan.router);
    let lrp_name = external_router_port(&plan.router, &plan.switch);
    let wanted: Vec<(String, String, i64)> = plan
        .chassis
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let priority = (TOP_PRIORITY - i64::try_from(i).unwrap_or(TOP_PRIORITY)).max(1);
            (format!("{lrp_name}-{c}"), c.clone(), priority)
        })
        .collect();
    let gateway_rows = |t: &mut Transaction, existing: &[GatewayChassis]| -> Vec<Atom> {
        wanted
            .iter()
            .map(
                |(name, chassis, priority)| match existing.iter().find(|g| &g.name == name) {
                    Some(g) => {
                        if g.priority != *priority || &g.chassis_name != chassis {
                            t.update_where(
                                &[Condition::uuid(g.uuid)],
                                [
                                    GatewayChassis::PRIORITY.to(*priority),
                                    GatewayChassis::CHASSIS_NAME.to(chassis.clone()),
                                ],
                            );
                        }
                        Atom::Uuid(g.uuid)
                    }
                    None => t.insert_model_with(
                        &uuid_name(t, "gwc"),
                        &GatewayChassis {
                            name: name.clone(),
                            chassis_name: chassis.clone(),
                            priority: *priority,
                            external_ids: vendor_ids(),
                            ..GatewayChassis::default()
                        },
                        [],
                    ),
                },
            )
            .collect()
    };
    match find::<LogicalRouterPort>(cache, &lrp_name) {
        None => {
            let chassis = gateway_rows(t, &[]);
            let port = t.insert_model_with(
                &uuid_name(t, "extlrp"),
                &LogicalRouterPort {
                    name: lrp_name.clone(),
                    mac: plan.mac.clone(),
                    networks: vec![plan.network.clone()],
                    external_ids: vendor_ids(),
                    ..LogicalRouterPort::default()
                },
                [LogicalRouterPort::GATEWAY_CHASSIS.to_elements(chassis)],
            );
            t.mutate_where(
                &[Condition::row(&router)],
                [LogicalRouter::PORTS.insert([port])],
            );
        }
        Some(p) => {
            let existing: Vec<GatewayChassis> = p
                .gateway_chassis
                .iter()
                .filter_map(|u| {
                    let row = cache.table(GatewayChassis::TABLE)?.get(u)?;
                    GatewayChassis::from_row(row).ok()
                })
                .collect();
            let mut have: Vec<(String, String, i64)> = existing
                .iter()
                .map(|g| (g.name.clone(), g.chassis_name.clone(), g.priority))
                .collect();
            have.sort();
            let mut want_sorted = wanted.clone();
            want_sorted.sort();
            if have != want_sorted {
                let chassis = gateway_rows(t, &existing);
                t.update_where(
                    &[Condition::uuid(p.uuid)],
                    [LogicalRouterPort::GATEWAY_CHASSIS.to_elements(chassis)],
                );
            }
            if p.mac != plan.mac || p.networks != [plan.network.clone()] {
                t.update_where(
                    &[Condition::uuid(p.uuid)],
                    [
                        LogicalRouterPort::MAC.to(plan.mac.clone()),
                        LogicalRouterPort::NETWORKS.to(vec![plan.network.clone()]),
                    ],
                );
            }
        }
    }
    let lsp_name = external_switch_port(&plan.router, &plan.switch);
    if find::<LogicalSwitchPort>(cache, &lsp_name).is_none() {
        let port = t.insert_model_with(
            &uuid_name(t, "extlsp"),
            &LogicalSwitchPort {
                name: lsp_name,
                r#type: "router".into(),
                addresses: vec!["router".into()],
                // The gateway chassis announces the NAT addresses (gratuitous ARP), so the
                // outside learns where they moved on failover.
                options: BTreeMap::from([
                    ("router-port".to_owned(), lrp_name),
                    ("nat-addresses".to_owned(), "router".to_owned()),
                ]),
                external_ids: vendor_ids(),
                ..LogicalSwitchPort::default()
            },
            [],
        );
        t.mutate_where(
            &[Condition::uuid(switch.uuid)],
            [LogicalSwitch::PORTS.insert([port])],
        );
    }
    Ok(())
}

/// Appends to `t` the removal of the VPC's external port (both ends), if there.
pub fn delete_external_port_ops(cache: &Cache, t: &mut Transaction, router: &str, switch: &str) {
    if let Some(p) = find::<LogicalRouterPort>(cache, &external_router_port(router, switch)) {
        t.mutate_where(
            &[Condition::new(
                LogicalRouter::PORTS.name(),
                ovsdb::Function::Includes,
                ovsdb::Datum::set([Atom::Uuid(p.uuid)]),
            )],
            [LogicalRouter::PORTS.delete([p.uuid])],
        );
    }
    if let (Some(p), Some(s)) = (
        find::<LogicalSwitchPort>(cache, &external_switch_port(router, switch)),
        find::<LogicalSwitch>(cache, switch),
    ) {
        t.mutate_where(
            &[Condition::uuid(s.uuid)],
            [LogicalSwitch::PORTS.delete([p.uuid])],
        );
    }
}

/// One NAT row as a rule wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    pub kind: NatType,
    pub external_ip: String,
    /// An address, or a CIDR for `snat`.
    pub logical_ip: String,
}

/// Appends to `t` what makes `owner`'s NAT rows exactly `rules` on `router`, and none on any
/// other router (a rule that moved VPCs, or `router` empty: removed everywhere).
pub fn nat_ops(
    cache: &Cache,
    t: &mut Transaction,
    router: &str,
    owner: &str,
    rules: &[NatRule],
) -> Synced {
    let keep = find::<LogicalRouter>(cache, router);
    let elsewhere = Synced {
        removed: remove_owned_rows_elsewhere::<LogicalRouter, Nat>(
            cache,
            t,
            LogicalRouter::NAT,
            keep.as_ref().map(|r| r.uuid),
            owner,
        ),
        ..Synced::default()
    };
    let Some(r) = keep else {
        return elsewhere;
    };
    let rows = rules
        .iter()
        .map(|n| OwnedRow {
            key: format!("{}|{}|{}", n.kind.as_str(), n.external_ip, n.logical_ip),
            row: Nat {
                r#type: n.kind,
                external_ip: n.external_ip.clone(),
                logical_ip: n.logical_ip.clone(),
                ..Nat::default()
            },
        })
        .collect();
    sync_owned_rows(
        cache,
        t,
        &Parent {
            row: Atom::Uuid(r.uuid),
            children: LogicalRouter::NAT,
        },
        owner,
        rows,
    )
    .and(elsewhere)
}

/// A port forward of an OvnDnatRule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// `EIP:port`.
    pub vip: String,
    /// `pod:port`.
    pub backend: String,
    pub protocol: LoadBalancerProtocol,
}

/// Appends to `t` what makes load balancer `name` (owned by `owner`) forward as `forward`
/// and be attached to `router` only; `None` removes it. Returns whether a forward went or
/// changed (traffic revoked).
pub fn port_forward_ops(
    cache: &Cache,
    t: &mut Transaction,
    router: &str,
    name: &str,
    owner: &str,
    forward: Option<&PortForward>,
) -> bool {
    let existing = find::<LoadBalancer>(cache, name);
    let routers: Vec<LogicalRouter> = cache
        .table(LogicalRouter::TABLE)
        .map(|table| table.typed::<LogicalRouter>())
        .unwrap_or_default();
    let attached_to = |lb: Uuid| -> Vec<&LogicalRouter> {
        routers
            .iter()
            .filter(|r| r.load_balancer.contains(&lb))
            .collect()
    };
    let Some(forward) = forward else {
        if let Some(lb) = existing {
            for r in attached_to(lb.uuid) {
                t.mutate_where(
                    &[Condition::uuid(r.uuid)],
                    [LogicalRouter::LOAD_BALANCER.delete([lb.uuid])],
                );
            }
            t.delete_where::<LoadBalancer>(&[Condition::uuid(lb.uuid)]);
            return true;
        }
        return false;
    };
    let vips = BTreeMap::from([(forward.vip.clone(), forward.backend.clone())]);
    let mut revoked = false;
    let lb = match existing {
        Some(lb) => {
            if lb.vips != vips || lb.protocol != Some(forward.protocol) {
                t.update_where(
                    &[Condition::uuid(lb.uuid)],
                    [
                        LoadBalancer::VIPS.to(vips),
                        LoadBalancer::PROTOCOL.to(Some(forward.protocol)),
                    ],
                );
                revoked = true;
            }
            for r in attached_to(lb.uuid)
                .into_iter()
                .filter(|r| r.name != router)
            {
                t.mutate_where(
                    &[Condition::uuid(r.uuid)],
                    [LogicalRouter::LOAD_BALANCER.delete([lb.uuid])],
                );
                revoked = true;
            }
            Atom::Uuid(lb.uuid)
        }
        None => {
            let mut external_ids = vendor_ids();
            external_ids.insert(super::owned::OWNER.to_owned(), owner.to_owned());
            t.insert_model_with(
                &uuid_name(t, "dnat"),
                &LoadBalancer {
                    name: name.to_owned(),
                    vips,
                    protocol: Some(forward.protocol),
                    external_ids,
                    ..LoadBalancer::default()
                },
                [],
            )
        }
    };
    if let Some(r) = find::<LogicalRouter>(cache, router)
        && !matches!(&lb, Atom::Uuid(u) if r.load_balancer.contains(u))
    {
        t.mutate_where(
            &[Condition::uuid(r.uuid)],
            [LogicalRouter::LOAD_BALANCER.insert([lb])],
        );
    }
    revoked
}
