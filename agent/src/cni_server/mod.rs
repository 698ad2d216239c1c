//! The CNI server: Kube-OVN's daemon API on a unix socket (mode 0600), which the `kube-ovn`
//! plugin calls for the kubelet. ADD waits for the controller's annotations, builds the pod's
//! interfaces and OVS port, hands the pod to the datapath (or, without one, to the kernel
//! hand-off) and answers with the pod's addresses. DEL undoes all of it, idempotently.

pub mod annotations;
pub mod spares;
pub mod trust;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::Owner;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cni::wire::{CniRequest, CniResponse, ErrorBody, GcRequest, IpConfig, Route};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use ipnet::IpNet;

use crate::datapath::{Datapath, PodInterfaces, install_kernel_handoff, parse_mac};
use crate::local_pod::{AttachmentId, DEFAULT_PROVIDER, LocalPod};
use crate::ovs::pod_port;
use crate::pod_network::{self, NetworkError, PodAddressing, PodLinks, PodRoute, SpareLinks};
use api::annotations::NetworkKeys;

#[derive(Debug, Clone)]
pub struct CniServerConfig {
    pub socket: PathBuf,
    pub node_name: String,
    /// The integration bridge pods' OVS ports join.
    pub bridge: String,
    /// The pods' MTU (the underlay's less the Geneve header).
    pub mtu: u32,
    /// How long ADD waits for the controller's annotations.
    pub annotation_timeout: Duration,
    /// The join subnet (node ports only: no pod is plumbed into it).
    pub join_subnet: String,
    /// The default VPC's name, which a subnet without `vpc` belongs to.
    pub names: api::TopologyNames,
}

/// Why a CNI request failed; each maps to the HTTP status the plugin turns into a CNI code.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("pod {0} not found")]
    PodNotFound(String),
    #[error(
        "pod {pod} has no {missing}=true annotation after {} s: kovn-controller writes it once the pod's address and port are in OVN; is kovn-controller running?",
        waited.as_secs()
    )]
    AnnotationTimeout {
        pod: String,
        missing: String,
        waited: Duration,
    },
    #[error("pod annotation: {0}")]
    BadAnnotation(String),
    #[error("pod {pod}: {reason}")]
    Untrusted {
        pod: String,
        #[source]
        reason: trust::Untrusted,
    },
    #[error("Kubernetes API: {0}")]
    Kubernetes(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("datapath: {0}")]
    Datapath(String),
}

impl IntoResponse for CniError {
    fn into_response(self) -> Response {
        let status = match &self {
            CniError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CniError::PodNotFound(_) => StatusCode::NOT_FOUND,
            CniError::Network(NetworkError::NetnsGone(_)) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            axum::Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Everything the handlers share.
pub struct CniServer {
    pub kube: kube::Client,
    pub ovs: ovsdb::Client,
    pub datapath: Option<Arc<Mutex<Datapath>>>,
    /// Interfaces built ahead of ADDs (with a datapath only: they save its attach time).
    pub spares: Option<Arc<spares::Spares>>,
    /// Serves custom-VPC pods' probes (None with `--enable-tproxy=false`).
    pub probe_proxy: Option<Arc<crate::probe_proxy::ProbeProxy>>,
    pub config: CniServerConfig,
    pub metrics: Arc<CniMetrics>,
}

/// `cni_op_latency_seconds` (Kube-OVN's name and labels: node_name, method, status_code).
pub struct CniMetrics {
    pub latency: prometheus_client::metrics::family::Family<
        OpLabels,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
    pub spares: spares::SpareMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OpLabels {
    pub node_name: String,
    pub method: String,
    pub status_code: String,
}

impl Default for CniMetrics {
    fn default() -> Self {
        CniMetrics::new()
    }
}

impl CniMetrics {
    pub fn new() -> CniMetrics {
        CniMetrics {
            latency: prometheus_client::metrics::family::Family::new_with_constructor(|| {
                prometheus_client::metrics::histogram::Histogram::new(
                    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16),
                )
            }),
            spares: spares::SpareMetrics::default(),
        }
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "cni_op_latency_seconds",
            "Latency of CNI operations, by method and HTTP status",
            self.latency.clone(),
        );
        self.spares.register(registry);
    }
}

type Shared = Arc<CniServer>;

fn observe(server: &CniServer, method: &str, started: Instant, status: StatusCode) {
    server
        .metrics
        .latency
        .get_or_create(&OpLabels {
            node_name: server.config.node_name.clone(),
            method: method.to_owned(),
            status_code: status.as_u16().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
}

/// The router, for serving and for tests.
pub fn router(server: Shared) -> Router {
    Router::new()
        .route("/api/v1/add", post(add))
        .route("/api/v1/del", post(del))
        .route("/api/v1/check", post(check))
        .route("/api/v1/gc", post(gc))
        .route("/api/v1/status", get(status))
        .with_state(server)
}

/// Binds the socket (replacing a stale one, mode 0600) and serves until the task is dropped.
pub async fn serve(server: Shared) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let socket = server.config.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let app = router(server);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "CNI server stopped");
        }
    }))
}

