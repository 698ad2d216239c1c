//! Same-node pod-to-pod, three paths side by side in one run, interleaved round by round so
//! machine noise hits all three alike:
//! - `direct`: two namespaces joined by one veth pair (the limit of this machine);
//! - `ovs`: two sandbox pods with kovn's fast path switched off (every packet through OVS's
//!   userspace datapath, handed over by the same eBPF programs);
//! - `fastpath`: the same pods with the fast path on.
//!
//! Then across nodes (`cross_node`), the same way:
//! - `kernel_tunnel`: two "pods" in two "node" namespaces, routed over a plain kernel VXLAN
//!   tunnel on a veth underlay, no OVS (the limit of this machine for a tunnelled path; the
//!   pods' MTU is the sandbox pods' 1400, so only the path differs);
//! - `ovs`: two sandbox pods on two nodes with the fast path off (OVS's userspace Geneve on
//!   both nodes);
//! - `fastpath`: the same pods with the fast path on, across nodes too (each node's uplink
//!   split and served as the agent does with `--cross-node-fast-path`).
//!
//! Each path: iperf3 TCP throughput (one stream), sockperf TCP ping-pong p50/p99, and TCP
//! connections per second (connect, 1-byte request, 1-byte response, close). Then what the
//! fast path's program costs per packet in the kernel (`same_node.from_pod_fast_hit_ns`,
//! BPF_PROG_TEST_RUN; `--program-cost-only` measures just that).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::datapath::{Datapath, LoadOptions, PodInterfaces, locate_object};
use anyhow::{Context, Result};
use datapath_common::DatapathConfig;
use sandbox::netns::{self, ScratchNamespaces};
use sandbox::traffic;
use sandbox::{Cmd, Handoff, Pod, Sandbox, SandboxConfig};
use serde_json::{Value, json};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Short runs (one round of 2 s measurements): under 3 minutes in all.
    #[arg(long)]
    quick: bool,
    /// Only the programs' per-packet cost (BPF_PROG_TEST_RUN), no traffic.
    #[arg(long)]
    program_cost_only: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const PATHS: [&str; 3] = ["direct", "ovs", "fastpath"];

#[derive(Debug, Clone, Copy, Default)]
struct Measurement {
    tcp_gbps: f64,
    rr_p50_us: f64,
    rr_p99_us: f64,
    crr_per_s: f64,
}

