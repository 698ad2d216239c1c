//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: take the lease
//! when it is free or expired, renew it well within its duration, and stop (let Kubernetes
//! restart the pod) when it cannot be renewed: two leaders would allocate from one pool.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, Result};

pub const LEASE_NAME: &str = "kube-ovn-controller";

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = &spec.renew_time else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed.as_second() + seconds < now.as_second()
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, identity: &str, duration: Duration) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// One attempt: `Ok(true)` when this instance holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(15);
        match self.api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let mine = spec.holder_identity.as_deref() == Some(&self.identity);
                if !mine && !expired(spec, now) {
                    return Ok(false);
                }
                if !mine {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(seconds);
                // The resourceVersion in `lease` makes this a compare-and-swap.
                match self
                    .api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Waits until this instance is the leader.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews until the lease is lost; returns the reason.
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return Error::Lease("another instance holds the lease".into()),
                Err(e) if last_renewal.elapsed() > self.duration => {
                    return Error::Lease(format!("not renewed within {:?}: {e}", self.duration));
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    }
}
