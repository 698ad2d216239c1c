//! The programs' parser and decisions, driven with BPF_PROG_TEST_RUN on crafted packets:
//! truncated headers, IPv6 extension chains, VLAN, fragments, control packets, learned flows,
//! generations, and random bytes. Whatever arrives, a packet from a known port is handed on
//! (never dropped) and counted under exactly one decision.

use agent::datapath::{Datapath, FlowTableOps, LoadOptions, ReadMaps, locate_object};
use datapath_common::{
    FlowEntry, FlowKey, PodPort, Reason, flow_flags, ipv4_mapped, programs, rx_flags,
};

/// The test device: packets "arrive" on loopback.
const LO: u32 = 1;
const TC_ACT_REDIRECT: i32 = 7;
const TC_ACT_UNSPEC: i32 = -1;
const POD_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0x10, 0x00, 0x02];
const PEER_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0x10, 0x00, 0x03];
const POD_IP: [u8; 4] = [10, 16, 0, 2];
const PEER_IP: [u8; 4] = [10, 16, 0, 3];

fn ethernet(ethertype: u16, vlan: bool) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&PEER_MAC);
    p.extend_from_slice(&POD_MAC);
    if vlan {
        p.extend_from_slice(&0x8100u16.to_be_bytes());
        p.extend_from_slice(&100u16.to_be_bytes());
    }
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

fn ipv4(proto: u8, fragment: u16) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 40, 0, 1];
    h.extend_from_slice(&fragment.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&POD_IP);
    h.extend_from_slice(&PEER_IP);
    h
}

fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = sport.to_be_bytes().to_vec();
    p.extend_from_slice(&dport.to_be_bytes());
    p
}

fn udp_v4(vlan: bool) -> Vec<u8> {
    let mut p = ethernet(0x0800, vlan);
    p.extend(ipv4(17, 0));
    p.extend(ports(5000, 53));
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

fn tcp_v4(flags: u8) -> Vec<u8> {
    let mut p = ethernet(0x0800, false);
    p.extend(ipv4(6, 0));
    p.extend(ports(40000, 80));
    p.extend_from_slice(&[0; 8]); // seq, ack
    p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

/// IPv6 with `extensions` hop-by-hop/destination-options headers, then UDP.
fn udp_v6(extensions: usize) -> Vec<u8> {
    let mut p = ethernet(0x86dd, false);
    let first = if extensions > 0 { 60 } else { 17 };
    p.extend_from_slice(&[0x60, 0, 0, 0, 0, 16, first, 64]);
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
    for i in 0..extensions {
        let next = if i + 1 == extensions { 17 } else { 60 };
        p.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]); // 8-byte options header (PadN)
    }
    p.extend(ports(5000, 53));
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

fn udp_key() -> FlowKey {
    FlowKey {
        scope: 0,
        src: ipv4_mapped(POD_IP),
        dst: ipv4_mapped(PEER_IP),
        sport: 5000,
        dport: 53,
        proto: 17,
        _pad: [0; 3],
    }
}

struct Harness {
    dp: Datapath,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(&LoadOptions::default())
    }

    /// The datapath loaded with `options`, loopback registered as the pod's port.
    fn with(options: &LoadOptions) -> Harness {
        let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
        let mut dp = Datapath::load(&object, options).expect("verifier");
        dp.register_port(
            PodPort {
                host_ifindex: LO,
                ovs_peer_ifindex: LO,
                scope: 0,
                mac: POD_MAC,
                _pad: [0; 2],
                ip: ipv4_mapped(POD_IP),
            },
            ipv4_mapped(POD_IP),
        )
        .unwrap();
        Harness { dp }
    }

    fn count(&self, reason: Reason) -> u64 {
        self.dp.reason_count(LO, reason).unwrap()
    }

    /// Runs the from-pod program and returns its verdict and the one decision it counted
    /// (hand-offs are counted as HandoffToOvs plus the reason for it).
    fn run_from_pod(&self, packet: &[u8]) -> (i32, Vec<Reason>) {
        let before: Vec<u64> = Reason::ALL.iter().map(|r| self.count(*r)).collect();
        let verdict = self
            .dp
            .test_run(programs::FROM_POD, packet)
            .unwrap_or_else(|e| panic!("test_run of {} bytes {packet:02x?}: {e}", packet.len()));
        let changed = Reason::ALL
            .iter()
            .zip(before)
            .filter(|(r, b)| self.count(**r) != *b)
            .map(|(r, _)| *r)
            .collect();
        (verdict, changed)
    }
}

