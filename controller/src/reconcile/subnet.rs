//! A Subnet's lifecycle: validated (bad input gets a `Validated=False` condition and an event,
//! and nothing else is touched), its pool added to IPAM, its switch, router port, gateway
//! policies and (if private) ACLs written to NB, its status kept current; on deletion (through
//! the finalizer) all of that is removed.

use std::sync::Arc;
use std::time::Duration;

use api::{Condition, Subnet, SubnetStatus};
use ipnet::IpNet;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use ovsdb::models::ovn_northbound::LogicalRouter;
use serde_json::json;

use super::FINALIZER;
use crate::centralized_gateway;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ipam::{Record, RecordSource};
use crate::metrics::SubnetLabels;
use crate::subnet::validate;
use crate::topology::{self, acl, find, gateway};

/// How often a valid subnet's status counts are refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(15);
/// How soon a subnet whose Vlan is missing looks again.
const VLAN_RETRY: Duration = Duration::from_secs(5);
/// Kube-OVN's `--default-provider-name`: a Vlan without `provider` is on it.
const DEFAULT_PROVIDER_NETWORK: &str = "provider";

pub async fn reconcile(subnet: Arc<Subnet>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<Subnet> = Api::all(ctx.kube.clone());
    finalizer(&api, FINALIZER, subnet, |event| async {
        match event {
            Finalizer::Apply(subnet) => apply(&subnet, &ctx).await,
            Finalizer::Cleanup(subnet) => cleanup(&subnet, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn router_of(subnet: &Subnet, ctx: &Context) -> String {
    ctx.settings.names.router_of(subnet)
}

async fn apply(subnet: &Subnet, ctx: &Context) -> Result<Action> {
    let name = subnet.name_any();
    // Checked against the subnets created before it: of two overlapping subnets, the newer
    // one is refused, and the older one keeps working.
    let age = |s: &Subnet| (s.metadata.creation_timestamp.clone(), s.name_any());
    let others: Vec<Subnet> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .filter(|s| {
            s.name_any() != name && s.metadata.deletion_timestamp.is_none() && age(s) < age(subnet)
        })
        .map(|s| (**s).clone())
        .collect();
    let mut valid = match validate(subnet, &others, &ctx.settings.names) {
        Ok(valid) => valid,
        Err(conditions) => {
            let message = conditions
                .iter()
                .map(|c| c.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            refuse(ctx, subnet, "ValidationFailed", message, conditions).await?;
            return Ok(Action::await_change());
        }
    };
    // An underlay subnet: its Vlan gives the physical network and the tag.
    if subnet.spec.is_underlay() {
        let vlan = ctx
            .stores
            .vlans
            .get(&kube::runtime::reflector::ObjectRef::new(&subnet.spec.vlan));
        let Some(vlan) = vlan else {
            let message = format!("vlan {} does not exist", subnet.spec.vlan);
            let mut conditions = valid.conditions.clone();
            conditions.push(Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "VlanNotFound".into(),
                message: message.clone(),
                ..Condition::default()
            });
            refuse(ctx, subnet, "VlanNotFound", message, conditions).await?;
            return Ok(Action::requeue(VLAN_RETRY));
        };
        valid.plan.localnet = Some(topology::Localnet {
            network: if vlan.spec.provider.is_empty() {
                DEFAULT_PROVIDER_NETWORK.to_owned()
            } else {
                vlan.spec.provider.clone()
            },
            tag: vlan.spec.tag(),
            logical_gateway: subnet.spec.logical_gateway,
        });
    }
    // A subnet of an IPAM-only provider (another plugin's network on kovn's IPAM) has
    // addresses and nothing in OVN, as in Kube-OVN.
    let ipam_only = subnet.spec.is_ipam_only();
    let router = router_of(subnet, ctx);
    let router_exists = ctx
        .nb
        .client()
        .read(|c| find::<LogicalRouter>(c, &router).is_some());
    if !ipam_only && !router_exists {
        return Err(Error::SubnetNotReady(format!(
            "{name}: VPC router {router} missing"
        )));
    }

    // IPAM: a new pool, or the same pool re-shaped (changed excludeIps, a grown CIDR) with
    // every current holder re-claimed; holders that no longer fit are reported.
    let conflicts = {
        let mut ipam = ctx.ipam();
        let same = ipam.subnet(&name).is_some_and(|current| {
            current
                .pools()
                .iter()
                .map(|p| (p.cidr(), p.gateway()))
                .collect::<Vec<_>>()
                == valid
                    .allocator
                    .pools()
                    .iter()
                    .map(|p| (p.cidr(), p.gateway()))
                    .collect::<Vec<_>>()
        });
        if same {
            Vec::new()
        } else {
            let holders: Vec<Record> = ipam
                .allocations()
                .into_iter()
                .filter(|(_, a)| a.subnet == name)
                .map(|(owner, a)| Record {
                    source: RecordSource::IpObject,
                    owner,
                    subnet: name.clone(),
                    ips: a.ips,
                    mac: Some(a.mac),
                })
                .collect();
            ipam.remove_subnet(&name);
            ipam.add_subnet(valid.allocator.clone());
            ipam.restore(holders)
        }
    };
    for c in &conflicts {
        ctx.event(
            subnet,
            true,
            "AddressConflict",
            format!("{}: {}", c.record.owner, c.reason),
        )
        .await;
    }

    // An underlay subnet of the physical gateway is not on the router: no router policies
    // of its own.
    let cidrs = if subnet.spec.routed_by_physical_gateway() {
        Vec::new()
    } else {
        valid.plan.cidrs.clone()
    };
    let active = centralized_gateway::active_of(subnet, ctx);
    let previous = subnet
        .status
        .as_ref()
        .map(|s| s.activate_gateway.clone())
        .unwrap_or_default();
    if !previous.is_empty() && !active.nodes.is_empty() && active.status() != previous {
        ctx.event(
            subnet,
            true,
            "GatewayChanged",
            format!(
                "egress moved from {previous} to {} (gateway liveness changed)",
                active.status()
            ),
        )
        .await;
    }
    let centralized_hops = active.next_hops.clone();
    let mut allowed: Vec<IpNet> = subnet
        .spec
        .allow_subnets
        .iter()
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    allowed.extend(
        ctx.settings
            .node_switch_cidr
            .split(',')
            .filter_map(|c| c.trim().parse::<IpNet>().ok()),
    );
    let mut acls = acl::private_subnet_acls(subnet.spec.private, &valid.plan.cidrs, &allowed);
    acls.extend(acl::spec_acls(&subnet.spec.acls));
    if ctx.settings.enable_np && name != ctx.settings.names.join_subnet {
        acls.push(acl::conntrack_acl());
    }
    let plan = valid.plan.clone();
    let subnet_name = name.clone();
    if !ipam_only {
        ctx.nb
            .apply(move |cache, t| {
                topology::subnet_ops(cache, &plan, t);
                gateway::subnet_policy_ops(
                    cache,
                    t,
                    &plan.router,
                    &subnet_name,
                    &cidrs,
                    &centralized_hops,
                );
                let acl_sync = acl::subnet_acl_ops(cache, t, &subnet_name, acls.clone());
                if acl_sync.changed() {
                    // A new drop or a removed allow revokes traffic.
                    topology::bump_nb_cfg(t);
                }
                Ok(())
            })
            .await?;
    }

    let mut status = SubnetStatus {
        conditions: valid.conditions.clone(),
        activate_gateway: active.status(),
        ..SubnetStatus::default()
    };
    status.conditions.push(Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "ReconcileSucceeded".into(),
        ..Condition::default()
    });
    {
        let ipam = ctx.ipam();
        if let Some(pools) = ipam.subnet(&name) {
            for pool in pools.pools() {
                let (used, available) = (pool.used() as f64, pool.available() as f64);
                let v4 = pool.cidr().addr().is_ipv4();
                if v4 {
                    status.v4_using_ips = used;
                    status.v4_available_ips = available;
                } else {
                    status.v6_using_ips = used;
                    status.v6_available_ips = available;
                }
                let labels = SubnetLabels {
                    subnet_name: name.clone(),
                    protocol: if v4 { "IPv4" } else { "IPv6" }.into(),
                    subnet_cidr: pool.cidr().to_string(),
                };
                ctx.metrics.subnet_used.get_or_create(&labels).set(used);
                ctx.metrics
                    .subnet_available
                    .get_or_create(&labels)
                    .set(available);
            }
        }
    }
    write_status(ctx, subnet, status).await?;
    Ok(Action::requeue(STATUS_REFRESH))
}

/// A subnet that is not built: a warning event with `reason`, and `conditions` as its whole
/// status (nothing else is touched).
async fn refuse(
    ctx: &Context,
    subnet: &Subnet,
    reason: &str,
    message: String,
    conditions: Vec<Condition>,
) -> Result<()> {
    ctx.event(subnet, true, reason, message).await;
    write_status(
        ctx,
        subnet,
        SubnetStatus {
            conditions,
            ..SubnetStatus::default()
        },
    )
    .await
}

/// Writes the status if it differs from what the object shows (no write, no watch event, no
/// reconcile loop).
async fn write_status(ctx: &Context, subnet: &Subnet, status: SubnetStatus) -> Result<()> {
    let strip = |s: &SubnetStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    if subnet.status.as_ref().map(strip) == Some(strip(&status)) {
        return Ok(());
    }
    let api: Api<Subnet> = Api::all(ctx.kube.clone());
    api.patch_status(
        &subnet.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn cleanup(subnet: &Subnet, ctx: &Context) -> Result<Action> {
    let name = subnet.name_any();
    let router = router_of(subnet, ctx);
    ctx.ipam().remove_subnet(&name);
    ctx.nb
        .apply(move |cache, t| {
            topology::delete_subnet_ops(cache, t, &name, &router);
            Ok(())
        })
        .await?;
    Ok(Action::await_change())
}
