//! The agent's pod plumbing against a real node (OVS userspace datapath + ovn-controller) and
//! the real kernel: two pods built with rtnetlink and bound to their Logical_Switch_Ports
//! through the node's Open_vSwitch database talk through OVN; the interface inside the pod
//! has the MAC, MTU, addresses and routes asked for; ADD again is harmless; DEL leaves no
//! interface and no OVS port; a netns that is gone is a clear error with nothing left behind.

mod common;
use common::on_node;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use agent::datapath::{PodInterfaces, install_kernel_handoff};
use agent::local_pod::{AttachmentId, LocalPod};
use agent::ovs::pod_port;
use agent::pod_network::{self, NetworkError, PodAddressing, PodLinks, PodRoute, links};
use sandbox::{Cmd, Handoff, INTEGRATION_BRIDGE, Node, Sandbox, SandboxConfig, mac_for, netns};

/// Pod namespaces this test made, deleted even when it fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

struct TestPod {
    name: String,
    container_id: String,
    netns: String,
    ip: Ipv4Addr,
}

impl TestPod {
    fn lsp(&self) -> String {
        format!("{}.default", self.name)
    }
    fn mac(&self) -> String {
        mac_for(self.ip)
    }
    fn links(&self) -> PodLinks {
        PodLinks::for_container(&self.container_id)
    }
    fn local(&self) -> LocalPod {
        LocalPod {
            namespace: "default".into(),
            name: self.name.clone(),
            attachment: AttachmentId::new(&self.container_id, "eth0"),
            addresses: vec![ipnet::IpNet::new(IpAddr::V4(self.ip), 16).unwrap()],
            mac: self.mac(),
            provider: "ovn".into(),
            vpc: Some("ovn-cluster".into()),
            netns: None,
            probe_ports: Vec::new(),
        }
    }
    fn netns_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.netns)
    }
    fn addressing(&self) -> PodAddressing {
        PodAddressing {
            if_name: "eth0".into(),
            mac: agent::datapath::parse_mac(&self.mac()).unwrap(),
            mtu: 1400,
            addresses: self.local().addresses,
            routes: vec![PodRoute {
                destination: None,
                gateway: IpAddr::V4(Ipv4Addr::new(10, 16, 0, 1)),
            }],
        }
    }
}

async fn ovs(node: &Node) -> ovsdb::Client {
    ovsdb::Client::connect(agent::ovs::client_config(&format!(
        "unix:{}",
        node.db.socket.display()
    )))
    .await
    .expect("the node's Open_vSwitch database")
}

/// pod_network's ADD, running `beside` (the datapath's part) alongside as the CNI server does.
async fn attach_beside(
    node: &Node,
    pod: &TestPod,
    beside: impl std::future::Future<Output = Result<(), NetworkError>>,
) -> Result<(), NetworkError> {
    pod_network::attach(
        &ovs(node).await,
        INTEGRATION_BRIDGE,
        &pod.local(),
        &pod.netns_path(),
        &pod.addressing(),
        None,
        beside,
    )
    .await
}

/// ADD with the kernel hand-off (no eBPF datapath) beside it.
async fn add(node: &Node, pod: &TestPod) -> Result<(), NetworkError> {
    let links = pod.links();
    let handoff = async {
        install_kernel_handoff(&PodInterfaces {
            name: pod.lsp(),
            owner: pod.lsp(),
            host_veth: links.host_veth.clone(),
            ovs_peer: links.ovs_peer.clone(),
            ip: IpAddr::V4(pod.ip),
            mac: agent::datapath::parse_mac(&pod.mac()).unwrap(),
            other_ips: Vec::new(),
            vpc: Some(api::names::DEFAULT_CLUSTER_ROUTER.into()),
        })
        .await
        .map_err(|e| NetworkError::Check(e.to_string()))
    };
    attach_beside(node, pod, handoff).await
}

async fn del(node: &Node, pod: &TestPod) -> Result<(), NetworkError> {
    pod_network::detach(&ovs(node).await, &pod.links()).await
}

/// ADD with `datapath` as the outcome of the work beside it.
fn attach_with(
    node: &Node,
    pod: &TestPod,
    datapath: Result<(), NetworkError>,
) -> Result<(), NetworkError> {
    on_node(node, async || {
        attach_beside(node, pod, async { datapath }).await
    })
}

/// Neither the pod's interfaces nor its OVS port are on the node.
fn assert_nothing_left(node: &Node, pod: &TestPod, after: &str) {
    let present = on_node(node, async || links::present(&pod.links()).await).unwrap();
    assert!(
        present.iter().all(|(_, p)| !p),
        "left behind after {after}: {present:?}"
    );
    let port_left = on_node(node, async || {
        pod_port::bound(&ovs(node).await, &pod.links().ovs_port)
    });
    assert!(
        port_left.is_none(),
        "OVS port left after {after}: {port_left:?}"
    );
}

fn ping(from: &TestPod, to: &TestPod) -> bool {
    Cmd::new("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2"])
        .arg(to.ip.to_string())
        .netns(&from.netns)
        .run()
        .is_ok()
}

