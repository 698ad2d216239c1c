//! Kube-OVN's VPC NAT gateway objects, served with OVN's NAT on the VPC's router instead of
//! an iptables pod (the README says why): a `VpcNatGateway` gives its VPC the router port on
//! the external subnet that `enableExternal` gives (see [`super::vpc`]); an `IptablesEIP` is an
//! address of the external subnet held in IPAM by the EIP ([`Owner::IptablesEip`]); the
//! `Iptables*Rule`s become the same NAT rows and port forwards as the OVN-native rules
//! ([`super::ovn_nat`]). The fields that describe the gateway pod are named `Unsupported`.

use std::sync::Arc;
use std::time::Duration;

use api::{IptablesEIP, IptablesEIPStatus, Owner, VpcNatGateway, VpcNatGatewayStatus};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::FINALIZER;
use super::ovn_eip::allocate_eip;
use super::ovn_nat::{Refusal, conditions};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::topology::find;
use crate::topology::nat::external_router_port;
use ovsdb::models::ovn_northbound::LogicalRouterPort;

const REFRESH: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

/// The external subnet of an IptablesEIP: its own, else its gateway's first, else the
/// external gateway ConfigMap's.
pub fn subnet_of(eip: &IptablesEIP, ctx: &Context) -> String {
    if !eip.spec.external_subnet.is_empty() {
        return eip.spec.external_subnet.clone();
    }
    ctx.stores
        .vpc_nat_gateways
        .get(&ObjectRef::new(&eip.spec.nat_gw_dp))
        .and_then(|g| g.spec.external_subnets.first().cloned())
        .unwrap_or_else(|| ctx.stores.external_gateway().switch)
}

/// The VPC an IptablesEIP's gateway serves.
pub fn vpc_of(eip: &IptablesEIP, ctx: &Context) -> std::result::Result<String, Refusal> {
    let gateway = &eip.spec.nat_gw_dp;
    ctx.stores
        .vpc_nat_gateways
        .get(&ObjectRef::new(gateway))
        .map(|g| g.spec.vpc.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Refusal::new(
                "NatGatewayNotFound",
                format!("vpc-nat-gateway {gateway:?} does not exist or names no vpc"),
            )
        })
}

pub async fn reconcile_eip(eip: Arc<IptablesEIP>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<IptablesEIP> = Api::all(ctx.kube.clone());
    finalizer(&api, FINALIZER, eip, |event| async {
        match event {
            Finalizer::Apply(eip) => apply_eip(&eip, &ctx).await,
            Finalizer::Cleanup(eip) => {
                ctx.ipam().release(&Owner::iptables_eip(eip.name_any()));
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The kinds of rules using the EIP, as Kube-OVN's `status.nat`.
fn nat_users(ctx: &Context, eip: &str) -> String {
    let s = &ctx.stores;
    let mut kinds = Vec::new();
    if s.iptables_fip_rules
        .state()
        .iter()
        .any(|r| r.spec.eip == eip)
    {
        kinds.push("fip");
    }
    if s.iptables_snat_rules
        .state()
        .iter()
        .any(|r| r.spec.eip == eip)
    {
        kinds.push("snat");
    }
    if s.iptables_dnat_rules
        .state()
        .iter()
        .any(|r| r.spec.eip == eip)
    {
        kinds.push("dnat");
    }
    kinds.join(",")
}

async fn apply_eip(eip: &IptablesEIP, ctx: &Context) -> Result<Action> {
    let name = eip.name_any();
    let outcome = vpc_of(eip, ctx).and_then(|_| {
        allocate_eip(
            ctx,
            &Owner::iptables_eip(&name),
            &subnet_of(eip, ctx),
            &eip.spec.v4ip,
            &eip.spec.mac_address,
        )
    });
    if let Err(r) = &outcome {
        ctx.event(eip, true, r.reason, r.message.clone()).await;
    }
    let status = IptablesEIPStatus {
        conditions: conditions(outcome.as_ref().err(), eip.spec.unsupported_fields()),
        ready: outcome.is_ok(),
        ip: outcome
            .as_ref()
            .map(|(ip, _)| ip.to_string())
            .unwrap_or_default(),
        nat: nat_users(ctx, &name),
        ..IptablesEIPStatus::default()
    };
    super::write_status(ctx, eip, eip.status.as_ref(), &status).await?;
    Ok(Action::requeue(if outcome.is_ok() {
        REFRESH
    } else {
        RETRY
    }))
}

/// A gateway's status: `Ready` once its VPC has the router port on the external subnet.
pub async fn reconcile_gateway(gw: Arc<VpcNatGateway>, ctx: Arc<Context>) -> Result<Action> {
    let switch = ctx.stores.external_gateway().switch;
    let vpc = gw.spec.vpc.clone();
    let refusal = if vpc.is_empty() {
        Some(Refusal::new("VpcNotFound", "vpc is not set"))
    } else if gw
        .spec
        .external_subnets
        .first()
        .is_some_and(|s| *s != switch)
    {
        Some(Refusal::new(
            "ExternalSubnetNotServed",
            format!(
                "kovn connects VPCs to the external gateway's subnet {switch} only, not {:?}",
                gw.spec.external_subnets
            ),
        ))
    } else {
        let port = external_router_port(&vpc, &switch);
        let present = ctx
            .nb
            .client()
            .read(|c| find::<LogicalRouterPort>(c, &port).is_some());
        (!present).then(|| {
            Refusal::new(
                "ExternalPortPending",
                format!("vpc {vpc} has no port on external subnet {switch} yet (see the Vpc's ExternalGateway condition)"),
            )
        })
    };
    let status = VpcNatGatewayStatus {
        external_subnets: vec![switch],
        conditions: conditions(refusal.as_ref(), gw.spec.unsupported_fields()),
        ..VpcNatGatewayStatus::default()
    };
    super::write_status(&ctx, &*gw, gw.status.as_ref(), &status).await?;
    Ok(Action::requeue(if refusal.is_some() {
        RETRY
    } else {
        REFRESH
    }))
}
