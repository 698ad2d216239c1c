//! Controller at scale: a simulated cluster (nodes, pods, subnets, one namespace per subnet) in
//! the in-memory API stand-in, fed to the real controller against one real OVN_Northbound
//! ovsdb-server. Measures:
//! - cold start: from start to every pod routed, every node annotated, every subnet Ready;
//! - restart: a new controller on that state, to ready (IPAM restored) and to every pod
//!   reconciled once more;
//! - NB transactions each phase used, and the process's peak RSS.
//!
//! The API stand-in lives in this process and holds the same objects the controller caches,
//! so the peak RSS (of the cold start) is an upper bound on the controller's own. The
//! controller's heap is measured exactly: live heap bytes with it running, less what is live
//! once it is dropped. The restart's RSS is not reported: freed memory the allocator keeps
//! from the first controller would be counted again.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use api::{IP, Subnet, SubnetSpec, Vpc, annotations};
use controller::context::Settings;
use controller::metrics::{Metrics, ReconcileLabels, ResultLabels};
use controller::run::{Inputs, run};
use controller::topology;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodSpec};
use kube::api::ObjectMeta;
use sandbox::StandaloneDb;

use crate::alloc_counter;
use sandbox::kube_api::FakeApi;
use serde_json::{Value, json};

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    #[arg(long, default_value_t = 50_000)]
    pods: usize,
    #[arg(long, default_value_t = 200)]
    subnets: usize,
    /// Concurrent reconciles per kind (the binary's --worker-num).
    #[arg(long, default_value_t = 64)]
    workers: u16,
    /// Services (10 endpoints each) written into NB from a cold start, in a phase of their
    /// own (`controller.services_10k_cold_s`); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Give up on a phase after this long.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// Also write `{"controller": …}` into this JSON file (merged with what it holds).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Subnet `i`: a /22 from 10.128.0.0 up, clear of the defaults (10.16/16, 100.64/16, 10.96/12).
pub(crate) fn subnet_cidr(i: usize) -> String {
    let base = u32::from(std::net::Ipv4Addr::new(10, 128, 0, 0)) + (i as u32) * 1024;
    format!("{}/22", std::net::Ipv4Addr::from(base))
}

fn populate(api: &FakeApi, o: &Options) {
    for i in 0..o.subnets {
        let name = format!("subnet-{i}");
        let ns = format!("ns-{i}");
        api.put(&Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                annotations: Some(
                    [(annotations::NAMESPACE_LOGICAL_SWITCH.into(), name.clone())].into(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
        let mut subnet = Subnet::new(
            &name,
            SubnetSpec {
                cidr_block: subnet_cidr(i),
                namespaces: vec![ns],
                ..SubnetSpec::default()
            },
        );
        subnet.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + i as i64)
                    .unwrap_or_default(),
            ));
        api.put(&subnet);
    }
    for i in 0..o.nodes {
        api.put(&Node {
            metadata: ObjectMeta {
                name: Some(format!("n{i}")),
                ..ObjectMeta::default()
            },
            ..Node::default()
        });
    }
    for j in 0..o.pods {
        api.put(&Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{j}")),
                namespace: Some(format!("ns-{}", j % o.subnets)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(format!("n{}", j % o.nodes)),
                ..PodSpec::default()
            }),
            ..Pod::default()
        });
    }
}

pub(crate) fn inputs(api: &FakeApi) -> Inputs {
    Inputs {
        pods: api.watch::<Pod>().boxed(),
        namespaces: api.watch::<Namespace>().boxed(),
        nodes: api.watch::<Node>().boxed(),
        subnets: api.watch::<Subnet>().boxed(),
        vpcs: api.watch::<Vpc>().boxed(),
        ips: api.watch::<IP>().boxed(),
        services: api.watch::<k8s_openapi::api::core::v1::Service>().boxed(),
        endpoint_slices: api
            .watch::<k8s_openapi::api::discovery::v1::EndpointSlice>()
            .boxed(),
        network_policies: api
            .watch::<k8s_openapi::api::networking::v1::NetworkPolicy>()
            .boxed(),
        vlans: api.watch::<api::Vlan>().boxed(),
        provider_networks: api.watch::<api::ProviderNetwork>().boxed(),
        external_gateway: api.watch::<k8s_openapi::api::core::v1::ConfigMap>().boxed(),
        ovn_eips: api.watch::<api::OvnEip>().boxed(),
        ovn_fips: api.watch::<api::OvnFip>().boxed(),
        ovn_snat_rules: api.watch::<api::OvnSnatRule>().boxed(),
        ovn_dnat_rules: api.watch::<api::OvnDnatRule>().boxed(),
        vpc_nat_gateways: api.watch::<api::VpcNatGateway>().boxed(),
        iptables_eips: api.watch::<api::IptablesEIP>().boxed(),
        iptables_fip_rules: api.watch::<api::IptablesFIPRule>().boxed(),
        iptables_snat_rules: api.watch::<api::IptablesSnatRule>().boxed(),
        iptables_dnat_rules: api.watch::<api::IptablesDnatRule>().boxed(),
    }
}

