//! The controller's Prometheus metrics on :10660 (Kube-OVN's controller port), with `/healthz`
//! and `/readyz`. Subnet address counts keep Kube-OVN's metric names
//! (`subnet_available_ip_count`, `subnet_used_ip_count`), so existing dashboards work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:10660";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabels {
    pub subnet_name: String,
    pub protocol: String,
    pub subnet_cidr: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~100 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub subnet_available: Family<SubnetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub subnet_used: Family<SubnetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub ovsdb_transactions: Family<ResultLabels, Counter>,
    pub ovsdb_transaction_seconds: Histogram,
    pub nb_batches: Counter,
    pub ipam_conflicts: Counter,
    pub leader: Gauge,
    pub gateway_up: Family<NodeLabels, Gauge>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let subnet_available = Family::default();
        let subnet_used = Family::default();
        registry.register(
            "subnet_available_ip_count",
            "Addresses a subnet can still hand out",
            subnet_available.clone(),
        );
        registry.register(
            "subnet_used_ip_count",
            "Addresses a subnet has handed out",
            subnet_used.clone(),
        );
        let reconciles = Family::default();
        registry.register(
            "kovn_controller_reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        let reconcile_seconds =
            Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "kovn_controller_reconcile_duration_seconds",
            "How long one reconcile took, by kind",
            reconcile_seconds.clone(),
        );
        let ovsdb_transactions = Family::default();
        registry.register(
            "kovn_controller_ovsdb_transactions",
            "NB transactions by result",
            ovsdb_transactions.clone(),
        );
        let ovsdb_transaction_seconds = latency_histogram();
        registry.register(
            "kovn_controller_ovsdb_transaction_duration_seconds",
            "NB transaction latency",
            ovsdb_transaction_seconds.clone(),
        );
        let nb_batches = Counter::default();
        registry.register(
            "kovn_controller_nb_batches",
            "Batched NB write rounds (several reconciles in one transaction)",
            nb_batches.clone(),
        );
        let ipam_conflicts = Counter::default();
        registry.register(
            "kovn_controller_ipam_restore_conflicts",
            "Recorded allocations that could not be honoured at start (see events and logs)",
            ipam_conflicts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "kovn_controller_leader",
            "1 while this instance holds the leader lease",
            leader.clone(),
        );
        let gateway_up = Family::default();
        registry.register(
            "kovn_controller_gateway_up",
            "1 while a centralized subnet's gateway node answers the controller's probes",
            gateway_up.clone(),
        );
        Metrics {
            registry,
            subnet_available,
            subnet_used,
            reconciles,
            reconcile_seconds,
            ovsdb_transactions,
            ovsdb_transaction_seconds,
            nb_batches,
            ipam_conflicts,
            leader,
            gateway_up,
            ready: AtomicBool::new(false),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The hook the NB client reports its transactions through.
    pub fn nb_client_metrics(
        self: &std::sync::Arc<Self>,
    ) -> std::sync::Arc<dyn ovsdb::ClientMetrics> {
        std::sync::Arc::new(NbClientMetrics(self.clone()))
    }

    pub fn reconciled(&self, kind: &str, ok: bool, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

#[derive(Debug)]
struct NbClientMetrics(std::sync::Arc<Metrics>);

impl ovsdb::ClientMetrics for NbClientMetrics {
    fn transaction(&self, latency: Duration, ok: bool) {
        self.0
            .ovsdb_transactions
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.0
            .ovsdb_transaction_seconds
            .observe(latency.as_secs_f64());
    }
}

/// `/metrics` (OpenMetrics text), `/healthz` (the process answers) and `/readyz` (IPAM is
/// restored and reconciling has started; 503 before).
pub fn router(metrics: Arc<Metrics>) -> Router {
    let m = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if metrics.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "restoring")
                }
            }),
        )
}

/// Binds `addr` (so a taken port fails start-up, not a background task) and serves
/// [`router`] on it in a task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(metrics)).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}
