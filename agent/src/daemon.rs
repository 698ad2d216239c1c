//! `kovn-agent daemon`: the node agent as the DaemonSet runs it. It connects to the
//! Kubernetes API and the node's Open_vSwitch database, loads the eBPF datapath (or, when it
//! cannot, keeps the node on OVS with the kernel hand-off and says so in metrics), follows the
//! node's installed NB config to invalidate the fast path, and serves CNI on its socket and
//! metrics on :10665. Stopping leaves the datapath and every pod running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use crate::cni_server::spares::Spares;
use crate::cni_server::{self, CniMetrics, CniServer, CniServerConfig};
use crate::datapath::invalidation;
use crate::datapath::{Datapath, DatapathStats, LoadOptions, load_or_stay_on_ovs};
use crate::metrics::MetricsSources;
use crate::ovs::{self, pod_port};
use crate::probe_proxy::ProbeProxy;
use crate::readiness::{DatapathMode, Readiness};
use crate::services::ServiceSync;
use crate::split_uplink;

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonOptions {
    /// This node's name (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "KUBE_NODE_NAME")]
    pub node_name: String,
    /// Where the `kube-ovn` CNI plugin finds the agent.
    #[arg(long, default_value = cni::wire::DEFAULT_SOCKET)]
    pub cni_socket: PathBuf,
    /// The node's Open_vSwitch database.
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    pub ovs_db: String,
    #[arg(long, default_value = "br-int")]
    pub bridge: String,
    /// Pod MTU; 0 (the default): the tunnel interface's MTU less the encapsulation's
    /// overhead (Geneve 100, VXLAN 50, STT 72), as Kube-OVN derives it (see [`crate::tunnel`]).
    #[arg(long, default_value_t = 0)]
    pub mtu: u32,
    /// The tunnel interface: names or regular expressions, comma-separated, the first that
    /// names a link wins (Kube-OVN's `--iface`). The node annotation
    /// `ovn.kubernetes.io/tunnel_interface` overrides it. Empty: the interface holding
    /// `--encap-ip`, else the default route's.
    #[arg(long, default_value = "")]
    pub iface: String,
    /// Checksums in the tunnel's outer UDP header (Kube-OVN's `--encap-checksum`,
    /// `ovn-encap-csum`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub encap_checksum: bool,
    /// How long a CNI ADD waits for the controller's annotations (seconds).
    #[arg(long, default_value_t = 30)]
    pub annotation_timeout: u64,
    #[arg(long, default_value = crate::metrics::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// Keep pods on OVS (kernel hand-off) without loading the eBPF datapath.
    #[arg(long)]
    pub no_datapath: bool,
    /// How often a fast-pathed flow sends a packet through OVS to be re-judged (ms). A flow
    /// whose re-judged packet OVS does not deliver within half of this leaves the fast path,
    /// so a revocation by any NB writer ends it within 1.5× this of OVS enforcing it.
    #[arg(long, default_value_t = datapath_common::DEFAULT_REFRESH_NS / 1_000_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub fast_path_refresh_ms: u64,
    /// The fast path across nodes: a pod's flow to another node leaves with the encapsulation
    /// OVS gave it (sending side), and one from another node goes straight into the pod once
    /// OVS delivered it (receiving side; a NIC OVS's userspace datapath reads is split out of
    /// its bridge for it). On by default; `--cross-node-fast-path=false` leaves cross-node
    /// traffic to OVS (the encapsulations are learned either way).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub cross_node_fast_path: bool,
    /// Where maps and links are pinned; a restart adopts what is there.
    #[arg(long, default_value = "/sys/fs/bpf/kovn")]
    pub pin_dir: PathBuf,
    #[arg(long)]
    pub object: Option<PathBuf>,
    /// How often the network of pods the API no longer has is removed (seconds).
    #[arg(long, default_value_t = 60)]
    pub gc_interval: u64,
    /// Pod interfaces kept built ahead of ADDs, with the datapath attached (an ADD that takes
    /// one does not wait for the kernel's attach); 0 builds each pod's at its ADD.
    #[arg(long, default_value_t = 8)]
    pub spare_interfaces: usize,
    /// OVN Southbound for this node's ovn-controller (e.g. tcp:10.0.0.1:6642). When given,
    /// the agent writes the chassis settings into the node's Open_vSwitch row, as Kube-OVN's
    /// ovs-ovn does; when not, it leaves them to whoever set up OVS.
    #[arg(long)]
    pub ovn_remote: Option<String>,
    /// `geneve` (the default), `vxlan` or `stt`.
    #[arg(long, default_value = "geneve")]
    pub encap_type: String,
    /// The node's tunnel endpoint address.
    #[arg(long, env = "POD_IP")]
    pub encap_ip: Option<String>,
    /// `netdev` for OVS's userspace datapath.
    #[arg(long)]
    pub datapath_type: Option<String>,
    /// Entries of the eBPF services map (one per VIP, port and protocol), as Cilium's
    /// `--bpf-lb-service-map-max`. VIPs beyond it are balanced by OVN's load balancers and
    /// counted in `kovn_datapath_service_vips_unprogrammed`. A changed value takes effect at
    /// the agent's next start: the pinned map of the old size is created anew and refilled.
    #[arg(long, default_value_t = datapath_common::SERVICES_MAX_ENTRIES)]
    pub bpf_lb_service_map_max: u32,
    /// The default VPC's router and the join subnet, as the controller was told them.
    #[command(flatten)]
    pub names: api::TopologyNames,
    /// The Service CIDR, routed from the node through ovn0 like the pod subnets.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// Serve the kubelet's TCP and HTTP probes of custom-VPC pods through a transparent proxy
    /// (Kube-OVN's `--enable-tproxy`; on by default here: without it those probes fail).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_tproxy: bool,
}

