//! kovn-controller: Kubernetes objects (Pods, Namespaces, Nodes, and Kube-OVN's Subnet, Vpc and
//! IP) to OVN's logical topology, with IPAM that never hands out an address twice.
//!
//! Reading order: `run` (start-up, restore, wiring) → `reconcile::*` (one lifecycle per kind)
//! → `topology` (the NB rows, as pure functions of the cache) → `nb` (batched writes) and
//! `ipam`.

pub mod centralized_gateway;
pub mod context;
pub mod error;
pub mod ipam;
pub mod leader;
pub mod metrics;
pub mod nb;
pub mod network_policy;
pub mod pod;
pub mod reconcile;
pub mod run;
pub mod subnet;
pub mod topology;