fn parse_request(body: &[u8]) -> Result<CniRequest, CniError> {
    let request: CniRequest = serde_json::from_slice(body)
        .map_err(|e| CniError::BadRequest(format!("not a CNI request: {e}")))?;
    if request.pod_name.is_empty() || request.pod_namespace.is_empty() {
        return Err(CniError::BadRequest(
            "pod_name and pod_namespace are required".into(),
        ));
    }
    if request.container_id.is_empty() {
        return Err(CniError::BadRequest("container_id is required".into()));
    }
    Ok(request)
}

async fn add(State(server): State<Shared>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    let _in_flight = server.spares.as_ref().map(|s| s.add_started());
    let response = match add_pod(&server, &body).await {
        Ok(r) => (StatusCode::OK, axum::Json(r)).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "CNI ADD failed");
            e.into_response()
        }
    };
    observe(&server, "add", started, response.status());
    response
}

async fn add_pod(server: &CniServer, body: &[u8]) -> Result<CniResponse, CniError> {
    let request = parse_request(body)?;
    if request.net_ns.is_empty() {
        return Err(CniError::BadRequest("net_ns is required for ADD".into()));
    }
    let attachment = AttachmentId::new(&request.container_id, &request.if_name);
    let provider = provider_of(&request);
    let keys = NetworkKeys::of(&provider);
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(server.kube.clone(), &request.pod_namespace);
    let pod = annotations::wait_for(
        &pods,
        &request.pod_namespace,
        &request.pod_name,
        server.config.annotation_timeout,
        &keys,
    )
    .await?;
    let annotated = started.elapsed();
    let network = annotations::parse(&pod, &keys)?;
    let owner = Owner::pod_network(&request.pod_namespace, &request.pod_name, &provider);
    let ips: Api<api::IP> = Api::all(server.kube.clone());
    let recorded = ips.get_opt(&owner.port_name()).await.map_err(|e| {
        CniError::Kubernetes(format!("reading IP object {}: {e}", owner.port_name()))
    })?;
    trust::verify(
        &owner,
        &network,
        recorded.as_ref(),
        &server.config.node_name,
        &server.config.join_subnet,
    )
    .map_err(|reason| CniError::Untrusted {
        pod: owner.to_string(),
        reason,
    })?;
    // IPAM only: another plugin (macvlan, …) builds the interface with these addresses.
    if serves_addresses_only(&request, &provider) {
        return Ok(CniResponse {
            ips: ip_configs(&network),
            mac_address: network.mac,
            nic_name: attachment.if_name,
            routes: request.routes,
            ..CniResponse::default()
        });
    }
    let vpc = vpc_of(server, recorded.as_ref()).await?;
    let mac = parse_mac(&network.mac).map_err(CniError::BadAnnotation)?;
    // The default route is the pod's own network's; a secondary one routes its subnet only
    // (the prefix on its address), unless the netconf lists routes.
    let routes: Vec<PodRoute> = if request.routes.is_empty() && LocalPod::is_pod_network(&provider)
    {
        network
            .ips
            .iter()
            .filter_map(|(_, _, gw)| *gw)
            .map(|gateway| PodRoute {
                destination: None,
                gateway,
            })
            .collect()
    } else {
        request
            .routes
            .iter()
            .map(parse_route)
            .collect::<Result<_, _>>()?
    };
    let secondary = !LocalPod::is_pod_network(&provider);
    let addresses = network
        .ips
        .iter()
        .map(|(ip, prefix_len, _)| {
            IpNet::new(*ip, *prefix_len)
                .map_err(|e| CniError::BadAnnotation(format!("{ip}/{prefix_len}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let local = LocalPod {
        namespace: request.pod_namespace.clone(),
        name: request.pod_name.clone(),
        attachment: attachment.clone(),
        addresses: addresses.clone(),
        mac: network.mac.clone(),
        provider: provider.clone(),
        vpc,
        netns: Some(request.net_ns.clone()),
        probe_ports: if secondary {
            Vec::new()
        } else {
            crate::probe_proxy::probe_ports(&pod)
        },
    };
    let addressing = PodAddressing {
        if_name: attachment.if_name.clone(),
        mac,
        mtu: server.config.mtu,
        addresses,
        routes,
    };
    let interfaces = local
        .datapath_interfaces()
        .map_err(CniError::BadAnnotation)?;
    // A spare's peer carries the datapath's delivery program: pods' own networks only.
    let spare = if local.fast_path() {
        server.spares.as_ref().and_then(|s| s.take())
    } else {
        None
    };
    let attached = pod_network::attach(
        &server.ovs,
        &server.config.bridge,
        &local,
        Path::new(&request.net_ns),
        &addressing,
        spare.as_ref(),
        hand_off(server, &local, &interfaces, spare.as_ref()),
    )
    .await;
    if let Err(e) = attached {
        // pod_network removed the interfaces and the port; the datapath's part goes too,
        // with the spare's programs if the failure came before they were taken over.
        let _ = forget(server, &attachment).await;
        if let (Some(datapath), Some(spare)) = (&server.datapath, &spare) {
            datapath
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .discard_spare(&spare.id);
        }
        return Err(e);
    }
    if let Some(proxy) = &server.probe_proxy {
        proxy.register(&local);
    }
    // Where an ADD spends its time, for an operator chasing slow pod starts.
    tracing::debug!(
        pod = %local.owner(),
        annotations_ms = annotated.as_secs_f64() * 1e3,
        network_and_datapath_ms = (started.elapsed() - annotated).as_secs_f64() * 1e3,
        "CNI ADD done"
    );
    Ok(CniResponse {
        ips: ip_configs(&network),
        mac_address: network.mac,
        mtu: server.config.mtu,
        nic_name: attachment.if_name,
        routes: request.routes,
        ..CniResponse::default()
    })
}

/// The provider a request is for: the netconf's, Kube-OVN's default when it names none.
fn provider_of(request: &CniRequest) -> String {
    if request.provider.is_empty() {
        DEFAULT_PROVIDER.to_owned()
    } else {
        request.provider.clone()
    }
}

/// IPAM only: another plugin (macvlan, …) builds the interface with kovn's addresses.
fn serves_addresses_only(request: &CniRequest, provider: &str) -> bool {
    request.cni_type != api::network_attachment::CNI_TYPE
        || !api::AttachmentNetwork::is_ovn_provider(provider)
}

/// The addresses of a network, as the plugin's result lists them.
fn ip_configs(network: &annotations::PodNetwork) -> Vec<IpConfig> {
    network
        .ips
        .iter()
        .map(|(ip, prefix, gw)| IpConfig {
            protocol: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
            ip: ip.to_string(),
            cidr: IpNet::new(*ip, *prefix)
                .map(|n| n.trunc().to_string())
                .unwrap_or_default(),
            gateway: gw.map(|g| g.to_string()).unwrap_or_default(),
        })
        .collect()
}

/// The hand-off of an attachment between its veth and its OVS port: the datapath's for a
/// pod's own network, the kernel's for a secondary attachment (see [`LocalPod::fast_path`]).
async fn hand_off(
    server: &CniServer,
    local: &LocalPod,
    interfaces: &PodInterfaces,
    spare: Option<&SpareLinks>,
) -> Result<(), CniError> {
    if local.fast_path() {
        hand_to_datapath(server, interfaces, spare).await
    } else {
        install_kernel_handoff(interfaces)
            .await
            .map_err(|e| CniError::Datapath(e.to_string()))
    }
}

/// The VPC of the subnet the pod's IP object (verified) records: the address space the
/// datapath keys its addresses in. The Subnet is cluster-scoped and written by operators and
/// the controller, never by a pod's creator. A Subnet that is not there (deleted under its
/// pods) leaves the VPC unknown: the pod is networked, in an address scope of its own (OVS
/// judges all its traffic); an API error fails the ADD, which the kubelet retries.
async fn vpc_of(server: &CniServer, ip: Option<&api::IP>) -> Result<Option<String>, CniError> {
    let subnet = ip.map(|ip| ip.spec.subnet.clone()).unwrap_or_default();
    let subnets: Api<api::Subnet> = Api::all(server.kube.clone());
    let found = subnets
        .get_opt(&subnet)
        .await
        .map_err(|e| CniError::Kubernetes(format!("reading subnet {subnet}: {e}")))?;
    if found.is_none() {
        tracing::warn!(
            subnet,
            "the subnet of the pod's IP object does not exist: its VPC is unknown, so the pod gets no fast path"
        );
    }
    Ok(found.map(|s| server.config.names.router_of(&s)))
}

/// The datapath takes the pod's hand-off; without one, the kernel redirects (slower, never
/// disconnected). The attach blocks in the kernel, so it runs off the runtime's workers; on
/// a spare's interfaces it takes over the programs attached to them already.
async fn hand_to_datapath(
    server: &CniServer,
    pod: &PodInterfaces,
    spare: Option<&SpareLinks>,
) -> Result<(), CniError> {
    match &server.datapath {
        // attach_pod replaces an earlier attachment of the pod (a retried ADD) and any stale
        // pinned link of a re-created interface.
        Some(datapath) => {
            let (datapath, pod) = (datapath.clone(), pod.clone());
            let spare = spare.map(|s| s.id.clone());
            tokio::task::spawn_blocking(move || {
                let mut datapath = datapath.lock().unwrap_or_else(|e| e.into_inner());
                match &spare {
                    Some(spare) => datapath.attach_pod_from_spare(&pod, spare),
                    None => datapath.attach_pod(&pod),
                }
            })
            .await
            .map_err(|e| CniError::Datapath(format!("the attach task failed: {e}")))?
            .map_err(|e| CniError::Datapath(e.to_string()))
        }
        None => install_kernel_handoff(pod)
            .await
            .map_err(|e| CniError::Datapath(e.to_string())),
    }
}

fn parse_route(route: &Route) -> Result<PodRoute, CniError> {
    let gateway = route
        .gateway
        .parse()
        .map_err(|e| CniError::BadRequest(format!("route gateway {:?}: {e}", route.gateway)))?;
    let destination = if route.destination.is_empty() {
        None
    } else {
        // A bare address is a host route.
        let bad = |e: String| CniError::BadRequest(format!("route {:?}: {e}", route.destination));
        Some(match route.destination.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(
                route
                    .destination
                    .parse::<IpAddr>()
                    .map_err(|e| bad(e.to_string()))?,
            ),
        })
    };
    Ok(PodRoute {
        destination,
        gateway,
    })
}

async fn del(State(server): State<Shared>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    let response = match del_pod(&server, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "CNI DEL failed");
            e.into_response()
        }
    };
    observe(&server, "del", started, response.status());
    response
}

async fn del_pod(server: &CniServer, body: &[u8]) -> Result<(), CniError> {
    let request = parse_request(body)?;
    forget(
        server,
        &AttachmentId::new(&request.container_id, &request.if_name),
    )
    .await
}

/// Removes everything of one attachment from the node: its datapath entries (its flows go at
/// once; an unknown attachment is fine, DEL and GC are idempotent), its OVS port and its
/// interfaces. Another sandbox of the same pod (the runtime re-created it, and this DEL came
/// late) keeps everything.
async fn forget(server: &CniServer, attachment: &AttachmentId) -> Result<(), CniError> {
    if let Some(proxy) = &server.probe_proxy {
        proxy.unregister(attachment);
    }
    if let Some(datapath) = &server.datapath {
        let _ = datapath
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove_pod(&attachment.to_string());
    }
    pod_network::detach(&server.ovs, &PodLinks::for_attachment(attachment)).await?;
    Ok(())
}

async fn check(State(server): State<Shared>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    let response = match check_pod(&server, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    };
    observe(&server, "check", started, response.status());
    response
}

/// What ADD built is still there and still matches the pod's annotations.
async fn check_pod(server: &CniServer, body: &[u8]) -> Result<(), CniError> {
    let request = parse_request(body)?;
    let attachment = AttachmentId::new(&request.container_id, &request.if_name);
    let provider = provider_of(&request);
    let keys = NetworkKeys::of(&provider);
    let pods: Api<Pod> = Api::namespaced(server.kube.clone(), &request.pod_namespace);
    let owner = Owner::pod_network(&request.pod_namespace, &request.pod_name, &provider);
    let pod = pods
        .get_opt(&request.pod_name)
        .await
        .map_err(|e| CniError::Kubernetes(e.to_string()))?
        .ok_or_else(|| CniError::PodNotFound(owner.to_string()))?;
    let network = annotations::parse(&pod, &keys)?;
    let if_name = attachment.if_name.as_str();
    if serves_addresses_only(&request, &provider) {
        // IPAM only: the addresses are still the pod's; the interface is the other plugin's.
        return Ok(());
    }
    let links = PodLinks::for_attachment(&attachment);
    let missing: Vec<String> = pod_network::links::present(&links)
        .await?
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        return Err(NetworkError::Check(format!("missing interfaces {missing:?}")).into());
    }
    let owner = owner.port_name();
    let bound = pod_port::bound(&server.ovs, &links.ovs_port);
    if bound.as_ref().and_then(|ids| ids.get("iface-id")) != Some(&owner) {
        return Err(NetworkError::Check(format!(
            "OVS port {} is not bound to {owner}",
            links.ovs_port
        ))
        .into());
    }
    let (mac, _, addresses) =
        pod_network::links::observe_pod_end(Path::new(&request.net_ns), if_name).await?;
    if Some(mac) != parse_mac(&network.mac).ok() {
        return Err(
            NetworkError::Check(format!("{if_name} has another MAC than {}", network.mac)).into(),
        );
    }
    for (ip, prefix, _) in &network.ips {
        if !addresses.contains(&(*ip, *prefix)) {
            return Err(NetworkError::Check(format!("{if_name} lacks {ip}/{prefix}")).into());
        }
    }
    Ok(())
}