/// The tunnel this node uses: the flags, this Node's `ovn.kubernetes.io/tunnel_interface`
/// annotation (read once at start; without API access to it, the flags alone) and its links.
async fn tunnel_of(
    kube: &kube::Client,
    options: &DaemonOptions,
) -> anyhow::Result<crate::tunnel::TunnelPlan> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(kube.clone());
    let annotation = match nodes.get_opt(&options.node_name).await {
        Ok(node) => node.and_then(|n| {
            n.metadata
                .annotations
                .and_then(|a| a.get(crate::tunnel::TUNNEL_INTERFACE_ANNOTATION).cloned())
        }),
        Err(e) => {
            tracing::warn!(error = %e, "this Node's tunnel_interface annotation not read");
            None
        }
    };
    let links = crate::tunnel::node_links()
        .await
        .map_err(|e| anyhow::anyhow!("reading this node's links for the tunnel: {e}"))?;
    crate::tunnel::plan(
        &options.encap_type,
        &options.iface,
        annotation.as_deref(),
        options.encap_ip.as_deref(),
        options.mtu,
        &links,
    )
    .map_err(|e| anyhow::anyhow!(e))
}

fn load_datapath(options: &DaemonOptions) -> Option<Datapath> {
    if options.no_datapath {
        tracing::warn!("--no-datapath: pods use OVS through the kernel hand-off");
        return None;
    }
    let mut datapath = load_or_stay_on_ovs(
        options.object.clone(),
        &LoadOptions {
            pin_dir: Some(options.pin_dir.clone()),
            log_level: None,
            services_max_entries: Some(options.bpf_lb_service_map_max),
        },
    )?;
    let config = datapath_common::DatapathConfig {
        refresh_ns: options.fast_path_refresh_ms * 1_000_000,
        ..datapath_common::DatapathConfig::default()
    };
    if let Err(e) = datapath.set_config(&config) {
        tracing::error!(error = %e, "writing the datapath's settings; pods stay on OVS");
        return None;
    }
    if let Err(e) = datapath.set_cross_node(options.cross_node_fast_path) {
        tracing::error!(error = %e, "writing the cross-node switch; pods stay on OVS");
        return None;
    }
    if let Err(e) = datapath.set_default_vpc(&options.names.cluster_router) {
        tracing::error!(error = %e, "writing the default VPC's scope; pods stay on OVS");
        return None;
    }
    Some(datapath)
}

