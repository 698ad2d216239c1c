//! Policy: how fast a revocation reaches a fast-pathed flow, measured at the receiver, and how
//! fast the controller programs many NetworkPolicies.
//!
//! - `revocation_p99_ms`: kovn-controller and kovn-agent on one sandbox node; pod a streams
//!   UDP to pod b (one datagram every 2 ms, fast-pathed); a NetworkPolicy denying b's
//!   ingress is written to the API; the time from that write to the last datagram b's
//!   interface receives (tcpdump's kernel timestamps). Then the policy is deleted and the next
//!   trial starts on a new port.
//! - `acl_revocation_p99_ms`: the same with a plain `ovn-nbctl acl-add` (no `--wait`, so
//!   nb_cfg does not move and only the fast path's re-judging stops the stream).
//! - `program_1000_s`: the controller in this process against a real OVN_Northbound, 10,000
//!   pods in 20 namespaces; from writing 1,000 policies (each selecting 100 pods, ingress from
//!   100 others on TCP 80) to every policy's port group holding its 100 ports with its ACLs.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use api::{Subnet, SubnetSpec, annotations};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ObjectMeta;
use ovsdb::Model;
use ovsdb::models::ovn_northbound::PortGroup;
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::kube_api::FakeApi;
use sandbox::netns;
use sandbox::traffic::Capture;
use serde_json::{Value, json};

use crate::controller_bench::{fresh_nb, start, subnet_cidr, wait};
use crate::report::percentile;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Revocation trials of each kind.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// NetworkPolicies programmed into NB (0 skips the phase).
    #[arg(long, default_value_t = 1_000)]
    policies: usize,
    /// Pods those policies select from (a multiple of 100).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Also write `{"policy": …}` into this JSON file (merged with what it holds).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// How many learned flows of the agent (node 0's pins) involve `ip`.
fn flows_involving(cluster: &KovnCluster, ip: std::net::Ipv4Addr) -> usize {
    use agent::datapath::{PinnedMaps, ReadMaps};
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let mapped = ip.to_ipv6_mapped().octets();
    PinnedMaps::open(&pins)
        .and_then(|m| m.flows())
        .map(|flows| {
            flows
                .iter()
                .filter(|(k, _)| k.src == mapped || k.dst == mapped)
                .count()
        })
        .unwrap_or(0)
}

/// One trial: a fast-pathed stream a → b:`port`, `revoke` called, the stream kept up for
/// 800 ms more; returns ms from the revocation to the last datagram b received, and how many
/// arrived before it. `restore` undoes the revocation.
fn trial(
    cluster: &KovnCluster,
    a: &RunningPod,
    b: &RunningPod,
    port: u16,
    revoke: &dyn Fn(),
    restore: &dyn Fn(),
) -> Result<(f64, usize)> {
    let sink = netns::run_in(&b.netns, || UdpSocket::bind((b.ip, port)))??;
    let sender = netns::run_in(&a.netns, || UdpSocket::bind((a.ip, 0)))??;
    let stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let stop = stop.clone();
        let target = std::net::SocketAddr::from((b.ip, port));
        std::thread::spawn(move || {
            // Bounded: 10 s at most.
            for i in 0u32..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = sender.send_to(&i.to_be_bytes(), target);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(600));
    let learned = flows_involving(cluster, b.ip);
    let capture = Capture::start(
        &b.netns,
        "eth0",
        &format!("udp and src host {} and dst port {port}", a.ip),
        cluster.sb.dir().join(format!("policy-{port}.pcap")),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let written = now_epoch();
    revoke();
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    let _ = sending.join();
    let times = capture.stop_with_times()?;
    drop(sink);
    restore();
    let before = times.iter().filter(|&&t| t < written).count();
    if learned == 0 || before < 20 {
        bail!(
            "the stream was not fast-pathed before the revocation ({learned} flows, {before} datagrams)"
        );
    }
    let last = times.iter().map(|t| t - written).fold(0.0_f64, f64::max);
    Ok((last * 1000.0, before))
}

fn deny_ingress_of(pod: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "deny-b", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"pod": pod}}, "policyTypes": ["Ingress"]}
    }))
    .expect("a NetworkPolicy")
}

