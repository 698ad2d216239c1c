//! Egress to an external gateway (a subnet's `externalEgressGateway`, as Kube-OVN's F5 case):
//! the sandbox's external host plays the gateway, on the nodes' layer-2 fabric, holding an
//! "internet" address of its own. A pod of the subnet reaches the internet address through
//! it, and the gateway sees the pod's own address (no NAT); a pod of another subnet does
//! not get there; taking the gateway off the subnet takes the node's rule away.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use sandbox::Cmd;
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::traffic::Capture;
use serde_json::json;

const CIDR: &str = "10.60.0.0/24";
const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PRIORITY: u32 = 1500;
const TABLE: u32 = 1000;

fn egress_subnet(gateway: Ipv4Addr) -> api::Subnet {
    serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "egress"},
        "spec": {"cidrBlock": CIDR, "natOutgoing": false, "namespaces": ["eg"],
            "externalEgressGateway": gateway.to_string(),
            "policyRoutingPriority": PRIORITY, "policyRoutingTableID": TABLE}
    }))
    .unwrap()
}

/// Namespace `eg` on subnet `egress`, and the subnet's switch built.
fn egress_namespace(cluster: &KovnCluster) {
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "eg", "annotations": {"ovn.kubernetes.io/logical_switch": "egress"}}
    }))
    .unwrap();
    cluster.api.put(&namespace);
    cluster
        .wait_for_switch("egress", Duration::from_secs(30))
        .unwrap();
}

fn egress_pod(cluster: &KovnCluster, node: usize) -> RunningPod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "eg"}, "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    let p = cluster.start_pod_object(pod, node).expect("pod eg/p");
    assert!(CIDR.parse::<ipnet::Ipv4Net>().unwrap().contains(&p.ip));
    p
}

fn pings(from: &RunningPod, count: u32) -> bool {
    Cmd::new("ping")
        .args(["-c", &count.to_string(), "-i", "0.05", "-W", "1", "-q"])
        .arg(INTERNET.to_string())
        .netns(&from.netns)
        .run()
        .is_ok_and(|out| out.contains(&format!("{count} received")))
}

/// The node's policy rule for the subnet, as `ip rule` shows it (empty when there is none).
fn node_rule(cluster: &KovnCluster) -> String {
    node_rule_on(cluster, 0)
}

