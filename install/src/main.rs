//! `kovn-install preflight | install | uninstall`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use install::host::Host;
use install::preflight::{self, Role};
use install::{manifests, plan};

#[derive(Debug, Parser)]
#[command(
    name = "kovn-install",
    version,
    about = "Install kovn on a cluster, check a host first, or remove kovn again"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct PreflightArgs {
    /// What this host runs: master (an ovn-central member too) or node.
    #[arg(long, value_enum, default_value = "master")]
    role: Role,
    /// The kubelet's CNI configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// kovn's deploy/ directory (the bundle's, or the source tree's).
    #[arg(long, default_value = "deploy")]
    manifests: PathBuf,
    /// The ovn-central nodes' addresses, comma-separated (default: the InternalIPs of the
    /// nodes labelled kube-ovn/role=master).
    #[arg(long, value_delimiter = ',')]
    masters: Vec<IpAddr>,
    /// ovs-ovn's datapath: system (the openvswitch module) or netdev (userspace).
    #[arg(long, default_value = "system", value_parser = ["system", "netdev"])]
    ovs_datapath: String,
    /// The kovn image as the cluster pulls it (default: the bundle's kovn.local/kovn:0.1.0).
    #[arg(long)]
    kovn_image: Option<String>,
    /// The ovn image as the cluster pulls it (default: kovn.local/ovn:0.1.0).
    #[arg(long)]
    ovn_image: Option<String>,
    /// Make the OVN databases speak SSL only (Kube-OVN's ENABLE_SSL): every remote becomes
    /// ssl:, with the certificates of --tls-dir as the kovn-ovn-tls Secret.
    #[arg(long)]
    enable_ssl: bool,
    /// The certificates for SSL (implies --enable-ssl): `key`, `cert` and `cacert` in PEM
    /// (e.g. from ovs-pki). A directory without them gets a new CA and certificate (kept
    /// there with the CA's key, which stays out of the cluster; later runs reuse them).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    #[arg(long, default_value = "kubectl")]
    kubectl: String,
    /// Print what would be applied and run, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check this host against what kovn needs; exits 1 when something must be fixed first.
    Preflight(PreflightArgs),
    /// Check this host, then apply kovn's manifests and wait for every component.
    Install {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Install even when the pre-flight fails.
        #[arg(long)]
        ignore_preflight: bool,
        /// Do not wait for the rollouts.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove kovn from the cluster and every node (the CRDs stay unless asked).
    Uninstall {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Also delete the CRDs, and with them every Subnet, Vpc and IP.
        #[arg(long)]
        delete_crds: bool,
    },
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn preflight(args: &PreflightArgs) -> preflight::Report {
    let host = Host {
        cni_conf_dir: args.cni_conf_dir.clone(),
        ..Host::default()
    };
    preflight::run(&host, args.role, euid())
}

fn config(cluster: &ClusterArgs) -> anyhow::Result<manifests::ClusterConfig> {
    let masters = if !cluster.masters.is_empty() {
        cluster.masters.clone()
    } else if cluster.dry_run {
        anyhow::bail!("--dry-run needs --masters (it does not ask the cluster)")
    } else {
        plan::master_addresses(&cluster.kubectl)?
    };
    let tls = tls_secret(cluster)?;
    Ok(plan::cluster_config(
        masters,
        &cluster.ovs_datapath,
        cluster.kovn_image.clone(),
        cluster.ovn_image.clone(),
        tls,
    ))
}

/// Where certificates are kept when --enable-ssl comes without --tls-dir.
const DEFAULT_TLS_DIR: &str = "kovn-ovn-tls";

/// The kovn-ovn-tls Secret's certificates: the operator's, or made now (into a scratch
/// directory on a dry run, which changes nothing).
fn tls_secret(cluster: &ClusterArgs) -> anyhow::Result<Option<manifests::TlsSecret>> {
    let dir = match (&cluster.tls_dir, cluster.enable_ssl) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from(DEFAULT_TLS_DIR),
        (None, false) => return Ok(None),
    };
    if install::pki::has_certificates(&dir)? {
        return Ok(Some(manifests::TlsSecret::from_dir(&dir)?));
    }
    if cluster.dry_run {
        let scratch = tempfile::tempdir()?;
        install::pki::generate(scratch.path())?;
        eprintln!(
            "dry run: {} has no certificates; a real run makes a CA and a certificate there \
             (shown with throwaway ones)",
            dir.display()
        );
        return Ok(Some(manifests::TlsSecret::from_dir(scratch.path())?));
    }
    install::pki::generate(&dir)?;
    eprintln!(
        "made a CA and a certificate for the OVN databases in {} (keep cakey safe: it signs \
         more; it is not put in the cluster)",
        dir.display()
    );
    Ok(Some(manifests::TlsSecret::from_dir(&dir)?))
}

fn rendered(cluster: &ClusterArgs) -> anyhow::Result<Vec<manifests::Document>> {
    let config = config(cluster)?;
    let files = manifests::install_files(&cluster.manifests)?;
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let docs = manifests::render(manifests::read(&cluster.manifests, &files)?, &config)?;
    Ok(docs)
}

fn execute(cluster: &ClusterArgs, steps: &[plan::Step]) -> anyhow::Result<()> {
    if cluster.dry_run {
        for (i, s) in steps.iter().enumerate() {
            println!("# step {}: {}", i + 1, s.what);
            println!("# {}", plan::command_line(&cluster.kubectl, s));
            if let Some(stdin) = &s.stdin {
                print!("{stdin}");
            }
        }
        eprintln!("dry run: nothing was changed");
        return Ok(());
    }
    plan::run(&cluster.kubectl, steps)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preflight(args) => {
            let report = preflight(&args);
            match args.output {
                Output::Text => print!("{}", report.render()),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                ),
            }
            return if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Command::Install {
            cluster,
            ignore_preflight,
            no_wait,
        } => (|| {
            let report = preflight(&PreflightArgs {
                role: Role::Master,
                cni_conf_dir: "/etc/cni/net.d".into(),
                output: Output::Text,
            });
            eprint!("pre-flight on this host:\n{}", report.render());
            if report.failed() && !ignore_preflight {
                anyhow::bail!(
                    "the pre-flight failed (FAIL above): fix those first, or pass --ignore-preflight"
                );
            }
            if report.ovs_datapath != cluster.ovs_datapath {
                eprintln!(
                    "note: this host suggests --ovs-datapath={} (installing with {})",
                    report.ovs_datapath, cluster.ovs_datapath
                );
            }
            let docs = rendered(&cluster)?;
            execute(&cluster, &plan::install(&docs, !no_wait))
        })(),
        Command::Uninstall {
            cluster,
            delete_crds,
        } => (|| {
            // Deleting needs the objects' names only: the manifests as they are.
            let files = manifests::install_files(&cluster.manifests)?;
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            let docs = manifests::read(&cluster.manifests, &files)?;
            let image = cluster
                .kovn_image
                .clone()
                .unwrap_or_else(|| manifests::KOVN_IMAGE.to_owned());
            let agent = manifests::node_cleanup(&cluster.manifests, "agent", &image)?;
            let ovs = manifests::node_cleanup(&cluster.manifests, "ovs", &image)?;
            execute(&cluster, &plan::uninstall(&docs, &agent, &ovs, delete_crds))
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kovn-install: {e:#}");
            ExitCode::FAILURE
        }
    }
}
