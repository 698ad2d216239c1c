//! Underlay as Kube-OVN lays it: a ProviderNetwork names each node's NIC on the physical
//! network, a Vlan is on it, an underlay Subnet names the Vlan and the physical gateway. The
//! sandbox's external network plays the physical network, its router the physical gateway.
//! Pods of the subnet on two nodes reach the gateway with their own addresses and MACs, and
//! each other through the physical network (its switch carries their packets, no tunnel);
//! two of them on one node are fast-pathed with no duplicate; a pod of a tagged Vlan's subnet
//! sends tagged frames, and its broadcasts reach its own VLAN only; the nodes do not route the subnet through ovn0. With
//! `logicalGateway`, an underlay subnet's gateway is OVN's router port: overlay pods and
//! nodes reach its pods.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::traffic::Capture;
use sandbox::{Cmd, EXTERNAL_GATEWAY, EXTERNAL_NIC};
use serde_json::json;

const CIDR: &str = "192.168.200.0/24";
const L2_CIDR: &str = "192.168.220.0/24";
const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn put<T: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()> + serde::Serialize>(
    cluster: &KovnCluster,
    value: serde_json::Value,
) {
    let object: T = serde_json::from_value(value).unwrap();
    cluster.api.put(&object);
}

fn underlay(cluster: &KovnCluster) {
    put::<api::ProviderNetwork>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork",
            "metadata": {"name": "net1"}, "spec": {"defaultInterface": EXTERNAL_NIC}}),
    );
    put::<api::Vlan>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vlan",
            "metadata": {"name": "vlan0"}, "spec": {"id": 0, "provider": "net1"}}),
    );
    put::<api::Subnet>(
        cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "underlay"},
            "spec": {"cidrBlock": CIDR, "gateway": EXTERNAL_GATEWAY.to_string(),
                "excludeIps": [EXTERNAL_GATEWAY.to_string()], "vlan": "vlan0",
                "namespaces": ["ul"]}}),
    );
    put::<Namespace>(
        cluster,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "ul", "annotations": {"ovn.kubernetes.io/logical_switch": "underlay"}}}),
    );
    cluster
        .wait_for_switch("underlay", Duration::from_secs(30))
        .unwrap();
}

fn underlay_pod(cluster: &KovnCluster, name: &str, node: usize) -> RunningPod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ul"}, "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    let p = cluster.start_pod_object(pod, node).expect("underlay pod");
    assert!(CIDR.parse::<ipnet::Ipv4Net>().unwrap().contains(&p.ip));
    p
}

fn pings(from: &RunningPod, to: Ipv4Addr, count: u32) -> bool {
    Cmd::new("ping")
        .args(["-c", &count.to_string(), "-i", "0.05", "-W", "1", "-q"])
        .arg(to.to_string())
        .netns(&from.netns)
        .run()
        .is_ok_and(|out| out.contains(&format!("{count} received")))
}

fn mac_of(pod: &RunningPod) -> String {
    let link = Cmd::new("ip")
        .args(["-o", "link", "show", "eth0"])
        .netns(&pod.netns)
        .run()
        .unwrap();
    link.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned()
}

