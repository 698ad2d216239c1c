//! `cargo xtask demo`: kovn as a cluster runs it, on a 2-node sandbox with real OVN/OVS:
//! kovn-controller and one `kovn-agent daemon` per node as processes on the in-memory API
//! stand-in, pods created through the API and networked by the kubelet's path (Kube-OVN's
//! conflist: the `kube-ovn` plugin, then portmap), connectivity between every pair, and a table
//! comparing the fast path and the slow path (OVS), on the same node and across nodes (the
//! agents run with `--cross-node-fast-path`; the slow path there is OVS + Geneve on both
//! nodes). Then everything is torn down.

use std::net::Ipv4Addr;
use std::time::Duration;

use agent::datapath::{PinnedMaps, ReadMaps};
use agent::pod_network::PodLinks;
use anyhow::{Context, Result, bail};
use datapath_common::Reason;
use sandbox::kovn::{KovnBinaries, KovnCluster};
use sandbox::kubelet::PodSandbox;
use sandbox::traffic::{self, LatencyReport, ThroughputReport};
use sandbox::{Pod, netns};

use crate::progress::Step;
use crate::{ebpf, is_root, setup, workspace_root};

const SECONDS: u32 = 3;

/// Pod namespaces the demo made, deleted even when it fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

pub fn run() -> Result<()> {
    const STEPS: usize = 7;
    if !is_root() {
        bail!(
            "the demo creates network namespaces and loads eBPF: run it as root (sudo -E cargo xtask demo)"
        );
    }
    let step = Step::start(1, STEPS, "setup");
    step.done(setup::run_if_needed()?);

    let step = Step::start(
        2,
        STEPS,
        "build the eBPF datapath and kovn (kovn-controller, kovn-agent, kube-ovn; release)",
    );
    let object = ebpf::build(true)?;
    let root = workspace_root();
    crate::bench::build_release(&["agent", "controller", "cni"])?;
    step.done(&format!("built; datapath object {}", object.display()));

    let step = Step::start(
        3,
        STEPS,
        "start the sandbox (OVN central + 2 nodes) and kovn: kovn-controller and a kovn-agent per node",
    );
    let release = root.join("target/release");
    let cluster = KovnCluster::start_with_agent_args(
        2,
        KovnBinaries {
            controller: release.join("kovn-controller"),
            agent: release.join("kovn-agent"),
            cni_dir: release.clone(),
        },
        &["--cross-node-fast-path"],
    )
    .context("starting the sandbox with kovn")?;
    step.done(&format!(
        "sandbox {} up, the controller built the topology, every node has ovn0; state in {}",
        cluster.sb.id(),
        cluster.sb.dir().display()
    ));

    let step = Step::start(
        4,
        STEPS,
        "create pods a, b on n0 and c, d on n1 through the API; the kubelet's CNI ADD networks them",
    );
    let prefix = sandbox::registry::netns_prefix(cluster.sb.id());
    let spec = [("a", 0), ("b", 0), ("c", 1), ("d", 1)];
    let _namespaces = Namespaces(
        spec.iter()
            .map(|(n, _)| format!("{prefix}demo-{n}"))
            .collect(),
    );
    let mut pods = Vec::new();
    // (node, container ID) of each pod, for its DEL.
    let mut sandboxes = Vec::new();
    for (i, (name, node)) in spec.iter().enumerate() {
        cluster.add_pod(name, *node);
        let ns = format!("{prefix}demo-{name}");
        netns::add(&ns)?;
        let container_id = format!("{:012x}{:052x}", 0xde_0000_0000_u64 + i as u64, 0);
        let result = cluster.kubelets[*node]
            .add(&PodSandbox {
                name: (*name).into(),
                namespace: "default".into(),
                container_id: container_id.clone(),
                netns: ns.clone(),
                if_name: "eth0".into(),
                port_mappings: vec![],
            })
            .map_err(|e| anyhow::anyhow!("CNI ADD {name}: {e}"))?;
        let pod = pod_from_result(&cluster, name, *node, &ns, &container_id, &result)?;
        println!(
            "    pod {:<2} {:<11} on {}  lsp {}  (host veth {})",
            pod.name,
            pod.ip.to_string(),
            pod.node,
            pod.lsp,
            pod.host_veth
        );
        pods.push(pod);
        sandboxes.push((*node, container_id));
    }
    let nbctl = cluster.sb.central().nbctl();
    for pod in &pods {
        nbctl.run([
            "--timeout=30",
            "wait-until",
            "Logical_Switch_Port",
            &pod.lsp,
            "up=true",
        ])?;
    }
    nbctl.run(["--wait=hv", "sync"])?;
    step.done("4 pods networked by kovn-agent, their ports bound by ovn-controller");

    let step = Step::start(5, STEPS, "the datapath on each node (pinned by its agent)");
    let mut maps = Vec::new();
    for node in cluster.sb.nodes() {
        let dir = cluster.sb.bpffs_dir().join(&node.name);
        let pinned = PinnedMaps::open(&dir)
            .with_context(|| format!("the datapath of {} ({})", node.name, dir.display()))?;
        maps.push((node.name.clone(), node.netns.clone(), pinned));
    }
    step.done("loaded and attached by each agent; verifier accepted");
    let step = Step::start(
        6,
        STEPS,
        "connectivity between every pair of pods (ping x3)",
    );
    let mut failures = 0;
    for (i, from) in pods.iter().enumerate() {
        for to in &pods[i + 1..] {
            let report = traffic::ping(from, to.ip, 3)?;
            let ok = report.received == report.transmitted && report.duplicates == 0;
            failures += usize::from(!ok);
            println!(
                "    {} {} -> {} ({}): {}/{} replies, {} duplicates, avg {}",
                if ok { "ok  " } else { "FAIL" },
                from.name,
                to.name,
                if from.node == to.node {
                    "same node"
                } else {
                    "cross node"
                },
                report.received,
                report.transmitted,
                report.duplicates,
                report
                    .rtt_avg_ms
                    .map_or("-".to_owned(), |ms| format!("{ms:.3} ms")),
            );
        }
    }
    if failures > 0 {
        bail!(
            "{failures} pod pairs could not talk; the sandbox logs are in {}",
            cluster.sb.dir().display()
        );
    }
    step.done("every pair talks");

    let step = Step::start(
        7,
        STEPS,
        &format!("measure: iperf3 and sockperf ping-pong, {SECONDS} s each"),
    );
    let (a, b, c) = (&pods[0], &pods[1], &pods[2]);
    println!("    same node, fast path on …");
    let fast = measure(a, b)?;
    println!("    same node, fast path off on n0 (every packet through OVS) …");
    set_fast_path(&mut maps[0].2, false)?;
    let slow = measure(a, b);
    set_fast_path(&mut maps[0].2, true)?;
    let slow = slow?;
    println!("    cross node, fast path on …");
    let cross_fast = measure(a, c)?;
    println!("    cross node, fast path off on n0 and n1 (every packet through OVS on both) …");
    for (_, _, datapath) in maps.iter_mut() {
        set_fast_path(datapath, false)?;
    }
    let cross = measure(a, c);
    for (_, _, datapath) in maps.iter_mut() {
        set_fast_path(datapath, true)?;
    }
    let cross = cross?;
    step.done("measured");

    println!();
    println!(
        "| path between two pods                           | iperf3 TCP, 1 stream | sockperf TCP ping-pong avg / p50 / p99 |"
    );
    println!(
        "|-------------------------------------------------|----------------------|----------------------------------------|"
    );
    print_row("same node  (a -> b): kovn eBPF fast path", &fast);
    print_row("same node  (a -> b): OVS only (fast path off)", &slow);
    print_row("cross node (a -> c): kovn eBPF fast path", &cross_fast);
    print_row("cross node (a -> c): OVS userspace + Geneve", &cross);
    println!();
    println!(
        "Same-node flows are learned from what OVS delivers, then bypass OVS (bpf_redirect_peer);"
    );
    println!(
        "cross-node flows replay the Geneve headers OVS gave them on the sending node and are"
    );
    println!("delivered straight into the pod on the receiving node once its OVS delivered them.");
    println!("TCP SYN/FIN/RST and anything new still go through OVS.");
    println!("sockperf reports half the round trip as latency. `cargo xtask bench` adds a direct");
    println!("veth pair as the baseline and repeats interleaved rounds.");
    println!();
    println!("What kovn's programs decided, per pod:");
    println!(
        "| node | pod | sent via fast path | sent to OVS | flows learned | delivered by OVS |"
    );
    println!(
        "|------|-----|--------------------|-------------|---------------|------------------|"
    );
    for (node, node_ns, datapath) in &maps {
        for pod in pods.iter().filter(|p| &p.node == node) {
            let host = netns::ifindex(node_ns, &pod.host_veth)?;
            let peer = netns::ifindex(node_ns, &pod.ovs_peer)?;
            println!(
                "| {node:<4} | {:<3} | {:>18} | {:>11} | {:>13} | {:>16} |",
                pod.name,
                datapath.reason_count(host, Reason::FastHit)?,
                datapath.reason_count(host, Reason::HandoffToOvs)?,
                datapath.reason_count(peer, Reason::Learned)?,
                datapath.reason_count(peer, Reason::Delivered)?,
            );
        }
    }
    println!();
    println!("Across nodes, per node:");
    println!(
        "| node | encapsulated by the fast path | delivered from other nodes by the fast path |"
    );
    println!(
        "|------|-------------------------------|---------------------------------------------|"
    );
    for (node, _, datapath) in &maps {
        let total = |reason: Reason| -> Result<u64> {
            Ok(datapath
                .reason_counts()?
                .iter()
                .filter(|c| c.reason == reason)
                .map(|c| c.packets)
                .sum())
        };
        println!(
            "| {node:<4} | {:>29} | {:>43} |",
            total(Reason::TunnelFastHit)?,
            total(Reason::TunnelRxFastHit)?
        );
    }
    println!();

    drop(maps);
    for (pod, (node, container_id)) in pods.iter().zip(&sandboxes) {
        // The kubelet's DEL when the pod goes; the agent removes everything.
        cluster.kubelets[*node]
            .del(
                &PodSandbox {
                    name: pod.name.clone(),
                    namespace: "default".into(),
                    container_id: container_id.clone(),
                    netns: pod.netns.clone(),
                    if_name: "eth0".into(),
                    port_mappings: vec![],
                },
                None,
            )
            .map_err(|e| anyhow::anyhow!("CNI DEL {}: {e}", pod.name))?;
    }
    drop(_namespaces);
    let report = cluster.teardown()?;
    println!(
        "torn down: {} namespaces and {} daemons removed; nothing left behind",
        report.namespaces.len(),
        report.pids.len()
    );
    Ok(())
}

