//! Several networks per pod, as Multus drives kovn: pods asking for a NetworkAttachmentDefinition
//! of `"type": "kube-ovn"` (`k8s.v1.cni.cncf.io/networks`) get, besides eth0 in the default
//! subnet, `net1` in the subnet of provider `attachnet.default.ovn` — a custom VPC's — with
//! Kube-OVN's `<provider>.kubernetes.io/*` annotations and an IP object
//! `<pod>.<namespace>.<provider>`. The NAD's config runs through the kubelet's CNI path for
//! `net1` as Multus delegates it. Both networks carry traffic across nodes; a DEL of `net1`
//! removes that attachment only, and the pod's eth0 keeps working.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sandbox::kovn::KovnCluster;
use serde_json::json;

const PROVIDER: &str = "attachnet.default.ovn";
const ATTACH_CIDR: &str = "172.31.7.0/24";

fn net1_address(cluster: &KovnCluster, pod: &str) -> std::net::Ipv4Addr {
    let key = format!("{PROVIDER}.kubernetes.io/ip_address");
    let pods = cluster.api.all::<Pod>();
    let object = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(pod))
        .expect("the pod");
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{pod} has no {key}: {:?}", object.metadata.annotations))
}

#[test]
fn a_pod_gets_an_ovn_attachment_beside_eth0_and_loses_only_it_on_del() {
    if !sandbox::privileged("a_pod_gets_an_ovn_attachment_beside_eth0_and_loses_only_it_on_del") {
        return;
    }
    let cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    let vpc: api::Vpc = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": "vpc-att"}, "spec": {}
    }))
    .unwrap();
    cluster.api.put(&vpc);
    let subnet: api::Subnet = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "attach"},
        "spec": {"cidrBlock": ATTACH_CIDR, "vpc": "vpc-att", "provider": PROVIDER}
    }))
    .unwrap();
    cluster.api.put(&subnet);
    cluster
        .wait_for_switch("attach", Duration::from_secs(30))
        .expect("the attachment subnet's switch");
    let socket = cluster.socket(0);
    let nad: api::NetworkAttachmentDefinition = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "attachnet", "namespace": "default"},
        "spec": {"config": json!({
            "cniVersion": "1.0.0", "type": "kube-ovn", "provider": PROVIDER,
            "server_socket": socket.display().to_string()
        }).to_string()}
    }))
    .unwrap();
    cluster.api.put(&nad);
    let with_net1 = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "annotations": {"k8s.v1.cni.cncf.io/networks": "attachnet"}},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap()
    };
    let a = cluster
        .start_pod_object(with_net1("mn-a"), 0)
        .expect("pod a");
    let b = cluster
        .start_pod_object(with_net1("mn-b"), 1)
        .expect("pod b");
    // Each node's agent serves its own pods: the NAD's socket is node 0's, so node 1's
    // delegate is pointed at its own agent, as each node's Multus reads the same NAD and
    // reaches the agent on its node.
    let nad_on = |node: usize| {
        let mut n = nad.clone();
        n.spec.config = json!({
            "cniVersion": "1.0.0", "type": "kube-ovn", "provider": PROVIDER,
            "server_socket": cluster.socket(node).display().to_string()
        })
        .to_string();
        n
    };
    let result_a = cluster
        .run_attachment(&a, &nad_on(0), "net1", false)
        .expect("net1 of a");
    cluster
        .run_attachment(&b, &nad_on(1), "net1", false)
        .expect("net1 of b");
    let (a1, b1) = (
        net1_address(&cluster, "mn-a"),
        net1_address(&cluster, "mn-b"),
    );
    let cidr: ipnet::Ipv4Net = ATTACH_CIDR.parse().unwrap();
    assert!(
        cidr.contains(&a1) && cidr.contains(&b1),
        "{a1} {b1} not in {cidr}"
    );
    assert_eq!(
        result_a["interfaces"][0]["name"], "net1",
        "the result names net1: {result_a}"
    );
    // The attachment's IP object is its own, the pod's is untouched.
    let ips = cluster.api.all::<api::IP>();
    let named = |n: &str| ips.iter().find(|i| i.metadata.name.as_deref() == Some(n));
    assert_eq!(
        named(&format!("mn-a.default.{PROVIDER}")).map(|i| i.spec.subnet.as_str()),
        Some("attach")
    );
    assert_ne!(
        named("mn-a.default").map(|i| i.spec.subnet.as_str()),
        Some("attach")
    );

    let (pa, pb) = (a.as_pod(&cluster), b.as_pod(&cluster));
    let ping = |from: &sandbox::Pod, to, what: &str| {
        let report = sandbox::traffic::ping(from, to, 20).unwrap();
        assert!(report.received >= 18, "{what}: {report:?}");
        assert_eq!(report.duplicates, 0, "{what}: duplicates {report:?}");
    };
    ping(&pa, b1, "a -> b over net1, across nodes");
    ping(&pa, b.ip, "a -> b over eth0, across nodes");
    ping(&pb, a1, "b -> a over net1");

    // DEL of net1 removes it alone.
    cluster
        .run_attachment(&a, &nad_on(0), "net1", true)
        .expect("DEL net1 of a");
    let links = std::process::Command::new("ip")
        .args(["-n", &a.netns, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("net1"), "net1 is still in the pod: {links}");
    assert!(links.contains("eth0"), "eth0 went with net1: {links}");
    ping(&pa, b.ip, "a -> b over eth0 after net1's DEL");
    let gone = sandbox::traffic::ping(&pb, a1, 5).unwrap();
    assert_eq!(gone.received, 0, "a's net1 still answers after its DEL");
    cluster.teardown().expect("teardown");
}

