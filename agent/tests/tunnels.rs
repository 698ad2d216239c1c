//! Tunnels as Kube-OVN chooses them: Geneve (the default) or VXLAN (`--encap-type`), the pod
//! MTU derived from the tunnel interface's MTU less the encapsulation's overhead (Geneve 100,
//! VXLAN 50), the tunnel interface named by `--iface` (names or regular expressions) or by the
//! node's `ovn.kubernetes.io/tunnel_interface`. For each encapsulation, on two nodes: the pods'
//! MTU, a full-size packet with DF across nodes (one byte more is refused at the sender),
//! cross-node TCP, and the packets on the fabric in that encapsulation (counted by a capture on
//! the fabric's switch). The Geneve cluster's nodes name their tunnel NICs differently: node 0
//! finds its own by `--iface`'s pattern, node 1 (whose NIC the pattern does not match, which
//! would stop its agent) names its own in its Node annotation.

mod common;

use sandbox::kovn::{KovnCluster, NodeOptions, RunningPod};
use sandbox::{Cmd, traffic};

/// The sandbox nodes' tunnel interface (it holds the fabric address) and its MTU.
const TUNNEL_LINK_MTU: u32 = 1500;

fn mtu_of(pod: &RunningPod) -> u32 {
    let link = Cmd::new("ip")
        .args(["-o", "link", "show", "eth0"])
        .netns(&pod.netns)
        .run()
        .unwrap();
    link.split(" mtu ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|m| m.parse().ok())
        .unwrap()
}

/// A ping of `size` payload bytes with DF from `from` to `to` (true: answered).
fn ping_df(from: &RunningPod, to: &RunningPod, size: u32) -> bool {
    Cmd::new("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "-q", "-M", "do", "-s"])
        .arg(size.to_string())
        .arg(to.ip.to_string())
        .netns(&from.netns)
        .run()
        .is_ok_and(|out| out.contains(" 3 received"))
}

fn check(encap: &str, port: u16, overhead: u32, nodes: &[NodeOptions], agent_args: &[&str]) {
    let cluster = KovnCluster::start_with_nodes(nodes, common::binaries(), agent_args)
        .expect("kovn on a sandbox");
    let vsctl = cluster.sb.node(0).vsctl();
    let ids = vsctl
        .run(["get", "Open_vSwitch", ".", "external_ids:ovn-encap-type"])
        .unwrap();
    assert_eq!(ids.trim(), encap);
    let a = cluster.start_pod("a", 0).expect("pod a");
    let b = cluster.start_pod("b", 1).expect("pod b");
    let mtu = TUNNEL_LINK_MTU - overhead;
    assert_eq!((mtu_of(&a), mtu_of(&b)), (mtu, mtu), "{encap}: pod MTU");
    let capture = traffic::Capture::start(
        &cluster.sb.fabric_netns(),
        cluster.sb.fabric_bridge(),
        &format!("udp port {port}"),
        cluster.sb.dir().join(format!("{encap}.pcap")),
    )
    .unwrap();
    // IPv4 and ICMP headers: 28 bytes of the MTU.
    assert!(
        ping_df(&a, &b, mtu - 28),
        "{encap}: a full-size packet does not cross nodes"
    );
    assert!(
        !ping_df(&a, &b, mtu - 27),
        "{encap}: a packet over the MTU left the pod"
    );
    let tcp = traffic::iperf3(&a.as_pod(&cluster), &b.as_pod(&cluster), 1).expect("TCP");
    assert!(tcp.bits_per_second > 1e6, "{encap}: {tcp:?}");
    let tunnelled = capture.stop().unwrap();
    assert!(
        tunnelled >= 50,
        "{encap}: only {tunnelled} packets on udp port {port}"
    );
    eprintln!(
        "{encap}: pod MTU {mtu}, cross-node TCP {:.2} Gbit/s, {tunnelled} packets tunnelled",
        tcp.bits_per_second / 1e9
    );
    cluster.teardown().expect("teardown");
}

#[test]
fn vxlan_and_geneve_tunnels_carry_full_size_packets_across_nodes() {
    if !sandbox::privileged("vxlan_and_geneve_tunnels_carry_full_size_packets_across_nodes") {
        return;
    }
    let same_names = [NodeOptions::default(), NodeOptions::default()];
    check(
        "vxlan",
        4789,
        50,
        &same_names,
        &["--encap-type=vxlan", "--iface=eth9,br-p[a-z]+"],
    );
    let own_names = [
        NodeOptions::default(),
        NodeOptions {
            uplink: Some("uplink0".into()),
            annotations: vec![(
                "ovn.kubernetes.io/tunnel_interface".into(),
                "uplink0".into(),
            )],
        },
    ];
    check("geneve", 6081, 100, &own_names, &["--iface=br-p[a-z]+"]);
}