async fn gc(State(server): State<Shared>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    let response = match gc_pods(&server, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    };
    observe(&server, "gc", started, response.status());
    response
}

/// Removes the ports (and interfaces) of containers the runtime no longer has.
async fn gc_pods(server: &CniServer, body: &[u8]) -> Result<(), CniError> {
    let request: GcRequest =
        serde_json::from_slice(body).map_err(|e| CniError::BadRequest(e.to_string()))?;
    let valid: std::collections::BTreeSet<AttachmentId> = request
        .valid_attachments
        .iter()
        .map(|a| AttachmentId::new(&a.container_id, &a.if_name))
        .collect();
    for (port, pod) in pod_port::kovn_ports(&server.ovs) {
        if valid.contains(&pod.attachment) {
            continue;
        }
        tracing::info!(%port, attachment = %pod.attachment, owner = %pod.owner(), "garbage-collecting a pod whose container is gone");
        forget(server, &pod.attachment).await?;
    }
    // Kube-OVN's ports record no container: their name is its first 12 characters.
    for (port, owner) in pod_port::kube_ovn_ports(&server.ovs) {
        let stem = port.strip_suffix("_h").unwrap_or(&port);
        if valid.iter().any(|a| a.container_id.starts_with(stem)) {
            continue;
        }
        tracing::info!(%port, %owner, "garbage-collecting a Kube-OVN pod port whose container is gone");
        forget_kube_ovn_port(server, &port).await?;
    }
    Ok(())
}