#[test]
fn pods_built_by_the_agent_talk_through_ovn_and_del_leaves_nothing() {
    if !sandbox::privileged("pods_built_by_the_agent_talk_through_ovn_and_del_leaves_nothing") {
        return;
    }
    let sb = Sandbox::start(SandboxConfig {
        nodes: 1,
        handoff: Handoff::KernelRedirect,
        ..Default::default()
    })
    .expect("sandbox");
    let node = sb.node(0).clone();
    let prefix = sandbox::registry::netns_prefix(sb.id());
    let pods: Vec<TestPod> = [("a", "a1b2c3d4e5f60718"), ("b", "0f1e2d3c4b5a6978")]
        .iter()
        .enumerate()
        .map(|(i, (name, id))| TestPod {
            name: (*name).into(),
            container_id: (*id).into(),
            netns: format!("{prefix}cni-{name}"),
            ip: Ipv4Addr::new(10, 16, 0, 10 + i as u8),
        })
        .collect();
    let _namespaces = Namespaces(pods.iter().map(|p| p.netns.clone()).collect());
    let nbctl = sb.central().nbctl();
    for pod in &pods {
        // What the controller writes for the pod.
        let address = format!("{} {}", pod.mac(), pod.ip);
        nbctl
            .run([
                "lsp-add",
                "ovn-default",
                &pod.lsp(),
                "--",
                "lsp-set-addresses",
                &pod.lsp(),
                &address,
                "--",
                "lsp-set-port-security",
                &pod.lsp(),
                &address,
            ])
            .unwrap();
        netns::add(&pod.netns).unwrap();
        on_node(&node, async || add(&node, pod).await).expect("ADD");
    }
    for pod in &pods {
        nbctl
            .run([
                "--timeout=20",
                "wait-until",
                "Logical_Switch_Port",
                &pod.lsp(),
                "up=true",
            ])
            .expect("ovn-controller binds the port the agent plugged");
    }
    nbctl.run(["--wait=hv", "sync"]).unwrap();
    assert!(ping(&pods[0], &pods[1]), "a cannot reach b through OVN");

    // The pod's interface is what was asked for.
    let (mac, mtu, addresses) = on_node(&node, async || {
        links::observe_pod_end(&pods[0].netns_path(), "eth0").await
    })
    .unwrap();
    assert_eq!(mac, pods[0].addressing().mac);
    assert_eq!(mtu, 1400);
    assert!(
        addresses.contains(&(IpAddr::V4(pods[0].ip), 16)),
        "{addresses:?}"
    );
    let route = Cmd::new("ip")
        .args(["route", "show", "default"])
        .netns(&pods[0].netns)
        .run()
        .unwrap();
    assert!(route.contains("via 10.16.0.1 dev eth0"), "{route}");
    let ids = on_node(&node, async || {
        pod_port::bound(&ovs(&node).await, &pods[0].links().ovs_port)
    })
    .expect("OVS port");
    assert_eq!(ids["iface-id"], "a.default");
    assert_eq!(ids["container_id"], pods[0].container_id);

    // ADD again (a retried ADD): rebuilt, and still talking.
    on_node(&node, async || add(&node, &pods[0]).await).expect("second ADD");
    nbctl.run(["--wait=hv", "sync"]).unwrap();
    assert!(
        ping(&pods[0], &pods[1]),
        "a cannot reach b after a repeated ADD"
    );

    // DEL, twice: nothing of a is left on the node.
    for _ in 0..2 {
        on_node(&node, async || del(&node, &pods[0]).await).expect("DEL");
    }
    assert_nothing_left(&node, &pods[0], "two DELs");
    let inside = Cmd::new("ip")
        .args(["-o", "link"])
        .netns(&pods[0].netns)
        .run()
        .unwrap();
    assert!(!inside.contains("eth0"), "eth0 left in the pod: {inside}");
    nbctl
        .run([
            "--timeout=20",
            "wait-until",
            "Logical_Switch_Port",
            "a.default",
            "up=false",
        ])
        .expect("the port goes down");

    // ADD into a namespace that is gone: a clear error, nothing left behind.
    netns::delete(&pods[0].netns).unwrap();
    let err = attach_with(&node, &pods[0], Ok(())).unwrap_err();
    assert!(matches!(err, NetworkError::NetnsGone(_)), "{err}");
    assert_nothing_left(&node, &pods[0], "a failed ADD");

    // The datapath's attach (run beside the pod's configuration) fails: the ADD fails and
    // neither interfaces nor the OVS port stay behind.
    netns::add(&pods[0].netns).unwrap();
    let err = attach_with(
        &node,
        &pods[0],
        Err(NetworkError::Check("the datapath refused".into())),
    )
    .unwrap_err();
    assert!(err.to_string().contains("the datapath refused"), "{err}");
    assert_nothing_left(&node, &pods[0], "a failed datapath attach");
    sb.teardown().expect("teardown");
}
