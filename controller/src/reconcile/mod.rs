//! One reconciler per Kubernetes kind, each a function of the object and the observed state
//! (reflector stores, the NB cache, IPAM) that is safe to run any number of times.

pub mod attachment;
pub mod network_policy;
pub mod node;
pub mod ovn_eip;
pub mod ovn_nat;
pub mod pod;
pub mod provider_network;
pub mod service;
pub mod subnet;
pub mod vpc;
pub mod vpc_nat_gateway;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use api::{GatewayType, Owner, Subnet, annotations};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::{Context, Settings};
use crate::error::Error;
use crate::ipam::Allocation;
use crate::pod::{annotations_for, static_ips};

/// Kube-OVN's finalizer on Subnets and Vpcs.
pub const FINALIZER: &str = "kubeovn.io/kube-ovn-controller";

/// Retries a failed object with its own exponential backoff.
pub fn error_policy<K: kube::Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = format!("{}/{}", K::kind(&()), object.name_any());
    let delay = ctx.backoff(&key);
    tracing::warn!(object = %key, %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The addresses `owner` (a pod or a node) holds in `subnet`, allocating them if it holds none
/// there yet, and the annotations that describe them. Static addresses come from the object's
/// own annotations: a user's request, or this controller's earlier allocation (which is what
/// makes a restart without IP objects safe). Idempotent.
pub fn allocate_for(
    ctx: &Context,
    subnet: &str,
    owner: &Owner,
    object_annotations: &BTreeMap<String, String>,
) -> Result<(Allocation, BTreeMap<String, String>), Error> {
    allocate_network(
        ctx,
        subnet,
        owner,
        object_annotations,
        &annotations::NetworkKeys::of(owner.provider()),
    )
}

/// As [`allocate_for`], with the annotation keys of the owner's network (a pod's attachment
/// reads its static addresses from, and is described in, `<provider>.kubernetes.io/*`).
pub fn allocate_network(
    ctx: &Context,
    subnet: &str,
    owner: &Owner,
    object_annotations: &BTreeMap<String, String>,
    keys: &annotations::NetworkKeys,
) -> Result<(Allocation, BTreeMap<String, String>), Error> {
    let wanted_ips = static_ips(
        object_annotations
            .get(&keys.ip_address)
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(Error::BadAnnotation)?;
    let wanted_mac = object_annotations.get(&keys.mac_address);
    let mut ipam = ctx.ipam();
    if ipam.subnet(subnet).is_none() {
        return Err(Error::SubnetNotReady(subnet.to_owned()));
    }
    let allocation = match ipam.lookup(owner) {
        Some(held) if held.subnet == subnet => held,
        _ => ipam.allocate(subnet, owner, &wanted_ips, wanted_mac.map(String::as_str))?,
    };
    let pools = ipam
        .subnet(subnet)
        .ok_or_else(|| Error::SubnetNotReady(subnet.to_owned()))?;
    let desired = annotations_for(&allocation, pools, keys);
    Ok((allocation, desired))
}

/// Whether a subnet's traffic leaves through each pod's own node (distributed gateway of the
/// default VPC): its pods belong to their node's port group.
pub fn uses_node_gateway(subnet: &Subnet, settings: &Settings) -> bool {
    subnet.spec.gateway_type == GatewayType::Distributed
        && settings.names.in_default_vpc(subnet)
        && subnet.name_any() != settings.names.join_subnet
}

/// Writes `status` as the status of cluster-scoped `object` (a merge patch of the status
/// subresource) unless `current`, what the object shows, is that already.
pub async fn write_status<K, S>(
    ctx: &Context,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: PartialEq + serde::Serialize,
{
    if current == Some(status) {
        return Ok(());
    }
    kube::Api::<K>::all(ctx.kube.clone())
        .patch_status(
            &object.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// Runs a reconciler with metrics and backoff bookkeeping.
pub async fn measured<K, F, Fut>(object: Arc<K>, ctx: Arc<Context>, f: F) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let kind = K::kind(&()).to_string();
    let key = format!("{kind}/{}", object.name_any());
    let started = Instant::now();
    let result = f(object, ctx.clone()).await;
    ctx.metrics
        .reconciled(&kind, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}
