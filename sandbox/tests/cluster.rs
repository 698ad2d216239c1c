//! The sandbox with real OVN/OVS: pods reach each other on one node and across nodes (over
//! Geneve on the fabric), without duplicates, and teardown leaves nothing behind.

use sandbox::traffic::{self, Capture};
use sandbox::{Sandbox, SandboxConfig, netns};

/// Geneve's UDP port.
const GENEVE_PORT: u16 = 6081;

#[test]
fn pods_connect_on_one_node_and_across_nodes_over_geneve() {
    if !sandbox::privileged("pods_connect_on_one_node_and_across_nodes_over_geneve") {
        return;
    }
    let mut sb = Sandbox::start(SandboxConfig { nodes: 2 }).expect("sandbox starts");
    let a = sb.add_pod(0, "a").expect("pod a on n0");
    let b = sb.add_pod(0, "b").expect("pod b on n0");
    let c = sb.add_pod(1, "c").expect("pod c on n1");

    // Same node: ICMP without loss or duplicates, then TCP.
    let same = traffic::ping(&a, b.ip, 10).expect("ping a -> b");
    assert_eq!(
        same.received, same.transmitted,
        "same-node ping lost packets: {same:?}"
    );
    assert_eq!(
        same.duplicates, 0,
        "same-node ping saw duplicates: {same:?}"
    );
    let tcp = traffic::iperf3(&a, &b, 1).expect("iperf3 a -> b");
    assert!(
        tcp.bits_per_second > 1e6,
        "same-node TCP barely moved: {tcp:?}"
    );

    // Across nodes: the traffic must cross the fabric as Geneve.
    let capture_file = sb.dir().join("fabric-geneve.pcap");
    let capture = Capture::start(
        &sb.fabric_netns(),
        sb.fabric_bridge(),
        &format!("udp port {GENEVE_PORT}"),
        capture_file,
    )
    .expect("capture on the fabric");
    let cross = traffic::ping(&a, c.ip, 10).expect("ping a -> c");
    assert_eq!(
        cross.received, cross.transmitted,
        "cross-node ping lost packets: {cross:?}"
    );
    assert_eq!(
        cross.duplicates, 0,
        "cross-node ping saw duplicates: {cross:?}"
    );
    let tcp = traffic::iperf3(&c, &a, 1).expect("iperf3 c -> a");
    assert!(
        tcp.bits_per_second > 1e6,
        "cross-node TCP barely moved: {tcp:?}"
    );
    let geneve = capture.stop().expect("capture stops");
    // 10 echo requests and 10 replies at least, plus the TCP stream.
    assert!(
        geneve >= 20,
        "only {geneve} Geneve packets crossed the fabric"
    );

    sb.check_daemons().expect("every daemon still runs");
    let report = sb.teardown().expect("teardown");

    let left = netns::list().expect("list namespaces");
    for ns in &report.namespaces {
        assert!(!left.contains(ns), "namespace {ns} left behind");
    }
    for pid in &report.pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left behind"
        );
    }
    assert!(
        !report.dir.exists(),
        "sandbox directory {} left behind",
        report.dir.display()
    );
    assert!(!report.bpffs_dir.exists(), "pinned BPF objects left behind");
}