fn node_rule_on(cluster: &KovnCluster, node: usize) -> String {
    Cmd::new("ip")
        .args(["-n", &cluster.sb.node(node).netns, "rule", "show"])
        .run()
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("from {CIDR}")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The external gateway (the sandbox's external host), with a route back to the pods' subnet
/// through node `via`, as an appliance in front of a cluster is configured to. Returns its
/// namespace and address.
fn external_gateway(cluster: &mut KovnCluster, via: usize) -> (String, Ipv4Addr) {
    let (ns, address) = cluster
        .sb
        .add_external_host("egw", 200, INTERNET)
        .expect("the external gateway");
    let node = cluster.sb.node(via).address.clone();
    Cmd::new("ip")
        .args(["-n", &ns, "route", "add", CIDR, "via", &node])
        .run()
        .unwrap();
    (ns, address)
}

fn wait(what: &str, limit: Duration, check: impl FnMut() -> bool) {
    sandbox::kovn::wait_for(what, limit, check).unwrap_or_else(|e| panic!("{e}"));
}

/// With the external gateway capturing, `p` reaches the internet address (once, then 20 pings
/// in a row, all seen by the gateway with `p`'s own address) and `meanwhile` runs; returns the
/// capture, decoded with tcpdump `decode` options.
fn pings_through_gateway(
    cluster: &KovnCluster,
    gateway_ns: &str,
    p: &RunningPod,
    decode: &[&str],
    meanwhile: impl FnOnce(),
) -> Vec<String> {
    let capture = Capture::start(
        gateway_ns,
        "eth0",
        "icmp",
        cluster.dir.join(format!("egress-{}.pcap", p.node)),
    )
    .unwrap();
    // The first echo may meet unresolved neighbours on the way: a few tries, then all.
    wait(
        "p reaches the internet address",
        Duration::from_secs(20),
        || pings(p, 1),
    );
    assert!(
        pings(p, 20),
        "p's pings through the external gateway were lost"
    );
    meanwhile();
    let seen = capture.stop_and_decode(decode).unwrap();
    let requests = format!("{} > {INTERNET}: ICMP echo request", p.ip);
    let from_p = seen.iter().filter(|l| l.contains(&requests)).count();
    assert!(
        from_p >= 20,
        "the gateway saw {from_p} echo requests from p's own address {}:\n{}",
        p.ip,
        seen.join("\n")
    );
    seen
}

#[test]
fn a_subnets_egress_leaves_through_its_external_gateway_with_the_pods_address() {
    if !sandbox::privileged(
        "a_subnets_egress_leaves_through_its_external_gateway_with_the_pods_address",
    ) {
        return;
    }
    let mut cluster = KovnCluster::start(1, common::binaries()).expect("kovn on a sandbox");
    let (gateway_ns, gateway) = external_gateway(&mut cluster, 0);
    cluster.api.put(&egress_subnet(gateway));
    egress_namespace(&cluster);
    let p = egress_pod(&cluster, 0);
    let q = cluster
        .start_pod("q", 0)
        .expect("pod default/q (ovn-default)");

    wait("the node's egress rule", Duration::from_secs(15), || {
        let rule = node_rule(&cluster);
        rule.starts_with(&format!("{PRIORITY}:"))
            && rule.contains(&format!("iif ovn0 lookup {TABLE}"))
    });
    let seen = pings_through_gateway(&cluster, &gateway_ns, &p, &[], || {
        assert!(
            !pings(&q, 3),
            "a pod of a subnet without the gateway got out"
        );
    });
    assert!(
        !seen.iter().any(|l| l.contains(&format!("{} >", q.ip))),
        "q's packets reached the gateway"
    );

    // Off the subnet: the rule goes, and so does the way out.
    let mut plain = egress_subnet(gateway);
    plain.spec.external_egress_gateway.clear();
    plain.spec.policy_routing_priority = 0;
    plain.spec.policy_routing_table_id = 0;
    cluster.api.put(&plain);
    wait("the egress rule removed", Duration::from_secs(15), || {
        node_rule(&cluster).is_empty()
    });
    assert!(
        !pings(&p, 3),
        "p still gets out without an external gateway"
    );
    drop((p, q));
    cluster.teardown().expect("teardown");
}

/// A centralized subnet: its pods' egress goes to the gateway node through OVN (a pod on the
/// other node included), and from there through the external gateway, with the pod's own
/// address.
#[test]
fn a_centralized_subnets_egress_leaves_through_its_gateway_node_and_external_gateway() {
    if !sandbox::privileged(
        "a_centralized_subnets_egress_leaves_through_its_gateway_node_and_external_gateway",
    ) {
        return;
    }
    let mut cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    // Back to the pods through the gateway node, where their egress comes from.
    let (gateway_ns, gateway) = external_gateway(&mut cluster, 0);
    let gateway_node = cluster.sb.node(0).clone();
    let mut subnet = egress_subnet(gateway);
    subnet.spec.gateway_type = api::GatewayType::Centralized;
    subnet.spec.gateway_node = gateway_node.name.clone();
    cluster.api.put(&subnet);
    egress_namespace(&cluster);
    // On the node that is not the gateway.
    let p = egress_pod(&cluster, 1);
    wait(
        "the gateway node's egress rule",
        Duration::from_secs(15),
        || node_rule_on(&cluster, 0).contains(&format!("iif ovn0 lookup {TABLE}")),
    );
    // With the Ethernet header: the requests must come from the gateway node's interface,
    // not from p's own node (whose rule would send them to the gateway too).
    let seen = pings_through_gateway(&cluster, &gateway_ns, &p, &["-e"], || {});
    let mac = |node: &sandbox::Node| {
        let link = node.ip(&["-o", "link", "show", "br-phy"]).unwrap();
        link.split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_owned()
    };
    let (gateway_mac, other_mac) = (mac(&gateway_node), mac(cluster.sb.node(1)));
    let requests: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains(&format!("{} > {INTERNET}: ICMP echo request", p.ip)))
        .collect();
    assert!(
        requests
            .iter()
            .all(|l| l.contains(&format!("{gateway_mac} > "))),
        "requests not from the gateway node ({gateway_mac}; p's node is {other_mac}):\n{}",
        seen.join("\n")
    );
    drop(p);
    cluster.teardown().expect("teardown");
}
