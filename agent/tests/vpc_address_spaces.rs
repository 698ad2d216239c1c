//! Two VPCs with the same CIDR, their pods on one node with the same addresses: each VPC is
//! an address space of its own, in OVN and in the fast path. A UDP flow in one VPC is
//! fast-pathed; the same 5-tuple sent in the other VPC reaches that VPC's pod and never the
//! first VPC's (counted at both receivers by the datagrams' tags), before and after an agent
//! restart. The Subnets leave `protocol` out (derived from the CIDR, as Kube-OVN does). A
//! Service whose endpoints are in one VPC is that VPC's alone.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::netns;
use serde_json::json;

const CIDR: &str = "10.50.0.0/24";
const PORT: u16 = 5000;
const SOURCE_PORT: u16 = 40000;

/// VPC `vpc` with subnet `<vpc>-net` (CIDR, no protocol) for namespace `ns`; returns once
/// the controller has built the subnet's switch.
fn tenant(cluster: &KovnCluster, vpc: &str, ns: &str) {
    let switch = format!("{vpc}-net");
    let vpc_object: api::Vpc = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": vpc}, "spec": {}
    }))
    .unwrap();
    cluster.api.put(&vpc_object);
    let subnet: api::Subnet = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": switch},
        "spec": {"cidrBlock": CIDR, "vpc": vpc, "namespaces": [ns]}
    }))
    .unwrap();
    cluster.api.put(&subnet);
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "annotations": {"ovn.kubernetes.io/logical_switch": switch}}
    }))
    .unwrap();
    cluster.api.put(&namespace);
    if let Err(e) = cluster.wait_for_switch(&switch, Duration::from_secs(30)) {
        let status = cluster
            .api
            .all::<api::Subnet>()
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(switch.as_str()))
            .and_then(|s| s.status);
        panic!("{e}; the subnet's status: {status:?}");
    }
}

fn pod(ns: &str, name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns}, "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap()
}

/// A UDP socket bound in `pod`'s namespace.
fn socket_in(pod: &RunningPod, port: u16) -> UdpSocket {
    let ip = pod.ip;
    netns::run_in(&pod.netns, move || UdpSocket::bind((ip, port)))
        .unwrap()
        .unwrap()
}

