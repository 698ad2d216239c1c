//! Services as kovn balances them: a Service and its EndpointSlices → the VIPs it should have
//! ([`vips`]), and an index of both kept from watch events ([`ServiceIndex`]). The agent
//! programs the VIPs into the eBPF datapath, the controller into OVN's load balancers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use datapath_common::L4Proto;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// One VIP of a Service as the datapath should balance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub ip: IpAddr,
    pub port: u16,
    /// IP protocol number: 6 (TCP), 17 (UDP) or 132 (SCTP).
    pub proto: u8,
    /// sessionAffinity ClientIP and its timeout.
    pub affinity_timeout_s: Option<u32>,
    /// Ready endpoints, sorted (every node builds the same Maglev table from them).
    pub backends: BTreeSet<SocketAddr>,
}

/// `namespace/name` of a Service (the key [`ServiceSync`] groups VIPs by).
pub fn service_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The VIPs `service` should have, given its EndpointSlices. Headless and ExternalName
/// Services have none. A VIP without ready endpoints is kept with no backends: the datapath
/// answers it with ICMP port unreachable, as kube-proxy does.
pub fn vips(service: &Service, slices: &[&EndpointSlice]) -> Vec<Vip> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let affinity_timeout_s = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S)
    });
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(proto) = L4Proto::from_kubernetes(port.protocol.as_deref().unwrap_or("TCP"))
        else {
            continue;
        };
        let proto = proto.number();
        let Ok(vport) = u16::try_from(port.port) else {
            continue;
        };
        for vip in &cluster_ips {
            let backends = slices
                .iter()
                .filter(|s| same_family(&s.address_type, vip))
                .flat_map(|slice| ready_backends(slice, port.name.as_deref(), proto))
                .collect();
            out.push(Vip {
                ip: *vip,
                port: vport,
                proto,
                affinity_timeout_s,
                backends,
            });
        }
    }
    out
}

fn same_family(address_type: &str, vip: &IpAddr) -> bool {
    matches!(
        (address_type, vip),
        ("IPv4", IpAddr::V4(_)) | ("IPv6", IpAddr::V6(_))
    )
}

/// The ready endpoints of one slice for the Service port named `port_name` (EndpointSlice
/// ports carry the Service port's name and the resolved target port).
pub fn ready_backends(
    slice: &EndpointSlice,
    port_name: Option<&str>,
    proto: u8,
) -> Vec<SocketAddr> {
    let protocol = L4Proto::from_number(proto).map_or("SCTP", L4Proto::kubernetes_name);
    let Some(target) = slice.ports.iter().flatten().find(|p| {
        p.name.as_deref().unwrap_or("") == port_name.unwrap_or("")
            && p.protocol.as_deref().unwrap_or("TCP") == protocol
    }) else {
        return Vec::new();
    };
    let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        // Ready unless said otherwise (the API's rule for a missing condition).
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, target_port))
        .collect()
}

/// What the Service and EndpointSlice watches have seen, indexed by Service
/// (`namespace/name`): every event names the one Service it concerns.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    services: HashMap<String, Service>,
    /// Service → slice name → slice.
    slices: HashMap<String, HashMap<String, EndpointSlice>>,
    /// Objects seen since the last relist began (a relist drops what it does not list).
    relisting_services: Option<HashSet<String>>,
    relisting_slices: Option<HashSet<(String, String)>>,
}

fn slice_owner(slice: &EndpointSlice) -> Option<String> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(service_name(
        &slice.namespace().unwrap_or_default(),
        service,
    ))
}