#[test]
fn crafted_packets_get_the_right_decision() {
    if !sandbox::privileged("crafted_packets_get_the_right_decision") {
        return;
    }
    let mut h = Harness::new();
    use Reason::*;

    // Truncated: a whole IPv4 header but only half a UDP header. (BPF_PROG_TEST_RUN itself
    // refuses packets shorter than their IP header.)
    let mut truncated = ethernet(0x0800, false);
    truncated.extend(ipv4(17, 0));
    truncated.extend_from_slice(&[0x13, 0x88]);
    assert_eq!(
        h.run_from_pod(&truncated),
        (TC_ACT_REDIRECT, vec![HandoffToOvs, ParseFailure])
    );
    // An IPv6 extension header cut off by the end of the packet.
    let mut cut = udp_v6(2);
    cut.truncate(14 + 40 + 4);
    assert_eq!(h.run_from_pod(&cut).1, vec![HandoffToOvs, ParseFailure]);
    // Unknown ethertype (ARP): to OVS.
    let mut arp = ethernet(0x0806, false);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(
        h.run_from_pod(&arp),
        (TC_ACT_REDIRECT, vec![HandoffToOvs, ParseFailure])
    );
    // A fragment is never fast-pathed: OVS reassembles.
    let mut fragment = ethernet(0x0800, false);
    fragment.extend(ipv4(17, 0x2000));
    fragment.extend(ports(5000, 53));
    fragment.extend_from_slice(&[0, 8, 0, 0]);
    assert_eq!(
        h.run_from_pod(&fragment).1,
        vec![HandoffToOvs, ParseFailure]
    );

    // Parsed packets without a flow: a miss.
    assert_eq!(h.run_from_pod(&udp_v4(false)).1, vec![Miss, HandoffToOvs]);
    assert_eq!(
        h.run_from_pod(&udp_v4(true)).1,
        vec![Miss, HandoffToOvs],
        "VLAN"
    );
    // IPv6 traffic from an address that is not the port's own never reaches the balancer or
    // the flow lookup (port security): handed to OVS as a foreign source.
    assert_eq!(
        h.run_from_pod(&udp_v6(3)).1,
        vec![HandoffToOvs, ForeignSource],
        "3 extension headers parse"
    );
    // More extension headers than the parser walks: to OVS as unparsed.
    assert_eq!(
        h.run_from_pod(&udp_v6(5)).1,
        vec![HandoffToOvs, ParseFailure]
    );
    let mut v6_fragment = udp_v6(0);
    v6_fragment[20] = 44; // next header: fragment
    assert_eq!(
        h.run_from_pod(&v6_fragment).1,
        vec![HandoffToOvs, ParseFailure]
    );

    // Control packets always go through OVS.
    assert_eq!(
        h.run_from_pod(&tcp_v4(0x02)).1,
        vec![HandoffToOvs, Control],
        "SYN"
    );

    // A learned flow of the current generation is a hit …
    let generation = h.dp.generation().unwrap();
    let entry = FlowEntry {
        dst_host_ifindex: LO,
        flags: 0,
        src_mac: POD_MAC,
        dst_mac: PEER_MAC,
        generation,
        last_seen_ns: u64::MAX / 2,
        last_slow_ns: u64::MAX / 2,
    };
    h.dp.insert_flow(udp_key(), entry).unwrap();
    assert_eq!(
        h.run_from_pod(&udp_v4(false)),
        (TC_ACT_REDIRECT, vec![FastHit])
    );
    // … a spoofed source MAC on the same 5-tuple is not …
    let mut spoofed = udp_v4(false);
    spoofed[6..12].copy_from_slice(&[0x0a, 0x58, 0, 0, 0, 0x99]);
    assert_eq!(
        h.run_from_pod(&spoofed).1,
        vec![HandoffToOvs, ForeignSource]
    );
    // … nor can a spoofed FIN retire another pod's flow.
    let mut spoofed_fin = tcp_v4(0x11);
    spoofed_fin[6..12].copy_from_slice(&[0x0a, 0x58, 0, 0, 0, 0x99]);
    assert_eq!(
        h.run_from_pod(&spoofed_fin).1,
        vec![HandoffToOvs, ForeignSource]
    );

    // Re-judging: a flow not sent through OVS for a refresh interval sends this packet there
    // and is pending; until the grace ends it is still a hit; unconfirmed past the grace,
    // it goes.
    h.dp.insert_flow(
        udp_key(),
        FlowEntry {
            last_slow_ns: 1,
            ..entry
        },
    )
    .unwrap();
    assert_eq!(
        h.run_from_pod(&udp_v4(false)).1,
        vec![HandoffToOvs, Refresh]
    );
    let pending = h.dp.flows().unwrap();
    let (_, pending) = pending.iter().find(|(k, _)| *k == udp_key()).unwrap();
    assert_ne!(pending.flags & flow_flags::REFRESH_PENDING, 0, "pending");
    assert_eq!(
        h.run_from_pod(&udp_v4(false)).1,
        vec![FastHit],
        "within the grace"
    );
    h.dp.insert_flow(
        udp_key(),
        FlowEntry {
            flags: flow_flags::REFRESH_PENDING,
            last_slow_ns: 1,
            ..entry
        },
    )
    .unwrap();
    assert_eq!(
        h.run_from_pod(&udp_v4(false)).1,
        vec![HandoffToOvs, RefreshUnconfirmed],
        "unconfirmed past the grace"
    );
    assert!(
        h.dp.flows().unwrap().iter().all(|(k, _)| *k != udp_key()),
        "the unconfirmed entry is retired"
    );
    h.dp.insert_flow(udp_key(), entry).unwrap();

    // … and after a policy change the same flow is a miss until OVS delivers it again.
    h.dp.bump_generation().unwrap();
    assert_eq!(
        h.run_from_pod(&udp_v4(false)).1,
        vec![HandoffToOvs, Invalidated]
    );

    // FIN retires a TCP flow.
    let tcp_key = FlowKey {
        sport: 40000,
        dport: 80,
        proto: 6,
        ..udp_key()
    };
    let current = FlowEntry {
        generation: h.dp.generation().unwrap(),
        ..entry
    };
    h.dp.insert_flow(tcp_key, current).unwrap();
    assert_eq!(
        h.run_from_pod(&tcp_v4(0x10)).1,
        vec![FastHit],
        "ACK on the flow"
    );
    assert_eq!(
        h.run_from_pod(&tcp_v4(0x11)).1,
        vec![HandoffToOvs, Control, Retired],
        "FIN"
    );
    assert!(
        h.dp.flows().unwrap().iter().all(|(k, _)| *k != tcp_key),
        "entry retired"
    );
    assert_eq!(
        h.run_from_pod(&tcp_v4(0x10)).1,
        vec![Miss, HandoffToOvs],
        "gone after FIN"
    );
}

