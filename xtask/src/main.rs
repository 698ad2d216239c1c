//! `cargo xtask …`: the commands a developer and CI run. Each is idempotent, prints progress,
//! and fails with a message that says what to do.

mod bench;
mod bundle;
mod demo;
mod ebpf;
mod gen_models;
mod images;
mod progress;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "kovn developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, rust-src, bpf-linker, kubernetes-validate;
    /// mount bpffs.
    Setup,
    /// Build the eBPF datapath object into target/bpf/kovn-datapath.o.
    BuildEbpf {
        /// Optimised release build (the default build is optimised too; release drops
        /// debug assertions).
        #[arg(long)]
        release: bool,
    },
    /// Set up, build (the eBPF object included), lint, and run every test.
    Test {
        /// Skip `cargo xtask setup` (when you know the machine is ready).
        #[arg(long)]
        no_setup: bool,
        /// Extra arguments for `cargo test` (a filter, `--nocapture`, …).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Run the benchmarks (release build) and write reports to target/bench/.
    Bench {
        /// Run one section only (`fastpath`, `ovsdb`, `controller`, `cni`, `service`, `policy`).
        #[arg(long)]
        only: Option<String>,
        /// Short runs (the whole benchmark in a few minutes).
        #[arg(long)]
        quick: bool,
        /// Also write the fast-path JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Regenerate the CRD manifests in deploy/crds/ from the api crate.
    GenCrds,
    /// Regenerate ovsdb's typed models from the schemas in ovsdb/schemas/.
    GenOvsdbModels,
    /// Set up, build, start a 2-node sandbox, show pods talking, print a comparison table.
    Demo,
    /// Build the container images (kovn, ovn) from Debian's packages and this workspace into
    /// target/images/ (OCI archives, their package lists and digests). Needs root.
    Images {
        /// Build one image only (`kovn` or `ovn`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Build the images, then one offline tarball (target/kovn-<version>-bundle.tar): the
    /// images, the manifests, the source, the docs, SHA256SUMS. Needs root.
    Bundle,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::BuildEbpf { release } => ebpf::build(release).map(|_| ()),
        Command::Test {
            no_setup,
            cargo_test_args,
        } => test::run(!no_setup, &cargo_test_args),
        Command::Demo => demo::run(),
        Command::Bench { only, quick, json } => bench::run(only.as_deref(), quick, json.as_deref()),
        Command::GenOvsdbModels => gen_models::run(),
        Command::GenCrds => gen_crds(),
        Command::Images { only } => images::run(only.as_deref()).map(|_| ()),
        Command::Bundle => bundle::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn gen_crds() -> anyhow::Result<()> {
    let dir = workspace_root().join("deploy/crds");
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in api::crd_manifests() {
        std::fs::write(dir.join(&name), yaml)?;
        println!("    deploy/crds/{name}");
    }
    Ok(())
}
