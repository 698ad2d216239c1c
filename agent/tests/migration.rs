//! A node moved from Kube-OVN: pods that Kube-OVN's daemon plugged (their host veth `<id>_h`
//! is the OVS port, with Kube-OVN's external_ids) keep running under kovn-agent, across its
//! restarts, through OVS; kovn never puts a fast-path program on a port OVS reads; a CNI DEL
//! removes such a pod's port and veth, and garbage collection removes one whose pod is gone.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use api::annotations;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sandbox::kovn::{KovnCluster, wait_for};
use sandbox::kubelet::PodSandbox;
use sandbox::{Cmd, Node, netns};

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

/// A pod's routed annotations, once the controller wrote them.
fn routed(cluster: &KovnCluster, name: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    wait_for(&format!("{name} routed"), Duration::from_secs(30), || {
        found = cluster
            .api
            .all::<Pod>()
            .into_iter()
            .find(|p| p.name_any() == name)
            .map(|p| p.annotations().clone())
            .unwrap_or_default();
        found.get(annotations::ROUTED).map(String::as_str) == Some("true")
    })
    .expect("the controller routes the pod");
    found
}

fn vsctl(node: &Node, args: &[&str]) -> String {
    Cmd::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", node.db.socket.display()))
        .args(args.iter().copied())
        .run()
        .unwrap_or_else(|e| panic!("ovs-vsctl {args:?}: {e}"))
}

/// Plugs `name` as Kube-OVN's daemon does: a veth `<id>_h` / eth0, the host end added to
/// br-int with Kube-OVN's external_ids, the pod's end configured from the annotations.
fn plug_as_kube_ovn(cluster: &KovnCluster, node: &Node, name: &str, id: &str, ns: &str) -> String {
    let a = routed(cluster, name);
    let host = format!("{}_h", &id[..12]);
    netns::add(ns).unwrap();
    let prefix = a[annotations::CIDR].split('/').nth(1).unwrap().to_owned();
    let ip = a[annotations::IP_ADDRESS].clone();
    Cmd::new("ip")
        .args(["link", "add", &host, "mtu", "1400", "type", "veth"])
        .args(["peer", "name", "eth0", "mtu", "1400", "netns", ns])
        .netns(&node.netns)
        .run()
        .unwrap();
    Cmd::new("ip")
        .args(["link", "set", &host, "up"])
        .netns(&node.netns)
        .run()
        .unwrap();
    for args in [
        vec!["link", "set", "lo", "up"],
        vec![
            "link",
            "set",
            "eth0",
            "address",
            &a[annotations::MAC_ADDRESS],
        ],
        vec!["addr", "add", &format!("{ip}/{prefix}"), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", &a[annotations::GATEWAY]],
    ] {
        Cmd::new("ip").args(args).netns(ns).run().unwrap();
    }
    vsctl(
        node,
        &[
            "add-port",
            "br-int",
            &host,
            "--",
            "set",
            "interface",
            &host,
            &format!("external_ids:iface-id={name}.default"),
            "external_ids:vendor=kube-ovn",
            &format!("external_ids:pod_name={name}"),
            "external_ids:pod_namespace=default",
            &format!("external_ids:ip={ip}"),
            &format!("external_ids:pod_netns={ns}"),
        ],
    );
    host
}

fn pings(ns: &str, target: std::net::Ipv4Addr) -> u32 {
    let out = Cmd::new("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2"])
        .arg(target.to_string())
        .netns(ns)
        .output()
        .unwrap();
    out.stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn ports(node: &Node) -> Vec<String> {
    vsctl(node, &["list-ports", "br-int"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn link_exists(node: &Node, name: &str) -> bool {
    Cmd::new("ip")
        .args(["link", "show", name])
        .netns(&node.netns)
        .output()
        .is_ok_and(|o| o.success)
}

#[test]
fn pods_plugged_by_kube_ovn_keep_working_and_leave_with_del_and_gc() {
    if !sandbox::privileged("pods_plugged_by_kube_ovn_keep_working_and_leave_with_del_and_gc") {
        return;
    }
    // Garbage collection every second, so the test sees it.
    let mut cluster =
        KovnCluster::start_with_agent_args(1, common::binaries(), &["--gc-interval=1"])
            .expect("kovn on the sandbox");
    let node = cluster.sb.node(0).clone();
    let prefix = sandbox::registry::netns_prefix(cluster.sb.id());
    let (old_ns, gone_ns) = (format!("{prefix}x-old"), format!("{prefix}x-gone"));
    let _namespaces = Namespaces(vec![old_ns.clone(), gone_ns.clone()]);
    let old_id = format!("{:012x}{:052x}", 0x01d_u64, 0);
    let gone_id = format!("{:012x}{:052x}", 0x90e_u64, 0);
    cluster.add_pod("old", 0);
    cluster.add_pod("gone", 0);
    let old_port = plug_as_kube_ovn(&cluster, &node, "old", &old_id, &old_ns);
    let gone_port = plug_as_kube_ovn(&cluster, &node, "gone", &gone_id, &gone_ns);
    let b = cluster.start_pod("b", 0).expect("a kovn pod");

    // The Kube-OVN pod and the kovn pod talk through OVS, before and after an agent restart
    // (once ovn-controller has claimed the hand-plugged port: the test plugged it just now).
    wait_for(
        "the Kube-OVN pod's port bound",
        Duration::from_secs(20),
        || pings(&old_ns, b.ip) > 0,
    )
    .expect("the Kube-OVN pod reaches kovn's");
    assert_eq!(
        pings(&old_ns, b.ip),
        3,
        "the Kube-OVN pod cannot reach kovn's"
    );
    cluster.restart_agent(0).expect("agent restart");
    assert!(
        ports(&node).contains(&old_port),
        "the agent removed an adopted port"
    );
    assert_eq!(pings(&old_ns, b.ip), 3, "after the restart");
    // No program on a port OVS reads (it would duplicate packets).
    let pins = cluster.sb.bpffs_dir().join(&node.name).join("links");
    let pinned: Vec<String> = pins
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !pinned.iter().any(|p| p.starts_with(&old_port)),
        "a fast-path program was attached to Kube-OVN's port: {pinned:?}"
    );

    // The pod leaves the usual way: the kubelet's DEL through kovn.
    cluster.kubelets[0]
        .del(
            &PodSandbox {
                name: "old".into(),
                namespace: "default".into(),
                container_id: old_id.clone(),
                netns: old_ns.clone(),
                if_name: "eth0".into(),
                port_mappings: vec![],
            },
            None,
        )
        .expect("CNI DEL of a Kube-OVN pod");
    assert!(
        !ports(&node).contains(&old_port),
        "DEL left Kube-OVN's OVS port"
    );
    assert!(!link_exists(&node, &old_port), "DEL left the veth");

    // A Kube-OVN pod deleted while no DEL came: garbage collection removes its port.
    cluster.api.delete::<Pod>(Some("default"), "gone");
    wait_for(
        "the gone pod's port collected",
        Duration::from_secs(15),
        || !ports(&node).contains(&gone_port),
    )
    .expect("garbage collection of a Kube-OVN port");
    assert!(!link_exists(&node, &gone_port), "GC left the veth");
    // The kovn pod is untouched.
    assert!(
        ports(&node).iter().any(|p| p.ends_with("_o")),
        "{:?}",
        ports(&node)
    );
    drop(b);
    cluster.teardown().expect("teardown");
}
