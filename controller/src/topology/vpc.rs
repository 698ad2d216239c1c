//! A VPC is a logical router named after it (the default VPC's is `ovn-cluster`), with the
//! static routes and policy routes its spec lists.

use ovsdb::models::ovn_northbound::{
    LogicalRouter, LogicalRouterPolicy, LogicalRouterPolicyAction, LogicalRouterStaticRoute,
    LogicalRouterStaticRoutePolicy,
};
use ovsdb::{Atom, Cache, Condition, Transaction};

use super::gateway::policy_row;
use super::owned::{OwnedRow, Parent, Synced, owner, sync_owned_rows};
use super::{find, uuid_name, vendor_ids};

/// A static route as the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub policy: LogicalRouterStaticRoutePolicy,
    pub prefix: String,
    pub next_hop: String,
}

/// A policy route as the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub priority: i64,
    pub matches: String,
    pub action: LogicalRouterPolicyAction,
    pub next_hops: Vec<String>,
}

/// Creates the router if missing. Returns its reference (a named uuid when inserted).
pub fn router_ops(cache: &Cache, t: &mut Transaction, router: &str) -> Atom {
    match find::<LogicalRouter>(cache, router) {
        Some(r) => Atom::Uuid(r.uuid),
        None => t.insert_model_with(
            &uuid_name(t, "router"),
            &LogicalRouter {
                name: router.to_owned(),
                external_ids: vendor_ids(),
                ..LogicalRouter::default()
            },
            [],
        ),
    }
}

/// Makes the VPC's router carry exactly `routes` and `policies` (the ones kovn derives from
/// the spec; rows owned by subnets and nodes are left alone).
pub fn vpc_ops(
    cache: &Cache,
    t: &mut Transaction,
    vpc: &str,
    router: &str,
    routes: &[Route],
    policies: &[Policy],
) -> Synced {
    let row = router_ops(cache, t, router);
    let owner = owner("vpc", vpc);
    let route_rows = routes
        .iter()
        .map(|r| OwnedRow {
            key: format!("{}|{}|{}", r.policy.as_str(), r.prefix, r.next_hop),
            row: LogicalRouterStaticRoute {
                policy: Some(r.policy),
                ip_prefix: r.prefix.clone(),
                nexthop: r.next_hop.clone(),
                ..LogicalRouterStaticRoute::default()
            },
        })
        .collect();
    let policy_rows: Vec<OwnedRow<LogicalRouterPolicy>> = policies
        .iter()
        .map(|p| policy_row(p.priority, p.matches.clone(), p.action, p.next_hops.clone()))
        .collect();
    let a = sync_owned_rows(
        cache,
        t,
        &Parent {
            row: row.clone(),
            children: LogicalRouter::STATIC_ROUTES,
        },
        &owner,
        route_rows,
    );
    let b = sync_owned_rows(
        cache,
        t,
        &Parent {
            row,
            children: LogicalRouter::POLICIES,
        },
        &owner,
        policy_rows,
    );
    a.and(b)
}

/// Deletes the VPC's router (its ports, routes and policies go with it).
pub fn delete_vpc_ops(cache: &Cache, t: &mut Transaction, router: &str) {
    if let Some(r) = find::<LogicalRouter>(cache, router) {
        t.delete_where::<LogicalRouter>(&[Condition::uuid(r.uuid)]);
    }
}