fn wait(what: &str, check: impl FnMut() -> bool) {
    sandbox::kovn::wait_for(what, Duration::from_secs(20), check).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn underlay_pods_reach_the_physical_gateway_and_each_other_over_the_physical_network() {
    if !sandbox::privileged(
        "underlay_pods_reach_the_physical_gateway_and_each_other_over_the_physical_network",
    ) {
        return;
    }
    let mut cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    let physical = cluster
        .sb
        .add_external_network(&[0, 1], INTERNET)
        .expect("the physical network");
    underlay(&cluster);
    for i in 0..2 {
        wait(&format!("n{i}'s br-net1 on {EXTERNAL_NIC}"), || {
            cluster
                .sb
                .node(i)
                .vsctl()
                .run(["list-ports", "br-net1"])
                .is_ok_and(|p| p.trim() == EXTERNAL_NIC)
        });
    }
    // The ProviderNetwork shows where it is ready, as Kube-OVN's status does, and its Vlan
    // the subnets on it.
    wait("net1 ready on n0 and n1", || {
        cluster
            .api
            .all::<api::ProviderNetwork>()
            .into_iter()
            .find_map(|p| p.status)
            .is_some_and(|s| s.ready && s.ready_nodes == ["n0", "n1"] && s.vlans == ["vlan0"])
    });
    wait("vlan0 lists its subnet", || {
        cluster
            .api
            .all::<api::Vlan>()
            .into_iter()
            .find_map(|v| v.status)
            .is_some_and(|s| s.subnets == ["underlay"])
    });
    let u0 = underlay_pod(&cluster, "u0", 0);
    let u1 = underlay_pod(&cluster, "u1", 1);

    // The physical gateway sees u0 itself: its address and its MAC, straight off the wire.
    let capture = Capture::start(
        &physical.router,
        "eth0",
        "icmp",
        cluster.dir.join("underlay-gw.pcap"),
    )
    .unwrap();
    wait("u0 reaches the physical gateway", || {
        pings(&u0, EXTERNAL_GATEWAY, 1)
    });
    assert!(pings(&u0, EXTERNAL_GATEWAY, 10), "u0's pings were lost");
    let seen = capture.stop_and_decode(&["-e"]).unwrap();
    let mac = mac_of(&u0);
    let requests = seen
        .iter()
        .filter(|l| {
            l.contains(&format!(
                "{} > {EXTERNAL_GATEWAY}: ICMP echo request",
                u0.ip
            ))
        })
        .filter(|l| l.starts_with(&mac) || l.contains(&format!(" {mac} >")))
        .count();
    assert!(
        requests >= 10,
        "the gateway saw {requests} requests from u0 ({}, {mac}):\n{}",
        u0.ip,
        seen.join("\n")
    );

    // u0 to u1 across nodes: on the physical network's switch, not in a tunnel.
    let capture = Capture::start(
        &physical.switch,
        "br0",
        &format!("icmp and host {} and host {}", u0.ip, u1.ip),
        cluster.dir.join("underlay-switch.pcap"),
    )
    .unwrap();
    wait("u0 reaches u1", || pings(&u0, u1.ip, 1));
    assert!(pings(&u0, u1.ip, 10), "u0's pings to u1 were lost");
    let seen = capture.stop_and_decode(&[]).unwrap();
    let across = seen
        .iter()
        .filter(|l| l.contains(&format!("{} > {}: ICMP echo request", u0.ip, u1.ip)))
        .count();
    assert!(
        across >= 10,
        "the physical switch carried {across} of u0's requests to u1:\n{}",
        seen.join("\n")
    );

    // Two underlay pods on one node: OVS's first packets, then the fast path, no duplicate.
    let u2 = underlay_pod(&cluster, "u2", 0);
    wait("u0 reaches u2", || pings(&u0, u2.ip, 1));
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let before = fast_hits(&pins);
    let out = Cmd::new("ping")
        .args(["-c", "300", "-i", "0.005", "-W", "1", "-q"])
        .arg(u2.ip.to_string())
        .netns(&u0.netns)
        .run()
        .unwrap();
    assert!(
        out.contains("300 received") && !out.contains("duplicates"),
        "u0 to u2 on one node: {out}"
    );
    let hits = fast_hits(&pins) - before;
    assert!(
        hits > 100,
        "{hits} fast hits for 300 echoes between underlay pods"
    );

    // A second Vlan on the same provider network, tag 10: what its pod sends is tagged 10 on
    // the physical network (and untagged for vlan0's pods, as seen above).
    put::<api::Vlan>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vlan",
            "metadata": {"name": "vlan10"}, "spec": {"id": 10, "provider": "net1"}}),
    );
    put::<api::Subnet>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "underlay10"},
            "spec": {"cidrBlock": "192.168.210.0/24", "gateway": "192.168.210.254",
                "vlan": "vlan10", "namespaces": ["ul10"]}}),
    );
    put::<Namespace>(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "ul10", "annotations": {"ovn.kubernetes.io/logical_switch": "underlay10"}}}),
    );
    cluster
        .wait_for_switch("underlay10", Duration::from_secs(30))
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "v", "namespace": "ul10"}, "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    let v = cluster.start_pod_object(pod, 1).expect("pod ul10/v");
    let capture = Capture::start(
        &physical.switch,
        "br0",
        "arp or (vlan and arp)",
        cluster.dir.join("underlay-vlan.pcap"),
    )
    .unwrap();
    // Nothing answers for 192.168.210.254: the ARP requests are what crosses the wire.
    assert!(!pings(&v, "192.168.210.254".parse().unwrap(), 2));
    let seen = capture.stop_and_decode(&["-e"]).unwrap();
    let asks = format!("who-has 192.168.210.254 tell {}", v.ip);
    let tagged = seen
        .iter()
        .filter(|l| l.contains(&asks) && l.contains("vlan 10"))
        .count();
    let untagged = seen
        .iter()
        .filter(|l| l.contains(&asks) && !l.contains("vlan 10"))
        .count();
    assert!(
        tagged > 0 && untagged == 0,
        "v's ARP requests on the physical network: {tagged} tagged 10, {untagged} not:\n{}",
        seen.join("\n")
    );

    // VLAN isolation: a third Vlan, tag 20, on the same provider network and the same
    // physical switch. v's broadcasts (ARP for w's address, on-link) reach a pod of its own
    // VLAN on the other node and never w, the VLAN 20 pod beside it.
    put::<api::Vlan>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Vlan",
            "metadata": {"name": "vlan20"}, "spec": {"id": 20, "provider": "net1"}}),
    );
    put::<api::Subnet>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "underlay20"},
            "spec": {"cidrBlock": "192.168.211.0/24", "gateway": "192.168.211.254",
                "vlan": "vlan20", "namespaces": ["ul20"]}}),
    );
    put::<Namespace>(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "ul20", "annotations": {"ovn.kubernetes.io/logical_switch": "underlay20"}}}),
    );
    cluster
        .wait_for_switch("underlay20", Duration::from_secs(30))
        .unwrap();
    let in_namespace = |namespace: &str, name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap()
    };
    let v2 = cluster
        .start_pod_object(in_namespace("ul10", "v2"), 0)
        .expect("pod ul10/v2");
    let w = cluster
        .start_pod_object(in_namespace("ul20", "w"), 0)
        .expect("pod ul20/w");
    Cmd::new("ip")
        .args(["route", "add", "192.168.211.0/24", "dev", "eth0"])
        .netns(&v.netns)
        .run()
        .expect("an on-link route to VLAN 20's subnet in v");
    let asks_for_w = format!("who-has {} tell {}", w.ip, v.ip);
    let own_vlan =
        Capture::start(&v2.netns, "eth0", "arp", cluster.dir.join("vlan10-v2.pcap")).unwrap();
    let other_vlan =
        Capture::start(&w.netns, "eth0", "arp", cluster.dir.join("vlan20-w.pcap")).unwrap();
    assert!(!pings(&v, w.ip, 3), "v (VLAN 10) reached w (VLAN 20)");
    let heard = |lines: Vec<String>| lines.iter().filter(|l| l.contains(&asks_for_w)).count();
    let (same, other) = (
        heard(own_vlan.stop_and_decode(&[]).unwrap()),
        heard(other_vlan.stop_and_decode(&[]).unwrap()),
    );
    assert!(
        same > 0,
        "v's ARP broadcast did not reach v2 of its own VLAN on the other node"
    );
    assert_eq!(other, 0, "VLAN 20's pod heard VLAN 10's broadcast");

    // logicalGateway: an underlay subnet of a layer-2-only network, its gateway OVN's router
    // port; an overlay pod and a node reach its pod through OVN's router.
    put::<api::Subnet>(
        &cluster,
        json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "l2only"},
            "spec": {"cidrBlock": L2_CIDR, "gateway": "192.168.220.1", "vlan": "vlan0",
                "logicalGateway": true, "namespaces": ["l2"]}}),
    );
    put::<Namespace>(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "l2", "annotations": {"ovn.kubernetes.io/logical_switch": "l2only"}}}),
    );
    cluster
        .wait_for_switch("l2only", Duration::from_secs(30))
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "w", "namespace": "l2"}, "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    let w = cluster.start_pod_object(pod, 1).expect("pod l2/w");
    let o = cluster.start_pod("o", 0).expect("overlay pod o");
    wait("the overlay pod reaches w", || pings(&o, w.ip, 1));
    assert!(pings(&o, w.ip, 10), "o's pings to w were lost");
    assert!(pings(&w, o.ip, 10), "w's pings to o were lost");
    let node_pings = Cmd::new("ping")
        .args(["-c", "3", "-i", "0.05", "-W", "1", "-q"])
        .arg(w.ip.to_string())
        .netns(&cluster.sb.node(0).netns)
        .run()
        .unwrap_or_default();
    assert!(node_pings.contains("3 received"), "n0 to w: {node_pings}");

    // The nodes leave the subnet to the physical network.
    for i in 0..2 {
        let routes = cluster.sb.node(i).ip(&["route", "show", CIDR]).unwrap();
        assert!(
            !routes.contains("ovn0"),
            "n{i} routes {CIDR} through ovn0: {routes}"
        );
    }
    drop((u0, u1, u2, v, w, o));
    cluster.teardown().expect("teardown");
}

/// Fast hits counted so far on a node, over every interface (its pinned reasons map).
fn fast_hits(pins: &std::path::Path) -> u64 {
    use agent::datapath::{PinnedMaps, ReadMaps};
    PinnedMaps::open(pins)
        .expect("pinned maps")
        .packets_for(datapath_common::Reason::FastHit)
        .unwrap()
}
