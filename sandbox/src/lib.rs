//! A local kovn cluster for tests, the demo and the benchmark: OVN central and N nodes (own
//! OVS with the userspace datapath and own ovn-controller each) in network namespaces on a
//! shared fabric, fixture pods as namespaces, supervision of every process, and teardown that
//! leaves nothing behind. A test fixture, never shipped.

mod central;
mod cluster;
pub mod cmd;
mod db_server;
mod error;
pub mod kovn;
pub mod kube_api;
pub mod kubelet;
pub mod netns;
mod node;
mod ovs;
pub mod pki;
mod pod;
pub mod registry;
mod supervisor;
pub mod traffic;

pub use central::{Central, NB_PORT, SB_PORT};
pub use cluster::{
    CLUSTER_ROUTER, DEFAULT_GATEWAY, DEFAULT_SUBNET, DEFAULT_SUBNET_CIDR, EXTERNAL_GATEWAY,
    EXTERNAL_NIC, ExternalNetwork, Handoff, Sandbox, SandboxConfig, TeardownReport,
};
pub use cmd::Cmd;
pub use db_server::{RaftCluster, ServerSsl, StandaloneDb};
pub use error::{Result, SandboxError};
pub use node::{INTEGRATION_BRIDGE, Node, NodeDaemons, NodeLaunch, NodeLauncher, PHYSICAL_BRIDGE};
pub use ovs::{Ctl, wait_until};
pub use pod::{POD_MTU, POD_NAMESPACE, Pod, mac_for};

/// Kernel memory of every BPF map on the machine (bpftool's `bytes_memlock`), in bytes.
pub fn bpf_map_memory() -> Result<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .map_err(|e| SandboxError::Invalid(format!("bpftool: {e}")))?;
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| SandboxError::Invalid(format!("bpftool's JSON: {e}")))?;
    Ok(maps
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["bytes_memlock"].as_u64()).sum())
        .unwrap_or(0))
}

/// Gate for privileged tests (netns, BPF, OVS). Returns true when the test may run.
///
/// As root it returns true. Without root it fails the test when `CI=true` (CI must run every
/// privileged test), and otherwise prints a loud notice and returns false so the caller skips.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: privileged test needs root, and CI=true forbids skipping it");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: privileged test (netns, BPF, OVS) needs root; \
         run `sudo cargo xtask test` !!!!!!!!\n"
    );
    false
}

/// True when process `pid` no longer runs: it is gone, or it is a zombie waiting for its parent
/// (an orphaned daemon is reaped by init, a moment after it was killed).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}
