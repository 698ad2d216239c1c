//! kovn-controller. So far: IPAM (`ipam`), the part that must never hand out an address
//! twice. The Kubernetes side and the OVN topology follow (issue: controller).

pub mod ipam;
