//! The eBPF fast path in the sandbox, with real OVN/OVS and the real kernel: same-node flows
//! are learned from what OVS delivers and then bypass OVS without loss or duplicates; policy
//! changes and pod removal take effect at once; cross-node traffic stays on OVS and Geneve.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::datapath::invalidation::follow_nb_cfg;
use agent::datapath::{Datapath, LoadOptions, PodInterfaces, ReadMaps, locate_object};
use datapath_common::Reason;
use sandbox::traffic::{self, Capture};
use sandbox::{Cmd, Handoff, Pod, Sandbox, SandboxConfig, netns};

mod common;

/// A sandbox whose pods are wired by kovn's datapath, one datapath per node (as one agent per
/// node), each following its node's ovn-nb-cfg.
struct Cluster {
    sb: Sandbox,
    datapaths: Vec<Arc<Mutex<Datapath>>>,
    bumps: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(nodes: usize) -> Cluster {
        let sb = Sandbox::start(SandboxConfig {
            nodes,
            handoff: Handoff::Datapath,
            ..Default::default()
        })
        .expect("sandbox");
        let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let bumps = Arc::new(AtomicU64::new(0));
        let mut datapaths = Vec::new();
        for node in sb.nodes() {
            let datapath = Arc::new(Mutex::new(
                Datapath::load(&object, &LoadOptions::default()).expect("verifier accepts"),
            ));
            let remote = format!("unix:{}", node.db.socket.display());
            let client = runtime
                .block_on(agent::ovs::connect(&remote))
                .expect("node OVSDB client");
            let bumps = bumps.clone();
            let flows = datapath.lock().unwrap().flow_table().expect("flow table");
            runtime.spawn(follow_nb_cfg(
                client,
                flows,
                Default::default(),
                move |_, _| {
                    bumps.fetch_add(1, Ordering::SeqCst);
                },
            ));
            datapaths.push(datapath);
        }
        Cluster {
            sb,
            datapaths,
            bumps,
            runtime,
        }
    }

    fn node_index(&self, pod: &Pod) -> usize {
        self.sb
            .nodes()
            .iter()
            .position(|n| n.name == pod.node)
            .unwrap()
    }

    fn add_pod(&mut self, node: usize, name: &str) -> Pod {
        self.add_pod_in(node, name, sandbox::DEFAULT_SUBNET)
    }