#[test]
fn a_packet_on_an_interface_kovn_does_not_manage_passes_untouched() {
    if !sandbox::privileged("a_packet_on_an_interface_kovn_does_not_manage_passes_untouched") {
        return;
    }
    // No port registered for loopback this time.
    let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
    let dp = Datapath::load(&object, &LoadOptions::default()).expect("verifier");
    for program in [programs::FROM_POD, programs::TO_POD] {
        let verdict = dp.test_run(program, &udp_v4(false)).expect("test_run");
        assert_eq!(
            verdict, TC_ACT_UNSPEC,
            "{program} must hand the packet on untouched"
        );
    }
    assert_eq!(dp.reason_count(LO, Reason::UnknownPort).unwrap(), 2);
    assert_eq!(dp.reason_count(LO, Reason::HandoffToOvs).unwrap(), 0);
}

#[test]
fn random_bytes_are_handed_on_never_dropped() {
    if !sandbox::privileged("random_bytes_are_handed_on_never_dropped") {
        return;
    }
    let h = Harness::new();
    // A fixed-seed xorshift: reproducible "random" packets.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..2000 {
        // Half of them claim to be IPv4 or IPv6 so the parser goes deeper; those are at least
        // as long as their IP header, which BPF_PROG_TEST_RUN requires.
        let (ethertype, min_len) = match i % 4 {
            0 => (Some(0x0800u16), 34),
            2 => (Some(0x86dd), 54),
            _ => (None, 14),
        };
        let len = min_len + (next() % 200) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(ethertype) = ethertype {
            packet[12..14].copy_from_slice(&ethertype.to_be_bytes());
        } else if matches!(
            u16::from_be_bytes([packet[12], packet[13]]),
            0x0800 | 0x86dd | 0x8100
        ) {
            packet[12] = 0x12; // keep random ethertypes clear of the checked ones
        }
        let (verdict, reasons) = h.run_from_pod(&packet);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "packet {i} not handed on: {packet:02x?}"
        );
        assert!(
            reasons.contains(&Reason::HandoffToOvs),
            "packet {i}: {reasons:?}"
        );
        let verdict = h.dp.test_run(programs::TO_POD, &packet).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "packet {i} not delivered");
        // The tunnel observer changes nothing, whatever it reads: the packet as it is, and
        // the packet as the inner frame of a Geneve packet with OVN's option.
        let verdict = h.dp.test_run(programs::TUNNEL_EGRESS, &packet).unwrap();
        assert_eq!(
            verdict, TC_ACT_UNSPEC,
            "packet {i} not passed on by the observer"
        );
        let verdict =
            h.dp.test_run(programs::TUNNEL_EGRESS, &geneve(&packet))
                .unwrap();
        assert_eq!(verdict, TC_ACT_UNSPEC, "Geneve packet {i} not passed on");
    }
}