/// Sends `count` datagrams tagged `tag` from `from` (source port [`SOURCE_PORT`]) to
/// `to:PORT`, one every 2 ms, until done or `stop`.
fn send(from: &RunningPod, to: Ipv4Addr, tag: u8, count: u32, stop: &AtomicBool) {
    let socket = socket_in(from, SOURCE_PORT);
    let target = SocketAddr::from((to, PORT));
    for i in 0..count {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let _ = socket.send_to(&[tag, (i >> 8) as u8, i as u8], target);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Datagrams a sink receives, by tag, read as they come (a socket buffer holds only a few
/// hundred) until `stop` is set and it has been quiet for 300 ms.
fn drain(sink: &UdpSocket, stop: &AtomicBool) -> [u32; 256] {
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut by_tag = [0u32; 256];
    let mut buf = [0u8; 64];
    loop {
        match sink.recv(&mut buf) {
            Ok(n) if n > 0 => by_tag[buf[0] as usize] += 1,
            Ok(_) => {}
            Err(_) if stop.load(Ordering::SeqCst) => return by_tag,
            Err(_) => {}
        }
    }
}

/// Learned flows from `src` to `dst`, by the scope they were learned in.
fn scopes_of_flows(cluster: &KovnCluster, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u32> {
    use agent::datapath::{PinnedMaps, ReadMaps};
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let (src, dst) = (src.to_ipv6_mapped().octets(), dst.to_ipv6_mapped().octets());
    let mut scopes: Vec<u32> = PinnedMaps::open(&pins)
        .expect("pinned maps")
        .flows()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.src == src && k.dst == dst && k.sport == SOURCE_PORT)
        .map(|(k, _)| k.scope)
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// While VPC A's flow `a1 → a2` runs fast-pathed, VPC B's pod with a1's address sends the
/// same 5-tuple: b2 (a2's address in B) gets it all, a2 gets none of it.
fn same_tuple_in_both_vpcs(cluster: &KovnCluster, pods: &[&RunningPod; 4], when: &str) {
    let [a1, a2, b1, b2] = *pods;
    let (sink_a, sink_b) = (socket_in(a2, PORT), socket_in(b2, PORT));
    let (stop, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let (at_a, at_b) = std::thread::scope(|s| {
        let receivers = (
            s.spawn(|| drain(&sink_a, &done)),
            s.spawn(|| drain(&sink_b, &done)),
        );
        // VPC A's stream first, long enough to be learned and fast-pathed.
        let a = s.spawn(|| send(a1, a2.ip, b'A', 1500, &stop));
        std::thread::sleep(Duration::from_millis(800));
        let learned = scopes_of_flows(cluster, a1.ip, a2.ip);
        assert_eq!(
            learned.len(),
            1,
            "{when}: VPC A's flow is not learned (scopes {learned:?})"
        );
        send(b1, b2.ip, b'B', 400, &stop);
        stop.store(true, Ordering::SeqCst);
        a.join().unwrap();
        done.store(true, Ordering::SeqCst);
        (receivers.0.join().unwrap(), receivers.1.join().unwrap())
    });
    assert_eq!(
        at_a[b'B' as usize], 0,
        "{when}: VPC B's datagrams reached VPC A's pod {} ({} of 400)",
        a2.name, at_a[b'B' as usize]
    );
    assert!(
        at_b[b'B' as usize] >= 380,
        "{when}: VPC B's pod {} got {} of 400",
        b2.name,
        at_b[b'B' as usize]
    );
    assert!(at_a[b'A' as usize] > 200, "{when}: VPC A's stream stalled");
    assert_eq!(
        at_b[b'A' as usize], 0,
        "{when}: VPC A's datagrams reached B"
    );
    // Both VPCs' flows are in the fast path, each in its own scope.
    let scopes = scopes_of_flows(cluster, a1.ip, a2.ip);
    assert_eq!(
        scopes.len(),
        2,
        "{when}: the same 5-tuple should be learned once per VPC: {scopes:?}"
    );
}

/// A UDP Service in VPC A (namespace `a`) with `backend` behind it, its EndpointSlice as
/// the endpointslice controller writes it (the pod as `targetRef`).
fn service_in_a(cluster: &KovnCluster, vip: Ipv4Addr, backend: &RunningPod) {
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "echo", "namespace": "a"},
        "spec": {"clusterIP": vip.to_string(),
            "ports": [{"port": 5300, "targetPort": PORT, "protocol": "UDP"}]}
    }))
    .unwrap();
    cluster.api.put(&service);
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "echo-1", "namespace": "a",
            "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4",
        "ports": [{"port": PORT, "protocol": "UDP"}],
        "endpoints": [{"addresses": [backend.ip.to_string()], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": backend.name, "namespace": "a"}}]
    }))
    .unwrap();
    cluster.api.put(&slice);
}

