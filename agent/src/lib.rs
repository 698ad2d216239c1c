//! kovn-agent, the node agent. So far it owns the eBPF datapath loader; the CNI server, OVS
//! plumbing and the Kubernetes side follow (see DESIGN.md).

pub mod cni_server;
pub mod daemon;
pub mod datapath;
pub mod local_pod;
pub mod metrics;
pub mod netlink;
pub mod node_setup;
pub mod ovs;
pub mod pod_network;
pub mod readiness;
pub mod services;
