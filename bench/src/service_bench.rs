//! ClusterIP Services on the product path (kovn-controller and kovn-agent on a 2-node sandbox):
//! a client pod reaching a server pod on its node and on the other node by the server's pod IP,
//! through the Service VIP balanced in eBPF, and through the same VIP balanced by OVN's load
//! balancer (the agent's balancer switched off), side by side and interleaved, in one run.
//! Then the time to program 10,000 Services × 10 endpoints into a datapath.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::datapath::{Datapath, LoadOptions, PinnedMaps, ReadServiceMaps, locate_object};
use agent::services::ServiceSync;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sandbox::kovn::{KovnCluster, RunningPod, wait_for};
use sandbox::traffic::{self, IPERF3_PORT, SOCKPERF_PORT};
use serde_json::{Value, json};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// One round of 2 s measurements instead of three of 5 s.
    #[arg(long)]
    quick: bool,
    /// Services programmed in the programming-time measurement (10 endpoints each).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Only the programming-time measurement, no traffic.
    #[arg(long)]
    program_only: bool,
    /// Also write `{"service": …}` into this JSON file (merged with what it holds).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
struct Samples {
    tcp_gbps: Vec<f64>,
    rr_p50_us: Vec<f64>,
    rr_p99_us: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Samples {
    fn json(&self) -> Value {
        json!({"tcp_gbps": median(&self.tcp_gbps), "rr_p50_us": median(&self.rr_p50_us),
               "rr_p99_us": median(&self.rr_p99_us)})
    }
}

fn service(name: &str, vip: Ipv4Addr, server: &RunningPod) -> Result<(Service, EndpointSlice)> {
    let ports = json!([
        {"name": "iperf", "port": IPERF3_PORT, "protocol": "TCP", "targetPort": IPERF3_PORT},
        {"name": "sockperf", "port": SOCKPERF_PORT, "protocol": "TCP", "targetPort": SOCKPERF_PORT}
    ]);
    let service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()], "ports": ports}
    }))?;
    let slice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "iperf", "port": IPERF3_PORT, "protocol": "TCP"},
                  {"name": "sockperf", "port": SOCKPERF_PORT, "protocol": "TCP"}],
        "endpoints": [{"addresses": [server.ip.to_string()], "conditions": {"ready": true}}]
    }))?;
    Ok((service, slice))
}

fn set_service_lb(pins: &Path, on: bool) -> Result<()> {
    let mut maps = PinnedMaps::open(pins)?;
    let mut config = maps.config()?;
    config.service_lb_off = u32::from(!on);
    maps.set_config(&config)?;
    Ok(())
}

/// Seconds to program `services` Services of 10 endpoints each into a fresh datapath (Maglev
/// tables computed, maps written), and the map memory they take.
fn program_services(services: usize) -> Result<(f64, u64)> {
    let object = locate_object()?;
    let mut datapath = Datapath::load(&object, &LoadOptions::default())?;
    let before = sandbox::bpf_map_memory().unwrap_or(0);
    let vips = agent::services::synthetic_vips(services, 10);
    let mut sync = ServiceSync::default();
    let started = Instant::now();
    for (name, vip) in &vips {
        sync.stage(name, std::slice::from_ref(vip));
    }
    let staged = started.elapsed().as_secs_f64();
    sync.flush(&mut datapath)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "service: staging {staged:.2} s, flushing (backends, Maglev tables computed and written, services) {:.2} s",
        seconds - staged
    );
    let memory = sandbox::bpf_map_memory()
        .unwrap_or(0)
        .saturating_sub(before);
    if datapath.services()?.len() != services {
        bail!("the service map does not hold the {services} services");
    }
    Ok((seconds, memory))
}

