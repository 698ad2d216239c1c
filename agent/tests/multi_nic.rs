//! Several networks per pod, as Multus drives kovn: pods asking for two NetworkAttachmentDefinitions
//! of `"type": "kube-ovn"` (`k8s.v1.cni.cncf.io/networks`) get, besides eth0 in the default
//! subnet, `net1` and `net2` in the subnets of providers `attach1.default.ovn` and
//! `attach2.default.ovn` — each a different custom VPC's — with Kube-OVN's
//! `<provider>.kubernetes.io/*` annotations and IP objects `<pod>.<namespace>.<provider>`. The
//! sandbox's kubelet runs each NAD's config as Multus delegates it, in the annotation's order.
//! All three networks carry traffic across nodes; a DEL of `net1` removes that attachment only,
//! and eth0 and net2 keep working.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sandbox::kovn::{KovnCluster, RunningPod};
use serde_json::json;

/// A VPC, its subnet for provider `<nad>.default.ovn`, and the NAD of `"type": "kube-ovn"`
/// that attaches it, as Kube-OVN documents them (the daemon socket at its standard path).
fn attachment_network(cluster: &KovnCluster, nad: &str, vpc: &str, cidr: &str) {
    let provider = format!("{nad}.default.ovn");
    let vpc: api::Vpc = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": vpc}, "spec": {}
    }))
    .unwrap();
    cluster.api.put(&vpc);
    let subnet: api::Subnet = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": nad},
        "spec": {"cidrBlock": cidr, "vpc": vpc.metadata.name, "provider": provider}
    }))
    .unwrap();
    cluster.api.put(&subnet);
    cluster
        .wait_for_switch(nad, Duration::from_secs(30))
        .expect("the attachment subnet's switch");
    let nad: api::NetworkAttachmentDefinition = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": nad, "namespace": "default"},
        "spec": {"config": json!({
            "cniVersion": "1.0.0", "type": "kube-ovn", "provider": provider,
            "server_socket": cni::wire::DEFAULT_SOCKET
        }).to_string()}
    }))
    .unwrap();
    cluster.api.put(&nad);
}

/// A pod of the default namespace asking Multus for `networks`.
fn pod_with(name: &str, networks: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
            "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap()
}

/// The IPv4 address of `pod`'s attachment on `interface`, as its CNI result gave it.
fn address_on(pod: &RunningPod, interface: &str) -> Ipv4Addr {
    pod.attachments
        .iter()
        .find(|a| a.interface == interface)
        .and_then(|a| a.ipv4())
        .unwrap_or_else(|| panic!("{} has no address on {interface}", pod.name))
}

/// The annotation `key` of pod `name`, as the controller wrote it.
fn annotation(cluster: &KovnCluster, name: &str, key: &str) -> Option<String> {
    cluster
        .api
        .all::<Pod>()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))?
        .metadata
        .annotations?
        .get(key)
        .cloned()
}