/// The tunnel observer on every NIC the node's tunnels leave through: the datapath learns how
/// OVS encapsulated its pods' flows to other nodes. Passive; without it (no tunnel interface,
/// an attach error) cross-node traffic is OVS's alone. With the cross-node fast path on, the
/// receive side too: what arrives on the NIC may go straight into a pod, and a NIC that OVS's
/// userspace datapath reads is split first (crate::split_uplink).
async fn observe_tunnels(
    ovs: &ovsdb::Client,
    datapath: &mut Datapath,
    interface: Option<&str>,
    cross_node: bool,
) {
    let Some(interface) = interface else {
        tracing::info!("no tunnel interface: cross-node flows are not observed");
        return;
    };
    for nic in ovs::egress_nics(ovs, interface) {
        match datapath.attach_tunnel_observer(&nic) {
            Ok(()) => tracing::info!(%nic, tunnel = interface, "tunnel observer attached"),
            Err(e) => {
                tracing::warn!(%nic, error = %e, "tunnel observer not attached: cross-node flows of this NIC are not learned")
            }
        }
        if cross_node {
            match serve_arrivals(ovs, datapath, interface, &nic).await {
                Ok(split) => tracing::info!(%nic, split, "receive fast path attached"),
                Err(e) => {
                    tracing::warn!(%nic, error = %e, "receive fast path not attached: what arrives on this NIC is OVS's alone")
                }
            }
        }
    }
}

/// Attaches the receive side to `nic`; splits it first when `bridge` is a userspace-datapath
/// bridge holding it (OVS reads it with AF_PACKET). Returns whether it is split.
async fn serve_arrivals(
    ovs: &ovsdb::Client,
    datapath: &mut Datapath,
    bridge: &str,
    nic: &str,
) -> anyhow::Result<bool> {
    let uplink = split_uplink::SplitUplink::of(nic);
    let read_by_ovs = ovs::bridge(ovs, bridge).is_ok_and(|b| b.datapath_type == "netdev")
        && split_uplink::state(ovs, &uplink).is_some();
    if !read_by_ovs {
        datapath.attach_uplink(nic, None)?;
        return Ok(false);
    }
    split_uplink::prepare(&uplink).await?;
    datapath.attach_uplink(nic, Some(&uplink.pair))?;
    if let Err(e) = split_uplink::swap_in(ovs, bridge, &uplink).await {
        // OVS still reads the NIC: nothing may be delivered beside it.
        datapath.unpair_uplink(nic)?;
        return Err(e.into());
    }
    Ok(true)
}

/// After a restart: the pods this node's OVS still has are attached again, which adopts their
/// pinned links (no window without the fast path) and lets DEL and GC purge them later.
fn readopt_pods(ovs: &ovsdb::Client, datapath: &mut Datapath) {
    let mut adopted = 0;
    for (port, pod) in pod_port::kovn_ports(ovs) {
        // A secondary attachment keeps its kernel hand-off (tc filters outlive the agent).
        if !pod.fast_path() {
            continue;
        }
        let interfaces = match pod.datapath_interfaces() {
            Ok(interfaces) => interfaces,
            Err(e) => {
                tracing::warn!(%port, error = %e, "a pod port without a usable record: left to garbage collection");
                continue;
            }
        };
        match datapath.attach_pod(&interfaces) {
            Ok(()) => adopted += 1,
            // Its interfaces are gone (the sandbox went while no agent ran): GC removes it.
            Err(e) => tracing::info!(%port, owner = %pod.owner(), error = %e, "not re-adopted"),
        }
    }
    if adopted > 0 {
        tracing::info!(pods = adopted, "re-adopted the pods already on this node");
    }
}

