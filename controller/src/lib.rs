//! kovn-controller. So far: IPAM (`ipam`), the part that must never hand out an address
//! twice, and the OVN logical topology of subnets and pod ports (`topology`). The Kubernetes
//! side follows (issue: controller).

pub mod ipam;
pub mod pod;
pub mod subnet;
pub mod topology;