/// `inner` as OVS encapsulates it for another node: outer Ethernet, IPv4, UDP to 6081, Geneve
/// with one 8-byte option of OVN's class.
fn geneve(inner: &[u8]) -> Vec<u8> {
    let mut p = ethernet(0x0800, false);
    let total = (20 + 8 + 16 + inner.len()) as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 172, 18, 0, 10, 172, 18, 0, 11]);
    p.extend(ports(49152, 6081));
    p.extend_from_slice(&((8 + 16 + inner.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&[0x02, 0, 0x65, 0x58, 0, 0, 0x05, 0]);
    p.extend_from_slice(&[0x01, 0x02, 0x80, 0x01, 0, 0x01, 0, 0x02]);
    p.extend_from_slice(inner);
    p
}

#[test]
fn garbage_collection_removes_idle_and_stale_flows_only() {
    if !sandbox::privileged("garbage_collection_removes_idle_and_stale_flows_only") {
        return;
    }
    let mut h = Harness::new();
    let now = agent::datapath::monotonic_ns();
    let generation = h.dp.generation().unwrap();
    let entry = |generation, last_seen_ns| FlowEntry {
        dst_host_ifindex: LO,
        flags: 0,
        src_mac: POD_MAC,
        dst_mac: PEER_MAC,
        generation,
        last_seen_ns,
        last_slow_ns: last_seen_ns,
    };
    let key = |sport| FlowKey { sport, ..udp_key() };
    h.dp.insert_flow(key(1), entry(generation, now)).unwrap(); // live
    h.dp.insert_flow(key(2), entry(generation, now - 31_000_000_000))
        .unwrap(); // idle > 30 s
    h.dp.insert_flow(key(3), entry(generation - 1, now))
        .unwrap(); // older generation
    let report = h.dp.collect_garbage().unwrap();
    assert_eq!((report.expired, report.stale), (1, 1), "{report:?}");
    let left: Vec<u16> = h.dp.flows().unwrap().iter().map(|(k, _)| k.sport).collect();
    assert_eq!(left, vec![1]);
}

/// The balancer's connections expire when idle, and reverse-NAT entries go with their
/// connection: one left behind would rewrite a later direct reply of the same tuple as if it
/// came from the VIP.
#[test]
fn idle_lb_connections_expire_and_take_their_reverse_nat_along() {
    use agent::datapath::{LbGcReport, MapSourceMut, connection_of};
    use aya::maps::HashMap;
    use datapath_common::{LB_CONNTRACK_MAP, LB_REVERSE_NAT_MAP, LbConnection, LbReverseNat};
    if !sandbox::privileged("idle_lb_connections_expire_and_take_their_reverse_nat_along") {
        return;
    }
    let mut h = Harness::new();
    let now = agent::datapath::monotonic_ns();
    let vip = ipv4_mapped([10, 96, 0, 10]);
    let reply = |client_port: u16| FlowKey {
        scope: 0,
        src: ipv4_mapped(PEER_IP),
        dst: ipv4_mapped(POD_IP),
        sport: 8080,
        dport: client_port,
        proto: 6,
        _pad: [0; 3],
    };
    let nat = |client_port| LbReverseNat {
        vip,
        port: 80,
        client_port,
        flags: 0,
    };
    {
        let mut connections: HashMap<_, FlowKey, LbConnection> =
            h.dp.map_mut_typed(LB_CONNTRACK_MAP).unwrap();
        for (client_port, last_seen_ns) in [(1000, now), (1001, now - 301_000_000_000)] {
            let key = connection_of(&reply(client_port), &nat(client_port));
            let connection = LbConnection {
                last_seen_ns,
                source_port: client_port,
                ..LbConnection::default()
            };
            connections.insert(key, connection, 0).unwrap();
        }
    }
    {
        let mut reverse: HashMap<_, FlowKey, LbReverseNat> =
            h.dp.map_mut_typed(LB_REVERSE_NAT_MAP).unwrap();
        // Live, idle (> the 300 s TCP timeout), and one whose connection the LRU evicted.
        for client_port in [1000, 1001, 1002] {
            reverse
                .insert(reply(client_port), nat(client_port), 0)
                .unwrap();
        }
    }
    let mut gc = h.dp.lb_conntrack().unwrap();
    let first = gc.collect_garbage(agent::datapath::monotonic_ns()).unwrap();
    // A reverse NAT without its connection is only a suspect at first: the programs write
    // a new connection before its reverse NAT, and a pass may fall between the two.
    assert_eq!(
        first,
        LbGcReport {
            expired: 1,
            orphaned: 0,
            kept: 1
        }
    );
    let second = gc.collect_garbage(agent::datapath::monotonic_ns()).unwrap();
    assert_eq!(
        second,
        LbGcReport {
            expired: 0,
            orphaned: 2,
            kept: 1
        }
    );
    use agent::datapath::MapSource;
    let reverse: HashMap<_, FlowKey, LbReverseNat> =
        HashMap::try_from(h.dp.map(LB_REVERSE_NAT_MAP).unwrap()).unwrap();
    let left: Vec<u16> = reverse
        .keys()
        .filter_map(Result::ok)
        .map(|k| k.dport)
        .collect();
    assert_eq!(
        left,
        vec![1000],
        "only the live connection's reverse NAT stays"
    );
}

#[test]
fn the_object_loads_with_bpf_logs_on() {
    if !sandbox::privileged("the_object_loads_with_bpf_logs_on") {
        return;
    }
    // The log statements are compiled in only when asked for; the verifier must accept them.
    let object = locate_object().unwrap();
    let mut dp = Datapath::load(
        &object,
        &LoadOptions {
            log_level: Some(aya_log::Level::Trace),
            ..LoadOptions::default()
        },
    )
    .expect("verifier accepts the programs with logging on");
    assert!(dp.take_logger().is_some());
}

#[test]
fn a_full_decision_counter_map_is_a_fault_and_the_packet_is_still_handled() {
    if !sandbox::privileged(
        "a_full_decision_counter_map_is_a_fault_and_the_packet_is_still_handled",
    ) {
        return;
    }
    use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
    use datapath_common::{Fault, REASONS_MAP, REASONS_MAX_ENTRIES, ReasonKey};
    // The map is filled from outside, through its pin, as another writer (or a leak) would.
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/kovn-test-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pin_dir);
    std::fs::create_dir_all(&pin_dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(pin_dir.clone());
    let h = Harness::with(&LoadOptions {
        pin_dir: Some(pin_dir.clone()),
        ..LoadOptions::default()
    });
    let dp = &h.dp;
    let fault = |dp: &Datapath| {
        dp.faults()
            .unwrap()
            .into_iter()
            .find(|f| f.fault == Fault::ReasonMapFull)
            .map_or(0, |f| f.count)
    };
    assert_eq!(fault(dp), 0);
    {
        let data = MapData::from_pin(pin_dir.join(REASONS_MAP)).unwrap();
        let mut map: PerCpuHashMap<_, ReasonKey, u64> =
            PerCpuHashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        for i in 0..REASONS_MAX_ENTRIES {
            let values = PerCpuValues::try_from(vec![0u64; cpus]).unwrap();
            map.insert(
                ReasonKey {
                    ifindex: 1_000_000 + i,
                    reason: 0,
                },
                values,
                0,
            )
            .unwrap();
        }
    }
    let verdict = dp.test_run(programs::FROM_POD, &udp_v4(false)).unwrap();
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the packet is handed to OVS as before"
    );
    assert!(fault(dp) >= 1, "the uncounted decision is not a fault");
    assert_eq!(dp.reason_count(LO, Reason::Miss).unwrap(), 0);
}

