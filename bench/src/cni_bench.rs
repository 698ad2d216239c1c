//! CNI ADD through the whole product path on one sandbox node: the kubelet's part (Kube-OVN's
//! conflist: kube-ovn, then portmap) → `kovn-agent daemon` → netlink, OVS and the eBPF
//! datapath, with kovn-controller allocating. The pods are created first and the ADDs timed
//! once their annotations are present (the target is about the agent's own work);
//! pods per second is the same run's sequential rate.
//!
//! Then the same ADDs while the agent programs 10,000 Services × 10 endpoints into its eBPF
//! service maps (`add_p99_during_service_flush_ms`): the Services are put into the API, the
//! agent is restarted so that they arrive as one initial list (one flush of all of them), and
//! pods are ADDed until the agent reports every VIP programmed. The controller is stopped
//! first (the pods are annotated already): its OVN load-balancer work for 10,000 Services
//! would compete for this VM's two cores and measure the machine, not the agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use sandbox::kovn::{KovnCluster, wait_for};
use sandbox::kubelet::PodSandbox;
use sandbox::netns;
use serde_json::json;

use crate::report::percentile;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Services (10 endpoints each) programmed during the second series of ADDs; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Also write `{"cni": …}` into this JSON file (merged with what it holds).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Pod namespaces, deleted even when the run fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

/// ADDs timed while the agent programs a large Service load.
struct DuringFlush {
    adds: usize,
    p50: f64,
    p99: f64,
    flush_s: f64,
}

/// The agent's `kovn_datapath_service_vips` (node 0), or 0 if it cannot be read.
fn programmed_vips(cluster: &KovnCluster) -> usize {
    let node = cluster.sb.node(0).netns.clone();
    netns::run_in(&node, || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:10665")?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .ok()
    .and_then(Result::ok)
    .and_then(|text| {
        text.lines().find_map(|l| {
            l.strip_prefix("kovn_datapath_service_vips ")?
                .parse::<f64>()
                .ok()
        })
    })
    .map_or(0, |v| v as usize)
}

fn adds_during_service_flush(
    cluster: &mut KovnCluster,
    services: usize,
    add: impl Fn(&KovnCluster, usize, &str) -> Result<f64>,
    pods: &[String],
) -> Result<DuringFlush> {
    cluster.stop_controller();
    println!("cni: controller stopped; putting {services} Services × 10 endpoints into the API …");
    crate::synthetic::put_services(&cluster.api, services)?;
    println!(
        "cni: restarting the agent: the Services arrive as its initial list; ADD while it programs them …"
    );
    cluster.restart_agent(0)?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut flushed = None;
    for (i, name) in pods.iter().enumerate() {
        if programmed_vips(cluster) >= services {
            flushed = Some(started.elapsed().as_secs_f64());
            break;
        }
        latencies.push(add(cluster, i, name)?);
    }
    let flush_s = match flushed {
        Some(s) => s,
        None => {
            wait_for("every VIP programmed", Duration::from_secs(300), || {
                programmed_vips(cluster) >= services
            })?;
            println!("cni: (the pods ran out before the flush finished)");
            started.elapsed().as_secs_f64()
        }
    };
    if latencies.is_empty() {
        bail!("the agent programmed {services} Services before the first ADD: nothing measured");
    }
    println!(
        "  ADD latencies in order (ms): {}",
        latencies
            .iter()
            .map(|l| format!("{l:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "cni: {} ADDs during the flush of {services} Services ({flush_s:.1} s after the agent's restart): p50 {p50:.1} ms, p99 {p99:.1} ms",
        latencies.len()
    );
    Ok(DuringFlush {
        adds: latencies.len(),
        p50,
        p99,
        flush_s,
    })
}

pub fn run(options: &Options, out_dir: &Path) -> Result<()> {
    if options.pods == 0 {
        bail!("--pods must be at least 1");
    }
    println!("cni: starting the sandbox with kovn-controller and kovn-agent …");
    let cluster = KovnCluster::start(1, crate::release_binaries("cni")?)?;
    let prefix = sandbox::registry::netns_prefix(cluster.sb.id());
    // The second series (during the Service flush) gets its own pods.
    let names: Vec<String> = (0..options.pods * 2).map(|i| format!("bench{i}")).collect();
    let _namespaces = Namespaces(names.iter().map(|n| format!("{prefix}b-{n}")).collect());
    for name in &names {
        cluster.add_pod(name, 0);
        netns::add(&format!("{prefix}b-{name}"))?;
    }
    let api = cluster.api.clone();
    let allocated = Instant::now();
    wait_for("every pod's annotations", Duration::from_secs(120), || {
        api.count::<k8s_openapi::api::core::v1::Pod>(|p| {
            p["metadata"]["annotations"]["ovn.kubernetes.io/routed"] == "true"
        }) == names.len()
    })?;
    println!(
        "cni: {} pods annotated by the controller ({:.1} s after the last netns was made); ADD one after another …",
        names.len(),
        allocated.elapsed().as_secs_f64()
    );
    let (first, second) = names.split_at(options.pods);
    let add = |cluster: &KovnCluster, i: usize, name: &str| -> Result<f64> {
        let pod = PodSandbox {
            name: name.to_owned(),
            namespace: "default".into(),
            container_id: format!("{:012x}{:052x}", 0xbe_0000_0000_u64 + i as u64, 0),
            netns: format!("{prefix}b-{name}"),
            if_name: "eth0".into(),
            port_mappings: vec![],
        };
        let t = Instant::now();
        cluster.kubelets[0]
            .add(&pod)
            .map_err(|e| anyhow::anyhow!("ADD {name}: {e}"))?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut latencies = Vec::with_capacity(first.len());
    let started = Instant::now();
    for (i, name) in first.iter().enumerate() {
        latencies.push(add(&cluster, i, name)?);
        if (i + 1) % 50 == 0 {
            println!("  {}/{} pods networked", i + 1, first.len());
        }
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let pods_per_s = first.len() as f64 / total;
    println!(
        "cni: ADD (kube-ovn + portmap, as the kubelet runs the conflist) p50 {p50:.1} ms, p99 {p99:.1} ms; {pods_per_s:.1} pods/s"
    );
    let mut cni = json!({
        "pods": first.len(),
        "add_p50_ms": p50,
        "add_p99_ms": p99,
        "pods_per_s": pods_per_s,
    });
    let mut cluster = cluster;
    if options.services > 0 {
        let during = adds_during_service_flush(
            &mut cluster,
            options.services,
            |c, i, name| add(c, options.pods + i, name),
            second,
        )?;
        cni["services_flushed"] = json!(options.services);
        cni["adds_during_service_flush"] = json!(during.adds);
        cni["add_p50_during_service_flush_ms"] = json!(during.p50);
        cni["add_p99_during_service_flush_ms"] = json!(during.p99);
        cni["service_flush_s"] = json!(during.flush_s);
    }
    let report = json!({ "cni": cni });
    let path = out_dir.join("cni.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {}", path.display());
    if let Some(json) = &options.json {
        crate::report::merge_json(json, &report)?;
    }
    cluster.teardown()?;
    Ok(())
}