/// The datapath's tasks, each with its own map handles: invalidation and flow GC, and
/// ClusterIP balancing (without it OVN's load balancers serve the VIPs). Returns what metrics
/// read.
fn start_datapath_tasks(
    ovs: &ovsdb::Client,
    datapath: &Datapath,
    default_vpc: String,
) -> Result<MetricsSources, crate::datapath::DatapathError> {
    let stats = Arc::new(DatapathStats::default());
    invalidation::spawn_upkeep(datapath, Some(ovs.clone()), stats.clone())?;
    let maps = datapath.service_maps()?;
    let scope = crate::services::ServiceScope(datapath.default_scope());
    let adopted = ServiceSync::adopt(&maps, scope).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not read the pinned service maps; starting afresh");
        ServiceSync::in_scope(scope)
    });
    let summary = Arc::new(Mutex::new(adopted.summary()));
    // On a thread and runtime of its own at background priority: decoding an initial list of
    // 20,000 Services and EndpointSlices, and staging them, must not take the CNI server's
    // runtime workers or CPU from pod networking.
    let published = summary.clone();
    let spawned = std::thread::Builder::new()
        .name("kovn-services".into())
        .spawn(move || {
            let _background = crate::services::BackgroundPriority::enter();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "no runtime for the Service balancer; OVN's load balancers serve the VIPs");
                    return;
                }
            };
            runtime.block_on(async move {
                // Its own client: connections belong to the runtime that made them.
                match kube::Client::try_default().await {
                    Ok(kube) => {
                        crate::services::run(kube, maps, adopted, published, default_vpc).await
                    }
                    Err(e) => tracing::error!(error = %e, "the Service balancer has no API access; OVN's load balancers serve the VIPs"),
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "no thread for the Service balancer; OVN's load balancers serve the VIPs");
    }
    Ok(MetricsSources {
        datapath: Some(Arc::new(Mutex::new(datapath.reader()?))),
        stats: Some(stats),
        services: Some(summary),
        ..MetricsSources::default()
    })
}