impl ServiceIndex {
    /// Applies a Service watch event; returns the Services it changed.
    pub fn service_event(&mut self, event: watcher::Event<Service>) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        match event {
            watcher::Event::Init => self.relisting_services = Some(HashSet::new()),
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let name = service_name(&s.namespace().unwrap_or_default(), &s.name_any());
                if let Some(seen) = &mut self.relisting_services {
                    seen.insert(name.clone());
                }
                self.services.insert(name.clone(), s);
                dirty.insert(name);
            }
            watcher::Event::Delete(s) => {
                let name = service_name(&s.namespace().unwrap_or_default(), &s.name_any());
                self.services.remove(&name);
                dirty.insert(name);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_services.take() {
                    let gone: Vec<String> = self
                        .services
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.services.remove(&name);
                        dirty.insert(name);
                    }
                }
            }
        }
        dirty
    }

    /// Applies an EndpointSlice watch event; returns the Services it changed.
    pub fn slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        match event {
            watcher::Event::Init => self.relisting_slices = Some(HashSet::new()),
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let Some(owner) = slice_owner(&s) else {
                    return dirty;
                };
                if let Some(seen) = &mut self.relisting_slices {
                    seen.insert((owner.clone(), s.name_any()));
                }
                self.slices
                    .entry(owner.clone())
                    .or_default()
                    .insert(s.name_any(), s);
                dirty.insert(owner);
            }
            watcher::Event::Delete(s) => {
                if let Some(owner) = slice_owner(&s) {
                    if let Some(slices) = self.slices.get_mut(&owner) {
                        slices.remove(&s.name_any());
                    }
                    dirty.insert(owner);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_slices.take() {
                    for (owner, slices) in self.slices.iter_mut() {
                        let before = slices.len();
                        slices.retain(|name, _| seen.contains(&(owner.clone(), name.clone())));
                        if slices.len() != before {
                            dirty.insert(owner.clone());
                        }
                    }
                }
            }
        }
        dirty
    }

    /// Every Service's name (`namespace/name`).
    pub fn service_names(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }

    /// The Service named `service` (`namespace/name`), if it exists.
    pub fn service(&self, service: &str) -> Option<&Service> {
        self.services.get(service)
    }

    /// The names of the pods behind `service`'s endpoints, from the slices' `targetRef`s.
    /// Only pods of the Service's own namespace count (a selector picks no others; a
    /// hand-written slice naming another namespace's pods says nothing about where the
    /// Service lives).
    pub fn endpoint_pods(&self, service: &str) -> BTreeSet<String> {
        let namespace = service.split('/').next().unwrap_or_default();
        self.slices
            .get(service)
            .into_iter()
            .flat_map(HashMap::values)
            .flat_map(|slice| slice.endpoints.iter())
            .filter_map(|e| e.target_ref.as_ref())
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .filter(|r| r.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .filter_map(|r| r.name.clone())
            .collect()
    }

    /// The VIPs `service` should have now (none when it is gone).
    pub fn vips(&self, service: &str) -> Vec<Vip> {
        let Some(svc) = self.services.get(service) else {
            return Vec::new();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(service)
            .map(|s| s.values().collect())
            .unwrap_or_default();
        vips(svc, &slices)
    }
}

/// A watch stream of one kind, as kube-runtime's watcher yields it.
pub type WatchEvents<K> = futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>;

/// The one Service feed of the controller (OVN load balancers) and the agent (eBPF maps):
/// the Service and EndpointSlice watches folded into a [`ServiceIndex`], handing out the
/// Services whose VIPs may have changed. Nothing is handed out before both initial lists are
/// in: a Service seen before its EndpointSlices would look like one without endpoints (a
/// restarted agent would cut established connections, a restarted controller remove VIPs).
pub struct ServiceFeed {
    services: Option<WatchEvents<Service>>,
    slices: Option<WatchEvents<EndpointSlice>>,
    index: ServiceIndex,
    services_listed: bool,
    slices_listed: bool,
    pending: BTreeSet<String>,
}

impl ServiceFeed {
    pub fn new(services: WatchEvents<Service>, slices: WatchEvents<EndpointSlice>) -> ServiceFeed {
        ServiceFeed {
            services: Some(services),
            slices: Some(slices),
            index: ServiceIndex::default(),
            services_listed: false,
            slices_listed: false,
            pending: BTreeSet::new(),
        }
    }

    /// Whether both initial lists are in.
    pub fn listed(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    pub fn index(&self) -> &ServiceIndex {
        &self.index
    }

    /// Waits for the next events, takes every event already waiting with them (a burst of
    /// 10,000 Services is one batch, not 10,000), and returns the Services they concern, once
    /// both initial lists are in (empty before). `None` when both watches have ended.
    /// Cancel-safe: the only wait is for a stream's next item.
    pub async fn next_changes(&mut self) -> Option<BTreeSet<String>> {
        use futures::{FutureExt as _, StreamExt as _};
        if self.services.is_none() && self.slices.is_none() {
            return None;
        }
        let (services, slices) = (&mut self.services, &mut self.slices);
        let next_service = async {
            match services.as_mut() {
                Some(s) => s.next().await,
                None => futures::future::pending().await,
            }
        };
        let next_slice = async {
            match slices.as_mut() {
                Some(s) => s.next().await,
                None => futures::future::pending().await,
            }
        };
        let first = first_of(next_service, next_slice).await;
        self.take(first);
        // Everything already waiting joins this batch, with a pause for the executor every
        // few hundred events: an initial list of 20,000 objects must not hold a runtime
        // worker the CNI server needs. (Cancel-safe still: what was taken is in `self`.)
        let mut taken = 0usize;
        loop {
            taken += 1;
            if taken.is_multiple_of(256) {
                YieldNow(false).await;
            }
            let service = self.services.as_mut().and_then(|s| s.next().now_or_never());
            let took_service = service.is_some();
            if let Some(event) = service {
                self.take(Either::Service(Box::new(event)));
            }
            let slice = self.slices.as_mut().and_then(|s| s.next().now_or_never());
            let took_slice = slice.is_some();
            if let Some(event) = slice {
                self.take(Either::Slice(Box::new(event)));
            }
            if !took_service && !took_slice {
                break;
            }
        }
        if self.listed() {
            Some(std::mem::take(&mut self.pending))
        } else {
            Some(BTreeSet::new())
        }
    }

    fn take(&mut self, event: Either) {
        match event {
            Either::Service(event) => self.take_service(*event),
            Either::Slice(event) => self.take_slice(*event),
        }
    }

    fn take_service(&mut self, event: Next<Service>) {
        match event {
            None => self.services = None,
            Some(Ok(event)) => {
                self.services_listed |= matches!(event, watcher::Event::InitDone);
                let changed = self.index.service_event(event);
                self.pending.extend(changed);
            }
            Some(Err(e)) => tracing_warn("Service watch", &e),
        }
    }

    fn take_slice(&mut self, event: Next<EndpointSlice>) {
        match event {
            None => self.slices = None,
            Some(Ok(event)) => {
                self.slices_listed |= matches!(event, watcher::Event::InitDone);
                let changed = self.index.slice_event(event);
                self.pending.extend(changed);
            }
            Some(Err(e)) => tracing_warn("EndpointSlice watch", &e),
        }
    }
}

type Next<K> = Option<watcher::Result<watcher::Event<K>>>;

/// Returns to the executor once (what `tokio::task::yield_now` does, without tokio here).
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

enum Either {
    Service(Box<Next<Service>>),
    Slice(Box<Next<EndpointSlice>>),
}

/// The first of the two to be ready.
async fn first_of(
    service: impl std::future::Future<Output = Next<Service>>,
    slice: impl std::future::Future<Output = Next<EndpointSlice>>,
) -> Either {
    use futures::future::{Either as E, select};
    let (service, slice) = (std::pin::pin!(service), std::pin::pin!(slice));
    match select(service, slice).await {
        E::Left((event, _)) => Either::Service(Box::new(event)),
        E::Right((event, _)) => Either::Slice(Box::new(event)),
    }
}

fn tracing_warn(what: &str, error: &watcher::Error) {
    tracing::warn!(error = %error, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(extra: serde_json::Value) -> Service {
        let mut spec = json!({
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                {"name": "sctp", "port": 9, "protocol": "SCTP"}
            ]
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_become_backends_per_port_and_protocol() {
        let s = slice(json!([
            {"addresses": ["10.16.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.16.0.6"]},
            {"addresses": ["10.16.0.7"], "conditions": {"ready": false}}
        ]));
        let vips = vips(&service(json!({})), &[&s]);
        assert_eq!(vips.len(), 3, "TCP, UDP and SCTP: {vips:?}");
        assert_eq!(vips[2].proto, 132);
        let http = &vips[0];
        assert_eq!((http.port, http.proto), (80, 6));
        let want: BTreeSet<SocketAddr> = [
            "10.16.0.5:8080".parse().unwrap(),
            "10.16.0.6:8080".parse().unwrap(),
        ]
        .into();
        assert_eq!(http.backends, want, "the not-ready endpoint is left out");
        assert_eq!(vips[1].proto, 17);
        assert!(
            vips[1]
                .backends
                .contains(&"10.16.0.5:5353".parse().unwrap())
        );
        assert_eq!(http.affinity_timeout_s, None);
    }

    #[test]
    fn client_ip_affinity_and_its_timeout() {
        let s = slice(json!([]));
        let with_default = vips(&service(json!({"sessionAffinity": "ClientIP"})), &[&s]);
        assert_eq!(
            with_default[0].affinity_timeout_s,
            Some(DEFAULT_AFFINITY_TIMEOUT_S)
        );
        let with_timeout = vips(
            &service(json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})),
            &[&s],
        );
        assert_eq!(with_timeout[0].affinity_timeout_s, Some(60));
        assert!(
            with_timeout[0].backends.is_empty(),
            "no endpoints: kept, with none"
        );
    }

    #[test]
    fn headless_and_external_name_services_have_no_vips() {
        let s = slice(json!([{"addresses": ["10.16.0.5"]}]));
        assert!(
            vips(
                &service(json!({"clusterIP": "None", "clusterIPs": ["None"]})),
                &[&s]
            )
            .is_empty()
        );
        assert!(
            vips(
                &service(json!({"type": "ExternalName", "clusterIPs": null, "clusterIP": null})),
                &[&s]
            )
            .is_empty()
        );
    }

    #[test]
    fn the_feed_hands_out_nothing_before_both_lists_and_a_burst_as_one_batch() {
        use futures::StreamExt as _;
        let (services_tx, services_rx) = futures::channel::mpsc::unbounded();
        let (slices_tx, slices_rx) = futures::channel::mpsc::unbounded();
        let mut feed = ServiceFeed::new(services_rx.boxed(), slices_rx.boxed());
        let send_service = |e| services_tx.unbounded_send(Ok(e)).unwrap();
        let send_slice = |e| slices_tx.unbounded_send(Ok(e)).unwrap();
        send_service(watcher::Event::Init);
        send_service(watcher::Event::InitApply(service(json!({}))));
        send_service(watcher::Event::InitDone);
        let first = futures::executor::block_on(feed.next_changes()).unwrap();
        assert!(
            first.is_empty(),
            "the Services' list alone handed out {first:?}"
        );
        assert!(!feed.listed());
        send_slice(watcher::Event::Init);
        send_slice(watcher::Event::InitApply(slice(
            json!([{"addresses": ["10.16.0.5"]}]),
        )));
        send_slice(watcher::Event::InitDone);
        let listed = futures::executor::block_on(feed.next_changes()).unwrap();
        assert_eq!(listed, BTreeSet::from(["default/web".to_owned()]));
        assert_eq!(feed.index().vips("default/web")[0].backends.len(), 1);
        // Many events waiting: one batch.
        for i in 0..100 {
            let mut s = service(json!({}));
            s.metadata.name = Some(format!("web{i}"));
            send_service(watcher::Event::Apply(s));
        }
        let burst = futures::executor::block_on(feed.next_changes()).unwrap();
        assert_eq!(burst.len(), 100);
        // Both watches end: the feed says so (after handing out what is left, nothing).
        drop((services_tx, slices_tx));
        let ends = (0..3).find(|_| futures::executor::block_on(feed.next_changes()).is_none());
        assert!(ends.is_some(), "the feed never ended");
    }
}
