//! The sandbox with real OVN/OVS: pods reach each other on one node and across nodes (over
//! Geneve on the fabric), without loss or duplicates, and teardown leaves nothing behind.

use sandbox::traffic::{self, Capture};
use sandbox::{Pod, Sandbox, SandboxConfig, netns};

/// Geneve's UDP port.
const GENEVE_PORT: u16 = 6081;
const PINGS: u32 = 10;

/// ICMP without loss or duplicates, then one second of TCP.
fn assert_pods_talk(from: &Pod, to: &Pod, label: &str) {
    let ping = traffic::ping(from, to.ip, PINGS).expect("ping");
    assert_eq!(
        ping.transmitted, PINGS,
        "{label}: ping needed retries: {ping:?}"
    );
    assert_eq!(ping.received, PINGS, "{label}: ping lost packets: {ping:?}");
    assert_eq!(ping.duplicates, 0, "{label}: ping saw duplicates: {ping:?}");
    let tcp = traffic::iperf3(from, to, 1).expect("iperf3");
    assert!(
        tcp.bits_per_second > 1e6,
        "{label}: TCP barely moved: {tcp:?}"
    );
}

#[test]
fn pods_connect_on_one_node_and_across_nodes_over_geneve() {
    if !sandbox::privileged("pods_connect_on_one_node_and_across_nodes_over_geneve") {
        return;
    }
    let mut sb = Sandbox::start(SandboxConfig::default()).expect("sandbox starts");
    let a = sb.add_pod(0, "a").expect("pod a on n0");
    let b = sb.add_pod(0, "b").expect("pod b on n0");
    let c = sb.add_pod(1, "c").expect("pod c on n1");
    let geneve_capture = |file: &str| {
        Capture::start(
            &sb.fabric_netns(),
            sb.fabric_bridge(),
            &format!("udp port {GENEVE_PORT}"),
            sb.dir().join(file),
        )
        .expect("capture on the fabric")
    };

    // Same node: never touches the fabric.
    let capture = geneve_capture("same-node.pcap");
    assert_pods_talk(&a, &b, "same node a -> b");
    let geneve = capture.stop().expect("capture stops");
    assert_eq!(
        geneve, 0,
        "same-node traffic crossed the fabric ({geneve} Geneve packets)"
    );

    // Across nodes: crosses the fabric as Geneve, in both directions.
    let capture = geneve_capture("cross-node.pcap");
    assert_pods_talk(&a, &c, "cross node a -> c");
    assert_pods_talk(&c, &a, "cross node c -> a");
    let geneve = capture.stop().expect("capture stops");
    // Echo requests and replies of both pings at least, plus the TCP streams.
    assert!(
        geneve >= u64::from(4 * PINGS),
        "only {geneve} Geneve packets crossed the fabric"
    );

    sb.check_daemons().expect("every daemon still runs");
    let report = sb.teardown().expect("teardown");

    let left = netns::list().expect("list namespaces");
    for ns in &report.namespaces {
        assert!(!left.contains(ns), "namespace {ns} left behind");
    }
    for pid in &report.pids {
        assert!(sandbox::process_gone(*pid), "process {pid} left behind");
    }
    assert!(
        !report.dir.exists(),
        "sandbox directory {} left behind",
        report.dir.display()
    );
    assert!(!report.bpffs_dir.exists(), "pinned BPF objects left behind");
}