impl Measurement {
    fn json(&self) -> Value {
        json!({"tcp_gbps": self.tcp_gbps, "rr_p50_us": self.rr_p50_us,
               "rr_p99_us": self.rr_p99_us, "crr_per_s": self.crr_per_s})
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Two namespaces joined by one veth pair, as fake pods the traffic helpers accept.
fn direct_pair() -> Result<(ScratchNamespaces, Pod, Pod)> {
    let hosts = ScratchNamespaces::new(&["direct-a", "direct-b"])?;
    let (a, b) = (hosts.name(0).to_owned(), hosts.name(1).to_owned());
    Cmd::new("ip")
        .args([
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ])
        .run()?;
    let pod = |ns: &str, last: u8| -> Result<Pod> {
        let ip = Ipv4Addr::new(10, 99, 0, last);
        Cmd::new("ip")
            .args(["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .run()?;
        Cmd::new("ip")
            .args(["-n", ns, "link", "set", "eth0", "up"])
            .run()?;
        Ok(Pod {
            name: format!("direct{last}"),
            node: "none".into(),
            node_netns: ns.to_owned(),
            netns: ns.to_owned(),
            ip,
            prefix_len: 24,
            gateway: ip,
            mac: sandbox::mac_for(ip),
            lsp: String::new(),
            host_veth: String::new(),
            ovs_port: String::new(),
            ovs_peer: String::new(),
        })
    };
    let (pa, pb) = (pod(&a, 1)?, pod(&b, 2)?);
    Ok((hosts, pa, pb))
}

/// Two pods on two nodes routed over a kernel VXLAN tunnel (no OVS): pod a (10.98.1.2) in
/// node n0, pod b (10.98.2.2) in node n1, the nodes joined by a veth underlay
/// (172.31.250.0/24) carrying VXLAN 42 between them.
fn kernel_tunnel_pair() -> Result<(ScratchNamespaces, Pod, Pod)> {
    let hosts = ScratchNamespaces::new(&["kt-n0", "kt-n1", "kt-a", "kt-b"])?;
    let [n0, n1, a, b] = [0, 1, 2, 3].map(|i| hosts.name(i).to_owned());
    let ip = |ns: &str, args: &str| -> Result<()> {
        Cmd::new("ip")
            .arg("-n")
            .arg(ns)
            .args(args.split_whitespace())
            .run()
            .with_context(|| format!("ip -n {ns} {args}"))?;
        Ok(())
    };
    ip(
        &n0,
        &format!("link add ul type veth peer name ul netns {n1}"),
    )?;
    for (node, pod, own, peer, pod_net, peer_net) in [
        (
            &n0,
            &a,
            "172.31.250.1",
            "172.31.250.2",
            "10.98.1",
            "10.98.2",
        ),
        (
            &n1,
            &b,
            "172.31.250.2",
            "172.31.250.1",
            "10.98.2",
            "10.98.1",
        ),
    ] {
        ip(node, &format!("addr add {own}/24 dev ul"))?;
        ip(node, "link set ul up")?;
        ip(
            node,
            &format!("link add vx0 type vxlan id 42 local {own} remote {peer} dstport 4789 dev ul"),
        )?;
        let tunnel_own = if own.ends_with(".1") {
            "10.98.0.1"
        } else {
            "10.98.0.2"
        };
        let tunnel_peer = if own.ends_with(".1") {
            "10.98.0.2"
        } else {
            "10.98.0.1"
        };
        ip(node, &format!("addr add {tunnel_own}/30 dev vx0"))?;
        ip(node, "link set vx0 up")?;
        ip(
            node,
            &format!("route add {peer_net}.0/24 via {tunnel_peer} dev vx0"),
        )?;
        ip(
            node,
            &format!("link add pod type veth peer name eth0 netns {pod}"),
        )?;
        ip(node, &format!("addr add {pod_net}.1/24 dev pod"))?;
        ip(node, "link set pod up")?;
        Cmd::new("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .netns(node)
            .run()?;
        ip(pod, &format!("addr add {pod_net}.2/24 dev eth0"))?;
        ip(pod, "link set eth0 mtu 1400 up")?;
        ip(pod, "link set lo up")?;
        ip(pod, &format!("route add default via {pod_net}.1"))?;
    }
    let pod = |ns: &str, net: &str, node: &str| -> Pod {
        let address: Ipv4Addr = format!("{net}.2").parse().expect("an address");
        Pod {
            name: format!("kernel-tunnel-{net}"),
            node: node.to_owned(),
            node_netns: node.to_owned(),
            netns: ns.to_owned(),
            ip: address,
            prefix_len: 24,
            gateway: format!("{net}.1").parse().expect("an address"),
            mac: sandbox::mac_for(address),
            lsp: String::new(),
            host_veth: String::new(),
            ovs_port: String::new(),
            ovs_peer: String::new(),
        }
    };
    let (pa, pb) = (pod(&a, "10.98.1", &n0), pod(&b, "10.98.2", &n1));
    Ok((hosts, pa, pb))
}

/// TCP connections per second from `client` to `server` for `seconds`.
fn connections_per_second(client: &Pod, server: &Pod, seconds: u64) -> Result<f64> {
    const PORT: u16 = 12865;
    let addr = SocketAddr::from((server.ip, PORT));
    let stop = Arc::new(AtomicBool::new(false));
    let listener = netns::run_in(&server.netns, || TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    let server_thread = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut buf = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        if conn.read_exact(&mut buf).is_ok() {
                            let _ = conn.write_all(&buf);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        }
    });
    let count = netns::run_in(&client.netns, || -> std::io::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut done = 0u64;
        let mut buf = [0u8; 1];
        while Instant::now() < deadline {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            conn.set_nodelay(true)?;
            conn.write_all(b"x")?;
            conn.read_exact(&mut buf)?;
            done += 1;
        }
        Ok(done)
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = server_thread.join();
    Ok(count? as f64 / seconds as f64)
}

fn measure(client: &Pod, server: &Pod, seconds: u32) -> Result<Measurement> {
    let tcp = traffic::iperf3(client, server, seconds).context("iperf3")?;
    std::thread::sleep(Duration::from_millis(200));
    let rr = traffic::sockperf_ping_pong(client, server, seconds).context("sockperf")?;
    let crr = connections_per_second(client, server, u64::from(seconds)).context("connections")?;
    Ok(Measurement {
        tcp_gbps: tcp.gbit_per_second(),
        rr_p50_us: rr.p50_us,
        rr_p99_us: rr.p99_us,
        crr_per_s: crr,
    })
}

/// The fast path on or off, on one node and across nodes alike.
fn set_fast_path(datapaths: &[Arc<Mutex<Datapath>>], on: bool) -> Result<()> {
    for datapath in datapaths {
        let mut datapath = datapath.lock().unwrap_or_else(|e| e.into_inner());
        datapath.set_config(&DatapathConfig {
            fast_path_enabled: u32::from(on),
            ..DatapathConfig::default()
        })?;
        datapath.set_cross_node(on)?;
    }
    Ok(())
}

/// What the agent does on each node with `--cross-node-fast-path`: the tunnel observer on the
/// uplink NIC's egress, the NIC split out of `br-phy` (OVS reads it with AF_PACKET) and the
/// receive side on its ingress. `datapaths[i]` is node `i`'s.
fn serve_cross_node(sb: &Sandbox, datapaths: &[Arc<Mutex<Datapath>>]) -> Result<()> {
    use agent::split_uplink::{self, SplitUplink};
    for (i, datapath) in datapaths.iter().enumerate() {
        let node = sb.node(i);
        let uplink = SplitUplink::of("eth0");
        let remote = format!("unix:{}", node.db.socket.display());
        let bridge = node.uplink.clone();
        let datapath = datapath.clone();
        netns::run_in(&node.netns, move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let ovs = agent::ovs::connect(&remote).await?;
                split_uplink::prepare(&uplink).await?;
                {
                    let mut datapath = datapath.lock().unwrap_or_else(|e| e.into_inner());
                    datapath.attach_tunnel_observer(&uplink.nic)?;
                    datapath.attach_uplink(&uplink.nic, Some(&uplink.pair))?;
                }
                split_uplink::swap_in(&ovs, &bridge, &uplink).await?;
                Ok(())
            })
        })??;
    }
    Ok(())
}

pub fn run(options: &Options, out_dir: &Path) -> Result<()> {
    if options.program_cost_only {
        let cost = program_cost()?;
        println!(
            "kovn_from_pod fast-path hit: {:.0} ns per packet; kovn_count_ingress: {:.0} ns",
            cost.fast_hit_ns, cost.counter_ns
        );
        return Ok(());
    }
    let (rounds, seconds) = if options.quick { (1, 2) } else { (5, 5) };
    println!(
        "==> fast path: same node, {rounds} round(s) of {seconds} s per measurement, paths interleaved"
    );
    println!("    direct veth pair …");
    let (_direct_hosts, da, db) = direct_pair()?;
    println!("    sandbox (1 node, pods wired by kovn's datapath) …");
    let mut sb = Sandbox::start(SandboxConfig {
        nodes: 1,
        handoff: Handoff::Datapath,
        ..Default::default()
    })?;
    let a = sb.add_pod(0, "a")?;
    let b = sb.add_pod(0, "b")?;
    let datapath = datapath_for(&[&a, &b])?;
    let [direct, ovs, fast] =
        interleaved(&PATHS, rounds, seconds, &datapath, (&da, &db), (&a, &b))?;
    sb.check_daemons()?;
    drop(datapath);
    sb.teardown()?;
    let mut table = paths_table(
        "same node",
        [
            ("direct veth pair (limit)", direct),
            ("OVS only (fast path off)", ovs),
            ("kovn fast path", fast),
        ],
        "direct",
    );
    println!("\n{table}");
    println!(
        "targets: fast path ≥ 0.95× direct throughput, p50 ≤ 1.1× direct; ≥ 2× OVS throughput, p99 ≤ 0.5× OVS"
    );
    let cross = cross_node(rounds, seconds)?;
    println!("\n{}", cross.table);
    table.push('\n');
    table.push_str(&cross.table);
    let cost = program_cost()?;
    println!(
        "kovn_from_pod on a fast-path hit (a learned TCP data packet, BPF_PROG_TEST_RUN × {}): {:.0} ns per packet; kovn_count_ingress (one per-CPU counter): {:.0} ns",
        cost.repeat, cost.fast_hit_ns, cost.counter_ns
    );
    let report = json!({"same_node": {"direct": direct.json(), "ovs": ovs.json(), "fastpath": fast.json(),
                                      "from_pod_fast_hit_ns": cost.fast_hit_ns,
                                      "count_ingress_ns": cost.counter_ns},
                        "cross_node": {"kernel_tunnel": cross.kernel_tunnel.json(),
                                       "ovs": cross.ovs.json(), "fastpath": cross.fast.json()},
                        "rounds": rounds, "seconds": seconds});
    std::fs::write(
        out_dir.join("fastpath.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    if let Some(path) = &options.json {
        crate::report::merge_json(path, &report)?;
    }
    std::fs::write(out_dir.join("fastpath.md"), &table)?;
    std::fs::write(
        out_dir.join("fastpath.svg"),
        svg_chart(&[("direct", direct), ("OVS", ovs), ("fast path", fast)]),
    )?;
    println!(
        "reports: {0}/fastpath.json, fastpath.md, fastpath.svg",
        out_dir.display()
    );
    Ok(())
}

/// kovn's datapath attached to `pods`: one datapath (programs and maps) per node, as each
/// node's agent has its own (one set of maps for two nodes would mix their ifindexes).
fn datapath_for(pods: &[&Pod]) -> Result<Vec<Arc<Mutex<Datapath>>>> {
    let object = locate_object()?;
    let mut nodes: Vec<(String, Arc<Mutex<Datapath>>)> = Vec::new();
    for pod in pods {
        let datapath = match nodes.iter().find(|(node, _)| *node == pod.node_netns) {
            Some((_, datapath)) => datapath.clone(),
            None => {
                let datapath = Arc::new(Mutex::new(Datapath::load(
                    &object,
                    &LoadOptions::default(),
                )?));
                nodes.push((pod.node_netns.clone(), datapath.clone()));
                datapath
            }
        };
        let interfaces = PodInterfaces {
            name: pod.lsp.clone(),
            owner: pod.lsp.clone(),
            host_veth: pod.host_veth.clone(),
            ovs_peer: pod.ovs_peer.clone(),
            ip: pod.ip.into(),
            mac: agent::datapath::parse_mac(&pod.mac).map_err(anyhow::Error::msg)?,
            other_ips: Vec::new(),
            vpc: Some(api::names::DEFAULT_CLUSTER_ROUTER.into()),
        };
        netns::run_in(&pod.node_netns, move || {
            datapath
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .attach_pod(&interfaces)
        })??;
    }
    Ok(nodes.into_iter().map(|(_, datapath)| datapath).collect())
}

/// Three paths measured round by round, interleaved: the first between the `reference`
/// pair (no kovn), then the `kovn` pair with the fast path off (OVS only), then on. Medians.
fn interleaved(
    paths: &[&str; 3],
    rounds: u32,
    seconds: u32,
    datapath: &[Arc<Mutex<Datapath>>],
    reference: (&Pod, &Pod),
    kovn: (&Pod, &Pod),
) -> Result<[Measurement; 3]> {
    let mut results: [Vec<Measurement>; 3] = Default::default();
    for round in 1..=rounds {
        for (i, path) in paths.iter().enumerate() {
            println!("    round {round}/{rounds}: {path} …");
            let m = match i {
                0 => measure(reference.0, reference.1, seconds)?,
                1 => {
                    set_fast_path(datapath, false)?;
                    measure(kovn.0, kovn.1, seconds)?
                }
                _ => {
                    set_fast_path(datapath, true)?;
                    measure(kovn.0, kovn.1, seconds)?
                }
            };
            results[i].push(m);
        }
    }
    Ok(results.map(|runs| Measurement {
        tcp_gbps: median(runs.iter().map(|m| m.tcp_gbps).collect()),
        rr_p50_us: median(runs.iter().map(|m| m.rr_p50_us).collect()),
        rr_p99_us: median(runs.iter().map(|m| m.rr_p99_us).collect()),
        crr_per_s: median(runs.iter().map(|m| m.crr_per_s).collect()),
    }))
}

/// The Markdown table of three paths' medians (the limit, OVS only, the fast path), with the
/// fast path's ratios to the first two.
fn paths_table(section: &str, rows: [(&str, Measurement); 3], limit: &str) -> String {
    let mut table = format!(
        "| {section} (medians) | iperf3 TCP Gbit/s | sockperf p50 µs | sockperf p99 µs | TCP conn/s |\n"
    );
    table.push_str("|---|---:|---:|---:|---:|\n");
    for (name, m) in rows {
        table.push_str(&format!(
            "| {name} | {:.2} | {:.1} | {:.1} | {:.0} |\n",
            m.tcp_gbps, m.rr_p50_us, m.rr_p99_us, m.crr_per_s
        ));
    }
    let fast = rows[2].1;
    for (name, base) in [(limit, rows[0].1), ("OVS", rows[1].1)] {
        table.push_str(&format!(
            "| fast path ÷ {name} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |\n",
            fast.tcp_gbps / base.tcp_gbps,
            fast.rr_p50_us / base.rr_p50_us,
            fast.rr_p99_us / base.rr_p99_us,
            fast.crr_per_s / base.crr_per_s
        ));
    }
    table
}

/// The cross-node section's medians and its table.
struct CrossNode {
    kernel_tunnel: Measurement,
    ovs: Measurement,
    fast: Measurement,
    table: String,
}

/// Across two nodes: the kernel VXLAN tunnel (the limit), OVS only, kovn's fast path.
fn cross_node(rounds: u32, seconds: u32) -> Result<CrossNode> {
    println!(
        "==> fast path: across nodes, {rounds} round(s) of {seconds} s per measurement, paths interleaved"
    );
    println!("    kernel VXLAN tunnel between two node namespaces (no OVS) …");
    let (_tunnel_hosts, ka, kb) = kernel_tunnel_pair()?;
    println!("    sandbox (2 nodes, Geneve, pods wired by kovn's datapath) …");
    let mut sb = Sandbox::start(SandboxConfig {
        nodes: 2,
        handoff: Handoff::Datapath,
        ..Default::default()
    })?;
    let a = sb.add_pod(0, "a")?;
    let b = sb.add_pod(1, "b")?;
    let datapath = datapath_for(&[&a, &b])?;
    serve_cross_node(&sb, &datapath)?;
    let [kernel_tunnel, ovs, fast] = interleaved(
        &["kernel_tunnel", "ovs", "fastpath"],
        rounds,
        seconds,
        &datapath,
        (&ka, &kb),
        (&a, &b),
    )?;
    sb.check_daemons()?;
    drop(datapath);
    sb.teardown()?;
    let mut table = paths_table(
        "across nodes",
        [
            ("kernel VXLAN tunnel, no OVS (limit)", kernel_tunnel),
            ("OVS only (fast path off)", ovs),
            ("kovn fast path", fast),
        ],
        "kernel tunnel",
    );
    table.push_str(
        "\ntargets across nodes: fast path ≥ 0.8× the kernel tunnel and ≥ 4× OVS throughput, p99 ≤ 0.5× OVS\n",
    );
    Ok(CrossNode {
        kernel_tunnel,
        ovs,
        fast,
        table,
    })
}

/// What the fast path's program costs per packet, measured in the kernel.
struct ProgramCost {
    repeat: u32,
    fast_hit_ns: f64,
    counter_ns: f64,
}

/// `kovn_from_pod` on a packet of a learned flow (the fast path's whole per-packet work:
/// parse, source check, Service lookup, flow lookup, counters, redirect), and the counting
/// program as a floor, each run 1,000,000 times by BPF_PROG_TEST_RUN on a datapath of its
/// own (the packet arrives on loopback, registered as the pod's port).
fn program_cost() -> Result<ProgramCost> {
    use datapath_common::{FlowEntry, FlowKey, PodPort, ipv4_mapped, programs};
    const LO: u32 = 1;
    const REPEAT: u32 = 1_000_000;
    let (pod_mac, peer_mac) = (
        [0x0a, 0x58, 0x0a, 0x10, 0, 2],
        [0x0a, 0x58, 0x0a, 0x10, 0, 3],
    );
    let (pod_ip, peer_ip) = ([10, 16, 0, 2], [10, 16, 0, 3]);
    let mut dp = Datapath::load(&locate_object()?, &LoadOptions::default())?;
    dp.register_port(
        PodPort {
            host_ifindex: LO,
            ovs_peer_ifindex: LO,
            scope: 0,
            mac: pod_mac,
            _pad: [0; 2],
            ip: ipv4_mapped(pod_ip),
        },
        ipv4_mapped(pod_ip),
    )?;
    use agent::datapath::{FlowTableOps, ReadMaps};
    let generation = dp.generation()?;
    dp.insert_flow(
        FlowKey {
            scope: 0,
            src: ipv4_mapped(pod_ip),
            dst: ipv4_mapped(peer_ip),
            sport: 40000,
            dport: 80,
            proto: 6,
            _pad: [0; 3],
        },
        FlowEntry {
            dst_host_ifindex: LO,
            flags: 0,
            src_mac: pod_mac,
            dst_mac: peer_mac,
            generation,
            // Seen and re-judged "in the future": neither idle nor due for a refresh.
            last_seen_ns: u64::MAX / 2,
            last_slow_ns: u64::MAX / 2,
        },
    )?;
    let mut packet = Vec::new();
    packet.extend_from_slice(&peer_mac);
    packet.extend_from_slice(&pod_mac);
    packet.extend_from_slice(&0x0800u16.to_be_bytes());
    packet.extend_from_slice(&[0x45, 0, 0x05, 0xdc, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    packet.extend_from_slice(&pod_ip);
    packet.extend_from_slice(&peer_ip);
    packet.extend_from_slice(&40000u16.to_be_bytes());
    packet.extend_from_slice(&80u16.to_be_bytes());
    packet.extend_from_slice(&[0; 8]);
    packet.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    packet.resize(1514, 0x61);
    let (verdict, hit) = dp.time_run(programs::FROM_POD, &packet, REPEAT)?;
    const TC_ACT_REDIRECT: i32 = 7;
    anyhow::ensure!(
        verdict == TC_ACT_REDIRECT,
        "the learned packet was not fast-pathed (verdict {verdict})"
    );
    let (_, counter) = dp.time_run(programs::COUNT_INGRESS, &packet, REPEAT)?;
    Ok(ProgramCost {
        repeat: REPEAT,
        fast_hit_ns: hit.as_secs_f64() * 1e9,
        counter_ns: counter.as_secs_f64() * 1e9,
    })
}

/// Two bar groups: throughput (Gbit/s) and p50/p99 latency (µs), one bar per path.
fn svg_chart(paths: &[(&str, Measurement)]) -> String {
    let colors = ["#888888", "#d62728", "#2ca02c"];
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"320\" font-family=\"sans-serif\" font-size=\"12\">\n",
    );
    type Metric = fn(&Measurement) -> f64;
    let panels: [(&str, Metric); 3] = [
        ("TCP throughput (Gbit/s)", |m| m.tcp_gbps),
        ("ping-pong p50 (µs)", |m| m.rr_p50_us),
        ("ping-pong p99 (µs)", |m| m.rr_p99_us),
    ];
    for (p, (title, value)) in panels.iter().enumerate() {
        let x0 = 20.0 + p as f64 * 240.0;
        let max = paths
            .iter()
            .map(|(_, m)| value(m))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        svg.push_str(&format!("<text x=\"{:.0}\" y=\"20\">{title}</text>\n", x0));
        for (i, (name, m)) in paths.iter().enumerate() {
            let h = 220.0 * value(m) / max;
            let x = x0 + i as f64 * 70.0;
            svg.push_str(&format!(
                "<rect x=\"{x:.0}\" y=\"{:.1}\" width=\"50\" height=\"{h:.1}\" fill=\"{}\"/>\n<text x=\"{x:.0}\" y=\"{:.1}\">{:.1}</text>\n<text x=\"{x:.0}\" y=\"300\">{name}</text>\n",
                270.0 - h, colors[i % 3], 265.0 - h, value(m)
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}
