//! The real eBPF object, loaded through the kernel's verifier with aya, attached to a veth in a
//! test namespace: traffic still flows, and the counters see exactly that traffic.

use agent::datapath::{Datapath, LoadOptions, ReadMaps, locate_object};
use datapath_common::Direction;
use sandbox::Cmd;
use sandbox::netns::{self, ScratchNamespaces};

const PINGS: u32 = 20;
/// ICMP payload; with ICMP (8), IPv4 (20) and Ethernet (14) headers a packet is 1042 bytes.
const PAYLOAD: u32 = 1000;
const FRAME: u64 = PAYLOAD as u64 + 8 + 20 + 14;

#[test]
fn counters_count_what_crosses_a_veth_and_drop_nothing() {
    if !sandbox::privileged("counters_count_what_crosses_a_veth_and_drop_nothing") {
        return;
    }
    let object = locate_object().expect("eBPF object (cargo xtask build-ebpf)");
    let mut datapath = Datapath::load(&object, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("verifier accepts {}: {e:?}", object.display()));

    let hosts = ScratchNamespaces::new(&["bpf-a", "bpf-b"]).expect("namespaces");
    let (a, b) = (hosts.name(0), hosts.name(1));
    let ip = |ns: &str, args: &[&str]| {
        Cmd::new("ip")
            .arg("-n")
            .arg(ns)
            .args(args.iter().copied())
            .run()
            .expect("ip")
    };
    ip(
        a,
        &[
            "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
        ],
    );
    for (ns, dev, addr) in [(a, "va", "192.168.77.1/24"), (b, "vb", "192.168.77.2/24")] {
        // No IPv6 on the link: router solicitations would be counted too.
        Cmd::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")])
            .netns(ns)
            .run()
            .expect("sysctl");
        ip(ns, &["addr", "add", addr, "dev", dev]);
        ip(ns, &["link", "set", dev, "up"]);
    }
    // Resolve ARP first so the counted window holds only the pings.
    Cmd::new("ping")
        .args(["-c", "1", "-W", "2", "192.168.77.2"])
        .netns(a)
        .run()
        .expect("warm-up ping");

    netns::run_in(a, || {
        datapath.attach_counters("va", Direction::Ingress)?;
        datapath.attach_counters("va", Direction::Egress)
    })
    .expect("enter namespace")
    .expect("attach counters to va");

    let out = Cmd::new("ping")
        .args([
            "-n",
            "-q",
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.05",
            "-W",
            "2",
        ])
        .args(["-s", &PAYLOAD.to_string(), "192.168.77.2"])
        .netns(a)
        .run()
        .expect("ping through the attached programs");
    assert!(
        out.contains(&format!("{PINGS} packets transmitted, {PINGS} received")),
        "the counter programs must pass every packet on: {out}"
    );

    let ifindex = netns::ifindex(a, "va").expect("ifindex of va");
    for direction in [Direction::Egress, Direction::Ingress] {
        let c = datapath
            .interface_counter(ifindex, direction)
            .expect("read counters")
            .unwrap_or_else(|| panic!("no {} counter for va", direction.as_str()));
        // Exactly the pings, plus at most a couple of ARP frames if a neighbour entry was
        // refreshed meanwhile.
        assert!(
            (u64::from(PINGS)..=u64::from(PINGS) + 2).contains(&c.packets),
            "{}: {} packets for {PINGS} pings",
            direction.as_str(),
            c.packets
        );
        assert!(
            c.bytes >= u64::from(PINGS) * FRAME && c.bytes <= u64::from(PINGS) * FRAME + 2 * 60,
            "{}: {} bytes for {PINGS} frames of {FRAME} bytes",
            direction.as_str(),
            c.bytes
        );
    }
    let faults = datapath.faults().expect("read faults");
    assert!(
        faults.iter().all(|f| f.count == 0),
        "unexpected faults: {faults:?}"
    );
}
