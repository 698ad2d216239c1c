//! `cargo xtask demo`: a 2-node sandbox with real OVN/OVS, 2 pods per node wired by kovn's
//! eBPF datapath, connectivity between every pair, and a table comparing the fast path, the
//! slow path (OVS) on the same node, and cross-node traffic (OVS + Geneve). Then everything is
//! torn down.

use std::time::Duration;

use agent::datapath::{Datapath, LoadOptions, PodInterfaces, ReadMaps};
use anyhow::{Context, Result, bail};
use datapath_common::{DatapathConfig, Reason};
use sandbox::traffic::{self, LatencyReport, ThroughputReport};
use sandbox::{Handoff, Pod, Sandbox, SandboxConfig, netns};

use crate::progress::Step;
use crate::{ebpf, is_root, setup};

const SECONDS: u32 = 3;

pub fn run() -> Result<()> {
    const STEPS: usize = 7;
    if !is_root() {
        bail!(
            "the demo creates network namespaces and loads eBPF: run it as root (sudo -E cargo xtask demo)"
        );
    }
    let step = Step::start(1, STEPS, "setup");
    step.done(setup::run_if_needed()?);

    let step = Step::start(2, STEPS, "build the eBPF datapath");
    let object = ebpf::build(true)?;
    step.done("built");

    let step = Step::start(
        3,
        STEPS,
        "start the sandbox: OVN central + 2 nodes (OVS userspace datapath, ovn-controller)",
    );
    let mut sb = Sandbox::start(SandboxConfig {
        nodes: 2,
        handoff: Handoff::Datapath,
    })
    .context("starting the sandbox")?;
    step.done(&format!(
        "sandbox {} up, state in {}",
        sb.id(),
        sb.dir().display()
    ));

    let step = Step::start(
        4,
        STEPS,
        "create pods a, b on n0 and c, d on n1 (OVN ports bound, split-port veths)",
    );
    let pods = [
        sb.add_pod(0, "a")?,
        sb.add_pod(0, "b")?,
        sb.add_pod(1, "c")?,
        sb.add_pod(1, "d")?,
    ];
    for pod in &pods {
        println!(
            "    pod {:<2} {:<11} on {}  lsp {}",
            pod.name,
            pod.ip.to_string(),
            pod.node,
            pod.lsp
        );
    }
    step.done("4 pods created");

    let step = Step::start(
        5,
        STEPS,
        "load kovn's eBPF datapath (one per node, as one agent per node) and attach it to the pods",
    );
    let mut datapaths = Vec::new();
    for node in sb.nodes() {
        let mut datapath = Datapath::load(&object, &LoadOptions::default())
            .with_context(|| format!("loading {} for {}", object.display(), node.name))?;
        for pod in pods.iter().filter(|p| p.node == node.name) {
            let interfaces = PodInterfaces {
                name: pod.lsp.clone(),
                host_veth: pod.host_veth.clone(),
                ovs_peer: pod.ovs_peer.clone(),
                ip: pod.ip.into(),
                mac: agent::datapath::parse_mac(&pod.mac).map_err(anyhow::Error::msg)?,
            };
            netns::run_in(&node.netns, || datapath.attach_pod(&interfaces))??;
        }
        datapaths.push((node.name.clone(), datapath));
    }
    step.done("verifier accepted; fast path and hand-off attached");

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
            sb.dir().display()
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
    set_fast_path(&mut datapaths[0].1, false)?;
    let slow = measure(a, b)?;
    set_fast_path(&mut datapaths[0].1, true)?;
    println!("    cross node …");
    let cross = measure(a, c)?;
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
    print_row("cross node (a -> c): OVS userspace + Geneve", &cross);
    println!();
    println!(
        "Same-node flows are learned from what OVS delivers, then bypass OVS (bpf_redirect_peer);"
    );
    println!(
        "TCP SYN/FIN/RST and anything new still go through OVS; cross-node traffic always does."
    );
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
    for (node, datapath) in &datapaths {
        let node_ns = &sb
            .nodes()
            .iter()
            .find(|n| &n.name == node)
            .context("node")?
            .netns;
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

    drop(datapaths);
    sb.check_daemons()?;
    let report = sb.teardown()?;
    println!(
        "torn down: {} namespaces and {} daemons removed; nothing left behind",
        report.namespaces.len(),
        report.pids.len()
    );
    Ok(())
}

fn set_fast_path(datapath: &mut Datapath, on: bool) -> Result<()> {
    datapath.set_config(&DatapathConfig {
        fast_path_enabled: u32::from(on),
        ..DatapathConfig::default()
    })?;
    Ok(())
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
