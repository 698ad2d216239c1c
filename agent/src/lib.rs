//! kovn-agent, the node agent: the CNI server (`cni_server`), the pod's interfaces
//! (`pod_network`) and OVS ports (`ovs`), the node's own attachment (`node_setup`), the eBPF
//! datapath and its upkeep (`datapath`), the Service balancer's sync (`services`), metrics and
//! readiness, and the node's cleanup on uninstall (`uninstall`). See DESIGN.md.

pub mod cni_server;
pub mod daemon;
pub mod datapath;
pub mod egress_gateway;
pub mod local_pod;
pub mod metrics;
pub mod netlink;
pub mod node_setup;
pub mod ovs;
pub mod pod_network;
pub mod probe_proxy;
pub mod provider_networks;
pub mod readiness;
pub mod services;
pub mod split_uplink;
pub mod tunnel;
pub mod uninstall;
