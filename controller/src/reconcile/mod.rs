//! One reconciler per Kubernetes kind, each a function of the object and the observed state
//! (reflector stores, the NB cache, IPAM) that is safe to run any number of times.

pub mod node;
pub mod pod;
pub mod subnet;
pub mod vpc;

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::Context;
use crate::error::Error;

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
