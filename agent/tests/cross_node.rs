//! Across nodes, what the datapath learns from OVS (the first step of the cross-node fast
//! path): the tunnel observer on the NIC a node's tunnels leave through records, per flow of a
//! local pod, the encapsulation OVS emitted — outer addresses and UDP port of the peer node,
//! Geneve's VNI and OVN's option, the inner frame's MACs as OVN rewrote them. Nothing is
//! replayed yet: the packets themselves are unchanged (no duplicates, none lost).

mod common;

use std::net::Ipv4Addr;

use agent::datapath::{PinnedMaps, ReadMaps};
use datapath_common::{GENEVE_PORT, Reason, TunnelEntry, ipv4_mapped};
use sandbox::Cmd;
use sandbox::kovn::KovnCluster;
use sandbox::kubelet::PodSandbox;

fn ifindex_of(netns: &str, link: &str) -> u32 {
    let out = Cmd::new("ip")
        .args(["-o", "link", "show", link])
        .netns(netns)
        .run()
        .unwrap();
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// The outer IPv4 source and destination, UDP destination port and Geneve VNI of `entry`.
fn outer(entry: &TunnelEntry) -> (Ipv4Addr, Ipv4Addr, u16, u32) {
    let h = &entry.header;
    let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    let dport = u16::from_be_bytes([h[36], h[37]]);
    let vni = u32::from_be_bytes([0, h[46], h[47], h[48]]);
    (src, dst, dport, vni)
}

#[test]
fn the_encapsulation_ovs_emits_for_a_local_pods_flow_is_learned_on_the_sending_node() {
    if !sandbox::privileged(
        "the_encapsulation_ovs_emits_for_a_local_pods_flow_is_learned_on_the_sending_node",
    ) {
        return;
    }
    let cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    let a = cluster.start_pod("xa", 0).expect("pod a");
    let b = cluster.start_pod("xb", 1).expect("pod b");
    let report = sandbox::traffic::ping(&a.as_pod(&cluster), b.ip, 20).unwrap();
    assert!(report.received >= 18, "a -> b across nodes: {report:?}");
    assert_eq!(report.duplicates, 0, "duplicates: {report:?}");

    let (n0, n1) = (cluster.sb.node(0), cluster.sb.node(1));
    let maps = PinnedMaps::open(&cluster.sb.bpffs_dir().join(&n0.name)).expect("n0's pins");
    let flows = maps.tunnel_flows().unwrap();
    let (a_ip, b_ip) = (ipv4_mapped(a.ip.octets()), ipv4_mapped(b.ip.octets()));
    let (key, entry) = flows
        .iter()
        .find(|(k, _)| k.src == a_ip && k.dst == b_ip && k.proto == 1)
        .unwrap_or_else(|| panic!("no tunnel entry for a -> b on n0: {flows:?}"));
    let (src, dst, dport, vni) = outer(entry);
    assert_eq!(
        src.to_string(),
        n0.address,
        "outer source: n0's tunnel address"
    );
    assert_eq!(
        dst.to_string(),
        n1.address,
        "outer destination: n1's tunnel address"
    );
    assert_eq!(dport, GENEVE_PORT);
    assert_ne!(vni, 0, "OVN's datapath key in the VNI");
    // Geneve with OVN's option (class 0x0102): 8 bytes of options, the inner frame at 58.
    assert_eq!(entry.inner_offset, 58);
    assert_eq!(
        [entry.header[50], entry.header[51]],
        [0x01, 0x02],
        "OVN's Geneve option class"
    );
    assert_eq!(
        entry.egress_ifindex,
        ifindex_of(&n0.netns, "eth0"),
        "learned on n0's uplink NIC (br-phy's port)"
    );
    assert_eq!(entry.generation, maps.generation().unwrap());
    // The reverse direction is n1's to learn, not n0's: n0 holds flows of its own pods only.
    assert!(
        !flows.iter().any(|(k, _)| k.src == b_ip),
        "n0 learned a flow of n1's pod: {key:?}"
    );
    let learned: u64 = maps
        .reason_counts()
        .unwrap()
        .iter()
        .filter(|c| c.reason == Reason::TunnelLearned)
        .map(|c| c.packets)
        .sum();
    assert!(learned >= 18, "{learned} tunnel_learned for 20 echoes");
    let on_n1 = PinnedMaps::open(&cluster.sb.bpffs_dir().join(&n1.name))
        .expect("n1's pins")
        .tunnel_flows()
        .unwrap();
    assert!(
        on_n1.iter().any(|(k, _)| k.src == b_ip && k.dst == a_ip),
        "n1 did not learn b -> a: {on_n1:?}"
    );

    // a is deleted: its flows to other nodes go with it (a pod given its address later must
    // not have them replayed).
    cluster.kubelets[0]
        .del(
            &PodSandbox {
                name: a.name.clone(),
                namespace: a.namespace.clone(),
                container_id: a.container_id.clone(),
                netns: a.netns.clone(),
                if_name: "eth0".into(),
                port_mappings: vec![],
            },
            None,
        )
        .expect("CNI DEL of a");
    let left = maps.tunnel_flows().unwrap();
    assert!(
        !left.iter().any(|(k, _)| k.src == a_ip),
        "a's flows to other nodes outlived its DEL: {left:?}"
    );
    drop((a, b));
    cluster.teardown().expect("teardown");
}

/// The sandbox's NICs pass segments on as a wire does: the kernel finishes checksums and
/// segments encapsulated packets before they leave (the receiving OVS reads with AF_PACKET,
/// which cannot take a tunnel's GSO packet).
fn segment_on_the_wire(cluster: &KovnCluster) {
    for node in cluster.sb.nodes() {
        Cmd::new("ethtool")
            .args(["-K", "eth0", "tx", "off", "tx-udp_tnl-segmentation", "off"])
            .args(["tx-udp_tnl-csum-segmentation", "off"])
            .netns(&node.netns)
            .run()
            .expect("ethtool on the node's NIC");
    }
}

fn reason_total(maps: &PinnedMaps, reason: Reason) -> u64 {
    maps.reason_counts()
        .unwrap()
        .iter()
        .filter(|c| c.reason == reason)
        .map(|c| c.packets)
        .sum()
}

#[test]
fn cross_node_flows_are_encapsulated_by_the_fast_path_once_ovs_has_sent_them() {
    if !sandbox::privileged(
        "cross_node_flows_are_encapsulated_by_the_fast_path_once_ovs_has_sent_them",
    ) {
        return;
    }
    let cluster =
        KovnCluster::start_with_agent_args(2, common::binaries(), &["--cross-node-fast-path"])
            .expect("kovn on a sandbox");
    segment_on_the_wire(&cluster);
    let a = cluster.start_pod("ya", 0).expect("pod a");
    let b = cluster.start_pod("yb", 1).expect("pod b");
    let (pa, pb) = (a.as_pod(&cluster), b.as_pod(&cluster));
    let pins0 = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let pins1 = cluster.sb.bpffs_dir().join(&cluster.sb.node(1).name);
    let report = sandbox::traffic::ping(&pa, b.ip, 50).unwrap();
    assert!(report.received >= 48, "a -> b across nodes: {report:?}");
    assert_eq!(report.duplicates, 0, "duplicates: {report:?}");
    let maps0 = PinnedMaps::open(&pins0).unwrap();
    let maps1 = PinnedMaps::open(&pins1).unwrap();
    let (hits0, hits1) = (
        reason_total(&maps0, Reason::TunnelFastHit),
        reason_total(&maps1, Reason::TunnelFastHit),
    );
    eprintln!("ICMP: {hits0} encapsulated by n0's fast path, {hits1} by n1's");
    let (rx0, rx1) = (
        reason_total(&maps0, Reason::TunnelRxFastHit),
        reason_total(&maps1, Reason::TunnelRxFastHit),
    );
    eprintln!("ICMP: {rx0} delivered by n0's receive fast path, {rx1} by n1's");
    assert!(
        hits0 >= 30 && hits1 >= 30,
        "{hits0} / {hits1} fast hits for 50 echoes"
    );
    let tcp = sandbox::traffic::iperf3(&pa, &pb, 2).expect("TCP across nodes");
    let hits_tcp = reason_total(&maps0, Reason::TunnelFastHit) - hits0;
    let rx_tcp = reason_total(&maps1, Reason::TunnelRxFastHit) - rx1;
    eprintln!(
        "TCP: {:.2} Gbit/s, {hits_tcp} packets encapsulated by n0's fast path, {rx_tcp} delivered by n1's",
        tcp.gbit_per_second()
    );
    assert!(tcp.bits_per_second > 1e7, "{tcp:?}");
    assert!(hits_tcp > 1000, "{hits_tcp} fast hits in a TCP stream");
    assert_eq!(reason_total(&maps0, Reason::TunnelEncapFailed), 0);
    drop((a, b));
    cluster.teardown().expect("teardown");
}
