//! An OvnEip's lifecycle: an address (and MAC) of its external subnet — `externalSubnet`, or
//! the external gateway ConfigMap's `external-gw-switch` — held in IPAM by the EIP itself
//! ([`Owner::Eip`]), recorded in its status (from which a restarted controller restores it),
//! released through the finalizer. The status also names the rules using it (`nat`).
//! Nothing in NB: the rules and VPC external ports that use the address write their own rows.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::{OvnEip, OvnEipStatus, Owner};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};

use super::FINALIZER;
use super::ovn_nat::{Refusal, conditions};
use crate::context::Context;
use crate::error::{Error, Result};

/// Rules starting or stopping to use the EIP trigger nothing here: `nat` is refreshed this
/// often.
const STATUS_REFRESH: Duration = Duration::from_secs(10);
/// A refused EIP (its subnet not there yet) is looked at again this often.
const RETRY: Duration = Duration::from_secs(2);

pub async fn reconcile(eip: Arc<OvnEip>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<OvnEip> = Api::all(ctx.kube.clone());
    finalizer(&api, FINALIZER, eip, |event| async {
        match event {
            Finalizer::Apply(eip) => apply(&eip, &ctx).await,
            Finalizer::Cleanup(eip) => {
                ctx.ipam().release(&Owner::eip(eip.name_any()));
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The external subnet an EIP takes its address from.
pub fn subnet_of(eip: &OvnEip, ctx: &Context) -> String {
    if eip.spec.external_subnet.is_empty() {
        ctx.stores.external_gateway().switch
    } else {
        eip.spec.external_subnet.clone()
    }
}

/// The kinds of rules using `eip` (`fip`, `snat`, `dnat`), as Kube-OVN's `status.nat`.
fn nat_users(ctx: &Context, eip: &str) -> String {
    let mut kinds = Vec::new();
    if ctx
        .stores
        .ovn_fips
        .state()
        .iter()
        .any(|r| r.spec.ovn_eip == eip)
    {
        kinds.push("fip");
    }
    if ctx
        .stores
        .ovn_snat_rules
        .state()
        .iter()
        .any(|r| r.spec.ovn_eip == eip)
    {
        kinds.push("snat");
    }
    if ctx
        .stores
        .ovn_dnat_rules
        .state()
        .iter()
        .any(|r| r.spec.ovn_eip == eip)
    {
        kinds.push("dnat");
    }
    kinds.join(",")
}

/// The address (IPv4) and MAC `owner` holds in external subnet `subnet`, allocated if it
/// holds none there yet (`v4_ip` and `mac` as the object asks, empty: any). An EIP that asks
/// for another address than it holds moves to it. Shared by OvnEip and IptablesEIP.
pub fn allocate_eip(
    ctx: &Context,
    owner: &Owner,
    subnet: &str,
    v4_ip: &str,
    mac: &str,
) -> std::result::Result<(IpAddr, String), Refusal> {
    let wanted: Vec<IpAddr> =
        match v4_ip {
            "" => Vec::new(),
            ip => vec![ip.parse().map_err(|e| {
                Refusal::new("InvalidV4Ip", format!("{ip:?} is not an address: {e}"))
            })?],
        };
    let mac = Some(mac).filter(|m| !m.is_empty());
    let mut ipam = ctx.ipam();
    if ipam.subnet(subnet).is_none() {
        return Err(Refusal::new(
            "SubnetNotFound",
            format!("external subnet {subnet} does not exist (or is not valid)"),
        ));
    }
    let allocation = match ipam.lookup(owner) {
        Some(held) if held.subnet == subnet && (wanted.is_empty() || held.ips == wanted) => held,
        held => {
            if held.is_some() {
                ipam.release(owner);
            }
            ipam.allocate(subnet, owner, &wanted, mac)
                .map_err(|e| Refusal::new("AllocationFailed", e.to_string()))?
        }
    };
    let v4 = allocation
        .ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| {
            Refusal::new(
                "NoIpv4",
                format!("external subnet {subnet} has no IPv4 range"),
            )
        })?;
    Ok((v4, allocation.mac))
}

async fn apply(eip: &OvnEip, ctx: &Context) -> Result<Action> {
    let name = eip.name_any();
    let outcome = allocate_eip(
        ctx,
        &Owner::eip(&name),
        &subnet_of(eip, ctx),
        &eip.spec.v4_ip,
        &eip.spec.mac_address,
    );
    let (v4, mac, action) = match &outcome {
        Ok((v4, mac)) => (v4.to_string(), mac.clone(), Action::requeue(STATUS_REFRESH)),
        Err(r) => {
            ctx.event(eip, true, r.reason, r.message.clone()).await;
            (String::new(), String::new(), Action::requeue(RETRY))
        }
    };
    let status = OvnEipStatus {
        conditions: conditions(outcome.as_ref().err(), eip.spec.unsupported_fields()),
        r#type: eip.spec.usage().to_owned(),
        nat: nat_users(ctx, &name),
        ready: outcome.is_ok(),
        v4_ip: v4,
        v6_ip: String::new(),
        mac_address: mac,
    };
    super::write_status(ctx, eip, eip.status.as_ref(), &status).await?;
    Ok(action)
}
