//! The agent's Prometheus metrics on :10665 (Kube-OVN's daemon port): what the datapath's
//! programs decided, per interface and reason, and the datapath's state. Values are read from
//! the maps at scrape time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::datapath::{Datapath, ReadMaps};
use crate::services::ServiceSync;

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

/// Renders the metrics text for the current state (`datapath: None` when it failed to load:
/// the node is on OVS only). A fresh registry per scrape: counters start at 0 and are raised to
/// the values the maps hold.
pub fn render(datapath: Option<&Datapath>) -> String {
    render_with(datapath, None, None)
}

/// [`render`], plus the CNI server's `cni_op_latency_seconds` when the agent serves CNI.
pub fn render_with(
    datapath: Option<&Datapath>,
    cni: Option<&crate::cni_server::CniMetrics>,
    services: Option<&ServiceSync>,
) -> String {
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
            "Current policy generation (bumped when ovn-nb-cfg advances)",
            generation,
        );
        let flows = Gauge::<i64>::default();
        flows.set(dp.flows().map_or(-1, |f| f.len() as i64));
        registry.register("flows", "Learned flows in the flow map", flows);
        if let Some(services) = services {
            register_services(registry, dp, services);
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
fn register_services(registry: &mut Registry, dp: &Datapath, services: &ServiceSync) {
    use crate::datapath::ReadServiceMaps;
    let packets = Family::<ServiceLabels, Counter<u64>>::default();
    let names: HashMap<u32, (String, String)> = services
        .programmed()
        .map(|(key, vip)| {
            let ip = crate::datapath::ip_from_bytes(&key.vip);
            let proto = if key.proto == 6 { "tcp" } else { "udp" };
            let vip_label = format!("{}/{proto}", std::net::SocketAddr::new(ip, key.port));
            (vip.entry.id, (vip.service.clone(), vip_label))
        })
        .collect();
    for c in dp.service_counts().unwrap_or_default() {
        let Some((service, vip)) = names.get(&c.service_id) else {
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
    vips.set(names.len() as i64);
    registry.register("service_vips", "VIPs programmed into the datapath", vips);
    let unprogrammed = Gauge::<i64>::default();
    unprogrammed.set(services.unprogrammed() as i64);
    registry.register(
        "service_vips_unprogrammed",
        "VIPs the services map had no room for; OVN's load balancers serve them",
        unprogrammed,
    );
    let backends = Gauge::<i64>::default();
    backends.set(
        services
            .programmed()
            .map(|(_, v)| v.backends.len() as i64)
            .sum(),
    );
    registry.register(
        "service_backends",
        "Backends programmed into the datapath",
        backends,
    );
    let connections = Gauge::<i64>::default();
    connections.set(dp.lb_connections().map_or(-1, |c| c.len() as i64));
    registry.register(
        "service_connections",
        "Connections pinned to a backend in the LB conntrack map",
        connections,
    );
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
pub async fn serve(
    addr: std::net::SocketAddr,
    datapath: Option<Arc<Mutex<Datapath>>>,
) -> std::io::Result<()> {
    serve_with(addr, datapath, None).await
}

/// [`serve`], with the CNI server's metrics.
pub async fn serve_with(
    addr: std::net::SocketAddr,
    datapath: Option<Arc<Mutex<Datapath>>>,
    cni: Option<Arc<crate::cni_server::CniMetrics>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, datapath, cni, None).await
}

/// Serves on a bound listener (so a taken port fails start-up, not a background task).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    datapath: Option<Arc<Mutex<Datapath>>>,
    cni: Option<Arc<crate::cni_server::CniMetrics>>,
    services: Option<Arc<Mutex<ServiceSync>>>,
) -> std::io::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let datapath = datapath.clone();
                let cni = cni.clone();
                let services = services.clone();
                async move {
                    let guard = datapath
                        .as_ref()
                        .map(|d| d.lock().unwrap_or_else(|e| e.into_inner()));
                    let services = services
                        .as_ref()
                        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
                    render_with(guard.as_deref(), cni.as_deref(), services.as_deref())
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).await
}
