//! kovn-agent. So far: inspection of the eBPF datapath object. The node agent proper (CNI
//! server, OVS plumbing, datapath sync, metrics on :10665) follows in later issues.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use agent::datapath::invalidation::{self, follow_nb_cfg};
use agent::datapath::{Datapath, LoadOptions, PodInterfaces, locate_object};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kovn-agent", version, about = "kovn node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the eBPF datapath.
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DatapathCommand {
    /// Load the datapath with pinned state, attach the given pods, follow the node's
    /// ovn-nb-cfg, and run until stopped. (The CNI-driven agent replaces the --pod list.)
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
    },
    /// Load the object and run every program through the kernel verifier, then unload.
    Check {
        /// The object (default: $KOVN_BPF_OBJECT, /usr/lib/kovn/kovn-datapath.o, or the
        /// workspace build).
        #[arg(long)]
        object: Option<PathBuf>,
    },
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
        Command::Datapath {
            command:
                DatapathCommand::Run {
                    pin_dir,
                    pods,
                    ovs_db,
                    object,
                },
        } => match run(pin_dir, pods, ovs_db, object) {
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
    let mut mac_bytes = [0u8; 6];
    let octets: Vec<&str> = mac.split(':').collect();
    if octets.len() != 6 {
        return Err(format!("{mac:?}: expected a MAC like 0a:58:0a:10:00:02"));
    }
    for (slot, octet) in mac_bytes.iter_mut().zip(octets) {
        *slot = u8::from_str_radix(octet, 16).map_err(|e| format!("{mac:?}: {e}"))?;
    }
    Ok(PodInterfaces {
        name: name.to_owned(),
        host_veth: host_veth.to_owned(),
        ovs_peer: ovs_peer.to_owned(),
        ip,
        mac: mac_bytes,
    })
}

fn run(
    pin_dir: PathBuf,
    pods: Vec<PodInterfaces>,
    ovs_db: Option<String>,
    object: Option<PathBuf>,
) -> anyhow::Result<()> {
    let object = object.map_or_else(locate_object, Ok)?;
    let mut datapath = Datapath::load(
        &object,
        &LoadOptions {
            pin_dir: Some(pin_dir),
            ..LoadOptions::default()
        },
    )?;
    for pod in &pods {
        datapath.attach_pod(pod)?;
    }
    tracing::info!(
        pods = pods.len(),
        generation = datapath.generation()?,
        "datapath attached"
    );
    let datapath = Arc::new(Mutex::new(datapath));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        if let Some(remote) = ovs_db {
            let client = ovsdb::Client::connect(
                ovsdb::ClientConfig::new(&[&remote], "Open_vSwitch")
                    .monitor(invalidation::monitor_request()),
            )
            .await?;
            tokio::spawn(follow_nb_cfg(
                client,
                datapath.clone(),
                |nb_cfg, generation| {
                    tracing::info!(nb_cfg, generation, "policy changed: fast path invalidated");
                },
            ));
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