#[test]
fn a_three_nic_pod_reaches_each_network_and_loses_only_the_attachment_deleted() {
    if !sandbox::privileged(
        "a_three_nic_pod_reaches_each_network_and_loses_only_the_attachment_deleted",
    ) {
        return;
    }
    const NET1: &str = "172.31.7.0/24";
    const NET2: &str = "172.31.8.0/24";
    let cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    attachment_network(&cluster, "attach1", "vpc-one", NET1);
    attachment_network(&cluster, "attach2", "vpc-two", NET2);
    // Both forms of the annotation: names (net1, net2 by order) and JSON with an interface.
    let mut a = cluster
        .start_pod_object(pod_with("mn-a", "attach1,attach2"), 0)
        .expect("pod a");
    let b = cluster
        .start_pod_object(
            pod_with(
                "mn-b",
                r#"[{"name":"attach1","interface":"net1"},{"name":"attach2","interface":"net2"}]"#,
            ),
            1,
        )
        .expect("pod b");
    let (net1, net2): (ipnet::Ipv4Net, ipnet::Ipv4Net) =
        (NET1.parse().unwrap(), NET2.parse().unwrap());
    let (a1, a2, b1, b2) = (
        address_on(&a, "net1"),
        address_on(&a, "net2"),
        address_on(&b, "net1"),
        address_on(&b, "net2"),
    );
    assert!(net1.contains(&a1) && net1.contains(&b1), "net1: {a1} {b1}");
    assert!(net2.contains(&a2) && net2.contains(&b2), "net2: {a2} {b2}");
    assert_eq!(a.attachments[0].result["interfaces"][0]["name"], "net1");
    // The controller's annotations per provider say what the agent plugged.
    assert_eq!(
        annotation(
            &cluster,
            "mn-a",
            "attach1.default.ovn.kubernetes.io/ip_address"
        ),
        Some(a1.to_string())
    );
    assert_eq!(
        annotation(
            &cluster,
            "mn-a",
            "attach2.default.ovn.kubernetes.io/logical_switch"
        ),
        Some("attach2".into())
    );
    // Each attachment's IP object is its own; the pod's is untouched.
    let ips = cluster.api.all::<api::IP>();
    let subnet_of = |n: &str| {
        ips.iter()
            .find(|i| i.metadata.name.as_deref() == Some(n))
            .map(|i| i.spec.subnet.clone())
    };
    assert_eq!(
        subnet_of("mn-a.default.attach1.default.ovn").as_deref(),
        Some("attach1")
    );
    assert_eq!(
        subnet_of("mn-a.default.attach2.default.ovn").as_deref(),
        Some("attach2")
    );
    assert_eq!(subnet_of("mn-a.default").as_deref(), Some("ovn-default"));

    let (pa, pb) = (a.as_pod(&cluster), b.as_pod(&cluster));
    let ping = |from: &sandbox::Pod, to, what: &str| {
        let report = sandbox::traffic::ping(from, to, 20).unwrap();
        assert!(report.received >= 18, "{what}: {report:?}");
        assert_eq!(report.duplicates, 0, "{what}: duplicates {report:?}");
    };
    ping(&pa, b.ip, "a -> b over eth0, across nodes");
    ping(&pa, b1, "a -> b over net1 (vpc-one)");
    ping(&pa, b2, "a -> b over net2 (vpc-two)");
    ping(&pb, a1, "b -> a over net1");
    ping(&pb, a2, "b -> a over net2");

    // DEL of net1 removes it alone.
    cluster.detach(&mut a, "net1").expect("DEL net1 of a");
    let links = std::process::Command::new("ip")
        .args(["-n", &a.netns, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("net1"), "net1 is still in the pod: {links}");
    assert!(
        links.contains("eth0") && links.contains("net2"),
        "eth0 or net2 went with net1: {links}"
    );
    ping(&pa, b.ip, "a -> b over eth0 after net1's DEL");
    ping(&pa, b2, "a -> b over net2 after net1's DEL");
    let gone = sandbox::traffic::ping(&pb, a1, 5).unwrap();
    assert_eq!(gone.received, 0, "a's net1 still answers after its DEL");
    assert_eq!(
        cluster
            .api
            .all::<api::IP>()
            .iter()
            .filter(|i| i.metadata.name.as_deref() == Some("mn-a.default.attach2.default.ovn"))
            .count(),
        1,
        "net2's IP object went with net1's DEL"
    );
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
                "server_socket": cni::wire::DEFAULT_SOCKET}
        }).to_string()}
    }))
    .unwrap();
    cluster.api.put(&nad);
    let a = cluster
        .start_pod_object(pod_with("mv-a", "macvlan@net2"), 0)
        .expect("pod a");
    let b = cluster
        .start_pod_object(pod_with("mv-b", "macvlan@net2"), 0)
        .expect("pod b");
    let (a2, b2) = (address_on(&a, "net2"), address_on(&b, "net2"));
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