fn labelled_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"pod": name}},
        "spec": {}
    }))
    .expect("a Pod")
}

fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    json!({
        "trials": values.len(),
        "p50_ms": percentile(&values, 0.5),
        "p99_ms": percentile(&values, 0.99),
        "max_ms": values.last().copied().unwrap_or(0.0),
    })
}

fn revocations(options: &Options) -> Result<(Value, Value)> {
    println!("policy: starting the sandbox with kovn-controller and kovn-agent …");
    let cluster = KovnCluster::start(1, crate::release_binaries("policy")?)?;
    let a = cluster.start_pod_object(labelled_pod("a"), 0)?;
    let b = cluster.start_pod_object(labelled_pod("b"), 0)?;
    let nbctl = cluster.sb.central().nbctl();
    // Let ovn-controller bind both ports.
    std::thread::sleep(Duration::from_secs(2));

    let mut by_policy = Vec::new();
    for i in 0..options.trials {
        let port = 6000 + i as u16;
        let (ms, _) = trial(
            &cluster,
            &a,
            &b,
            port,
            &|| cluster.api.put(&deny_ingress_of("b")),
            &|| {
                cluster
                    .api
                    .delete::<NetworkPolicy>(Some("default"), "deny-b");
                std::thread::sleep(Duration::from_millis(700));
            },
        )
        .with_context(|| format!("NetworkPolicy trial {i}"))?;
        println!("  NetworkPolicy trial {i}: last datagram {ms:.0} ms after the write");
        by_policy.push(ms);
    }
    let mut by_acl = Vec::new();
    for i in 0..options.trials {
        let port = 7000 + i as u16;
        let matches = format!("ip4.dst == {} && udp.dst == {port}", b.ip);
        let (ms, _) = trial(
            &cluster,
            &a,
            &b,
            port,
            &|| {
                let _ = nbctl.run([
                    "acl-add",
                    "ovn-default",
                    "to-lport",
                    "2000",
                    &matches,
                    "drop",
                ]);
            },
            &|| {
                let _ = nbctl.run(["acl-del", "ovn-default", "to-lport", "2000", &matches]);
                std::thread::sleep(Duration::from_millis(300));
            },
        )
        .with_context(|| format!("ACL trial {i}"))?;
        println!("  ACL trial {i}: last datagram {ms:.0} ms after the write");
        by_acl.push(ms);
    }
    drop((a, b));
    cluster.teardown()?;
    Ok((summary(by_policy), summary(by_acl)))
}

/// 20 namespaces (one subnet each), `pods` pods labelled `app=app-<j % 50>`, 100 nodes.
fn populate(api: &FakeApi, pods: usize) {
    for i in 0..20 {
        let name = format!("subnet-{i}");
        let ns = format!("ns-{i}");
        api.put(&Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                labels: Some([("team".to_owned(), format!("t{}", i % 4))].into()),
                annotations: Some(
                    [(annotations::NAMESPACE_LOGICAL_SWITCH.into(), name.clone())].into(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
        api.put(&Subnet::new(
            &name,
            SubnetSpec {
                cidr_block: subnet_cidr(i),
                namespaces: vec![ns],
                ..SubnetSpec::default()
            },
        ));
    }
    for i in 0..100 {
        api.put(&Node {
            metadata: ObjectMeta {
                name: Some(format!("n{i}")),
                ..ObjectMeta::default()
            },
            ..Node::default()
        });
    }
    for j in 0..pods {
        api.put(&Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{j}")),
                namespace: Some(format!("ns-{}", j % 20)),
                labels: Some([("app".to_owned(), format!("app-{}", j % 50))].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(format!("n{}", j % 100)),
                ..PodSpec::default()
            }),
            ..Pod::default()
        });
    }
}

/// Policy `k`: in `ns-<k % 20>`, selects `app-<k % 50>` (the pods j ≡ k mod 100), ingress on
/// TCP 80 from `app-<(k+1) % 50>` of its namespace and, every tenth, from a team's namespaces.
fn bench_policy(k: usize) -> NetworkPolicy {
    let mut from =
        vec![json!({"podSelector": {"matchLabels": {"app": format!("app-{}", (k + 1) % 50)}}})];
    if k.is_multiple_of(10) {
        from.push(json!({"namespaceSelector": {"matchLabels": {"team": format!("t{}", k % 4)}}}));
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("np-{k}"), "namespace": format!("ns-{}", k % 20)},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app-{}", k % 50)}},
            "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": 80}]}]
        }
    }))
    .expect("a NetworkPolicy")
}

