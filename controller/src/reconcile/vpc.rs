//! A Vpc's lifecycle: its router (`ovn-cluster` for the default VPC, else the VPC's name),
//! the static and policy routes its spec lists, and a status naming the router and subnets.
//! Deleting a custom VPC removes its router (through the finalizer).
//!
//! `enableExternal` (custom VPCs), as Kube-OVN's OVN-native NAT does it: the controller makes
//! an OvnEip of type `lrp` named `<vpc>-<external subnet>` (the external subnet is the
//! `ovn-external-gw-config` ConfigMap's `external-gw-switch`, an underlay Subnet), and once it
//! has an address, the router's port on the external switch with that address, scheduled on
//! the external gateway nodes (Gateway_Chassis, failing over in their order), and a default
//! route to the external subnet's gateway unless the spec routes 0.0.0.0/0 itself. A
//! `VpcNatGateway` naming the VPC asks for the same (kovn's NAT gateway is the router itself).
//! Disabled, the port, the route and the EIP go.

use std::sync::Arc;

use api::{EIP_TYPE_LRP, OvnEip, OvnEipSpec, Vpc, VpcStatus};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};

use super::FINALIZER;

/// How often the status's list of subnets is refreshed.
const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);
use super::ovn_nat::Refusal;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::topology::nat::{ExternalPortPlan, delete_external_port_ops, external_port_ops};
use crate::topology::vpc::{Policy, Route, delete_vpc_ops, vpc_ops};
use ovsdb::models::ovn_northbound::{
    LogicalRouterPolicyAction, LogicalRouterStaticRoutePolicy, LogicalSwitch,
};

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
    let mut external = external_of(vpc, ctx).await?;
    if let External::Ready { plan, .. } = &external
        && !ctx
            .nb
            .client()
            .read(|c| crate::topology::find::<LogicalSwitch>(c, &plan.switch).is_some())
    {
        external = External::Pending(Refusal::new(
            "ExternalSubnetNotReady",
            format!("external subnet {}'s switch is not in OVN yet", plan.switch),
        ));
    }
    if let External::Ready { gateway, .. } = &external {
        let prefix = if gateway.contains(':') {
            "::/0"
        } else {
            "0.0.0.0/0"
        };
        if !routes.iter().any(|r| r.prefix == prefix) {
            routes.push(Route {
                policy: LogicalRouterStaticRoutePolicy::DstIp,
                prefix: prefix.into(),
                next_hop: gateway.clone(),
            });
        }
    }
    let vpc_name = name.clone();
    let router_name = router.clone();
    let switch = ctx.stores.external_gateway().switch;
    let port = external.clone();
    ctx.nb
        .apply(move |cache, t| {
            vpc_ops(cache, t, &vpc_name, &router_name, &routes, &policies);
            match &port {
                External::Ready { plan, .. } => {
                    external_port_ops(cache, t, plan).map_err(|e| e.to_string())?;
                }
                External::Pending(_) => {}
                External::Off | External::Refused(_) => {
                    delete_external_port_ops(cache, t, &router_name, &switch);
                }
            }
            Ok(())
        })
        .await?;
    if matches!(external, External::Off) {
        remove_router_eip(vpc, ctx).await?;
    }
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
        enable_external: matches!(external, External::Ready { .. }),
        conditions: vpc_conditions(vpc, default, &external),
        ..VpcStatus::default()
    };
    super::write_status(ctx, vpc, vpc.status.as_ref(), &status).await?;
    if let External::Refused(r) | External::Pending(r) = &external {
        ctx.event(vpc, true, r.reason, r.message.clone()).await;
        return Ok(Action::requeue(EXTERNAL_RETRY));
    }
    // Subnets joining or leaving the VPC do not trigger it: refresh the status's list.
    Ok(Action::requeue(STATUS_REFRESH))
}

/// A VPC's way out, as far as it got.
#[derive(Debug, Clone)]
enum External {
    /// Not asked for (or the default VPC, which leaves through the nodes).
    Off,
    /// Asked for, but what it needs is missing or wrong: no port.
    Refused(Refusal),
    /// Asked for and on its way (the router port's EIP being allocated): NB left as it is.
    Pending(Refusal),
    Ready {
        plan: ExternalPortPlan,
        /// The external subnet's gateway: the default route's next hop.
        gateway: String,
    },
}

/// A VPC waiting for its external port is looked at again this often.
const EXTERNAL_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The name of the OvnEip of a VPC's router port on the external subnet (Kube-OVN's).
fn router_eip_name(vpc: &str, switch: &str) -> String {
    format!("{vpc}-{switch}")
}

