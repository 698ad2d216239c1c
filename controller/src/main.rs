//! `kovn-controller`: the Deployment that turns Kubernetes objects into OVN's logical topology.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use controller::context::Settings;
use controller::leader::LeaderElector;
use controller::metrics::{DEFAULT_METRICS_ADDR, Metrics};
use controller::run::{Inputs, run};
use controller::topology;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "kovn-controller: Kubernetes to OVN Northbound, and IPAM"
)]
struct Args {
    /// OVN Northbound remotes, comma-separated (`tcp:10.0.0.1:6641,unix:/run/ovn/ovnnb_db.sock`;
    /// `ssl:HOST:PORT` with the certificates of --ovn-tls-dir).
    #[arg(long, default_value = "unix:/var/run/ovn/ovnnb_db.sock")]
    ovn_nb_addr: String,
    /// For `ssl:` remotes: the directory holding `key`, `cert` and `cacert`, as Kube-OVN
    /// mounts its `kube-ovn-tls` Secret.
    #[arg(long, default_value = "/var/run/tls")]
    ovn_tls_dir: std::path::PathBuf,
    #[arg(long, default_value = DEFAULT_METRICS_ADDR)]
    metrics_addr: SocketAddr,
    /// Reconciles run in parallel per kind.
    #[arg(long, default_value_t = 64)]
    worker_num: u16,
    /// Take the `kube-ovn-controller` Lease before doing anything.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(long, env = "KUBE_NAMESPACE", default_value = "kube-system")]
    lease_namespace: String,
    #[arg(long, env = "POD_NAME", default_value = "kovn-controller")]
    identity: String,
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let metrics = Arc::new(Metrics::new());
    let _metrics_server = controller::metrics::serve(args.metrics_addr, metrics.clone()).await?;

    let kube = kube::Client::try_default()
        .await
        .context("no Kubernetes API access (in-cluster config or KUBECONFIG)")?;
    let elector = LeaderElector::new(
        kube.clone(),
        &args.lease_namespace,
        &args.identity,
        Duration::from_secs(15),
    );
    if args.leader_election {
        // A standby is healthy and ready (a rollout must not wait for it to lead); the leader
        // is not ready again until it has restored IPAM.
        metrics.set_ready(true);
        tracing::info!(identity = %args.identity, "waiting for the leader lease");
        elector.acquire().await?;
        metrics.set_ready(false);
        metrics.leader.set(1);
    }

    let remotes: Vec<&str> = args.ovn_nb_addr.split(',').collect();
    let mut config = topology::nb_client_config(&remotes);
    config.metrics = Some(metrics.nb_client_metrics());
    if remotes.iter().any(|r| r.trim().starts_with("ssl:")) {
        config = config
            .tls(&ovsdb::TlsFiles::in_dir(&args.ovn_tls_dir))
            .context("the OVN Northbound's ssl: remotes need --ovn-tls-dir's certificates")?;
    }
    let nb = ovsdb::Client::connect(config)
        .await
        .with_context(|| format!("cannot reach OVN Northbound at {}", args.ovn_nb_addr))?;

    let inputs = Inputs::from_cluster(&kube);
    let work = run(kube, nb, args.settings, metrics, inputs, args.worker_num);
    if args.leader_election {
        tokio::select! {
            r = work => r,
            lost = elector.hold() => Err(anyhow::anyhow!("{lost}; exiting so a new leader starts clean")),
        }
    } else {
        work.await
    }
}