/// Switches a running agent's fast path (as `kovn-agent datapath fast-path on|off` does).
fn set_fast_path(maps: &mut PinnedMaps, on: bool) -> Result<()> {
    let mut config = maps.config()?;
    config.fast_path_enabled = u32::from(on);
    maps.set_config(&config)?;
    Ok(())
}

/// The pod as the traffic helpers know it, from the CNI result and kovn's interface names.
fn pod_from_result(
    cluster: &KovnCluster,
    name: &str,
    node: usize,
    netns_name: &str,
    container_id: &str,
    result: &serde_json::Value,
) -> Result<Pod> {
    let (ip, prefix) = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .context("no address in the CNI result")?;
    let links = PodLinks::for_container(container_id);
    let node = cluster.sb.node(node);
    Ok(Pod {
        name: name.into(),
        node: node.name.clone(),
        node_netns: node.netns.clone(),
        netns: netns_name.into(),
        ip: ip.parse::<Ipv4Addr>()?,
        prefix_len: prefix.parse()?,
        gateway: result["ips"][0]["gateway"]
            .as_str()
            .context("no gateway in the CNI result")?
            .parse()?,
        mac: result["interfaces"][0]["mac"]
            .as_str()
            .unwrap_or_default()
            .into(),
        lsp: format!("{name}.default"),
        host_veth: links.host_veth,
        ovs_port: links.ovs_port,
        ovs_peer: links.ovs_peer,
    })
}

struct Measurement {
    throughput: ThroughputReport,
    latency: LatencyReport,
}

fn measure(client: &Pod, server: &Pod) -> Result<Measurement> {
    let throughput = traffic::iperf3(client, server, SECONDS)?;
    // Let the server's port close before sockperf starts.
    std::thread::sleep(Duration::from_millis(200));
    let latency = traffic::sockperf_ping_pong(client, server, SECONDS)?;
    Ok(Measurement {
        throughput,
        latency,
    })
}

fn print_row(label: &str, m: &Measurement) {
    println!(
        "| {label:<47} | {:>13.2} Gbit/s | {:>9.1} / {:>6.1} / {:>6.1} µs       |",
        m.throughput.gbit_per_second(),
        m.latency.avg_us,
        m.latency.p50_us,
        m.latency.p99_us
    );
}
