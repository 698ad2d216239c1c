//! `kovn-agent uninstall` on a sandbox node that ran kovn with two pods talking through the
//! fast path: afterwards nothing of kovn is left on the node, checked item by item with the
//! system's own tools (ip, nft, ovs-vsctl, bpftool), not with the code that removed it.

mod common;

use std::path::Path;
use std::time::Duration;

use sandbox::Cmd;
use sandbox::kovn::KovnCluster;

fn node_cmd(netns: &str, program: &str, args: &[&str]) -> String {
    Cmd::new(program)
        .args(args.iter().copied())
        .netns(netns)
        .run()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Names of the node namespace's links.
fn links(netns: &str) -> Vec<String> {
    node_cmd(netns, "ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// IDs of the programs the agent's pinned links hold, from the kernel (bpftool).
fn pinned_link_programs(pins: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in pins.join("links").read_dir().unwrap() {
        let path = entry.unwrap().path();
        let out = std::process::Command::new("bpftool")
            .args(["-j", "link", "show", "pinned"])
            .arg(&path)
            .output()
            .expect("bpftool");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(id) = v["prog_id"].as_u64() {
            ids.push(id);
        }
    }
    ids
}

fn program_loaded(id: u64) -> bool {
    std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kovn_ovs_interfaces(db: &Path) -> String {
    let out = std::process::Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", db.display()))
        .args([
            "--bare",
            "--columns=name",
            "find",
            "Interface",
            "external_ids:vendor=kovn",
        ])
        .output()
        .expect("ovs-vsctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn kovn_link(name: &str) -> bool {
    agent::uninstall::is_kovn_link_name(name)
}

#[test]
fn uninstall_leaves_nothing_of_kovn_on_the_node() {
    if !sandbox::privileged("uninstall_leaves_nothing_of_kovn_on_the_node") {
        return;
    }
    let cluster = KovnCluster::start(1, common::binaries()).expect("kovn on the sandbox");
    let a = cluster.start_pod("a", 0).expect("pod a");
    let b = cluster.start_pod("b", 0).expect("pod b");
    let ping = sandbox::traffic::ping(&a.as_pod(&cluster), b.ip, 3).expect("ping");
    assert!(ping.received > 0, "the pods do not talk: {ping:?}");

    let node = cluster.sb.node(0).clone();
    let pins = cluster.sb.bpffs_dir().join(&node.name);
    // What the install-cni container writes on a node.
    let cni_conf = cluster.dir.join("net.d");
    let cni_bin = cluster.dir.join("cni-bin");
    for dir in [&cni_conf, &cni_bin] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(cni_conf.join("01-kube-ovn.conflist"), "{}").unwrap();
    std::fs::write(cni_bin.join("kube-ovn"), "#!/bin/sh\n").unwrap();
    // A file that is not kovn's stays.
    std::fs::write(cni_conf.join("99-loopback.conf"), "{}").unwrap();
    // An external egress gateway's rule and table, as the agent lays them out for a subnet
    // with externalEgressGateway (agent/tests/vpc_egress.rs), and a rule that is not kovn's.
    for args in [
        "rule add from 10.99.0.0/24 iif ovn0 lookup 1234 priority 1600",
        "route add default via 172.18.0.254 dev br-phy table 1234",
        "rule add from 10.98.0.0/24 lookup 1235 priority 1601",
    ] {
        node_cmd(&node.netns, "ip", &args.split(' ').collect::<Vec<_>>());
    }

    // A provider network's bridge (underlay), on a NIC of the node's.
    node_cmd(
        &node.netns,
        "ip",
        &["link", "add", "ul0", "type", "veth", "peer", "name", "ul0p"],
    );
    let pn: api::ProviderNetwork = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork",
        "metadata": {"name": "net1"}, "spec": {"defaultInterface": "ul0"}
    }))
    .unwrap();
    cluster.api.put(&pn);
    sandbox::kovn::wait_for("br-net1", Duration::from_secs(15), || {
        node.vsctl()
            .run(["list-ports", "br-net1"])
            .is_ok_and(|p| p.trim() == "ul0")
    })
    .unwrap();

    // Before: each item is there, or the checks below prove nothing.
    let before_links: Vec<String> = links(&node.netns)
        .into_iter()
        .filter(|l| kovn_link(l))
        .collect();
    assert!(before_links.iter().any(|l| l == "ovn0"), "{before_links:?}");
    assert!(
        before_links.iter().filter(|l| l.ends_with("_h")).count() >= 2,
        "no pod veths: {before_links:?}"
    );
    assert!(!kovn_ovs_interfaces(&node.db.socket).is_empty());
    // The uplink is split for the cross-node fast path (on by default): eth0 is out of br-phy.
    let uplink_ports = || node.vsctl().run(["list-ports", "br-phy"]).unwrap();
    assert_eq!(uplink_ports().trim(), "ku-eth0", "the uplink is not split");
    assert!(!node_cmd(&node.netns, "ip", &["route", "show", "dev", "ovn0"]).is_empty());
    let tables = node_cmd(&node.netns, "nft", &["list", "tables"]);
    assert!(
        tables.contains("table ip kovn\n") && tables.contains("table ip kovn_probe"),
        "no natOutgoing or probe proxy table: {tables}"
    );
    assert!(
        node_cmd(&node.netns, "ip", &["rule", "show"]).contains("lookup 10001"),
        "no probe proxy rule"
    );
    assert!(pins.join("links").read_dir().unwrap().count() > 0);
    let programs = pinned_link_programs(&pins);
    assert!(!programs.is_empty(), "no pinned links hold a program");

    let uninstall = || {
        Cmd::new(cluster.binaries.agent.display().to_string())
            .arg("uninstall")
            .arg("--pin-dir")
            .arg(pins.display().to_string())
            .arg("--cni-conf-dir")
            .arg(cni_conf.display().to_string())
            .arg("--cni-bin-dir")
            .arg(cni_bin.display().to_string())
            .arg("--cni-socket")
            .arg(cluster.socket(0).display().to_string())
            .arg(format!("--ovs-db=unix:{}", node.db.socket.display()))
            .netns_keep_mounts(&node.netns)
            .run()
    };
    // The agent refuses while another agent answers on the socket.
    let refused = Cmd::new(cluster.binaries.agent.display().to_string())
        .arg("uninstall")
        .arg("--cni-socket")
        .arg(cluster.socket(0).display().to_string())
        .arg("--pin-dir")
        .arg(pins.display().to_string())
        .netns_keep_mounts(&node.netns)
        .run();
    let message = format!("{refused:?}");
    assert!(
        refused.is_err() && message.contains("still running"),
        "uninstall ran beside a live agent: {message}"
    );
    assert!(pins.exists());

    assert!(
        cluster.stop_agent(0, Duration::from_secs(10)).unwrap(),
        "the agent did not stop cleanly"
    );
    let report = uninstall().expect("kovn-agent uninstall");
    eprintln!("{report}");

    // After, item by item.
    let left: Vec<String> = links(&node.netns)
        .into_iter()
        .filter(|l| kovn_link(l))
        .collect();
    assert!(left.is_empty(), "links left on the node: {left:?}");
    assert_eq!(uplink_ports().trim(), "eth0", "eth0 is not back in br-phy");
    let pair_left: Vec<String> = links(&node.netns)
        .into_iter()
        .filter(|l| l.starts_with("ku-") || l.starts_with("kp-"))
        .collect();
    assert!(
        pair_left.is_empty(),
        "the split uplink's pair is left: {pair_left:?}"
    );
    for pod in [&a, &b] {
        let inside = node_cmd(&pod.netns, "ip", &["-o", "link", "show"]);
        assert!(
            !inside.contains("eth0"),
            "{}'s eth0 is still there",
            pod.name
        );
    }
    assert_eq!(
        kovn_ovs_interfaces(&node.db.socket),
        "",
        "kovn's OVS ports are still there"
    );
    assert!(
        node_cmd(&node.netns, "ip", &["route"])
            .lines()
            .all(|r| !r.contains("ovn0")),
        "routes through ovn0 left"
    );
    let tables = node_cmd(&node.netns, "nft", &["list", "tables"]);
    assert!(!tables.contains("kovn"), "nft table left: {tables}");
    assert!(
        node.vsctl().run(["br-exists", "br-net1"]).is_err(),
        "the provider bridge br-net1 is left"
    );
    let ids = node
        .vsctl()
        .run(["get", "Open_vSwitch", ".", "external_ids"])
        .unwrap();
    assert!(!ids.contains("ovn-bridge-mappings"), "mapping left: {ids}");
    let rules = node_cmd(&node.netns, "ip", &["rule", "show"]);
    assert!(!rules.contains("iif ovn0"), "egress rules left: {rules}");
    assert!(
        rules.contains("lookup 1235"),
        "a rule that is not kovn's went: {rules}"
    );
    assert!(
        !rules.contains("lookup 10001"),
        "the probe proxy's rule left: {rules}"
    );
    let probe_table = node_cmd(&node.netns, "ip", &["route", "show", "table", "10001"]);
    assert!(
        probe_table.trim().is_empty(),
        "the probe proxy's route left: {probe_table}"
    );
    let table = node_cmd(&node.netns, "ip", &["route", "show", "table", "1234"]);
    assert!(
        table.trim().is_empty(),
        "the egress table's route left: {table}"
    );
    assert!(!pins.exists(), "pins left under {}", pins.display());
    let still: Vec<u64> = programs
        .into_iter()
        .filter(|id| program_loaded(*id))
        .collect();
    assert!(
        still.is_empty(),
        "programs still loaded (links not released): {still:?}"
    );
    assert!(!cni_conf.join("01-kube-ovn.conflist").exists());
    assert!(!cni_bin.join("kube-ovn").exists());
    assert!(!cluster.socket(0).exists(), "the CNI socket is left");
    assert!(
        cni_conf.join("99-loopback.conf").exists(),
        "another plugin's file was removed"
    );

    // A second run finds nothing and still succeeds.
    let again = uninstall().expect("a second uninstall");
    assert!(
        again.lines().all(|l| l.ends_with("absent")),
        "a second run removed something: {again}"
    );
    drop((a, b));
    cluster.teardown().expect("teardown");
}
