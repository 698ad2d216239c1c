//! A Vpc's lifecycle: its router (`ovn-cluster` for the default VPC, else the VPC's name),
//! the static and policy routes its spec lists, and a status naming the router and subnets.
//! Deleting a custom VPC removes its router (through the finalizer).

use std::sync::Arc;

use api::{Vpc, VpcStatus};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::FINALIZER;

/// How often the status's list of subnets is refreshed.
const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);
use crate::context::Context;
use crate::error::{Error, Result};
use crate::topology::vpc::{Policy, Route, delete_vpc_ops, vpc_ops};
use ovsdb::models::ovn_northbound::{LogicalRouterPolicyAction, LogicalRouterStaticRoutePolicy};

pub async fn reconcile(vpc: Arc<Vpc>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<Vpc> = Api::all(ctx.kube.clone());
    finalizer(&api, FINALIZER, vpc, |event| async {
        match event {
            Finalizer::Apply(vpc) => apply(&vpc, &ctx).await,
            Finalizer::Cleanup(vpc) => cleanup(&vpc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn is_default(vpc: &Vpc, ctx: &Context) -> bool {
    vpc.name_any() == ctx.settings.names.cluster_router
}

async fn apply(vpc: &Vpc, ctx: &Context) -> Result<Action> {
    let name = vpc.name_any();
    let router = name.clone();
    let routes: Vec<Route> = vpc
        .spec
        .static_routes
        .iter()
        .map(|r| Route {
            policy: if r.policy == "policySrc" {
                LogicalRouterStaticRoutePolicy::SrcIp
            } else {
                LogicalRouterStaticRoutePolicy::DstIp
            },
            prefix: r.cidr.clone(),
            next_hop: r.next_hop_ip.clone(),
        })
        .collect();
    // The default VPC sends what is not for the cluster to the join gateway, as Kube-OVN
    // does: without a route, traffic to outside addresses is dropped at routing, before the
    // distributed gateway's reroute policies (which pick each node's ovn0) are applied.
    let mut routes = routes;
    if is_default(vpc, ctx) {
        for gateway in ctx.settings.node_switch_gateway.split(',').map(str::trim) {
            let prefix = if gateway.contains(':') {
                "::/0"
            } else {
                "0.0.0.0/0"
            };
            if !gateway.is_empty() && !routes.iter().any(|r| r.prefix == prefix) {
                routes.push(Route {
                    policy: LogicalRouterStaticRoutePolicy::DstIp,
                    prefix: prefix.into(),
                    next_hop: gateway.into(),
                });
            }
        }
    }
    // An action OVN does not know would fail the whole NB transaction (and every other
    // object's writes batched with it): refused here, with a reason.
    let policies: Vec<Policy> = vpc
        .spec
        .policy_routes
        .iter()
        .map(|p| {
            let action = LogicalRouterPolicyAction::from_str_opt(&p.action).ok_or_else(|| {
                Error::BadSpec(format!(
                    "vpc {name}: policy route action {:?} is not allow, drop or reroute",
                    p.action
                ))
            })?;
            Ok(Policy {
                priority: i64::from(p.priority),
                matches: p.match_.clone(),
                action,
                next_hops: p
                    .next_hop_ip
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect::<Result<_>>()?;
    let vpc_name = name.clone();
    let router_name = router.clone();
    ctx.nb
        .apply(move |cache, t| {
            vpc_ops(cache, t, &vpc_name, &router_name, &routes, &policies);
            Ok(())
        })
        .await?;
    let default = is_default(vpc, ctx);
    let mut subnets: Vec<String> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .filter(|s| s.spec.vpc == name || (default && s.spec.vpc.is_empty()))
        .map(|s| s.name_any())
        .collect();
    subnets.sort();
    let status = VpcStatus {
        standby: true,
        default,
        router,
        default_logical_switch: if default {
            ctx.settings.names.default_subnet.clone()
        } else {
            vpc.spec.default_subnet.clone()
        },
        subnets,
        conditions: vpc_conditions(vpc),
        ..VpcStatus::default()
    };
    if vpc.status.as_ref() != Some(&status) {
        let api: Api<Vpc> = Api::all(ctx.kube.clone());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    // Subnets joining or leaving the VPC do not trigger it: refresh the status's list.
    Ok(Action::requeue(STATUS_REFRESH))
}

/// `Ready`, plus `Unsupported` naming the fields kovn does not act on (yet), as for Subnets.
fn vpc_conditions(vpc: &Vpc) -> Vec<api::Condition> {
    let mut conditions = vec![api::Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "ReconcileSucceeded".into(),
        ..api::Condition::default()
    }];
    let unsupported = vpc.spec.unsupported_fields();
    if !unsupported.is_empty() {
        conditions.push(api::Condition {
            type_: "Unsupported".into(),
            status: "True".into(),
            reason: "NotImplemented".into(),
            message: format!("kovn does not implement yet: {}", unsupported.join(", ")),
            ..api::Condition::default()
        });
    }
    conditions
}

async fn cleanup(vpc: &Vpc, ctx: &Context) -> Result<Action> {
    if is_default(vpc, ctx) {
        return Ok(Action::await_change());
    }
    let router = vpc.name_any();
    ctx.nb
        .apply(move |cache, t| {
            delete_vpc_ops(cache, t, &router);
            Ok(())
        })
        .await?;
    Ok(Action::await_change())
}
