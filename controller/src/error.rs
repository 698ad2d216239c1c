//! The controller's errors. Every reconcile error is retried with per-object backoff.

use crate::ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("OVN Northbound: {0}")]
    Nb(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("{0}")]
    BadAnnotation(String),
    /// A spec kovn cannot write to OVN as it is.
    #[error("{0}")]
    BadSpec(String),
    #[error("subnet {0} is not ready")]
    SubnetNotReady(String),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    #[error("leader election: {0}")]
    Lease(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
