//! Shared by the agent's integration tests.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use sandbox::{Cmd, Node, Pod, Sandbox, netns};

/// Starts `kovn-agent datapath run` in node 0 of `sb` (network namespace only, so its pins
/// land on the host's bpffs) for `pods`, with `extra` arguments, and waits for "ready".
pub fn start_agent(sb: &Sandbox, pods: &[&Pod], extra: &[String]) -> Child {
    let node = sb.node(0);
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .args(["datapath", "run", "--pin-dir"])
        .arg(sb.bpffs_dir().join(&node.name).display().to_string())
        .args(["--metrics-addr", "127.0.0.1:10665"])
        .args(extra.iter().cloned())
        .netns_keep_mounts(&node.netns);
    for pod in pods {
        cmd = cmd.arg("--pod").arg(format!(
            "{},{},{},{},{}",
            pod.lsp, pod.host_veth, pod.ovs_peer, pod.ip, pod.mac
        ));
    }
    let mut child = cmd
        .to_command()
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kovn-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read kovn-agent's output");
    assert_eq!(line.trim(), "ready", "kovn-agent did not come up");
    child
}

/// Runs `f` on a runtime inside `node`'s namespace (where the agent runs).
pub fn on_node<T: Send>(node: &Node, f: impl AsyncFnOnce() -> T + Send) -> T {
    netns::run_in(&node.netns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .expect("node namespace")
}

/// How many learned flows in the agent's pinned flow map (under `pins`) are from or to `ip`.
pub fn flows_involving(pins: &std::path::Path, ip: std::net::Ipv4Addr) -> usize {
    use agent::datapath::{PinnedMaps, ReadMaps};
    let mapped = ip.to_ipv6_mapped().octets();
    PinnedMaps::open(pins)
        .expect("pinned maps")
        .flows()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.src == mapped || k.dst == mapped)
        .count()
}
