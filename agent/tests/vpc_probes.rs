//! The kubelet's probes of a custom-VPC pod, as Kube-OVN serves them with tproxy. The pod's
//! address is not routed from the node: here it even lies inside the default VPC's CIDR,
//! which the node routes to ovn0. A connection from the node to the pod's probe port still
//! reaches the pod (the agent's transparent proxy opens it again inside the pod), also after
//! an agent restart; a port the pod does not probe is not intercepted; after the pod's DEL
//! its interception is gone. The custom VPC's CIDR leaves the node's natOutgoing rules
//! alone.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::kubelet::PodSandbox;
use sandbox::{Cmd, netns};
use serde_json::json;

/// Inside ovn-default's 10.16.0.0/16: what the node routes is the default VPC's.
const CIDR: &str = "10.16.200.0/24";
const PROBED: u16 = 8080;
const NOT_PROBED: u16 = 9090;

fn tenant(cluster: &KovnCluster) {
    let vpc: api::Vpc = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Vpc", "metadata": {"name": "vpc-p"}, "spec": {}
    }))
    .unwrap();
    cluster.api.put(&vpc);
    let subnet: api::Subnet = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": "vpc-p-net"},
        "spec": {"cidrBlock": CIDR, "vpc": "vpc-p", "namespaces": ["tp"]}
    }))
    .unwrap();
    cluster.api.put(&subnet);
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "tp", "annotations": {"ovn.kubernetes.io/logical_switch": "vpc-p-net"}}
    }))
    .unwrap();
    cluster.api.put(&namespace);
    cluster
        .wait_for_switch("vpc-p-net", Duration::from_secs(30))
        .unwrap();
}

/// Listens on `port` in the pod and answers every connection with `hello <port>`.
fn serve_in(pod: &RunningPod, port: u16) {
    let listener = netns::run_in(&pod.netns, move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(format!("hello {port}").as_bytes());
        }
    });
}

/// What a connection from node 0 (the kubelet's place) to `ip:port` reads, if it connects.
fn from_the_node(cluster: &KovnCluster, ip: Ipv4Addr, port: u16) -> Option<String> {
    netns::run_in(&cluster.sb.node(0).netns, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .unwrap()
}

fn intercepted(cluster: &KovnCluster) -> String {
    Cmd::new("nft")
        .args(["list", "set", "ip", "kovn_probe", "probes"])
        .netns(&cluster.sb.node(0).netns)
        .run()
        .unwrap_or_default()
}

fn wait(what: &str, check: impl FnMut() -> bool) {
    sandbox::kovn::wait_for(what, Duration::from_secs(15), check).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_node_reaches_a_custom_vpc_pods_probe_port_and_nothing_else_of_it() {
    if !sandbox::privileged("the_node_reaches_a_custom_vpc_pods_probe_port_and_nothing_else_of_it")
    {
        return;
    }
    let mut cluster = KovnCluster::start(1, common::binaries()).expect("kovn on a sandbox");
    tenant(&cluster);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "tp"},
        "spec": {"containers": [{"name": "c",
            "ports": [{"name": "health", "containerPort": PROBED}],
            "readinessProbe": {"tcpSocket": {"port": "health"}},
            "livenessProbe": {"httpGet": {"port": PROBED, "path": "/"}}}]}
    }))
    .unwrap();
    let p = cluster.start_pod_object(pod, 0).expect("pod tp/p");
    assert!(CIDR.parse::<ipnet::Ipv4Net>().unwrap().contains(&p.ip));
    serve_in(&p, PROBED);
    serve_in(&p, NOT_PROBED);
    let element = format!("{} . {PROBED}", p.ip);
    wait("the probe port intercepted", || {
        intercepted(&cluster).contains(&element)
    });

    // The custom VPC's CIDR inside ovn-default's does not cost the node its natOutgoing
    // rules (nft refused the whole table for overlapping intervals once).
    let nat = Cmd::new("nft")
        .args(["list", "table", "ip", "kovn"])
        .netns(&cluster.sb.node(0).netns)
        .run()
        .unwrap_or_default();
    assert!(
        nat.contains("masquerade") && nat.contains("10.16.0.0/16") && !nat.contains(CIDR),
        "the node's natOutgoing table:\n{nat}"
    );
    // The set element can be seen a moment before the proxy serves it (CI once saw the
    // first connection miss): the kubelet retries its probes, so the test waits as well.
    wait(
        "the node's connection to the probe port reaching the pod",
        || from_the_node(&cluster, p.ip, PROBED).as_deref() == Some("hello 8080"),
    );
    assert_eq!(
        from_the_node(&cluster, p.ip, NOT_PROBED),
        None,
        "a port the pod does not probe was intercepted"
    );

    cluster.restart_agent(0).expect("agent restart");
    wait("the probe port intercepted again", || {
        from_the_node(&cluster, p.ip, PROBED).as_deref() == Some("hello 8080")
    });

    cluster.kubelets[0]
        .del(
            &PodSandbox {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                container_id: p.container_id.clone(),
                netns: p.netns.clone(),
                if_name: "eth0".into(),
                port_mappings: vec![],
            },
            None,
        )
        .expect("CNI DEL");
    assert!(
        !intercepted(&cluster).contains(&element),
        "the pod's interception outlived its DEL:\n{}",
        intercepted(&cluster)
    );
    drop(p);
    cluster.teardown().expect("teardown");
}