pub(crate) struct Running {
    pub(crate) task: tokio::task::JoinHandle<Result<()>>,
    metrics: Arc<Metrics>,
}

pub(crate) async fn start(api: &FakeApi, nb: &StandaloneDb, workers: u16) -> Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let mut config = topology::nb_client_config(&[&nb.remote()]);
    config.metrics = Some(metrics.nb_client_metrics());
    let client = ovsdb::Client::connect(config).await?;
    let task = tokio::spawn(run(
        api.client(),
        client,
        Settings::default(),
        metrics.clone(),
        inputs(api),
        workers,
    ));
    Ok(Running { task, metrics })
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// (pods routed, nodes annotated, subnets Ready).
fn progress(api: &FakeApi) -> (usize, usize, usize) {
    let pods = api.count::<Pod>(|p| annotation(p, annotations::ROUTED) == Some("true"));
    let nodes =
        api.count::<Node>(|n| annotation(n, controller::reconcile::node::PORT_NAME).is_some());
    let subnets = api.count::<Subnet>(|s| {
        s["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    (pods, nodes, subnets)
}

fn nb_transactions(m: &Metrics) -> u64 {
    ["ok", "error"]
        .iter()
        .map(|r| {
            m.ovsdb_transactions
                .get_or_create(&ResultLabels {
                    result: (*r).into(),
                })
                .get()
        })
        .sum()
}

fn pod_reconciles(m: &Metrics) -> u64 {
    m.reconciles
        .get_or_create(&ReconcileLabels {
            kind: "Pod".into(),
            result: "ok".into(),
        })
        .get()
}

/// Polls `done` every 200 ms, printing `status` every 5 s, until it holds or `limit` passes.
pub(crate) async fn wait(
    what: &str,
    limit: Duration,
    running: &Running,
    mut done: impl FnMut() -> (bool, String),
) -> Result<()> {
    let started = Instant::now();
    let mut shown = Instant::now();
    loop {
        let (ok, status) = done();
        if ok {
            return Ok(());
        }
        if running.task.is_finished() {
            bail!("the controller stopped while waiting for {what} ({status})");
        }
        if started.elapsed() > limit {
            bail!("{what}: not done after {limit:?} ({status})");
        }
        if shown.elapsed() > Duration::from_secs(5) {
            println!("  {:>5.0} s  {status}", started.elapsed().as_secs_f64());
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Starts a new VmHWM from the current RSS (`clear_refs` 5), so each phase has its own peak.
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        println!("  (cannot reset the peak RSS: {e}; peaks include earlier phases)");
    }
}

/// The process's peak resident set (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    proc_status_kib("VmHWM:") as f64 / 1024.0
}

fn rss_mib() -> f64 {
    proc_status_kib("VmRSS:") as f64 / 1024.0
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An empty, initialised OVN_Northbound database.
pub(crate) fn fresh_nb() -> Result<StandaloneDb> {
    let nb = StandaloneDb::start(NB_SCHEMA).context("starting OVN_Northbound ovsdb-server")?;
    let init = std::process::Command::new("ovn-nbctl")
        .args([&format!("--db={}", nb.remote()), "--no-wait", "init"])
        .status()
        .context("ovn-nbctl")?;
    if !init.success() {
        bail!("ovn-nbctl init failed");
    }
    Ok(nb)
}

/// A controller started on a fresh NB and an API holding `services` Services × 10 endpoints
/// (and one node): seconds until every VIP is in OVN's load balancer, and NB transactions.
async fn services_cold_start(services: usize, workers: u16, limit: Duration) -> Result<(f64, u64)> {
    println!("services: {services} Services × 10 endpoints from a cold start …");
    let nb = fresh_nb()?;
    let api = FakeApi::without_request_log();
    api.put(&Namespace {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    });
    api.put(&Node {
        metadata: ObjectMeta {
            name: Some("n0".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    });
    crate::synthetic::put_services(&api, services)?;
    let observer = ovsdb::Client::connect(topology::nb_client_config(&[&nb.remote()])).await?;
    let vips = || {
        observer.read(|cache| {
            topology::load_balancer::programmed_vips(
                cache,
                api::names::DEFAULT_CLUSTER_ROUTER,
                true,
            )
            .len()
        })
    };
    let started = Instant::now();
    let running = start(&api, &nb, workers).await?;
    wait("every Service's VIP in NB", limit, &running, || {
        let n = vips();
        (
            n >= services,
            format!("{n}/{services} VIPs in OVN's load balancers"),
        )
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let txns = nb_transactions(&running.metrics);
    running.task.abort();
    let _ = running.task.await;
    println!(
        "  {services} Services in NB {seconds:.1} s after the controller started ({txns} NB transactions in all)"
    );
    Ok((seconds, txns))
}

pub async fn run_bench(o: &Options, out_dir: &Path) -> Result<()> {
    if o.subnets == 0 || o.nodes == 0 {
        bail!("--subnets and --nodes must be at least 1");
    }
    if o.pods / o.subnets > 1000 {
        bail!("at most 1,000 pods per subnet (each subnet is a /22): raise --subnets");
    }
    println!(
        "controller: {} nodes, {} pods, {} subnets, {} workers per kind",
        o.nodes, o.pods, o.subnets, o.workers
    );
    let nb = fresh_nb()?;
    let api = FakeApi::without_request_log();
    populate(&api, o);
    let rss_before = rss_mib();
    let heap_before = mib(alloc_counter::live_bytes());
    reset_peak_rss();
    let limit = Duration::from_secs(o.timeout_s);
    let (pods, nodes, subnets) = (o.pods, o.nodes, o.subnets + 2);

    println!("cold start …");
    let started = Instant::now();
    let first = start(&api, &nb, o.workers).await?;
    wait("cold start", limit, &first, || {
        let (p, n, s) = progress(&api);
        (
            p == pods && n == nodes && s == subnets,
            format!("{p}/{pods} pods routed, {n}/{nodes} nodes, {s}/{subnets} subnets Ready"),
        )
    })
    .await?;
    let cold_start_s = started.elapsed().as_secs_f64();
    let cold_txns = nb_transactions(&first.metrics);
    let cold_peak_rss = peak_rss_mib();
    let heap_with_controller = mib(alloc_counter::live_bytes());
    println!("  cold start {cold_start_s:.1} s, {cold_txns} NB transactions");
    first.task.abort();
    let _ = first.task.await;
    // What is left is the API stand-in (now holding IP objects and annotations too): the
    // difference is what the controller held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stand_in_heap = mib(alloc_counter::live_bytes());
    let controller_heap = heap_with_controller - stand_in_heap;
    println!(
        "  peak RSS {cold_peak_rss:.0} MiB (whole process); heap: controller {controller_heap:.0} MiB, API stand-in {stand_in_heap:.0} MiB (was {heap_before:.0} MiB before the controller ran)"
    );

    println!("restart …");
    let started = Instant::now();
    let second = start(&api, &nb, o.workers).await?;
    wait("restart: ready", limit, &second, || {
        (second.metrics.is_ready(), "restoring IPAM".into())
    })
    .await?;
    let restart_ready_s = started.elapsed().as_secs_f64();
    wait("restart: every pod reconciled", limit, &second, || {
        let n = pod_reconciles(&second.metrics);
        (
            n >= pods as u64,
            format!("{n}/{pods} pods reconciled after restart"),
        )
    })
    .await?;
    let restart_s = started.elapsed().as_secs_f64();
    let restart_txns = nb_transactions(&second.metrics);
    let (p, _, _) = progress(&api);
    if p != pods {
        bail!("after the restart only {p}/{pods} pods are routed");
    }
    second.task.abort();
    let _ = second.task.await;
    println!(
        "  ready after {restart_ready_s:.1} s, every pod reconciled after {restart_s:.1} s, {restart_txns} NB transactions"
    );

    let services = if o.services > 0 {
        Some(services_cold_start(o.services, o.workers, limit).await?)
    } else {
        None
    };

    let mut report = json!({"controller": {
        "nodes": o.nodes, "pods": o.pods, "subnets": o.subnets, "workers": o.workers,
        "cold_start_s": cold_start_s,
        "restart_s": restart_s,
        "restart_ready_s": restart_ready_s,
        "nb_transactions": cold_txns,
        "restart_nb_transactions": restart_txns,
        "peak_rss_mib": cold_peak_rss,
        "rss_before_controller_mib": rss_before,
        "controller_heap_mib": controller_heap,
        "api_stand_in_heap_mib": stand_in_heap,
    }});
    if let Some((seconds, txns)) = services {
        report["controller"]["services"] = json!(o.services);
        report["controller"]["services_10k_cold_s"] = json!(seconds);
        report["controller"]["services_nb_transactions"] = json!(txns);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    let path = out_dir.join("controller.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {}", path.display());
    if let Some(path) = &o.json {
        crate::report::merge_json(path, &report)?;
    }
    Ok(())
}
