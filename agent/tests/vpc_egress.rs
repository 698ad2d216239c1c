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

// Centralized gateways with failover: a subnet with two gateway nodes, natOutgoing, its pod on
// a third node. The internet host sees which gateway each flow left through (the address it
// was masqueraded to); a gateway node cut off the fabric must stop carrying the subnet's
// egress within 5 s, measured there.

/// Connection attempts per batch, each from its own port: its own flow, hashed on its own by
/// ECMP.
const FLOWS: usize = 20;
const BATCH_EVERY: Duration = Duration::from_millis(250);
const BATCHES: u16 = 40;
/// The batch before which the first gateway is cut off (2 s of traffic before).
const CUT_AT: u16 = 8;
const BASE_PORT: u16 = 10000;
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);

fn centralized_subnet(gateway_node: &str, ecmp: bool) -> api::Subnet {
    serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "egress"},
        "spec": {"cidrBlock": CIDR, "natOutgoing": true, "namespaces": ["eg"],
            "gatewayType": "centralized", "gatewayNode": gateway_node, "enableEcmp": ecmp}
    }))
    .unwrap()
}

/// The internet host, reached from the gateway nodes `via` only (each routes the internet
/// address to it); returns its namespace.
fn internet_through(cluster: &mut KovnCluster, via: &[usize]) -> String {
    let (ns, address) = cluster
        .sb
        .add_external_host("inet", 200, INTERNET)
        .expect("the internet host");
    for &node in via {
        cluster
            .sb
            .node(node)
            .ip(&[
                "route",
                "add",
                &format!("{INTERNET}/32"),
                "via",
                &address.to_string(),
            ])
            .unwrap();
    }
    ns
}

fn activate_gateway(cluster: &KovnCluster) -> String {
    cluster
        .api
        .all::<api::Subnet>()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("egress"))
        .and_then(|s| s.status)
        .map(|s| s.activate_gateway)
        .unwrap_or_default()
}

/// One batch: `FLOWS` TCP connection attempts from `p` to the internet address's port
/// `BASE_PORT + k`, each from its own port (its own flow). Only the SYN is sent: the attempt is
/// given up at once, so a lost one is not retransmitted into a later batch. TCP, not UDP:
/// OVS's userspace datapath hashes ECMP groups with the symmetric L4 hash, which leaves UDP
/// ports out (every UDP flow of a pod to one address takes the same gateway).
fn send_batch(p: &RunningPod, k: u16) {
    sandbox::netns::run_in(&p.netns, || {
        let to = std::net::SocketAddr::from((INTERNET, BASE_PORT + k));
        for _ in 0..FLOWS {
            let _ = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(1));
        }
    })
    .unwrap();
}

/// What the internet host received: per batch, the source address of every SYN.
struct Received {
    by_batch: Vec<Vec<String>>,
    sent: Vec<std::time::Instant>,
    cut: std::time::Instant,
}

impl Received {
    fn complete(&self, k: usize) -> bool {
        self.by_batch[k].len() >= FLOWS
    }

    /// From `cut` to the first batch after which every batch arrived whole.
    fn failover(&self) -> Option<Duration> {
        let first_whole_run = (CUT_AT as usize..self.by_batch.len())
            .find(|&k| (k..self.by_batch.len()).all(|j| self.complete(j)))?;
        Some(
            self.sent[first_whole_run]
                .checked_duration_since(self.cut)
                .unwrap_or_default(),
        )
    }

    fn sources(&self, batches: std::ops::Range<usize>) -> Vec<&String> {
        self.by_batch[batches].iter().flatten().collect()
    }

