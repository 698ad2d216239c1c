//! Across nodes, what the datapath learns from OVS (the first step of the cross-node fast
//! path): the tunnel observer on the NIC a node's tunnels leave through records, per flow of a
//! local pod, the encapsulation OVS emitted — outer addresses and UDP port of the peer node,
//! Geneve's VNI and OVN's option, the inner frame's MACs as OVN rewrote them. Nothing is
//! replayed yet: the packets themselves are unchanged (no duplicates, none lost).

mod common;

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

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
    // Learning alone: every packet still goes through OVS, so every one teaches.
    let cluster = KovnCluster::start_with_agent_args(
        2,
        common::binaries(),
        &["--cross-node-fast-path=false"],
    )
    .expect("kovn on a sandbox");
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

fn reason_total(maps: &PinnedMaps, reason: Reason) -> u64 {
    maps.reason_counts()
        .unwrap()
        .iter()
        .filter(|c| c.reason == reason)
        .map(|c| c.packets)
        .sum()
}

/// A pod labelled `pod=<name>` in the default namespace.
fn labelled_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"pod": name}},
        "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap()
}

#[test]
fn cross_node_flows_are_encapsulated_by_the_fast_path_once_ovs_has_sent_them() {
    if !sandbox::privileged(
        "cross_node_flows_are_encapsulated_by_the_fast_path_once_ovs_has_sent_them",
    ) {
        return;
    }
    let mut cluster =
        KovnCluster::start_with_agent_args(2, common::binaries(), &["--cross-node-fast-path"])
            .expect("kovn on a sandbox");
    let a = cluster
        .start_pod_object(labelled_pod("ya"), 0)
        .expect("pod a");
    let b = cluster
        .start_pod_object(labelled_pod("yb"), 1)
        .expect("pod b");
    let (pa, pb) = (a.as_pod(&cluster), b.as_pod(&cluster));
    let pins0 = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let pins1 = cluster.sb.bpffs_dir().join(&cluster.sb.node(1).name);
    let maps0 = PinnedMaps::open(&pins0).unwrap();
    let maps1 = PinnedMaps::open(&pins1).unwrap();
    let counts = || {
        [
            reason_total(&maps0, Reason::TunnelFastHit),
            reason_total(&maps1, Reason::TunnelRxFastHit),
            reason_total(&maps1, Reason::TunnelFastHit),
            reason_total(&maps0, Reason::TunnelRxFastHit),
        ]
    };

    // ICMP: after the first echo, both directions bypass OVS on both nodes.
    let report = sandbox::traffic::ping(&pa, b.ip, 50).unwrap();
    assert!(report.received >= 48, "a -> b across nodes: {report:?}");
    assert_eq!(report.duplicates, 0, "duplicates: {report:?}");
    let [tx0, rx1, tx1, rx0] = counts();
    eprintln!(
        "ICMP: requests sent by n0's fast path {tx0}, delivered by n1's {rx1}; replies sent by n1's {tx1}, delivered by n0's {rx0}"
    );
    for (what, n) in [
        ("n0 sent", tx0),
        ("n1 delivered", rx1),
        ("n1 sent", tx1),
        ("n0 delivered", rx0),
    ] {
        assert!(n >= 30, "{what} {n} of 50 echoes by the fast path");
    }

    // TCP: a stream (TSO packets encapsulated whole, decapsulated whole).
    let tcp = sandbox::traffic::iperf3(&pa, &pb, 2).expect("TCP across nodes");
    let [tx0_t, rx1_t, ..] = counts();
    eprintln!(
        "TCP: {:.2} Gbit/s; n0's fast path sent {} packets, n1's delivered {}",
        tcp.gbit_per_second(),
        tx0_t - tx0,
        rx1_t - rx1
    );
    assert!(tcp.bits_per_second > 1e8, "{tcp:?}");
    assert!(
        tx0_t - tx0 > 1000 && rx1_t - rx1 > 1000,
        "a TCP stream off the fast path"
    );
    assert_eq!(reason_total(&maps0, Reason::TunnelEncapFailed), 0);
    assert_eq!(reason_total(&maps1, Reason::TunnelEncapFailed), 0);

    // UDP: a one-way stream, fast-pathed on both nodes; it survives an agent restart on
    // either node (the pinned programs and maps carry it meanwhile).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sink, sending) = common::udp_stream(&pa, &pb, 5001, stop.clone());
    sink.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let receiving = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if sink.recv(&mut buf).is_ok() {
                    received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let [tx0_u, rx1_u, ..] = counts();
    assert!(
        tx0_u - tx0_t > 100 && rx1_u - rx1_t > 100,
        "UDP off the fast path: {} sent, {} delivered",
        tx0_u - tx0_t,
        rx1_u - rx1_t
    );
    for node in [0, 1] {
        let before = received.load(std::sync::atomic::Ordering::SeqCst);
        cluster.restart_agent(node).expect("agent restart");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let after = received.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            after > before + 100,
            "the stream stalled in n{node}'s agent restart"
        );
    }
    let [tx0_r, rx1_r, ..] = counts();
    assert!(
        tx0_r > tx0_u && rx1_r > rx1_u,
        "the fast path carries the stream after the restarts"
    );

    // A NetworkPolicy on the receiver ends the stream within 200 ms, measured at b.
    let capture = sandbox::traffic::Capture::start(
        &b.netns,
        "eth0",
        &format!("udp and src host {} and dst port 5001", a.ip),
        cluster.sb.dir().join("xn-revocation.pcap"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let written = common::epoch_seconds();
    let deny: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-yb", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"pod": "yb"}}}
    }))
    .unwrap();
    cluster.api.put(&deny);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = sending.join().unwrap();
    receiving.join().unwrap();
    let times = capture.stop_with_times().unwrap();
    let last = times.iter().map(|t| t - written).fold(f64::MIN, f64::max);
    eprintln!(
        "UDP: {sent} sent, {} received; the last at b {:.0} ms after the NetworkPolicy was written",
        received.load(std::sync::atomic::Ordering::SeqCst),
        last * 1e3
    );
    let before = common::assert_none_200ms_after(&times, written, "a NetworkPolicy's write");
    assert!(
        before > 50,
        "b received the stream before the policy ({before})"
    );

    // b is deleted: what n1 delivered to it from other nodes goes with it (a pod given its
    // address or its veth's index later must not receive those flows past n1's OVS).
    let b_ip = ipv4_mapped(b.ip.octets());
    assert!(
        maps1
            .tunnel_rx()
            .unwrap()
            .iter()
            .any(|(k, _)| k.dst == b_ip),
        "n1 holds no flow to b"
    );
    cluster.kubelets[1]
        .del(
            &PodSandbox {
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                container_id: b.container_id.clone(),
                netns: b.netns.clone(),
                if_name: "eth0".into(),
                port_mappings: vec![],
            },
            None,
        )
        .expect("CNI DEL of b");
    let left = maps1.tunnel_rx().unwrap();
    assert!(
        !left.iter().any(|(k, _)| k.dst == b_ip),
        "b's flows from other nodes outlived its DEL: {left:?}"
    );
    drop((a, b));
    cluster.teardown().expect("teardown");
}
