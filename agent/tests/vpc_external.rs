//! The default external network (Kube-OVN's `ovn-external-gw-config`): the gateway nodes it
//! names bridge their NIC on the external network into `br-external`, mapped as provider
//! network `external`, so that ovn-controller can connect the external switch's localnet
//! port there; the other nodes do not; disabling the config takes bridge and mapping away.
//! The sandbox's external network is a layer-2 network of its own, reached by the gateway
//! nodes' second NIC only. A provider network whose NIC carries the node's address is refused
//! (bridging it would cut the node off).

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use sandbox::kovn::KovnCluster;
use sandbox::{Cmd, EXTERNAL_NIC};
use serde_json::json;

fn config(enabled: bool, nodes: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ovn-external-gw-config", "namespace": "kube-system"},
        "data": {"enable-external-gw": enabled.to_string(), "external-gw-nodes": nodes,
            "type": "centralized", "external-gw-nic": EXTERNAL_NIC,
            "external-gw-addr": "192.168.200.254/24"}
    }))
    .unwrap()
}

/// Node `i`'s provider bridge ports (None: no bridge) and its bridge mappings.
fn bridge_of(cluster: &KovnCluster, i: usize) -> (Option<String>, String) {
    let vsctl = cluster.sb.node(i).vsctl();
    let ports = vsctl.run(["list-ports", "br-external"]).ok();
    let mappings = vsctl
        .run(["get", "Open_vSwitch", ".", "external_ids"])
        .unwrap_or_default();
    (ports, mappings)
}

fn wait(what: &str, check: impl FnMut() -> bool) {
    sandbox::kovn::wait_for(what, Duration::from_secs(15), check).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_named_gateway_nodes_bridge_the_external_network_and_only_they() {
    if !sandbox::privileged("the_named_gateway_nodes_bridge_the_external_network_and_only_they") {
        return;
    }
    let mut cluster = KovnCluster::start(2, common::binaries()).expect("kovn on a sandbox");
    let internet = "198.51.100.1".parse().unwrap();
    let external = cluster
        .sb
        .add_external_network(&[1], internet)
        .expect("the external network");
    // A provider network whose NIC carries the node's address (br-phy holds the fabric
    // address): bridging it would cut the node off, so it is refused.
    let busy: api::ProviderNetwork = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork",
        "metadata": {"name": "busy"}, "spec": {"defaultInterface": "br-phy"}
    }))
    .unwrap();
    cluster.api.put(&busy);
    cluster.api.put(&config(true, "n1"));
    wait("n1's br-external with its NIC and the mapping", || {
        let (ports, mappings) = bridge_of(&cluster, 1);
        ports.is_some_and(|p| p.trim() == EXTERNAL_NIC)
            && mappings.contains("ovn-bridge-mappings=\"external:br-external\"")
    });
    // ovs-vswitchd really drives the NIC: the bridge's datapath port is there.
    let ports = cluster
        .sb
        .node(1)
        .appctl()
        .args(["dpctl/show"])
        .run()
        .unwrap();
    assert!(
        ports.contains(&format!(": {EXTERNAL_NIC}")) || ports.contains(&format!(" {EXTERNAL_NIC}")),
        "eth1 is not a datapath port:\n{ports}"
    );
    // Decided in the same pass as br-external: refused, and the node still on the fabric.
    for i in 0..2 {
        let vsctl = cluster.sb.node(i).vsctl();
        assert!(
            vsctl.run(["br-exists", "br-busy"]).is_err(),
            "n{i} bridged a NIC that carries its address"
        );
    }
    let (ports, mappings) = bridge_of(&cluster, 0);
    assert!(
        ports.is_none() && !mappings.contains("ovn-bridge-mappings"),
        "n0 is not a gateway but has {ports:?} / {mappings}"
    );
    // Nothing but the gateway's NIC and the router is on the external network.
    let members = Cmd::new("ip")
        .args([
            "-n",
            &external.switch,
            "-o",
            "link",
            "show",
            "master",
            "br0",
        ])
        .run()
        .unwrap();
    assert_eq!(members.lines().count(), 2, "{members}");

    cluster.api.put(&config(false, "n1"));
    wait("n1's bridge and mapping gone", || {
        let (ports, mappings) = bridge_of(&cluster, 1);
        ports.is_none() && !mappings.contains("ovn-bridge-mappings")
    });
    cluster.teardown().expect("teardown");
}