/// Where `vpc`'s external connectivity stands; creates its router port's OvnEip if missing.
async fn external_of(vpc: &Vpc, ctx: &Context) -> Result<External> {
    let name = vpc.name_any();
    let nat_gateway = ctx
        .stores
        .vpc_nat_gateways
        .state()
        .iter()
        .any(|g| g.spec.vpc == name);
    if !(vpc.spec.enable_external || nat_gateway) || is_default(vpc, ctx) {
        return Ok(External::Off);
    }
    let config = ctx.stores.external_gateway();
    if !config.enabled {
        return Ok(External::Refused(Refusal::new(
            "ExternalGatewayNotEnabled",
            format!(
                "{}/{} does not enable the external gateway (enable-external-gw)",
                api::external_gateway::CONFIG_NAMESPACE,
                api::external_gateway::CONFIG_MAP
            ),
        )));
    }
    let switch = config.switch.clone();
    let Some(subnet) = ctx
        .stores
        .subnets
        .get(&kube::runtime::reflector::ObjectRef::new(&switch))
    else {
        return Ok(External::Refused(Refusal::new(
            "ExternalSubnetNotFound",
            format!("external subnet {switch} does not exist"),
        )));
    };
    if !subnet.spec.routed_by_physical_gateway() {
        return Ok(External::Refused(Refusal::new(
            "ExternalSubnetNotUnderlay",
            format!(
                "external subnet {switch} must be an underlay subnet (a vlan, without logicalGateway) on the external network"
            ),
        )));
    }
    let nodes = ctx.stores.nodes.state();
    let chassis = config.gateway_nodes(&nodes.iter().map(|n| &**n).collect::<Vec<_>>());
    if chassis.is_empty() {
        return Ok(External::Refused(Refusal::new(
            "NoExternalGatewayNode",
            "external-gw-nodes names no existing node, and no node is labelled ovn.kubernetes.io/external-gw=true",
        )));
    }
    let Some(cidr) = subnet
        .spec
        .cidr_block
        .split(',')
        .find_map(|c| c.trim().parse::<ipnet::Ipv4Net>().ok())
    else {
        return Ok(External::Refused(Refusal::new(
            "ExternalSubnetNotUnderlay",
            format!("external subnet {switch} has no IPv4 CIDR"),
        )));
    };
    let gateway = subnet
        .spec
        .gateway
        .split(',')
        .map(str::trim)
        .find(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_default()
        .to_owned();
    let eip_name = router_eip_name(&vpc.name_any(), &switch);
    let eip = ctx
        .stores
        .ovn_eips
        .get(&kube::runtime::reflector::ObjectRef::new(&eip_name));
    let Some(status) = eip
        .as_ref()
        .and_then(|e| e.status.clone())
        .filter(|s| s.ready)
    else {
        if eip.is_none() {
            let api: Api<OvnEip> = Api::all(ctx.kube.clone());
            let object = OvnEip::new(
                &eip_name,
                OvnEipSpec {
                    external_subnet: switch.clone(),
                    r#type: EIP_TYPE_LRP.to_owned(),
                    ..OvnEipSpec::default()
                },
            );
            api.patch(
                &eip_name,
                &PatchParams::apply(crate::context::FIELD_MANAGER),
                &Patch::Apply(&object),
            )
            .await?;
        }
        return Ok(External::Pending(Refusal::new(
            "ExternalPortPending",
            format!("waiting for ovn-eip {eip_name}'s address"),
        )));
    };
    Ok(External::Ready {
        plan: ExternalPortPlan {
            router: vpc.name_any(),
            switch,
            mac: status.mac_address,
            network: format!("{}/{}", status.v4_ip, cidr.prefix_len()),
            chassis,
        },
        gateway,
    })
}

/// Deletes the OvnEip of the VPC's router port, if there (its finalizer releases the address).
async fn remove_router_eip(vpc: &Vpc, ctx: &Context) -> Result<()> {
    let name = router_eip_name(&vpc.name_any(), &ctx.stores.external_gateway().switch);
    if ctx
        .stores
        .ovn_eips
        .get(&kube::runtime::reflector::ObjectRef::new(&name))
        .is_some()
    {
        let api: Api<OvnEip> = Api::all(ctx.kube.clone());
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `Ready`, `ExternalGateway` when `enableExternal` is set, and `Unsupported` naming the
/// fields kovn does not act on (yet), as for Subnets.
fn vpc_conditions(vpc: &Vpc, default: bool, external: &External) -> Vec<api::Condition> {
    let mut conditions = vec![api::Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "ReconcileSucceeded".into(),
        ..api::Condition::default()
    }];
    match external {
        External::Off => {}
        External::Ready { plan, .. } => conditions.push(api::Condition {
            type_: "ExternalGateway".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: format!("{} on {}", plan.network, plan.chassis.join(",")),
            ..api::Condition::default()
        }),
        External::Refused(r) | External::Pending(r) => conditions.push(api::Condition {
            type_: "ExternalGateway".into(),
            status: "False".into(),
            reason: r.reason.into(),
            message: r.message.clone(),
            ..api::Condition::default()
        }),
    }
    let mut unsupported = vpc.spec.unsupported_fields();
    if default && vpc.spec.enable_external {
        unsupported
            .push("enableExternal (on the default VPC, which leaves through the nodes)".into());
    }
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
    let switch = ctx.stores.external_gateway().switch;
    ctx.nb
        .apply(move |cache, t| {
            delete_external_port_ops(cache, t, &router, &switch);
            delete_vpc_ops(cache, t, &router);
            Ok(())
        })
        .await?;
    remove_router_eip(vpc, ctx).await?;
    Ok(Action::await_change())
}
