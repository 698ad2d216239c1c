//! The agent's Prometheus metrics on :10665 (Kube-OVN's daemon port): what the datapath's
//! programs decided, per interface and reason, and the datapath's state. Counters are read
//! from the maps at scrape time through the metrics' own read-only handle; counts that need a
//! walk over a big map come from the flow GC's last pass; Service labels from the summary the
//! Service sync publishes. A scrape waits for nothing else in the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::datapath::{DatapathStats, MapReader, ReadMaps, ReadServiceMaps};
use crate::services::ServiceSummary;

/// Default listen address of the agent's metrics.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:10665";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    interface: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    fault: String,
}

/// The name of interface `ifindex` in this process's network namespace.
fn interface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return format!("ifindex{ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// What `/metrics` reads.
#[derive(Clone, Default)]
pub struct MetricsSources {
    /// The datapath's counters (`None`: not loaded, the node is on OVS only).
    pub datapath: Option<Arc<Mutex<MapReader>>>,
    /// The flow GC's counts.
    pub stats: Option<Arc<DatapathStats>>,
    /// The CNI server's `cni_op_latency_seconds`, when the agent serves CNI.
    pub cni: Option<Arc<crate::cni_server::CniMetrics>>,
    /// The Service sync's summary, when the agent balances Services.
    pub services: Option<Arc<Mutex<ServiceSummary>>>,
    /// What `/readyz` checks (`None`: nothing to wait for, as in `kovn-agent datapath run`).
    pub readiness: Option<Arc<crate::readiness::Readiness>>,
}

/// Renders the metrics text for the current state. A fresh registry per scrape: counters
/// start at 0 and are raised to the values the maps hold.
pub fn render(sources: &MetricsSources) -> String {
    let reader = sources
        .datapath
        .as_ref()
        .map(|d| d.lock().unwrap_or_else(|e| e.into_inner()));
    let services = sources
        .services
        .as_ref()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let datapath = reader.as_deref();
    let stats = sources.stats.as_deref();
    let cni = sources.cni.as_deref();
    let mut root = Registry::default();
    if let Some(cni) = cni {
        cni.register(&mut root);
    }
    let registry = root.sub_registry_with_prefix("kovn_datapath");
    let loaded = Gauge::<i64>::default();
    loaded.set(i64::from(datapath.is_some()));
    registry.register(
        "loaded",
        "1 when the eBPF datapath is loaded and attached; 0 when the node runs on OVS only",
        loaded,
    );
    if let Some(dp) = datapath {
        let mut names = HashMap::new();
        let packets = Family::<ReasonLabels, Counter<u64>>::default();
        for c in dp.reason_counts().unwrap_or_default() {
            let interface = names
                .entry(c.ifindex)
                .or_insert_with(|| interface_name(c.ifindex))
                .clone();
            packets
                .get_or_create(&ReasonLabels {
                    interface,
                    reason: c.reason.as_str().to_owned(),
                })
                .inc_by(c.packets);
        }
        registry.register(
            "packets",
            "Packets the datapath programs handled, by interface and decision",
            packets,
        );
        let faults = Family::<FaultLabels, Counter<u64>>::default();
        for f in dp.faults().unwrap_or_default() {
            faults
                .get_or_create(&FaultLabels {
                    fault: f.fault.as_str().to_owned(),
                })
                .inc_by(f.count);
        }
        registry.register("faults", "Bookkeeping the programs could not do", faults);
        let generation = Gauge::<i64>::default();
        generation.set(dp.generation().map_or(-1, |g| g as i64));
        registry.register(
            "policy_generation",
            "Current policy generation (bumped when ovn-nb-cfg changes and at every agent start)",
            generation,
        );
        let invalidations = Counter::<u64>::default();
        invalidations.inc_by(stats.map_or(0, DatapathStats::invalidations));
        registry.register(
            "policy_invalidations",
            "ovn-nb-cfg changes (forward or back) that invalidated the fast path",
            invalidations,
        );
        let bump_failures = Counter::<u64>::default();
        bump_failures.inc_by(stats.map_or(0, DatapathStats::bump_failures));
        registry.register(
            "generation_bump_failures",
            "Generation bumps that failed and were retried",
            bump_failures,
        );
        let flows = Gauge::<i64>::default();
        flows.set(stats.map_or(-1, DatapathStats::flows));
        registry.register(
            "flows",
            "Learned flows in the flow map at the last flow GC (every 10 s; -1 before the first)",
            flows,
        );
        if let Some(services) = &services {
            register_services(registry, dp, stats, services);
        }
    }
    let mut out = String::new();
    let _ = encode(&mut out, &root);
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    vip: String,
    event: String,
}

/// Per-VIP counters (hits, new connections, no backend, conntrack full, hairpin) and the
/// sizes of the service maps.
fn register_services(
    registry: &mut Registry,
    dp: &MapReader,
    stats: Option<&DatapathStats>,
    services: &ServiceSummary,
) {
    let packets = Family::<ServiceLabels, Counter<u64>>::default();
    for c in dp.service_counts().unwrap_or_default() {
        let Some((service, vip)) = services.vips.get(&c.service_id) else {
            continue;
        };
        packets
            .get_or_create(&ServiceLabels {
                service: service.clone(),
                vip: vip.clone(),
                event: c.event.as_str().to_owned(),
            })
            .inc_by(c.count);
    }
    registry.register(
        "service_packets",
        "Packets to Service VIPs balanced in the datapath, by service, VIP and event",
        packets,
    );
    let vips = Gauge::<i64>::default();
    vips.set(services.vips.len() as i64);
    registry.register("service_vips", "VIPs programmed into the datapath", vips);
    let unprogrammed = Gauge::<i64>::default();
    unprogrammed.set(services.unprogrammed as i64);
    registry.register(
        "service_vips_unprogrammed",
        "VIPs the services map had no room for; OVN's load balancers serve them",
        unprogrammed,
    );
    let backends = Gauge::<i64>::default();
    backends.set(services.backends as i64);
    registry.register(
        "service_backends",
        "Backends programmed into the datapath",
        backends,
    );
    let connections = Gauge::<i64>::default();
    connections.set(stats.map_or(-1, DatapathStats::lb_connections));
    registry.register(
        "service_connections",
        "Connections pinned to a backend in the LB conntrack map at the last flow GC",
        connections,
    );
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, sources: MetricsSources) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, sources).await
}

/// Serves on a bound listener (so a taken port fails start-up, not a background task).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    sources: MetricsSources,
) -> std::io::Result<()> {
    use axum::{Router, http::StatusCode, routing::get};
    let readiness = sources.readiness.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let sources = sources.clone();
                async move { render(&sources) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        // 200 with what the node runs, or 503 with every condition still missing.
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let Some(readiness) = readiness else {
                        return (StatusCode::OK, "ready\n".to_owned());
                    };
                    match readiness.check().await {
                        Ok(mode) => (StatusCode::OK, format!("ready: {mode}\n")),
                        Err(missing) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready:\n{}\n", missing.join("\n")),
                        ),
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}