async fn program(policies: usize, pods: usize) -> Result<Value> {
    if !pods.is_multiple_of(100) || pods == 0 {
        bail!("--pods must be a positive multiple of 100");
    }
    let api = FakeApi::without_request_log();
    populate(&api, pods);
    let nb = fresh_nb()?;
    let running = start(&api, &nb, 64).await?;
    let limit = Duration::from_secs(900);
    println!("policy: {pods} pods being allocated …");
    wait("every pod routed", limit, &running, || {
        let routed = api.count::<Pod>(|p| {
            p["metadata"]["annotations"][annotations::ROUTED].as_str() == Some("true")
        });
        (routed == pods, format!("{routed}/{pods} pods routed"))
    })
    .await?;
    let reader =
        ovsdb::Client::connect(controller::topology::nb_client_config(&[&nb.remote()])).await?;
    let per_policy = pods / 100;
    println!("policy: writing {policies} NetworkPolicies …");
    let started = Instant::now();
    for k in 0..policies {
        api.put(&bench_policy(k));
    }
    wait("every policy programmed", limit, &running, || {
        let done = reader.read(|cache| {
            cache
                .table(PortGroup::TABLE)
                .map(|t| {
                    t.typed::<PortGroup>()
                        .into_iter()
                        .filter(|pg| {
                            // Its pods, its default drop and the stateful marker at least
                            // (a rule whose peers select no pod adds no allow).
                            pg.external_ids.contains_key("np")
                                && pg.ports.len() == per_policy
                                && pg.acls.len() >= 2
                        })
                        .count()
                })
                .unwrap_or(0)
        });
        (
            done == policies,
            format!("{done}/{policies} policies programmed"),
        )
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!("policy: {policies} policies over {pods} pods programmed in {seconds:.1} s");
    running.task.abort();
    Ok(json!({"policies": policies, "pods": pods, "seconds": seconds}))
}

pub fn run(options: &Options, out_dir: &Path) -> Result<()> {
    let mut policy = json!({});
    if options.trials > 0 {
        let (by_policy, by_acl) = revocations(options)?;
        println!(
            "policy: NetworkPolicy revocation p50 {:.0} / p99 {:.0} ms; plain ACL p50 {:.0} / p99 {:.0} ms (last datagram at the receiver after the write)",
            by_policy["p50_ms"].as_f64().unwrap_or(0.0),
            by_policy["p99_ms"].as_f64().unwrap_or(0.0),
            by_acl["p50_ms"].as_f64().unwrap_or(0.0),
            by_acl["p99_ms"].as_f64().unwrap_or(0.0),
        );
        policy["revocation_p99_ms"] = by_policy["p99_ms"].clone();
        policy["acl_revocation_p99_ms"] = by_acl["p99_ms"].clone();
        policy["revocation"] = by_policy;
        policy["acl_revocation"] = by_acl;
    }
    if options.policies > 0 {
        let runtime = tokio::runtime::Runtime::new()?;
        let programmed = runtime.block_on(program(options.policies, options.pods))?;
        policy["program_1000_s"] = programmed["seconds"].clone();
        policy["program"] = programmed;
    }
    let report = json!({ "policy": policy });
    let path = out_dir.join("policy.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {}", path.display());
    if let Some(json) = &options.json {
        crate::report::merge_json(json, &report)?;
    }
    Ok(())
}