/// IPAM only, as another plugin uses kovn: the reference `macvlan` plugin with `"ipam":
/// {"type": "kube-ovn"}` gets its addresses from the subnet of provider `macvlan.default`
/// (which has no logical switch), and two pods' macvlan interfaces reach each other; the
/// agent builds nothing of its own for them.
#[test]
fn the_macvlan_plugin_gets_its_addresses_from_kovns_ipam() {
    if !sandbox::privileged("the_macvlan_plugin_gets_its_addresses_from_kovns_ipam") {
        return;
    }
    const MACVLAN_CIDR: &str = "192.168.77.0/24";
    let cluster = KovnCluster::start(1, common::binaries()).expect("kovn on a sandbox");
    let subnet: api::Subnet = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "macvlan-net"},
        "spec": {"cidrBlock": MACVLAN_CIDR, "provider": "macvlan.default"}
    }))
    .unwrap();
    cluster.api.put(&subnet);
    // The macvlan's master: a veth of the node's own (the node's eth0 is OVS's).
    let node = cluster.sb.node(0).netns.clone();
    for line in [
        "link add mvl0 type veth peer name mvl1",
        "link set mvl0 up",
        "link set mvl1 up",
    ] {
        let ok = std::process::Command::new("ip")
            .args(["-n", &node])
            .args(line.split_whitespace())
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip {line}");
    }
    let nad: api::NetworkAttachmentDefinition = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "macvlan", "namespace": "default"},
        "spec": {"config": json!({
            "cniVersion": "1.0.0", "type": "macvlan", "master": "mvl0", "mode": "bridge",
            "ipam": {"type": "kube-ovn", "provider": "macvlan.default",
                "server_socket": cluster.socket(0).display().to_string()}
        }).to_string()}
    }))
    .unwrap();
    cluster.api.put(&nad);
    let with_macvlan = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan@net2"}},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap()
    };
    let a = cluster
        .start_pod_object(with_macvlan("mv-a"), 0)
        .expect("pod a");
    let b = cluster
        .start_pod_object(with_macvlan("mv-b"), 0)
        .expect("pod b");
    let address = |result: &serde_json::Value| -> std::net::Ipv4Addr {
        result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {result}"))
    };
    let ra = cluster
        .run_attachment(&a, &nad, "net2", false)
        .expect("net2 of a");
    let rb = cluster
        .run_attachment(&b, &nad, "net2", false)
        .expect("net2 of b");
    let (a2, b2) = (address(&ra), address(&rb));
    let cidr: ipnet::Ipv4Net = MACVLAN_CIDR.parse().unwrap();
    assert!(
        cidr.contains(&a2) && cidr.contains(&b2) && a2 != b2,
        "{a2} {b2}"
    );
    let ips = cluster.api.all::<api::IP>();
    assert!(
        ips.iter().any(
            |i| i.metadata.name.as_deref() == Some("mv-a.default.macvlan.default")
                && i.spec.v4_ip_address == a2.to_string()
        ),
        "no IP object of a's macvlan attachment"
    );
    let report = sandbox::traffic::ping(&a.as_pod(&cluster), b2, 20).unwrap();
    assert!(report.received >= 18, "a -> b over macvlan: {report:?}");
    assert_eq!(report.duplicates, 0);
    // The agent built nothing for it: no OVS port of the attachment.
    let ports = std::process::Command::new("ip")
        .args(["-n", &node, "-o", "link"])
        .output()
        .unwrap();
    let ports = String::from_utf8_lossy(&ports.stdout);
    let stem = format!("{}~", &a.container_id[..7]);
    assert!(
        !ports.contains(&stem),
        "the agent built links for an IPAM-only attachment: {ports}"
    );
    cluster.teardown().expect("teardown");
}