/// Removes a pod port Kube-OVN's daemon plugged, and its veth.
async fn forget_kube_ovn_port(server: &CniServer, port: &str) -> Result<(), CniError> {
    let stem = port.strip_suffix("_h").unwrap_or(port);
    pod_network::detach(&server.ovs, &PodLinks::for_container(stem)).await?;
    Ok(())
}

/// Removes the network of pods on this node that the API no longer has (a DEL that never
/// came: the kubelet or the agent was down when the pod went). Returns how many were removed.
pub async fn collect_garbage(server: &CniServer) -> Result<usize, CniError> {
    let pods: Api<Pod> = Api::all(server.kube.clone());
    let on_node = pods
        .list(
            &kube::api::ListParams::default()
                .fields(&format!("spec.nodeName={}", server.config.node_name)),
        )
        .await
        .map_err(|e| CniError::Kubernetes(format!("listing this node's pods: {e}")))?;
    let alive: std::collections::BTreeSet<Owner> =
        on_node.items.iter().map(Owner::of_pod).collect();
    let mut removed = 0;
    for (port, pod) in pod_port::kovn_ports(&server.ovs) {
        if alive.contains(&pod.pod()) {
            continue;
        }
        tracing::info!(%port, owner = %pod.owner(), "garbage-collecting the network of a pod that is gone");
        forget(server, &pod.attachment).await?;
        removed += 1;
    }
    for (port, owner) in pod_port::kube_ovn_ports(&server.ovs) {
        if alive.contains(&owner) {
            continue;
        }
        tracing::info!(%port, %owner, "garbage-collecting a Kube-OVN pod port whose pod is gone");
        forget_kube_ovn_port(server, &port).await?;
        removed += 1;
    }
    Ok(removed)
}

async fn status(State(server): State<Shared>) -> Response {
    if server.ovs.is_connected() {
        StatusCode::OK.into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ErrorBody {
                error: "not connected to the node's Open_vSwitch database".into(),
            }),
        )
            .into_response()
    }
}
