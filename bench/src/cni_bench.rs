//! CNI ADD through the whole product path on one sandbox node: the kubelet's part (Kube-OVN's
//! conflist: kube-ovn, then portmap) → `kovn-agent daemon` → netlink, OVS and the eBPF
//! datapath, with kovn-controller allocating. The pods are created first and the ADDs timed
//! once their annotations are present (the target is about the agent's own work);
//! pods per second is the same run's sequential rate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use sandbox::kovn::{KovnCluster, wait_for};
use sandbox::kubelet::PodSandbox;
use sandbox::netns;
use serde_json::json;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 200)]
    pods: usize,
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn run(options: &Options, out_dir: &Path) -> Result<()> {
    if options.pods == 0 {
        bail!("--pods must be at least 1");
    }
    println!("cni: starting the sandbox with kovn-controller and kovn-agent …");
    let cluster = KovnCluster::start(1, crate::release_binaries("cni")?)?;
    let prefix = sandbox::registry::netns_prefix(cluster.sb.id());
    let names: Vec<String> = (0..options.pods).map(|i| format!("bench{i}")).collect();
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
    let kubelet = &cluster.kubelets[0];
    let mut latencies = Vec::with_capacity(names.len());
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let pod = PodSandbox {
            name: name.clone(),
            namespace: "default".into(),
            container_id: format!("{:012x}{:052x}", 0xbe_0000_0000_u64 + i as u64, 0),
            netns: format!("{prefix}b-{name}"),
            if_name: "eth0".into(),
            port_mappings: vec![],
        };
        let t = Instant::now();
        kubelet
            .add(&pod)
            .map_err(|e| anyhow::anyhow!("ADD {name}: {e}"))?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if (i + 1) % 50 == 0 {
            println!("  {}/{} pods networked", i + 1, names.len());
        }
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let pods_per_s = names.len() as f64 / total;
    let report = json!({"cni": {
        "pods": names.len(),
        "add_p50_ms": p50,
        "add_p99_ms": p99,
        "pods_per_s": pods_per_s,
    }});
    println!(
        "cni: ADD (kube-ovn + portmap, as the kubelet runs the conflist) p50 {p50:.1} ms, p99 {p99:.1} ms; {pods_per_s:.1} pods/s"
    );
    let path = out_dir.join("cni.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {}", path.display());
    if let Some(json) = &options.json {
        crate::report::merge_json(json, &report)?;
    }
    cluster.teardown()?;
    Ok(())
}