    fn add_pod_in(&mut self, node: usize, name: &str, subnet: &str) -> Pod {
        let pod = self.sb.add_pod_in(node, name, subnet).expect("pod");
        // No IPv6: router solicitations would be counted as traffic into the pod.
        Cmd::new("sysctl")
            .args(["-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            .netns(&pod.netns)
            .run()
            .unwrap();
        let interfaces = PodInterfaces {
            name: pod.lsp.clone(),
            owner: pod.lsp.clone(),
            host_veth: pod.host_veth.clone(),
            ovs_peer: pod.ovs_peer.clone(),
            ip: IpAddr::V4(pod.ip),
            mac: agent::datapath::parse_mac(&pod.mac).unwrap(),
            other_ips: Vec::new(),
            vpc: Some(api::names::DEFAULT_CLUSTER_ROUTER.into()),
        };
        let datapath = self.datapaths[node].clone();
        netns::run_in(&pod.node_netns, move || {
            datapath.lock().unwrap().attach_pod(&interfaces)
        })
        .unwrap()
        .expect("attach the datapath to the pod");
        pod
    }

    fn reason(&self, pod: &Pod, reason: Reason) -> u64 {
        let ifindex = netns::ifindex(&pod.node_netns, &pod.host_veth).unwrap();
        self.datapaths[self.node_index(pod)]
            .lock()
            .unwrap()
            .reason_count(ifindex, reason)
            .unwrap()
    }
}

#[test]
fn same_node_icmp_tcp_and_udp_take_the_fast_path_without_duplicates() {
    if !sandbox::privileged("same_node_icmp_tcp_and_udp_take_the_fast_path_without_duplicates") {
        return;
    }
    let mut cluster = Cluster::start(1);
    let a = cluster.add_pod(0, "a");
    let b = cluster.add_pod(0, "b");

    let ping = traffic::ping(&a, b.ip, 20).expect("ping");
    assert_eq!((ping.transmitted, ping.received), (20, 20), "{ping:?}");
    assert_eq!(ping.duplicates, 0, "{ping:?}");
    // The first request and reply go through OVS and teach the fast path; the rest bypass it.
    assert!(
        cluster.reason(&a, Reason::FastHit) >= 15,
        "requests fast-pathed"
    );
    assert!(
        cluster.reason(&b, Reason::FastHit) >= 15,
        "replies fast-pathed"
    );

    let before = cluster.reason(&a, Reason::FastHit);
    let tcp = traffic::iperf3(&a, &b, 2).expect("iperf3 through the fast path");
    assert!(tcp.bits_per_second > 1e8, "{tcp:?}");
    let tcp_hits = cluster.reason(&a, Reason::FastHit) - before;
    assert!(
        tcp_hits > 1000,
        "TCP after the handshake is fast-pathed ({tcp_hits} hits)"
    );
    assert!(
        cluster.reason(&a, Reason::Control) >= 2,
        "SYN and FIN went through OVS"
    );

    let before = cluster.reason(&a, Reason::FastHit);
    let udp = traffic::sockperf_udp_ping_pong(&a, &b, 1).expect("UDP request/response");
    assert!(udp.observations > 100, "{udp:?}");
    assert!(
        cluster.reason(&a, Reason::FastHit) - before > 100,
        "UDP fast-pathed"
    );
    cluster.sb.check_daemons().unwrap();
}

#[test]
fn a_policy_change_stops_a_fast_pathed_flow_within_200ms_and_removed_pods_get_nothing() {
    if !sandbox::privileged("a_policy_change_stops_a_fast_pathed_flow_within_200ms") {
        return;
    }
    let mut cluster = Cluster::start(1);
    let a = cluster.add_pod(0, "a");
    let b = cluster.add_pod(0, "b");
    let c = cluster.add_pod(0, "c");

    // A steady flow a -> b, fast-pathed.
    let mut flood = a
        .cmd("ping")
        .args(["-n", "-q", "-i", "0.005", "-c", "1000", "-W", "1"])
        .arg(b.ip.to_string())
        .to_command()
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        cluster.reason(&a, Reason::FastHit) > 50,
        "the flow is fast-pathed"
    );
    let bumps_before = cluster.bumps.load(Ordering::SeqCst);
    // Count exactly the flow's packets as b receives them, with kernel timestamps (other
    // traffic, such as a's ARP probes for b, is not what the ACL drops).
    let capture = Capture::start(
        &b.netns,
        "eth0",
        &format!("icmp and src host {}", a.ip),
        cluster.sb.dir().join("policy.pcap"),
    )
    .unwrap();

    let nbctl = cluster.sb.central().nbctl();
    nbctl
        .run([
            "--wait=hv",
            "acl-add",
            "ovn-default",
            "to-lport",
            "1001",
            &format!("ip4.dst == {}", b.ip),
            "drop",
        ])
        .expect("add a drop ACL");
    let applied = common::epoch_seconds();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = flood.kill();
    let _ = flood.wait();
    let times = capture.stop_with_times().unwrap();
    let before_acl = common::assert_none_200ms_after(&times, applied, "the drop ACL was installed");
    assert!(
        before_acl > 10,
        "the flow reached b before the ACL ({before_acl} packets)"
    );
    assert!(
        cluster.bumps.load(Ordering::SeqCst) > bumps_before,
        "the generation moved"
    );
    assert!(
        cluster.reason(&a, Reason::Invalidated) > 0,
        "old entries were refused"
    );

    // Pod removal: c is fast-pathed from a, then removed; nothing reaches its old address.
    let ping = traffic::ping(&a, c.ip, 10).unwrap();
    assert_eq!(ping.received, 10);
    let c_ifindexes = [
        netns::ifindex(&c.node_netns, &c.host_veth).unwrap(),
        netns::ifindex(&c.node_netns, &c.ovs_peer).unwrap(),
    ];
    {
        let mut dp = cluster.datapaths[0].lock().unwrap();
        let counted = |dp: &Datapath| {
            dp.reason_counts()
                .unwrap()
                .iter()
                .filter(|r| c_ifindexes.contains(&r.ifindex))
                .count()
                + dp.interface_counters()
                    .unwrap()
                    .iter()
                    .filter(|i| c_ifindexes.contains(&i.ifindex))
                    .count()
        };
        assert!(counted(&dp) > 0, "c's interfaces counted nothing");
        dp.remove_pod(&c.lsp).unwrap();
        // A later interface with the same ifindex starts from zero, and churn cannot fill
        // the counter maps.
        assert_eq!(counted(&dp), 0, "the removed pod's counters are left");
        let c_ip = agent::datapath::ip_bytes(IpAddr::V4(c.ip));
        assert!(
            dp.flows()
                .unwrap()
                .iter()
                .all(|(k, _)| k.src != c_ip && k.dst != c_ip),
            "flows of the removed pod purged"
        );
    }
    nbctl.run(["--wait=hv", "lsp-del", &c.lsp]).unwrap();
    // Count a's packets as c would receive them (the node-side veth's own IPv6 chatter is
    // not traffic to the removed pod's address).
    let capture = Capture::start(
        &c.netns,
        "eth0",
        &format!("src host {}", a.ip),
        cluster.sb.dir().join("removed.pcap"),
    )
    .unwrap();
    let ping = traffic::ping(&a, c.ip, 10).unwrap();
    assert_eq!(ping.received, 0, "{ping:?}");
    let reached = capture.stop().unwrap();
    assert_eq!(reached, 0, "{reached} packets reached the removed pod");
    drop(cluster.runtime);
}

/// Policy written by anyone but kovn: a plain `ovn-nbctl acl-add` (no `--wait`, so nb_cfg does
/// not move and nothing tells the agent) ends a fast-pathed one-way stream within 200 ms,
/// measured at the receiver: the fast path re-judges the flow through OVS every 100 ms and
/// drops the entry when OVS does not deliver.
#[test]
fn a_plain_acl_write_stops_a_fast_pathed_one_way_stream_within_200ms() {
    if !sandbox::privileged("a_plain_acl_write_stops_a_fast_pathed_one_way_stream_within_200ms") {
        return;
    }
    let mut cluster = Cluster::start(1);
    let a = cluster.add_pod(0, "a");
    let b = cluster.add_pod(0, "b");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (_sink, sending) = common::udp_stream(&a, &b, 5001, stop.clone());
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        cluster.reason(&a, Reason::FastHit) > 50,
        "the stream is fast-pathed"
    );
    let bumps_before = cluster.bumps.load(Ordering::SeqCst);
    let capture = Capture::start(
        &b.netns,
        "eth0",
        &format!("udp and src host {} and dst port 5001", a.ip),
        cluster.sb.dir().join("plain-acl.pcap"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    cluster
        .sb
        .central()
        .nbctl()
        .run([
            "acl-add",
            "ovn-default",
            "to-lport",
            "2000",
            &format!("ip4.dst == {} && udp.dst == 5001", b.ip),
            "drop",
        ])
        .expect("add a drop ACL");
    let written = common::epoch_seconds();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let sent = sending.join().unwrap();
    let times = capture.stop_with_times().unwrap();
    let last = times.iter().map(|t| t - written).fold(f64::MIN, f64::max);
    println!(
        "last datagram at b {:.0} ms after the plain ACL write",
        last * 1e3
    );
    let before = common::assert_none_200ms_after(&times, written, "a plain ACL write");
    assert!(
        before > 50,
        "b received the stream before the ACL ({before} of {sent} datagrams)"
    );
    assert_eq!(
        cluster.bumps.load(Ordering::SeqCst),
        bumps_before,
        "nb_cfg moved: the test would not show the re-judging"
    );
    drop(cluster.runtime);
}

/// An NB database rebuilt or restored starts its count again: an `ovn-nb-cfg` lower than the
/// one the agent saw is a policy change too, and invalidates the fast path.
#[test]
fn an_nb_cfg_that_goes_backwards_invalidates_the_fast_path() {
    if !sandbox::privileged("an_nb_cfg_that_goes_backwards_invalidates_the_fast_path") {
        return;
    }
    let cluster = Cluster::start(1);
    // Twice through the hypervisors: nb_cfg is 2 and the agent has followed it.
    for _ in 0..2 {
        cluster
            .sb
            .central()
            .nbctl()
            .run(["--wait=hv", "sync"])
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let vsctl = cluster.sb.node(0).vsctl();
    let current: i64 = vsctl
        .run(["get", "Bridge", "br-int", "external_ids:ovn-nb-cfg"])
        .ok()
        .and_then(|v| v.trim().trim_matches('"').parse().ok())
        .unwrap_or(0);
    assert!(current > 0, "ovn-controller reports an nb_cfg");
    let bumps = cluster.bumps.load(Ordering::SeqCst);
    let before = cluster.datapaths[0].lock().unwrap().generation().unwrap();
    // The NB restored from an older backup: northd copies its nb_cfg to the SB and
    // ovn-controller reports it. (Setting the bridge's value by hand is not the same: the
    // running ovn-controller writes its own back within milliseconds, and a follower that
    // reads after both writes rightly sees no change.)
    cluster
        .sb
        .central()
        .nbctl()
        .run(["set", "NB_Global", ".", &format!("nb_cfg={}", current - 1)])
        .expect("NB_Global nb_cfg set lower");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cluster.bumps.load(Ordering::SeqCst) == bumps && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        cluster.bumps.load(Ordering::SeqCst) > bumps,
        "a lower ovn-nb-cfg did not invalidate"
    );
    assert!(cluster.datapaths[0].lock().unwrap().generation().unwrap() > before);
    let reported: i64 = vsctl
        .run(["get", "Bridge", "br-int", "external_ids:ovn-nb-cfg"])
        .ok()
        .and_then(|v| v.trim().trim_matches('"').parse().ok())
        .unwrap_or(0);
    assert_eq!(
        reported,
        current - 1,
        "ovn-controller reports the lower nb_cfg"
    );
    drop(cluster.runtime);
}

#[test]
fn cross_node_traffic_stays_on_ovs_and_geneve() {
    if !sandbox::privileged("cross_node_traffic_stays_on_ovs_and_geneve") {
        return;
    }
    let mut cluster = Cluster::start(2);
    let a = cluster.add_pod(0, "a");
    let c = cluster.add_pod(1, "c");
    let capture = Capture::start(
        &cluster.sb.fabric_netns(),
        cluster.sb.fabric_bridge(),
        "udp port 6081",
        cluster.sb.dir().join("geneve.pcap"),
    )
    .unwrap();
    let ping = traffic::ping(&a, c.ip, 20).unwrap();
    assert_eq!((ping.received, ping.duplicates), (20, 0), "{ping:?}");
    let tcp = traffic::iperf3(&a, &c, 1).expect("cross-node TCP");
    assert!(tcp.bits_per_second > 1e6, "{tcp:?}");
    let geneve = capture.stop().unwrap();
    assert!(geneve >= 40, "only {geneve} Geneve packets");
    assert_eq!(
        cluster.reason(&a, Reason::FastHit),
        0,
        "remote flows are never fast-pathed"
    );
    assert!(cluster.reason(&a, Reason::HandoffToOvs) >= 20);
}

/// While ovs-vswitchd restarts, OVS delivers nothing, so the fast path's re-judged packets go
/// unanswered and its entries end (it cannot tell a restarting OVS from one that drops the
/// flow): the stream waits for OVS like every other flow, survives, and is fast-pathed again
/// once OVS delivers.
#[test]
fn a_fast_pathed_flow_survives_an_ovs_vswitchd_restart() {
    if !sandbox::privileged("a_fast_pathed_flow_survives_an_ovs_vswitchd_restart") {
        return;
    }
    let mut cluster = Cluster::start(1);
    let a = cluster.add_pod(0, "a");
    let b = cluster.add_pod(0, "b");
    // Warm the path so the stream is fast-pathed from its first data packets.
    assert_eq!(traffic::ping(&a, b.ip, 3).unwrap().received, 3);
    let mut hits_after_restart = 0;
    let report = std::thread::scope(|scope| {
        let stream = scope.spawn(|| traffic::iperf3(&a, &b, 8));
        std::thread::sleep(Duration::from_millis(2000));
        cluster
            .sb
            .restart_vswitchd(0, true)
            .expect("restart ovs-vswitchd");
        let restarted = cluster.reason(&a, Reason::FastHit);
        std::thread::sleep(Duration::from_millis(2000));
        hits_after_restart = cluster.reason(&a, Reason::FastHit) - restarted;
        stream.join().unwrap()
    })
    .expect("the stream completes across the restart");
    assert!(report.intervals.len() >= 8, "{report:?}");
    let last = &report.intervals[report.intervals.len() - 2..];
    assert!(
        last.iter().all(|&bps| bps > 1e8),
        "the stream did not recover after the restart: {report:?}"
    );
    assert!(
        hits_after_restart > 1000,
        "the stream is not fast-pathed again after the restart ({hits_after_restart} hits)"
    );
    cluster.sb.check_daemons().unwrap();
}

#[test]
fn routed_flows_are_rewritten_exactly_as_ovs_rewrites_them() {
    if !sandbox::privileged("routed_flows_are_rewritten_exactly_as_ovs_rewrites_them") {
        return;
    }
    let mut cluster = Cluster::start(1);
    cluster
        .sb
        .add_subnet("subnet2", std::net::Ipv4Addr::new(10, 17, 0, 0), 16)
        .expect("second subnet behind ovn-cluster");
    let a = cluster.add_pod(0, "a");
    let x = cluster.add_pod_in(0, "x", "subnet2");
    let capture = Capture::start(
        &x.netns,
        "eth0",
        &format!("icmp and src host {}", a.ip),
        cluster.sb.dir().join("routed.pcap"),
    )
    .unwrap();
    let ping = traffic::ping(&a, x.ip, 20).expect("routed ping");
    assert_eq!((ping.received, ping.duplicates), (20, 0), "{ping:?}");
    let packets = capture.stop_and_decode(&["-e", "-v"]).unwrap();
    assert!(
        cluster.reason(&a, Reason::FastHit) >= 15,
        "the routed flow is fast-pathed"
    );
    // Every request, whether OVS (the first) or the fast path (the rest) delivered it, carries
    // the router's MAC as source, x's MAC as destination, the TTL decremented once, and a
    // correct IP checksum (tcpdump -v flags a bad one).
    // (tcpdump may miss the last packet when it is stopped right after ping returns.)
    assert!(packets.len() >= 16, "{packets:#?}");
    assert!(
        packets.iter().any(|p| p.contains(" seq 1,")),
        "the first request, which OVS forwarded, is in the capture: {packets:#?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for packet in &packets {
        assert!(!packet.contains("bad cksum"), "bad checksum: {packet}");
        let macs: Vec<&str> = packet.split_whitespace().skip(1).take(3).collect();
        let ttl = packet
            .split("ttl ")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .unwrap_or_else(|| panic!("no TTL in {packet}"));
        seen.insert((
            macs[0].to_owned(),
            macs[2].trim_end_matches(',').to_owned(),
            ttl.to_owned(),
        ));
    }
    let router_mac = sandbox::mac_for(std::net::Ipv4Addr::new(10, 17, 0, 1));
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![(router_mac, x.mac.clone(), "63".to_owned())],
        "fast and slow path packets differ"
    );
}

/// Once OVN puts a switch's traffic through conntrack (a load balancer or a stateful ACL on
/// it), OVS's conntrack sees a fast-pathed connection's SYN and FIN but not the bytes between:
/// a sequence-checking conntrack would call the FIN out of window, OVN would drop it, and the
/// server would never see the end of the stream.
#[test]
fn a_fast_pathed_connection_closes_cleanly_through_ovn_conntrack() {
    use std::io::{Read, Write};
    if !sandbox::privileged("a_fast_pathed_connection_closes_cleanly_through_ovn_conntrack") {
        return;
    }
    let mut cluster = Cluster::start(1);
    let a = cluster.add_pod(0, "a");
    let b = cluster.add_pod(0, "b");
    let node = cluster.sb.node(0).clone();
    // What the agent does at node setup (the daemon tests cover that it does).
    cluster
        .runtime
        .block_on(agent::ovs::conntrack::relax_tcp_window(
            node.db.socket.parent().unwrap(),
            agent::ovs::conntrack::OvsDatapath::Userspace,
        ))
        .expect("relax OVS conntrack's TCP window check");
    let nbctl = cluster.sb.central().nbctl();
    nbctl
        .run([
            "lb-add",
            "ct-on",
            "10.96.0.9:80",
            &format!("{}:80", b.ip),
            "tcp",
        ])
        .unwrap();
    nbctl.run(["ls-lb-add", "ovn-default", "ct-on"]).unwrap();
    nbctl
        .run([
            "--wait=hv",
            "acl-add",
            "ovn-default",
            "from-lport",
            "1000",
            "ip4",
            "allow-related",
        ])
        .unwrap();

    let listener = netns::run_in(&b.netns, || std::net::TcpListener::bind((b.ip, 7000)))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut received = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let end = loop {
            match conn.read(&mut buf) {
                Ok(0) => break Ok(received),
                Ok(n) => received += n,
                Err(e) => break Err(format!("after {received} bytes: {e}")),
            }
        };
        let _ = conn.write_all(b"bye");
        end
    });
    let before = cluster.reason(&a, Reason::FastHit);
    let target = std::net::SocketAddr::from((b.ip, 7000));
    let mut client = netns::run_in(&a.netns, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
    })
    .unwrap()
    .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![7u8; 1 << 16];
    let total = 64 << 20;
    for i in 0..total / chunk.len() {
        if let Err(e) = client.write_all(&chunk) {
            panic!("the stream stalled after {} bytes: {e}", i * chunk.len());
        }
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let fast = cluster.reason(&a, Reason::FastHit) - before;
    assert!(fast > 1000, "the stream was fast-pathed ({fast} hits)");
    assert_eq!(
        server.join().unwrap(),
        Ok(total),
        "the server saw the client's FIN after everything it sent"
    );
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    client
        .read_to_end(&mut reply)
        .expect("the client saw the server's FIN");
    assert_eq!(reply, b"bye");
    cluster.sb.check_daemons().unwrap();
}
