//! A VPC is a logical router named after it (the default VPC's is `ovn-cluster`), with the
//! static routes and policy routes its spec lists.

use ovsdb::models::ovn_northbound::{LogicalRouter, LogicalRouterPolicy, LogicalRouterStaticRoute};
use ovsdb::{Atom, Cache, Condition, Datum, Model, Transaction};

use super::owned::{OwnedRow, Parent, Synced, owner, sync_owned_rows};
use super::{VENDOR, find, uuid_name};

/// A static route as the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `dst-ip` or `src-ip`.
    pub policy: &'static str,
    pub prefix: String,
    pub next_hop: String,
}

/// A policy route as the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub priority: i64,
    pub matches: String,
    /// `allow`, `drop` or `reroute`.
    pub action: String,
    pub next_hops: Vec<String>,
}

/// Creates the router if missing. Returns its reference (a named uuid when inserted).
pub fn router_ops(cache: &Cache, t: &mut Transaction, router: &str) -> Atom {
    match find::<LogicalRouter>(cache, router) {
        Some(r) => Atom::Uuid(r.uuid),
        None => {
            t.insert_named(
                LogicalRouter::TABLE,
                &uuid_name(t, "router"),
                [
                    ("name", Datum::atom(router)),
                    ("external_ids", Datum::map([VENDOR])),
                ],
            )
            .1
        }
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
            key: format!("{}|{}|{}", r.policy, r.prefix, r.next_hop),
            columns: vec![
                ("policy", Datum::atom(r.policy)),
                ("ip_prefix", Datum::atom(r.prefix.as_str())),
                ("nexthop", Datum::atom(r.next_hop.as_str())),
            ],
        })
        .collect();
    let policy_rows = policies
        .iter()
        .map(|p| OwnedRow {
            key: format!(
                "{}|{}|{}|{}",
                p.priority,
                p.matches,
                p.action,
                p.next_hops.join(",")
            ),
            columns: vec![
                ("priority", Datum::atom(p.priority)),
                ("match", Datum::atom(p.matches.as_str())),
                ("action", Datum::atom(p.action.as_str())),
                ("nexthops", Datum::set(p.next_hops.clone())),
            ],
        })
        .collect();
    let a = sync_owned_rows(
        cache,
        t,
        &Parent {
            table: LogicalRouter::TABLE,
            row: row.clone(),
            column: "static_routes",
        },
        LogicalRouterStaticRoute::TABLE,
        &owner,
        route_rows,
    );
    let b = sync_owned_rows(
        cache,
        t,
        &Parent {
            table: LogicalRouter::TABLE,
            row,
            column: "policies",
        },
        LogicalRouterPolicy::TABLE,
        &owner,
        policy_rows,
    );
    a.and(b)
}

/// Deletes the VPC's router (its ports, routes and policies go with it).
pub fn delete_vpc_ops(cache: &Cache, t: &mut Transaction, router: &str) {
    if let Some(r) = find::<LogicalRouter>(cache, router) {
        t.delete(LogicalRouter::TABLE, &[Condition::uuid(r.uuid)]);
    }
}
