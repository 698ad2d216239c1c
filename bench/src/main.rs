//! kovn-bench: benchmarks that put kovn side by side with what it replaces, in one run.

mod alloc_counter;
mod cni_bench;
mod controller_bench;
mod fastpath_bench;
mod ovsdb_bench;
mod policy_bench;
mod report;
mod service_bench;
mod synthetic;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

#[derive(Debug, Parser)]
#[command(name = "kovn-bench", about = "kovn benchmarks")]
struct Cli {
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The OVSDB client against ovn-nbctl: insert, update and delete Logical_Switch_Ports;
    /// cache memory for many rows.
    Ovsdb(ovsdb_bench::Options),
    /// Pod-to-pod on one node (a direct veth pair, OVS only, kovn's fast path) and across two
    /// (a kernel VXLAN tunnel without OVS, OVS only, kovn's fast path), side by side: TCP
    /// throughput, request/response latency, connections per second.
    Fastpath(fastpath_bench::Options),
    /// The controller on a simulated cluster (1,000 nodes, 50,000 pods, 200 subnets by
    /// default) against a real OVN_Northbound: cold start, restart, NB transactions, peak RSS.
    Controller(controller_bench::Options),
    /// CNI ADD through the whole path (kubelet's conflist, agent, netlink, OVS, datapath)
    /// on one sandbox node: ADD p50/p99 and pods per second.
    Cni(cni_bench::Options),
    /// ClusterIP Services on 2 sandbox nodes: pod IP vs the VIP balanced in eBPF vs the VIP
    /// balanced by OVN, same node and cross node; time to program 10,000 Services.
    Service(service_bench::Options),
    /// Policy on a sandbox node: from a NetworkPolicy's write (and from a plain ACL's) to the
    /// last packet of a fast-pathed stream at the receiver; 1,000 policies over 10,000 pods
    /// programmed into a real OVN_Northbound.
    Policy(policy_bench::Options),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    match cli.command {
        Command::Ovsdb(options) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(ovsdb_bench::run(&options))?;
            let path = cli.out.join("ovsdb.json");
            std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            println!("JSON report: {}", path.display());
        }
        Command::Fastpath(options) => fastpath_bench::run(&options, &cli.out)?,
        Command::Cni(options) => cni_bench::run(&options, &cli.out)?,
        Command::Service(options) => service_bench::run(&options, &cli.out)?,
        Command::Policy(options) => policy_bench::run(&options, &cli.out)?,
        Command::Controller(options) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(controller_bench::run_bench(&options, &cli.out))?;
        }
    }
    Ok(())
}

/// kovn's release binaries next to this one, as `cargo xtask bench --only <section>` builds
/// them; an error that says so when one is missing.
pub(crate) fn release_binaries(section: &str) -> Result<sandbox::kovn::KovnBinaries> {
    use anyhow::Context as _;
    let dir = std::env::current_exe()?
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("the benchmark's directory")?;
    let binaries = sandbox::kovn::KovnBinaries {
        controller: dir.join("kovn-controller"),
        agent: dir.join("kovn-agent"),
        cni_dir: dir.clone(),
    };
    for path in [&binaries.controller, &binaries.agent, &dir.join("kube-ovn")] {
        if !path.exists() {
            anyhow::bail!(
                "{} is missing: run `cargo xtask bench --only {section}` (it builds kovn's binaries in release)",
                path.display()
            );
        }
    }
    Ok(binaries)
}