pub async fn run(mut options: DaemonOptions) -> anyhow::Result<()> {
    let kube = kube::Client::try_default()
        .await
        .context("no Kubernetes API access (in-cluster config or KUBECONFIG)")?;
    let tunnel = tunnel_of(&kube, &options).await?;
    tracing::info!(
        encap = tunnel.encap.as_str(),
        interface = ?tunnel.interface,
        encap_ip = ?tunnel.encap_ip,
        pod_mtu = tunnel.pod_mtu,
        "tunnel"
    );
    options.mtu = tunnel.pod_mtu;
    // One client to the node's Open_vSwitch database for everything the agent does there.
    let ovs = ovs::connect(&options.ovs_db).await?;
    if let Some(ovn_remote) = &options.ovn_remote {
        ovs::chassis::configure(
            &ovs,
            &ovs::chassis::OvnChassisSettings {
                ovn_remote: ovn_remote.clone(),
                encap_type: tunnel.encap.as_str().to_owned(),
                encap_ip: tunnel.encap_ip.clone(),
                encap_checksum: options.encap_checksum,
                default_system_id: options.node_name.clone(),
                hostname: options.node_name.clone(),
                datapath_type: options.datapath_type.clone(),
            },
        )
        .await
        .context("configuring this node's chassis in Open vSwitch")?;
    }
    // Fast-pathed TCP must still close, and recover after a policy change, through OVS.
    ovs::conntrack::spawn(ovs.clone(), &options.ovs_db, options.bridge.clone());
    let readiness = Arc::new(Readiness::default());
    let mut datapath = load_datapath(&options);
    readiness.datapath_settled(if datapath.is_some() {
        DatapathMode::Ebpf
    } else {
        DatapathMode::OvsOnly
    });
    let mut sources = MetricsSources::default();
    let from_kube_ovn = pod_port::kube_ovn_ports(&ovs);
    if !from_kube_ovn.is_empty() {
        tracing::info!(
            pods = from_kube_ovn.len(),
            "pods plugged by Kube-OVN's daemon adopted: they stay on OVS (their veth is an OVS port, so no fast path); DEL and garbage collection remove them"
        );
    }
    if let Some(datapath) = datapath.as_mut() {
        readopt_pods(&ovs, datapath);
        observe_tunnels(
            &ovs,
            datapath,
            tunnel.interface.as_deref(),
            options.cross_node_fast_path,
        )
        .await;
        // Each concern gets its own handle on the maps (datapath/handles.rs): the CNI server
        // keeps the datapath itself, and nothing else takes it.
        let started = start_datapath_tasks(&ovs, datapath, options.names.cluster_router.clone());
        match started {
            Ok(started) => sources = started,
            Err(e) => tracing::error!(error = %e, "the datapath's upkeep did not start"),
        }
    }
    // ovn0 and the node's routes, once the controller has given the node its join port.
    let service_cidr = options
        .service_cluster_ip_range
        .parse::<ipnet::IpNet>()
        .with_context(|| {
            format!(
                "--service-cluster-ip-range {:?} is not a CIDR",
                options.service_cluster_ip_range
            )
        })?
        .trunc();
    tokio::spawn({
        let (kube, ovs) = (kube.clone(), ovs.clone());
        let config = crate::node_setup::NodeSetupConfig {
            node_name: options.node_name.clone(),
            bridge: options.bridge.clone(),
            mtu: options.mtu,
            service_cidr: Some(service_cidr),
            names: options.names.clone(),
        };
        let readiness = readiness.clone();
        async move {
            if let Err(e) = crate::node_setup::run(kube, ovs, config, &readiness).await {
                tracing::error!(error = %e, "node setup (ovn0, routes) failed");
            }
        }
    });
    // Provider bridges: ProviderNetworks, and the default external network on the nodes its
    // ConfigMap names.
    tokio::spawn(crate::provider_networks::run(
        kube.clone(),
        ovs.clone(),
        options.node_name.clone(),
        options.datapath_type.clone(),
    ));
    let metrics = Arc::new(CniMetrics::new());
    let metrics_listener = tokio::net::TcpListener::bind(options.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", options.metrics_addr))?;
    sources.cni = Some(metrics.clone());
    sources.readiness = Some(readiness.clone());
    tokio::spawn(crate::metrics::serve_on(metrics_listener, sources));
    let datapath = datapath.map(|d| Arc::new(Mutex::new(d)));
    let spares = match &datapath {
        Some(datapath) if options.spare_interfaces > 0 => {
            let spares = Spares::new(options.spare_interfaces, metrics.spares.clone());
            spares.start(datapath.clone(), options.mtu).await;
            Some(spares)
        }
        _ => None,
    };
    let probe_proxy = options.enable_tproxy.then(|| {
        let proxy = Arc::new(ProbeProxy::new(&options.names.cluster_router));
        // The pods of an earlier agent keep their probes served.
        for (_, pod) in pod_port::kovn_ports(&ovs) {
            proxy.register(&pod);
        }
        tokio::spawn({
            let proxy = proxy.clone();
            async move {
                if let Err(e) = crate::probe_proxy::serve(proxy).await {
                    tracing::error!(error = %e, "custom-VPC pods' probes cannot be served");
                }
            }
        });
        proxy
    });
    let server = Arc::new(CniServer {
        kube,
        ovs,
        datapath,
        spares,
        probe_proxy,
        config: CniServerConfig {
            socket: options.cni_socket.clone(),
            node_name: options.node_name.clone(),
            bridge: options.bridge.clone(),
            mtu: options.mtu,
            annotation_timeout: Duration::from_secs(options.annotation_timeout),
            join_subnet: options.names.join_subnet.clone(),
            names: options.names.clone(),
        },
        metrics,
    });
    tokio::spawn({
        let server = server.clone();
        let every = Duration::from_secs(options.gc_interval.max(1));
        async move {
            loop {
                tokio::time::sleep(every).await;
                match cni_server::collect_garbage(&server).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "garbage collection"),
                    Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                }
            }
        }
    });
    let _cni = cni_server::serve(server)
        .await
        .with_context(|| format!("cannot serve CNI on {}", options.cni_socket.display()))?;
    readiness.cni_serving(options.cni_socket.clone());
    tracing::info!(socket = %options.cni_socket.display(), node = %options.node_name, "serving CNI");
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping; pods and the datapath keep running");
    Ok(())
}
