//! The `kube-ovn` CNI plugin, as a library so its parts are testable: the CNI side (the
//! kubelet's environment and stdin, results and errors in every supported version) and the
//! agent side (Kube-OVN's JSON over the agent's unix socket).
//!
//! The plugin holds no state and does no networking itself: it forwards ADD, DEL, CHECK, GC and
//! STATUS to kovn-agent and turns its answer into what the CNI spec requires.

pub mod agent_client;
pub mod error;
pub mod invocation;
pub mod netconf;
pub mod result;
pub mod wire;