    fn describe(&self) -> String {
        self.by_batch
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let mut seen: Vec<&String> = s.iter().collect();
                seen.sort();
                seen.dedup();
                format!("batch {k}: {} SYNs from {seen:?}", s.len())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Batches every `BATCH_EVERY` from `p`, node `cut` cut off the fabric before batch `CUT_AT`,
/// as the internet host (`internet_ns`) received them.
fn batches_across_a_gateway_failure(
    cluster: &KovnCluster,
    internet_ns: &str,
    p: &RunningPod,
    cut: usize,
) -> Received {
    let capture = Capture::start(
        internet_ns,
        "eth0",
        &format!("tcp[tcpflags] & tcp-syn != 0 and dst host {INTERNET}"),
        cluster.dir.join("failover.pcap"),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let mut sent = Vec::new();
    let mut cut_at = start;
    for k in 0..BATCHES {
        if k == CUT_AT {
            cut_at = std::time::Instant::now();
            cluster.sb.disconnect_node(cut).unwrap();
        }
        let due = start + BATCH_EVERY * u32::from(k);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        sent.push(std::time::Instant::now());
        send_batch(p, k);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut by_batch = vec![Vec::new(); usize::from(BATCHES)];
    for line in capture.stop_and_decode(&[]).unwrap() {
        // "IP 172.18.0.11.40123 > 198.51.100.1.10003: Flags [S], seq …"
        let mut words = line.split_whitespace().skip_while(|w| *w != "IP").skip(1);
        let (Some(from), Some(_), Some(to)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let source = from.rsplit_once('.').map(|(a, _)| a.to_owned());
        let port = to
            .trim_end_matches(':')
            .rsplit_once('.')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        if let (Some(source), Some(port)) = (source, port)
            && let Some(batch) = port.checked_sub(BASE_PORT).map(usize::from)
            && batch < by_batch.len()
        {
            by_batch[batch].push(source);
        }
    }
    Received {
        by_batch,
        sent,
        cut: cut_at,
    }
}

/// Three nodes, the internet behind n1 and n2 (the gateways), `prepare` run before the
/// subnet is made, its pod on n0.
fn failover_cluster(
    gateway_node: &str,
    ecmp: bool,
    prepare: impl FnOnce(&KovnCluster),
) -> (KovnCluster, String, RunningPod) {
    let mut cluster = KovnCluster::start(3, common::binaries()).expect("kovn on a sandbox");
    let internet = internet_through(&mut cluster, &[1, 2]);
    prepare(&cluster);
    cluster.api.put(&centralized_subnet(gateway_node, ecmp));
    egress_namespace(&cluster);
    let p = egress_pod(&cluster, 0);
    (cluster, internet, p)
}

#[test]
fn a_centralized_subnets_egress_fails_over_to_its_backup_gateway_within_5_s() {
    if !sandbox::privileged(
        "a_centralized_subnets_egress_fails_over_to_its_backup_gateway_within_5_s",
    ) {
        return;
    }
    // n1 is given an egress address of its own (`node:ip`, a second address on its NIC): the
    // subnet leaves n1 with it; n2 masquerades with its node address.
    let egress_ip = "172.18.0.50";
    let (cluster, internet, p) = failover_cluster(&format!("n1:{egress_ip},n2"), false, |c| {
        c.sb.node(1)
            .ip(&["addr", "add", &format!("{egress_ip}/24"), "dev", "br-phy"])
            .unwrap();
    });
    let (n1, n2) = (egress_ip.to_owned(), cluster.sb.node(2).address.clone());
    wait("n1 active", Duration::from_secs(15), || {
        activate_gateway(&cluster) == "n1"
    });
    wait(
        "p reaches the internet through n1",
        Duration::from_secs(20),
        || pings(&p, 1),
    );

    let got = batches_across_a_gateway_failure(&cluster, &internet, &p, 1);
    let report = got.describe();
    let before = got.sources(0..usize::from(CUT_AT));
    assert!(
        (0..usize::from(CUT_AT)).all(|k| got.complete(k)) && before.iter().all(|s| **s == n1),
        "before the failure every flow leaves through the primary n1, with its egress address {n1}:\n{report}"
    );
    let failover = got
        .failover()
        .unwrap_or_else(|| panic!("egress never recovered:\n{report}"));
    eprintln!("primary-backup failover: {} ms", failover.as_millis());
    assert!(
        failover <= FAILOVER_LIMIT,
        "failover took {failover:?}:\n{report}"
    );
    let after = got.sources(usize::from(BATCHES) - 8..usize::from(BATCHES));
    assert!(
        after.iter().all(|s| **s == n2),
        "after it, the backup n2 ({n2}) carries everything:\n{report}"
    );
    wait("n2 shown active", Duration::from_secs(3), || {
        activate_gateway(&cluster) == "n2"
    });

    // The old primary returns: the backup keeps the subnet (no flapping back).
    cluster.sb.reconnect_node(1).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        activate_gateway(&cluster),
        "n2",
        "egress flapped back to n1"
    );
    drop(p);
    cluster.teardown().expect("teardown");
}

#[test]
fn an_ecmp_subnets_flows_spread_over_its_gateways_and_a_dead_one_leaves_within_5_s() {
    if !sandbox::privileged(
        "an_ecmp_subnets_flows_spread_over_its_gateways_and_a_dead_one_leaves_within_5_s",
    ) {
        return;
    }
    let (cluster, internet, p) = failover_cluster("n1,n2", true, |_| {});
    let (n1, n2) = (
        cluster.sb.node(1).address.clone(),
        cluster.sb.node(2).address.clone(),
    );
    wait("n1 and n2 active", Duration::from_secs(15), || {
        activate_gateway(&cluster) == "n1,n2"
    });
    wait("p reaches the internet", Duration::from_secs(20), || {
        pings(&p, 1)
    });

    let got = batches_across_a_gateway_failure(&cluster, &internet, &p, 1);
    let report = got.describe();
    let before = got.sources(0..usize::from(CUT_AT));
    let through = |node: &str| before.iter().filter(|s| ***s == node).count();
    let total = FLOWS * usize::from(CUT_AT);
    assert!(
        (0..usize::from(CUT_AT)).all(|k| got.complete(k))
            && through(&n1) >= total / 10
            && through(&n2) >= total / 10,
        "before the failure the flows spread over n1 ({n1}) and n2 ({n2}): {} and {}:\n{report}",
        through(&n1),
        through(&n2)
    );
    let failover = got
        .failover()
        .unwrap_or_else(|| panic!("egress never recovered:\n{report}"));
    eprintln!(
        "ECMP: {} flows through n1, {} through n2; n1 out of the set after {} ms",
        through(&n1),
        through(&n2),
        failover.as_millis()
    );
    assert!(
        failover <= FAILOVER_LIMIT,
        "n1 left the set after {failover:?}:\n{report}"
    );
    let after = got.sources(usize::from(BATCHES) - 8..usize::from(BATCHES));
    assert!(
        after.iter().all(|s| **s == n2),
        "after it, n2 ({n2}) carries everything:\n{report}"
    );
    wait("only n2 shown active", Duration::from_secs(3), || {
        activate_gateway(&cluster) == "n2"
    });
    // Back on the fabric, n1 rejoins the set.
    cluster.sb.reconnect_node(1).unwrap();
    wait("n1 back in the set", Duration::from_secs(10), || {
        activate_gateway(&cluster) == "n1,n2"
    });
    drop(p);
    cluster.teardown().expect("teardown");
}
