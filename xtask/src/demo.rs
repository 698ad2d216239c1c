//! `cargo xtask demo`: a 2-node sandbox with real OVN/OVS, 2 pods per node, connectivity
//! between every pair, a throughput/latency table for same-node and cross-node pod pairs, and
//! the eBPF counters of every pod's host veth. Then everything is torn down.

use std::time::Duration;

use agent::datapath::{Datapath, LoadOptions};
use anyhow::{Context, Result, bail};
use datapath_common::Direction;
use sandbox::traffic::{self, LatencyReport, ThroughputReport};
use sandbox::{Pod, Sandbox, SandboxConfig, netns};

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
    let mut sb = Sandbox::start(SandboxConfig::default()).context("starting the sandbox")?;
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
    step.done("4 pods up");

    let step = Step::start(
        5,
        STEPS,
        "load the eBPF counters (one datapath per node) on every pod's host veth",
    );
    let mut datapaths = Vec::new();
    for node in sb.nodes() {
        let mut datapath = Datapath::load(&object, &LoadOptions::default())
            .with_context(|| format!("loading {} for {}", object.display(), node.name))?;
        for pod in pods.iter().filter(|p| p.node == node.name) {
            netns::run_in(&node.netns, || {
                datapath.attach_counters(&pod.host_veth, Direction::Ingress)?;
                datapath.attach_counters(&pod.host_veth, Direction::Egress)
            })??;
        }
        datapaths.push((node.name.clone(), datapath));
    }
    step.done("attached");

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
    let same = measure(a, b)?;
    let cross = measure(a, c)?;
    step.done("measured");

    println!();
    println!(
        "| path between two pods                          | iperf3 TCP, 1 stream | sockperf TCP ping-pong avg / p50 / p99 |"
    );
    println!(
        "|------------------------------------------------|----------------------|----------------------------------------|"
    );
    print_row("same node  (a -> b): OVS userspace datapath", &same);
    print_row("cross node (a -> c): OVS userspace + Geneve", &cross);
    println!();
    println!("The eBPF fast path is not built yet: both rows are kovn's slow path (OVS/OVN).");
    println!("sockperf reports half the round trip as latency.");
    println!();
    println!(
        "eBPF counters on the pods' host veths (ingress = from the pod, egress = to the pod):"
    );
    println!("| node | pod | ingress packets | ingress bytes | egress packets | egress bytes |");
    println!("|------|-----|-----------------|---------------|----------------|--------------|");
    for (node, datapath) in &datapaths {
        let node_ns = &sb
            .nodes()
            .iter()
            .find(|n| &n.name == node)
            .context("node")?
            .netns;
        for pod in pods.iter().filter(|p| &p.node == node) {
            let ifindex = netns::ifindex(node_ns, &pod.host_veth)?;
            let count = |d| -> Result<(u64, u64)> {
                Ok(datapath
                    .interface_counter(ifindex, d)?
                    .map_or((0, 0), |c| (c.packets, c.bytes)))
            };
            let (ip, ib) = count(Direction::Ingress)?;
            let (ep, eb) = count(Direction::Egress)?;
            println!(
                "| {node:<4} | {:<3} | {ip:>15} | {ib:>13} | {ep:>14} | {eb:>12} |",
                pod.name
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

struct Measurement {
    throughput: ThroughputReport,
    latency: LatencyReport,
}

fn measure(client: &Pod, server: &Pod) -> Result<Measurement> {
    println!("    {} -> {}: iperf3 …", client.name, server.name);
    let throughput = traffic::iperf3(client, server, SECONDS)?;
    // Let the server's port close before sockperf starts.
    std::thread::sleep(Duration::from_millis(200));
    println!("    {} -> {}: sockperf …", client.name, server.name);
    let latency = traffic::sockperf_ping_pong(client, server, SECONDS)?;
    Ok(Measurement {
        throughput,
        latency,
    })
}

fn print_row(label: &str, m: &Measurement) {
    println!(
        "| {label:<46} | {:>13.2} Gbit/s | {:>9.1} / {:>6.1} / {:>6.1} µs       |",
        m.throughput.gbit_per_second(),
        m.latency.avg_us,
        m.latency.p50_us,
        m.latency.p99_us
    );
}