#[test]
fn the_tunnel_observer_learns_local_pods_flows_only_and_retires_them_on_fin() {
    if !sandbox::privileged(
        "the_tunnel_observer_learns_local_pods_flows_only_and_retires_them_on_fin",
    ) {
        return;
    }
    let mut h = Harness::new();
    // A local pod of the default VPC (the scope the observer learns in), on a made-up port.
    const LOCAL: [u8; 4] = [10, 16, 0, 9];
    let scope = h.dp.default_scope();
    h.dp.register_port(
        PodPort {
            host_ifindex: 1000,
            ovs_peer_ifindex: 1001,
            scope,
            mac: PEER_MAC,
            _pad: [0; 2],
            ip: ipv4_mapped(LOCAL),
        },
        ipv4_mapped(LOCAL),
    )
    .unwrap();
    let from = |source: [u8; 4], flags: u8| {
        let mut inner = tcp_v4(flags);
        inner[26..30].copy_from_slice(&source);
        geneve(&inner)
    };
    let key = FlowKey {
        scope,
        src: ipv4_mapped(LOCAL),
        dst: ipv4_mapped(PEER_IP),
        sport: 40000,
        dport: 80,
        proto: 6,
        _pad: [0; 3],
    };
    let learned = |h: &Harness| h.dp.tunnel_flows().unwrap();
    // Not a local pod's flow (scope 0's pod is not the default VPC's, and nobody holds
    // 10.16.0.99): nothing learned.
    for source in [POD_IP, [10, 16, 0, 99]] {
        let verdict =
            h.dp.test_run(programs::TUNNEL_EGRESS, &from(source, 0x10))
                .unwrap();
        assert_eq!(verdict, TC_ACT_UNSPEC);
    }
    assert!(learned(&h).is_empty(), "{:?}", learned(&h));
    assert!(h.count(Reason::TunnelNotLearned) >= 2);
    // A data packet of the local pod: learned, with the packet's first bytes.
    let packet = from(LOCAL, 0x10);
    assert_eq!(
        h.dp.test_run(programs::TUNNEL_EGRESS, &packet).unwrap(),
        TC_ACT_UNSPEC
    );
    let flows = learned(&h);
    assert_eq!(flows.len(), 1, "{flows:?}");
    let (learned_key, entry) = &flows[0];
    assert_eq!(*learned_key, key);
    assert_eq!(entry.inner_offset, 58);
    assert_eq!(entry.egress_ifindex, LO);
    assert_eq!(entry.header[..], packet[..80]);
    assert_eq!(h.count(Reason::TunnelLearned), 1);
    // FIN: the entry goes (the connection ends through OVS).
    h.dp.test_run(programs::TUNNEL_EGRESS, &from(LOCAL, 0x11))
        .unwrap();
    assert!(learned(&h).is_empty(), "FIN left {:?}", learned(&h));
    // A UDP packet to port 6081 that is not Geneve (version 1) is not read at all.
    let mut not_geneve = from(LOCAL, 0x10);
    not_geneve[42] |= 0x40;
    let before = h.count(Reason::TunnelNotLearned);
    h.dp.test_run(programs::TUNNEL_EGRESS, &not_geneve).unwrap();
    assert!(learned(&h).is_empty());
    assert_eq!(
        h.count(Reason::TunnelNotLearned),
        before,
        "counted a non-tunnel packet"
    );
}