/// A Service whose endpoints are VPC A's pods is VPC A's: the controller puts it in VPC A's
/// load balancer and annotates it (`ovn.kubernetes.io/vpc`), the agent leaves it out of the
/// eBPF balancer (which serves the default VPC), VPC A's pod reaches it through OVN, and VPC
/// B's pod with the same address reaches nothing there.
fn a_custom_vpc_service(cluster: &KovnCluster, pods: &[&RunningPod; 4]) {
    let [a1, a2, b1, b2] = *pods;
    let vip = Ipv4Addr::new(10, 96, 60, 1);
    service_in_a(cluster, vip, a2);
    sandbox::kovn::wait_for("echo annotated with vpc-a", Duration::from_secs(20), || {
        cluster
            .api
            .all::<k8s_openapi::api::core::v1::Service>()
            .iter()
            .any(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(api::annotations::VPC))
                    .is_some_and(|v| v == "vpc-a")
            })
    })
    .unwrap();
    let (sink_a, sink_b) = (socket_in(a2, PORT), socket_in(b2, PORT));
    let done = AtomicBool::new(false);
    let (at_a, at_b) = std::thread::scope(|s| {
        let receivers = (
            s.spawn(|| drain(&sink_a, &done)),
            s.spawn(|| drain(&sink_b, &done)),
        );
        let target = SocketAddr::from((vip, 5300));
        // OVN's load balancer may take a moment to reach the switch: keep sending a while.
        for (from, tag) in [(a1, b'A'), (b1, b'B')] {
            let socket = socket_in(from, 0);
            for i in 0..300u32 {
                let _ = socket.send_to(&[tag, (i >> 8) as u8, i as u8], target);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        done.store(true, Ordering::SeqCst);
        (receivers.0.join().unwrap(), receivers.1.join().unwrap())
    });
    assert!(
        at_a[b'A' as usize] > 200,
        "VPC A's pod reached its Service {} times of 300",
        at_a[b'A' as usize]
    );
    assert_eq!(
        at_a[b'B' as usize], 0,
        "VPC B's pod reached VPC A's Service"
    );
    assert_eq!(
        at_b[b'B' as usize] + at_b[b'A' as usize],
        0,
        "the VIP led into VPC B"
    );
    // Not in the eBPF balancer: the default VPC's pods there would be sent to VPC A's
    // addresses.
    use agent::datapath::ReadServiceMaps;
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let programmed = agent::datapath::PinnedMaps::open(&pins)
        .and_then(|m| m.services())
        .unwrap();
    let vip_bytes = agent::datapath::ip_bytes(vip.into());
    assert!(
        programmed.iter().all(|(k, _)| k.vip != vip_bytes),
        "VPC A's Service is in the eBPF balancer"
    );
}

#[test]
fn two_vpcs_with_one_cidr_are_two_address_spaces_in_the_fast_path() {
    if !sandbox::privileged("two_vpcs_with_one_cidr_are_two_address_spaces_in_the_fast_path") {
        return;
    }
    let mut cluster = KovnCluster::start(1, common::binaries()).expect("kovn on a sandbox");
    tenant(&cluster, "vpc-a", "a");
    tenant(&cluster, "vpc-b", "b");
    let start = |ns: &str, name: &str| {
        cluster
            .start_pod_object(pod(ns, name), 0)
            .unwrap_or_else(|e| panic!("pod {ns}/{name}: {e}"))
    };
    let (a1, b1, a2, b2) = (
        start("a", "p1"),
        start("b", "p1"),
        start("a", "p2"),
        start("b", "p2"),
    );
    assert_eq!(a1.ip, b1.ip, "the two VPCs' first pods differ in address");
    assert_eq!(a2.ip, b2.ip, "the two VPCs' second pods differ in address");
    assert!(CIDR.parse::<ipnet::Ipv4Net>().unwrap().contains(&a1.ip));
    // Both address spaces work, in both directions.
    for (from, to) in [(&a1, &a2), (&a2, &a1), (&b1, &b2), (&b2, &b1)] {
        let ok = (0..50).any(|_| {
            sandbox::Cmd::new("ping")
                .args(["-c", "1", "-W", "1"])
                .arg(to.ip.to_string())
                .netns(&from.netns)
                .succeeds()
                .unwrap_or(false)
        });
        assert!(
            ok,
            "{}/{} does not reach {}/{}",
            from.namespace, from.name, to.namespace, to.name
        );
    }
    same_tuple_in_both_vpcs(&cluster, &[&a1, &a2, &b1, &b2], "first run");
    // A restarted agent re-adopts the pods with their VPCs (from its records): the spaces stay
    // apart.
    cluster.restart_agent(0).expect("agent restart");
    same_tuple_in_both_vpcs(&cluster, &[&a1, &a2, &b1, &b2], "after an agent restart");
    a_custom_vpc_service(&cluster, &[&a1, &a2, &b1, &b2]);
    drop((a1, a2, b1, b2));
    cluster.teardown().expect("teardown");
}