type PathSamples = [(&'static str, Samples); 3];

/// Pod IP, eBPF LB and OVN LB, same node and cross node, interleaved in `rounds` rounds.
fn measure_traffic(rounds: usize, seconds: u32) -> Result<Vec<(&'static str, PathSamples)>> {
    println!("service: starting the sandbox with kovn-controller and kovn-agent on 2 nodes …");
    let cluster = KovnCluster::start(2, crate::release_binaries("service")?)?;
    let client = cluster.start_pod("client", 0)?;
    // OVN's load balancer NATs in OVS conntrack; a client of its own keeps its 5-tuples apart
    // from the eBPF-translated ones (OVS 3.1's userspace conntrack does not survive a clash).
    let ovn_client = cluster.start_pod("ovn-client", 0)?;
    let same = cluster.start_pod("server-same", 0)?;
    let cross = cluster.start_pod("server-cross", 1)?;
    let nbctl = cluster.sb.central().nbctl();
    for pod in ["client", "ovn-client", "server-same", "server-cross"] {
        nbctl.run([
            "--timeout=30",
            "wait-until",
            "Logical_Switch_Port",
            &format!("{pod}.default"),
            "up=true",
        ])?;
    }
    let placements = [
        ("same_node", Ipv4Addr::new(10, 96, 200, 1), &same),
        ("cross_node", Ipv4Addr::new(10, 96, 200, 2), &cross),
    ];
    for (name, vip, server) in &placements {
        let (svc, slice) = service(&name.replace('_', "-"), *vip, server)?;
        cluster.api.put(&svc);
        cluster.api.put(&slice);
    }
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    wait_for(
        "both VIPs in node 0's datapath",
        Duration::from_secs(30),
        || {
            PinnedMaps::open(&pins)
                .and_then(|m| m.services())
                .is_ok_and(|s| s.iter().filter(|(_, e)| e.backend_count == 1).count() == 4)
        },
    )?;
    wait_for(
        "both VIPs in OVN's load balancer",
        Duration::from_secs(30),
        || {
            nbctl
                .run([
                    "--bare",
                    "--columns=vips",
                    "find",
                    "Load_Balancer",
                    "name=cluster-tcp-loadbalancer",
                ])
                .is_ok_and(|v| v.contains("10.96.200.1") && v.contains("10.96.200.2"))
        },
    )?;
    let client_pod = client.as_pod(&cluster);
    let ovn_client_pod = ovn_client.as_pod(&cluster);
    let mut results: Vec<(&str, PathSamples)> = placements
        .iter()
        .map(|(name, _, _)| {
            (
                *name,
                [
                    ("pod_ip", Samples::default()),
                    ("ebpf_lb", Samples::default()),
                    ("ovn_lb", Samples::default()),
                ],
            )
        })
        .collect();
    for round in 0..rounds {
        for (p, (placement, vip, server)) in placements.iter().enumerate() {
            let server_pod = server.as_pod(&cluster);
            for (path, samples) in results[p].1.iter_mut() {
                let (from, target) = match *path {
                    "pod_ip" => (&client_pod, server.ip),
                    "ebpf_lb" => (&client_pod, *vip),
                    _ => (&ovn_client_pod, *vip),
                };
                set_service_lb(&pins, *path != "ovn_lb")?;
                let tcp = traffic::iperf3_to(from, &server_pod, target, seconds)
                    .with_context(|| format!("iperf3 {placement} {path}"))?;
                std::thread::sleep(Duration::from_millis(200));
                let rr = traffic::sockperf_ping_pong_to(from, &server_pod, target, seconds)
                    .with_context(|| format!("sockperf {placement} {path}"))?;
                set_service_lb(&pins, true)?;
                println!(
                    "  round {}/{rounds} {placement:<10} {path:<8} {:>6.2} Gbit/s  rr p50 {:>6.1} µs  p99 {:>6.1} µs",
                    round + 1,
                    tcp.gbit_per_second(),
                    rr.p50_us,
                    rr.p99_us
                );
                samples.tcp_gbps.push(tcp.gbit_per_second());
                samples.rr_p50_us.push(rr.p50_us);
                samples.rr_p99_us.push(rr.p99_us);
            }
        }
    }
    drop((client, ovn_client, same, cross));
    cluster.teardown()?;
    Ok(results)
}

pub fn run(options: &Options, out_dir: &Path) -> Result<()> {
    let (rounds, seconds) = if options.quick { (1, 2) } else { (3, 5) };
    let results = if options.program_only {
        Vec::new()
    } else {
        measure_traffic(rounds, seconds)?
    };

    println!(
        "service: programming {} Services × 10 endpoints …",
        options.services
    );
    let (program_s, memory) = program_services(options.services)?;
    println!(
        "service: {} Services × 10 endpoints programmed in {program_s:.2} s; {} MiB of BPF maps",
        options.services,
        memory >> 20
    );

    let mut section = serde_json::Map::new();
    for (placement, paths) in &results {
        let mut m = serde_json::Map::new();
        for (path, samples) in paths {
            m.insert((*path).into(), samples.json());
        }
        section.insert((*placement).into(), Value::Object(m));
    }
    section.insert("program_10k_s".into(), json!(program_s));
    section.insert("programmed_services".into(), json!(options.services));
    section.insert("program_memory_mib".into(), json!(memory >> 20));
    let report = json!({ "service": section });
    if !results.is_empty() {
        println!(
            "\nmedians of {rounds} round(s), {seconds} s each, one TCP stream / sockperf TCP ping-pong:"
        );
        println!(
            "{:<11} {:<8} {:>10} {:>10} {:>10}",
            "placement", "path", "Gbit/s", "p50 µs", "p99 µs"
        );
    }
    for (placement, paths) in &results {
        for (path, s) in paths {
            println!(
                "{placement:<11} {path:<8} {:>10.2} {:>10.1} {:>10.1}",
                median(&s.tcp_gbps),
                median(&s.rr_p50_us),
                median(&s.rr_p99_us)
            );
        }
        let get = |name: &str| {
            paths
                .iter()
                .find(|(p, _)| *p == name)
                .map_or(f64::NAN, |(_, s)| median(&s.tcp_gbps))
        };
        println!(
            "{placement:<11} eBPF LB / pod IP {:.2}×, eBPF LB / OVN LB {:.2}×",
            get("ebpf_lb") / get("pod_ip"),
            get("ebpf_lb") / get("ovn_lb")
        );
    }
    let path = out_dir.join("service.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {}", path.display());
    if let Some(json) = &options.json {
        crate::report::merge_json(json, &report)?;
    }
    Ok(())
}
