//! kovn-agent: `daemon` is the node agent (CNI server, pod plumbing, datapath, metrics on
//! :10665); `datapath …` runs and inspects the eBPF datapath on its own.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use agent::datapath::invalidation;
use agent::datapath::{
    Datapath, DatapathStats, LoadOptions, PinnedMaps, PodInterfaces, ReadMaps, load_or_stay_on_ovs,
    locate_object,
};
use agent::metrics::MetricsSources;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kovn-agent", version, about = "kovn node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The node agent (as the DaemonSet runs it): CNI server, pod plumbing, datapath.
    Daemon(Box<agent::daemon::DaemonOptions>),
    /// Remove from this node everything kovn-agent put there (stop the agent first).
    Uninstall(agent::uninstall::UninstallOptions),
    /// Inspect the eBPF datapath.
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DatapathCommand {
    /// The datapath without the CNI server, for tests and debugging: the daemon's own start-up
    /// (load or stay on OVS, pinned state, nb-cfg following, flow GC, metrics) with the pods
    /// given on the command line instead of those CNI ADD brings.
    Run {
        /// Where maps and links are pinned; a restart adopts what is there.
        #[arg(long, default_value = "/sys/fs/bpf/kovn")]
        pin_dir: PathBuf,
        /// A pod as NAME,HOST_VETH,OVS_PEER,IP,MAC (repeatable).
        #[arg(long = "pod", value_parser = parse_pod)]
        pods: Vec<PodInterfaces>,
        /// The node's Open_vSwitch database, to follow ovn-nb-cfg (e.g. unix:/run/openvswitch/db.sock).
        #[arg(long)]
        ovs_db: Option<String>,
        #[arg(long)]
        object: Option<PathBuf>,
        /// Idle time after which a TCP flow leaves the fast path (seconds).
        #[arg(long, default_value_t = 300)]
        tcp_timeout: u64,
        /// Idle time after which a UDP or ICMP flow leaves the fast path (seconds).
        #[arg(long, default_value_t = 30)]
        udp_timeout: u64,
        /// Turn on the programs' aya-log events at this level (error, warn, info, debug,
        /// trace); off by default, as each event costs a ring-buffer reservation.
        #[arg(long, value_parser = parse_level)]
        bpf_log_level: Option<aya_log::Level>,
        /// Where /metrics and /healthz are served.
        #[arg(long, default_value = agent::metrics::DEFAULT_METRICS_ADDR)]
        metrics_addr: std::net::SocketAddr,
    },
    /// List the learned flows of a running agent (from its pinned maps).
    Flows {
        #[arg(long, default_value = "/sys/fs/bpf/kovn")]
        pin_dir: PathBuf,
    },
    /// Switch a running agent's fast path on or off (through its pinned config map); off,
    /// every packet goes through OVS, for comparing the two.
    FastPath {
        #[arg(long, default_value = "/sys/fs/bpf/kovn")]
        pin_dir: PathBuf,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Switch a running agent's service balancer on or off; off, packets to Service VIPs go
    /// to OVS and OVN's load balancers serve them, for comparing the two.
    ServiceLb {
        #[arg(long, default_value = "/sys/fs/bpf/kovn")]
        pin_dir: PathBuf,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// List a running agent's services: VIPs, backends, pinned connections and counters.
    Services {
        #[arg(long, default_value = "/sys/fs/bpf/kovn")]
        pin_dir: PathBuf,
    },
    /// Print the decision counters of a running agent (from its pinned maps).
    Stats {
        #[arg(long, default_value = "/sys/fs/bpf/kovn")]
        pin_dir: PathBuf,
    },
    /// Load the object and run every program through the kernel verifier, then unload.
    Check {
        /// The object (default: $KOVN_BPF_OBJECT, /usr/lib/kovn/kovn-datapath.o, or the
        /// workspace build).
        #[arg(long)]
        object: Option<PathBuf>,
    },
}

fn uninstall(options: &agent::uninstall::UninstallOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(agent::uninstall::run(options))?;
    print!("{}", report.render());
    if report.clean() {
        Ok(())
    } else {
        anyhow::bail!("some items could not be removed (see above)")
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon(options) => report(
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(agent::daemon::run(*options))),
        ),
        Command::Uninstall(options) => report(uninstall(&options)),
        Command::Datapath {
            command: DatapathCommand::Flows { pin_dir },
        } => report(print_flows(&pin_dir)),
        Command::Datapath {
            command: DatapathCommand::Stats { pin_dir },
        } => report(print_stats(&pin_dir)),
        Command::Datapath {
            command: DatapathCommand::ServiceLb { pin_dir, state },
        } => report((|| {
            let mut maps = PinnedMaps::open(&pin_dir)?;
            let mut config = maps.config()?;
            config.service_lb_off = u32::from(state == "off");
            maps.set_config(&config)?;
            println!("service balancer {state}");
            Ok(())
        })()),
        Command::Datapath {
            command: DatapathCommand::Services { pin_dir },
        } => report(print_services(&pin_dir)),
        Command::Datapath {
            command: DatapathCommand::FastPath { pin_dir, state },
        } => report((|| {
            let mut maps = PinnedMaps::open(&pin_dir)?;
            let mut config = maps.config()?;
            config.fast_path_enabled = u32::from(state == "on");
            maps.set_config(&config)?;
            println!("fast path {state}");
            Ok(())
        })()),
        Command::Datapath {
            command:
                DatapathCommand::Run {
                    pin_dir,
                    pods,
                    ovs_db,
                    object,
                    tcp_timeout,
                    udp_timeout,
                    bpf_log_level,
                    metrics_addr,
                },
        } => match run(
            pin_dir,
            pods,
            ovs_db,
            object,
            datapath_common::DatapathConfig {
                tcp_timeout_ns: tcp_timeout * 1_000_000_000,
                udp_timeout_ns: udp_timeout * 1_000_000_000,
                ..Default::default()
            },
            bpf_log_level,
            metrics_addr,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Datapath {
            command: DatapathCommand::Check { object },
        } => {
            let path = match object.map_or_else(locate_object, Ok) {
                Ok(path) => path,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match Datapath::load(&path, &LoadOptions::default()) {
                Ok(datapath) => {
                    println!("{}: verifier accepted every program", path.display());
                    for name in datapath.program_names() {
                        println!("  program {name}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    // The node would stay on OVS; say why, with the verifier log if any.
                    tracing::error!("{e}: {:?}", std::error::Error::source(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn parse_pod(spec: &str) -> Result<PodInterfaces, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [name, host_veth, ovs_peer, ip, mac] = parts[..] else {
        return Err(format!("{spec:?}: expected NAME,HOST_VETH,OVS_PEER,IP,MAC"));
    };
    let ip = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
    let mac_bytes = agent::datapath::parse_mac(mac)?;
    Ok(PodInterfaces {
        name: name.to_owned(),
        owner: name.to_owned(),
        host_veth: host_veth.to_owned(),
        ovs_peer: ovs_peer.to_owned(),
        ip,
        mac: mac_bytes,
        other_ips: Vec::new(),
        vpc: Some(api::names::DEFAULT_CLUSTER_ROUTER.into()),
    })
}

fn run(
    pin_dir: PathBuf,
    pods: Vec<PodInterfaces>,
    ovs_db: Option<String>,
    object: Option<PathBuf>,
    config: datapath_common::DatapathConfig,
    log_level: Option<aya_log::Level>,
    metrics_addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let loaded = load_or_stay_on_ovs(
        object,
        &LoadOptions {
            pin_dir: Some(pin_dir),
            log_level,
            ..LoadOptions::default()
        },
    );
    let Some(mut datapath) = loaded else {
        return serve_without_datapath(metrics_addr, &pods);
    };
    datapath.set_config(&config)?;
    let logger = datapath.take_logger();
    for pod in &pods {
        datapath.attach_pod(pod)?;
    }
    tracing::info!(
        pods = pods.len(),
        generation = datapath.generation()?,
        "datapath attached"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let ovs = match &ovs_db {
            Some(remote) => Some(agent::ovs::connect(remote).await?),
            None => None,
        };
        let stats = Arc::new(DatapathStats::default());
        invalidation::spawn_upkeep(&datapath, ovs, stats.clone())?;
        tokio::spawn(agent::metrics::serve(
            metrics_addr,
            MetricsSources {
                datapath: Some(Arc::new(Mutex::new(datapath.reader()?))),
                stats: Some(stats),
                ..MetricsSources::default()
            },
        ));
        if let Some(logger) = logger {
            // SAFETY: the logger owns its ring buffer's fd, which stays open and the same until
            // the AsyncFd (which owns the logger) is dropped.
            let mut fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| anyhow::anyhow!("watching the eBPF log buffer: {e}"))?;
            tokio::spawn(async move {
                while let Ok(mut ready) = fd.readable_mut().await {
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                }
            });
        }
        println!("ready");
        // Stopping leaves the datapath running: maps and links are pinned.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping; the datapath keeps running from its pins");
        Ok(())
    })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn show_ip(ip: &[u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(*ip);
    v6.to_ipv4_mapped()
        .map_or_else(|| v6.to_string(), |v4| v4.to_string())
}

fn show_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn print_flows(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let maps = PinnedMaps::open(pin_dir)?;
    let generation = maps.generation()?;
    let mut flows = maps.flows()?;
    flows.sort_by_key(|(k, _)| (k.proto, k.src, k.dst, k.sport, k.dport));
    println!("generation {generation}, {} flows", flows.len());
    for (key, entry) in flows {
        let proto = datapath_common::L4Proto::from_number(key.proto)
            .map_or("?", datapath_common::L4Proto::kubernetes_name);
        println!(
            "{proto} {}:{} -> {}:{}  to ifindex {}  mac {} -> {}{}{}",
            show_ip(&key.src),
            key.sport,
            show_ip(&key.dst),
            key.dport,
            entry.dst_host_ifindex,
            show_mac(&entry.src_mac),
            show_mac(&entry.dst_mac),
            if entry.flags & datapath_common::flow_flags::ROUTED != 0 {
                "  routed"
            } else {
                ""
            },
            if entry.generation == generation {
                ""
            } else {
                "  (stale generation)"
            },
        );
    }
    Ok(())
}

fn print_stats(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let maps = PinnedMaps::open(pin_dir)?;
    println!("generation {}", maps.generation()?);
    println!("{:<8} {:<16} {:>14}", "ifindex", "reason", "packets");
    for c in maps.reason_counts()? {
        println!(
            "{:<8} {:<16} {:>14}",
            c.ifindex,
            c.reason.as_str(),
            c.packets
        );
    }
    for f in maps.faults()? {
        println!("fault {:<20} {:>14}", f.fault.as_str(), f.count);
    }
    Ok(())
}

fn parse_level(level: &str) -> Result<aya_log::Level, String> {
    Ok(match level {
        "error" => aya_log::Level::Error,
        "warn" => aya_log::Level::Warn,
        "info" => aya_log::Level::Info,
        "debug" => aya_log::Level::Debug,
        "trace" => aya_log::Level::Trace,
        other => return Err(format!("{other:?}: use error, warn, info, debug or trace")),
    })
}

/// The agent without a datapath: pods wired to OVS with the kernel hand-off, metrics
/// (`kovn_datapath_loaded 0`) until stopped.
fn serve_without_datapath(
    metrics_addr: std::net::SocketAddr,
    pods: &[PodInterfaces],
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        for pod in pods {
            agent::datapath::install_kernel_handoff(pod).await?;
        }
        tracing::warn!(pods = pods.len(), "pods wired to OVS without the fast path");
        tokio::spawn(agent::metrics::serve(
            metrics_addr,
            MetricsSources::default(),
        ));
        println!("ready");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}

/// The service maps of a running agent, as a table.
fn print_services(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    use agent::datapath::{ReadServiceMaps, ip_from_bytes};
    use std::collections::BTreeMap;
    let maps = PinnedMaps::open(pin_dir)?;
    let proto = datapath_common::proto_name;
    let mut backends: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
    for (id, b) in maps.backends()? {
        let addr = std::net::SocketAddr::new(ip_from_bytes(&b.ip), b.port);
        backends
            .entry(b.service_id)
            .or_default()
            .push((id, addr.to_string()));
    }
    let mut counts: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for c in maps.service_counts()? {
        counts
            .entry(c.service_id)
            .or_default()
            .push(format!("{}={}", c.event.as_str(), c.count));
    }
    let mut services = maps.services()?;
    services.sort_by_key(|(_, e)| e.id);
    println!(
        "{:>5}  {:<28} {:<9} {:<10} backends / counters",
        "id", "vip", "affinity", "ready"
    );
    for (key, entry) in &services {
        let vip = std::net::SocketAddr::new(ip_from_bytes(&key.vip), key.port);
        let affinity = if entry.flags & datapath_common::service_flags::AFFINITY != 0 {
            format!("{}s", entry.affinity_timeout_s)
        } else {
            "-".into()
        };
        println!(
            "{:>5}  {:<28} {:<9} {:<10} {}",
            entry.id,
            format!("{vip}/{}", proto(key.proto)),
            affinity,
            entry.backend_count,
            backends
                .get(&entry.id)
                .map(|b| b
                    .iter()
                    .map(|(id, a)| format!("#{id} {a}"))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        if let Some(c) = counts.get(&entry.id) {
            println!("{:>5}  {:<49} {}", "", "", c.join(" "));
        }
    }
    let connections = maps.lb_connections()?;
    println!("\n{} pinned connections", connections.len());
    for (key, c) in connections.iter().take(50) {
        println!(
            "  {}:{} -> {}:{}/{}  backend #{} (service {})",
            ip_from_bytes(&key.src),
            key.sport,
            ip_from_bytes(&key.dst),
            key.dport,
            proto(key.proto),
            c.backend_id,
            c.service_id
        );
    }
    Ok(())
}