#[test]
fn the_receive_side_delivers_only_flows_ovs_delivered_with_the_same_outer_headers() {
    if !sandbox::privileged(
        "the_receive_side_delivers_only_flows_ovs_delivered_with_the_same_outer_headers",
    ) {
        return;
    }
    let mut h = Harness::new();
    h.dp.set_cross_node(true).unwrap();
    // A local pod of the default VPC whose OVS port pair's outer end is loopback (where
    // BPF_PROG_TEST_RUN presents packets), so kovn_to_pod delivers to it.
    const LOCAL: [u8; 4] = [10, 16, 0, 9];
    const REMOTE: [u8; 4] = [10, 16, 0, 50];
    let scope = h.dp.default_scope();
    h.dp.register_port(
        PodPort {
            host_ifindex: 1000,
            ovs_peer_ifindex: LO,
            scope,
            mac: PEER_MAC,
            _pad: [0; 2],
            ip: ipv4_mapped(LOCAL),
        },
        ipv4_mapped(LOCAL),
    )
    .unwrap();
    // A TCP packet from another node's pod to the local one, as it arrives in Geneve.
    let inner = |flags: u8| {
        let mut p = tcp_v4(flags);
        p[26..30].copy_from_slice(&REMOTE);
        p[30..34].copy_from_slice(&LOCAL);
        p
    };
    let arriving = |flags: u8| geneve(&inner(flags));
    let rx = |h: &Harness| h.dp.tunnel_rx().unwrap();
    // Unpaired, the NIC's program delivers nothing and passes everything on.
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
            .unwrap(),
        TC_ACT_UNSPEC
    );
    assert!(rx(&h).is_empty(), "{:?}", rx(&h));
    assert_eq!(h.count(Reason::UplinkUnpaired), 1);
    // Paired with the node's stack (OVS does not read the NIC).
    h.dp.pair_uplink(LO, None).unwrap();

    // First packet: to OVS, its outer headers recorded, not confirmed.
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
            .unwrap(),
        TC_ACT_UNSPEC
    );
    let entries = rx(&h);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].1.flags & rx_flags::CONFIRMED, 0);
    assert_eq!(entries[0].1.outer_src, [172, 18, 0, 10]);
    assert_eq!(entries[0].1.inner_offset, 58);
    assert_eq!(h.count(Reason::TunnelRxPending), 1);
    // Still pending: a second packet goes to OVS too.
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
            .unwrap(),
        TC_ACT_UNSPEC
    );
    // OVS delivers it: the flow is confirmed, for the pod's veth.
    assert_eq!(
        h.dp.test_run(programs::TO_POD, &inner(0x10)).unwrap(),
        TC_ACT_REDIRECT
    );
    let entries = rx(&h);
    assert_ne!(entries[0].1.flags & rx_flags::CONFIRMED, 0, "{entries:?}");
    assert_eq!(entries[0].1.dst_host_ifindex, 1000);
    // Now the fast path delivers it.
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
            .unwrap(),
        TC_ACT_REDIRECT
    );
    assert_eq!(h.count(Reason::TunnelRxFastHit), 1);

    // Another outer source (not the node OVS accepted the flow from): OVS's, recorded anew.
    let mut forged = arriving(0x10);
    forged[29] = 99;
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &forged).unwrap(),
        TC_ACT_UNSPEC
    );
    assert_eq!(rx(&h)[0].1.flags & rx_flags::CONFIRMED, 0);
    assert_eq!(h.count(Reason::TunnelRxFastHit), 1);
    // The same for another logical port in OVN's option.
    h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
        .unwrap();
    h.dp.test_run(programs::TO_POD, &inner(0x10)).unwrap();
    let mut other_port = arriving(0x10);
    other_port[57] ^= 1;
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &other_port)
            .unwrap(),
        TC_ACT_UNSPEC
    );
    // A new policy generation: nothing is delivered until OVS delivers again.
    h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
        .unwrap();
    h.dp.test_run(programs::TO_POD, &inner(0x10)).unwrap();
    h.dp.bump_generation().unwrap();
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x10))
            .unwrap(),
        TC_ACT_UNSPEC
    );
    assert_eq!(h.count(Reason::TunnelRxFastHit), 1);
    // FIN goes to OVS and retires the flow.
    h.dp.test_run(programs::TO_POD, &inner(0x10)).unwrap();
    assert_eq!(
        h.dp.test_run(programs::UPLINK_INGRESS, &arriving(0x11))
            .unwrap(),
        TC_ACT_UNSPEC
    );
    assert!(rx(&h).is_empty(), "FIN left {:?}", rx(&h));

    // Random bytes, bare or as Geneve's inner frame: passed on, never dropped.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1000 {
        let len = 34 + (next() % 200) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 {
            packet[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        }
        for p in [&packet, &geneve(&packet)] {
            assert_eq!(
                h.dp.test_run(programs::UPLINK_INGRESS, p).unwrap(),
                TC_ACT_UNSPEC,
                "packet {i} not passed on: {p:02x?}"
            );
        }
    }
    // The pair's program with no NIC to send to passes on, counted.
    assert_eq!(
        h.dp.test_run(programs::UPLINK_RETURN, &udp_v4(false))
            .unwrap(),
        TC_ACT_UNSPEC
    );
}
