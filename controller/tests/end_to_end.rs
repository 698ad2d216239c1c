//! The whole controller against a real OVN NB + SB + ovn-northd, with Kubernetes played by the
//! in-memory API stand-in (objects reach the controller through reflector stores and
//! `Controller::for_stream`; its writes go through a real `kube::Client`):
//! - pods in three subnets get addresses, ports, IP objects and Kube-OVN's annotations, nodes
//!   their join ports; `ovn-trace` delivers pod to pod in one subnet and across subnets, and
//!   drops traffic into a private subnet unless `allowSubnets` lets it in;
//! - an overlapping Subnet gets `Validated=False` and an event, and nothing else changes;
//! - a deleted pod's port, IP object and address are released, with nb_cfg bumped;
//! - a controller killed mid-reconcile is replaced by one that converges with no address
//!   handed out twice;
//! - metrics (Kube-OVN's subnet gauges, reconcile and NB transaction counts) and the probes;
//! - a deleted Subnet is cleaned from NB through its finalizer; a custom VPC gets its own
//!   router, routes and subnet, and deleting it removes the router.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{IP, Subnet, SubnetSpec, annotations};
use controller::context::Settings;
use controller::metrics::Metrics;
use controller::run::{Inputs, run};
use controller::topology;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodSpec};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use ovsdb::Model;
use ovsdb::models::ovn_northbound::{
    LoadBalancer, LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, LogicalSwitch,
    LogicalSwitchPort, NbGlobal,
};
use sandbox::StandaloneDb;
use sandbox::kube_api::FakeApi;

struct Northd(Child);

impl Drop for Northd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Ovn {
    nb: StandaloneDb,
    sb: StandaloneDb,
    _northd: Northd,
}

fn start_ovn() -> Ovn {
    let nb = StandaloneDb::start("/usr/share/ovn/ovn-nb.ovsschema").expect("NB");
    let sb = StandaloneDb::start("/usr/share/ovn/ovn-sb.ovsschema").expect("SB");
    let init = Command::new("ovn-nbctl")
        .args([&format!("--db={}", nb.remote()), "--no-wait", "init"])
        .status()
        .expect("ovn-nbctl");
    assert!(init.success());
    // One directory per northd: tests of this file run in parallel in one process, and a
    // second northd on the same unixctl socket would not run (its SB stays empty).
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("kovn-northd-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let northd = Command::new("ovn-northd")
        .arg(format!("--ovnnb-db={}", nb.remote()))
        .arg(format!("--ovnsb-db={}", sb.remote()))
        .arg(format!("--unixctl={}", dir.join("northd.ctl").display()))
        .arg(format!("--log-file={}", dir.join("northd.log").display()))
        .arg("--no-chdir")
        .env("OVN_RUNDIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ovn-northd");
    Ovn {
        nb,
        sb,
        _northd: Northd(northd),
    }
}

async fn nb_client(ovn: &Ovn) -> ovsdb::Client {
    ovsdb::Client::connect(topology::nb_client_config(&[&ovn.nb.remote()]))
        .await
        .expect("NB client")
}

fn inputs(api: &FakeApi) -> Inputs {
    Inputs {
        pods: api.watch::<Pod>().boxed(),
        namespaces: api.watch::<Namespace>().boxed(),
        nodes: api.watch::<Node>().boxed(),
        subnets: api.watch::<Subnet>().boxed(),
        vpcs: api.watch::<api::Vpc>().boxed(),
        ips: api.watch::<IP>().boxed(),
        services: api.watch::<k8s_openapi::api::core::v1::Service>().boxed(),
        endpoint_slices: api
            .watch::<k8s_openapi::api::discovery::v1::EndpointSlice>()
            .boxed(),
        network_policies: api
            .watch::<k8s_openapi::api::networking::v1::NetworkPolicy>()
            .boxed(),
        vlans: api.watch::<api::Vlan>().boxed(),
        provider_networks: api.watch::<api::ProviderNetwork>().boxed(),
        external_gateway: api.watch::<k8s_openapi::api::core::v1::ConfigMap>().boxed(),
        ovn_eips: api.watch::<api::OvnEip>().boxed(),
        ovn_fips: api.watch::<api::OvnFip>().boxed(),
        ovn_snat_rules: api.watch::<api::OvnSnatRule>().boxed(),
        ovn_dnat_rules: api.watch::<api::OvnDnatRule>().boxed(),
        vpc_nat_gateways: api.watch::<api::VpcNatGateway>().boxed(),
        iptables_eips: api.watch::<api::IptablesEIP>().boxed(),
        iptables_fip_rules: api.watch::<api::IptablesFIPRule>().boxed(),
        iptables_snat_rules: api.watch::<api::IptablesSnatRule>().boxed(),
        iptables_dnat_rules: api.watch::<api::IptablesDnatRule>().boxed(),
    }
}

fn start_controller(
    api: &FakeApi,
    nb: ovsdb::Client,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    start_controller_with(api, nb, metrics, Settings::default())
}

fn start_controller_with(
    api: &FakeApi,
    nb: ovsdb::Client,
    metrics: Arc<Metrics>,
    settings: Settings,
) -> tokio::task::JoinHandle<()> {
    let api = api.clone();
    tokio::spawn(async move {
        let r = run(api.client(), nb, settings, metrics, inputs(&api), 8).await;
        if let Err(e) = r {
            panic!("controller stopped: {e:#}");
        }
    })
}

fn pod(name: &str, namespace: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn namespace(name: &str, subnet: Option<&str>) -> Namespace {
    let mut ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    if let Some(s) = subnet {
        ns.metadata.annotations = Some(BTreeMap::from([(
            annotations::NAMESPACE_LOGICAL_SWITCH.to_owned(),
            s.to_owned(),
        )]));
    }
    ns
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn subnet(name: &str, cidr: &str, created: &str) -> Subnet {
    let mut s = Subnet::new(
        name,
        SubnetSpec {
            cidr_block: cidr.into(),
            ..SubnetSpec::default()
        },
    );
    s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        created.parse().unwrap(),
    ));
    s
}

/// Polls `check` until it holds or `limit` passes.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn routed(api: &FakeApi) -> BTreeMap<String, BTreeMap<String, String>> {
    api.all::<Pod>()
        .into_iter()
        .filter(|p| p.annotations().get(annotations::ROUTED).map(String::as_str) == Some("true"))
        .map(|p| {
            (
                format!("{}.{}", p.name_any(), p.namespace().unwrap_or_default()),
                p.annotations().clone(),
            )
        })
        .collect()
}

fn ports(client: &ovsdb::Client) -> BTreeMap<String, LogicalSwitchPort> {
    client.read(topology::owned_ports)
}

fn nb_cfg(client: &ovsdb::Client) -> i64 {
    client.read(|c| c.table(NbGlobal::TABLE).unwrap().typed::<NbGlobal>()[0].nb_cfg)
}

/// Every pod's annotation, IP object and NB port agree, and no address is held twice.
///
/// `client` is the test's own NB connection: the controller's `routed=true` proves the port is
/// in NB, not that this second connection's cache has received the update yet, so wait for it.
async fn assert_consistent(api: &FakeApi, client: &ovsdb::Client) {
    let pods = routed(api);
    client
        .wait_until(Duration::from_secs(10), |cache| {
            let ports = topology::owned_ports(cache);
            pods.keys().all(|owner| ports.contains_key(owner))
        })
        .await
        .expect("every routed pod's port reaches the test's NB cache");
    let ips: BTreeMap<String, IP> = api
        .all::<IP>()
        .into_iter()
        .map(|i| (i.name_any(), i))
        .collect();
    let ports = ports(client);
    let mut seen = BTreeSet::new();
    for (owner, ann) in &pods {
        let address = &ann[annotations::IP_ADDRESS];
        let mac = &ann[annotations::MAC_ADDRESS];
        assert!(seen.insert(address.clone()), "{address} handed out twice");
        assert_eq!(&ips[owner].spec.ip_address, address, "IP object of {owner}");
        assert_eq!(
            ports[owner].addresses,
            vec![format!("{mac} {address}")],
            "NB port of {owner}"
        );
    }
    let mut nb_seen = BTreeSet::new();
    for (name, port) in ports.iter().filter(|(_, p)| p.r#type != "router") {
        assert!(
            nb_seen.insert(port.addresses.clone()),
            "NB port {name} repeats {:?}",
            port.addresses
        );
    }
}

/// Whether `table` has a row named `name`.
fn has_row<M: ovsdb::Model>(cache: &ovsdb::Cache, name: &str) -> bool {
    cache
        .table(M::TABLE)
        .is_some_and(|t| t.rows().any(|r| r.string("name") == Some(name)))
}

/// A GET over a fresh connection: (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn trace(ovn: &Ovn, switch: &str, flow: &str) -> String {
    let out = Command::new("ovn-trace")
        .arg(format!("--db={}", ovn.sb.remote()))
        // A new connection at every conntrack step: the ACL verdict shows as `drop;`.
        .args(["--ct=new", "--ct=new", "--ct=new", "--ct=new"])
        .args([switch, flow])
        .output()
        .expect("ovn-trace");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `ovn-trace` of a TCP packet from pod `from` to pod `to`; true if it is delivered to `to`.
fn delivered(
    ovn: &Ovn,
    pods: &BTreeMap<String, BTreeMap<String, String>>,
    from: &str,
    to: &str,
) -> (bool, String) {
    let src = &pods[from];
    let dst = &pods[to];
    let same = src[annotations::LOGICAL_SWITCH] == dst[annotations::LOGICAL_SWITCH];
    let gw: std::net::IpAddr = src[annotations::GATEWAY].parse().unwrap();
    let eth_dst = if same {
        dst[annotations::MAC_ADDRESS].clone()
    } else {
        topology::mac_for(gw)
    };
    let flow = format!(
        "inport == \"{from}\" && eth.src == {} && eth.dst == {eth_dst} && ip4.src == {} && ip4.dst == {} && ip.ttl == 64 && tcp && tcp.src == 40000 && tcp.dst == 80",
        src[annotations::MAC_ADDRESS],
        src[annotations::IP_ADDRESS],
        dst[annotations::IP_ADDRESS],
    );
    let out = trace(ovn, &src[annotations::LOGICAL_SWITCH], &flow);
    (
        out.contains(&format!("output(\"{to}\")")) || out.contains(&format!("output to \"{to}\"")),
        out,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_subnets_and_nodes_become_ovn_topology_that_ovn_trace_confirms() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,kube=warn")
        .with_test_writer()
        .try_init();
    let ovn = start_ovn();
    let api = FakeApi::new();
    api.put(&namespace("default", None));
    api.put(&namespace("tenant-ns", Some("tenant")));
    api.put(&namespace("secure-ns", Some("secure")));
    api.put(&node("n1"));
    api.put(&node("n2"));
    api.put(&subnet("tenant", "10.20.0.0/16", "2026-01-01T00:00:01Z"));
    let mut secure = subnet("secure", "10.30.0.0/16", "2026-01-01T00:00:02Z");
    secure.spec.private = true;
    secure.spec.allow_subnets = vec!["10.20.0.0/16".into()];
    api.put(&secure);
    api.put(&pod("a", "default", "n1"));
    api.put(&pod("b", "default", "n2"));
    api.put(&pod("c", "tenant-ns", "n1"));
    api.put(&pod("d", "secure-ns", "n2"));

    let client = nb_client(&ovn).await;
    let mut nb = topology::nb_client_config(&[&ovn.nb.remote()]);
    let metrics = Arc::new(Metrics::new());
    nb.metrics = Some(metrics.nb_client_metrics());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let router = controller::metrics::router(metrics.clone());
    let metrics_server = tokio::spawn(async move { axum::serve(listener, router).await });
    assert_eq!(
        http_get(metrics_addr, "/readyz").await.0,
        503,
        "ready before IPAM is restored"
    );
    let controller = start_controller(
        &api,
        ovsdb::Client::connect(nb).await.unwrap(),
        metrics.clone(),
    );
    eventually("4 pods routed", Duration::from_secs(30), || {
        routed(&api).len() == 4
    })
    .await;
    let pods = routed(&api);
    assert_eq!(
        pods["a.default"][annotations::LOGICAL_SWITCH],
        "ovn-default"
    );
    assert_eq!(pods["c.tenant-ns"][annotations::LOGICAL_SWITCH], "tenant");
    assert_eq!(pods["d.secure-ns"][annotations::CIDR], "10.30.0.0/16");
    assert_eq!(pods["d.secure-ns"][annotations::GATEWAY], "10.30.0.1");
    assert_eq!(pods["a.default"][annotations::ALLOCATED], "true");
    assert_consistent(&api, &client).await;

    // Nodes: join ports and Kube-OVN's node annotations.
    eventually("node annotations", Duration::from_secs(10), || {
        api.all::<Node>()
            .iter()
            .all(|n| n.annotations().get("ovn.kubernetes.io/port_name").is_some())
    })
    .await;
    client
        .wait_until(Duration::from_secs(10), |cache| {
            let ports = topology::owned_ports(cache);
            ports.contains_key("node-n1") && ports.contains_key("node-n2")
        })
        .await
        .expect("node join ports in NB");
    let nb_ports = ports(&client);
    assert!(nb_ports["node-n1"].addresses[0].contains("100.64.0."));

    // Subnet status: Ready, with counts.
    eventually("subnet status", Duration::from_secs(10), || {
        api.all::<Subnet>().iter().any(|s| {
            s.name_any() == "tenant"
                && s.status.as_ref().is_some_and(|st| {
                    st.v4_using_ips == 1.0 && st.conditions.iter().any(|c| c.type_ == "Ready")
                })
        })
    })
    .await;

    // Metrics and probes, as Prometheus and the kubelet see them.
    assert_eq!(http_get(metrics_addr, "/healthz").await.0, 200);
    assert_eq!(http_get(metrics_addr, "/readyz").await.0, 200);
    let (code, text) = http_get(metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    let tenant = r#"{subnet_name="tenant",protocol="IPv4",subnet_cidr="10.20.0.0/16"}"#;
    assert_eq!(sample(&text, &format!("subnet_used_ip_count{tenant}")), 1.0);
    // 65,536 addresses less network, broadcast, gateway and c's.
    assert_eq!(
        sample(&text, &format!("subnet_available_ip_count{tenant}")),
        65_532.0
    );
    assert!(
        sample(
            &text,
            r#"kovn_controller_reconciles_total{kind="Pod",result="ok"}"#
        ) >= 4.0
    );
    assert!(
        sample(
            &text,
            r#"kovn_controller_ovsdb_transactions_total{result="ok"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "kovn_controller_ovsdb_transaction_duration_seconds_count"
        ) >= 1.0
    );
    assert!(sample(&text, "kovn_controller_nb_batches_total") >= 1.0);

    // ovn-trace: northd must have compiled the logical flows first.
    let (ok, out) = (0..100)
        .find_map(|_| {
            let r = delivered(&ovn, &pods, "a.default", "b.default");
            if r.0 {
                Some(r)
            } else {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        })
        .unwrap_or_else(|| delivered(&ovn, &pods, "a.default", "b.default"));
    assert!(ok, "a -> b (same subnet) not delivered:\n{out}");
    let (ok, out) = delivered(&ovn, &pods, "a.default", "c.tenant-ns");
    assert!(ok, "a -> c (across subnets) not delivered:\n{out}");
    let (ok, out) = delivered(&ovn, &pods, "c.tenant-ns", "d.secure-ns");
    assert!(ok, "c -> d (allowSubnets) not delivered:\n{out}");
    let (ok, out) = delivered(&ovn, &pods, "a.default", "d.secure-ns");
    assert!(
        !ok,
        "a -> d (private subnet, not allowed) delivered:\n{out}"
    );
    assert!(
        out.contains("ls_out_acl") && out.contains("drop;"),
        "not dropped by the ACL:\n{out}"
    );

    // Bad input: an overlapping subnet is refused, and nothing else moves.
    let before = ports(&client);
    api.put(&subnet("bad", "10.16.5.0/24", "2026-01-01T00:00:03Z"));
    eventually("Validated=False on bad", Duration::from_secs(10), || {
        api.all::<Subnet>().iter().any(|s| {
            s.name_any() == "bad"
                && s.status.as_ref().is_some_and(|st| {
                    st.conditions.iter().any(|c| {
                        c.type_ == "Validated" && c.status == "False" && c.reason == "CIDROverlap"
                    })
                })
        })
    })
    .await;
    assert!(
        api.requests()
            .iter()
            .any(|r| r.uri.contains("/events") && r.body["reason"] == "ValidationFailed"),
        "no event for the invalid subnet"
    );
    assert!(client.read(|c| {
        c.table(LogicalSwitch::TABLE)
            .unwrap()
            .rows()
            .all(|r| r.string("name") != Some("bad"))
    }));
    assert_eq!(ports(&client).len(), before.len());

    // A pod asking for the join subnet (its creator wrote `logical_switch: join`) gets an
    // event and nothing else: no port, no IP object, no annotations from the controller.
    let mut joiner = pod("joiner", "default", "n1");
    joiner.metadata.annotations = Some(BTreeMap::from([(
        annotations::LOGICAL_SWITCH.to_owned(),
        "join".to_owned(),
    )]));
    api.put(&joiner);
    eventually(
        "an event for the join-subnet pod",
        Duration::from_secs(10),
        || {
            api.requests().iter().any(|r| {
                r.uri.contains("/events")
                    && r.body["reason"] == "AllocationFailed"
                    && r.body["note"]
                        .as_str()
                        .is_some_and(|m| m.contains("holds node ports only"))
            })
        },
    )
    .await;
    assert!(
        !ports(&client).contains_key("joiner.default"),
        "a pod port in join"
    );
    assert!(
        api.all::<IP>()
            .iter()
            .all(|i| i.name_any() != "joiner.default"),
        "an IP object for the join-subnet pod"
    );
    assert!(!routed(&api).contains_key("joiner.default"));
    api.delete::<Pod>(Some("default"), "joiner");

    // Pod deletion releases everything, and bumps nb_cfg.
    let cfg = nb_cfg(&client);
    api.delete::<Pod>(Some("default"), "b");
    eventually("b's port gone", Duration::from_secs(10), || {
        !ports(&client).contains_key("b.default")
    })
    .await;
    eventually("b's IP object gone", Duration::from_secs(10), || {
        api.all::<IP>().iter().all(|i| i.name_any() != "b.default")
    })
    .await;
    assert!(nb_cfg(&client) > cfg, "nb_cfg not bumped on pod delete");

    // Restart mid-reconcile: 200 new pods, the controller killed while it works on them.
    for i in 0..200 {
        api.put(&pod(
            &format!("p{i}"),
            "default",
            if i % 2 == 0 { "n1" } else { "n2" },
        ));
    }
    eventually(
        "some of the new pods routed",
        Duration::from_secs(20),
        || routed(&api).len() > 3,
    )
    .await;
    controller.abort();
    let _ = controller.await;
    let partial = routed(&api).len();
    // A pod created while no controller runs, and b's address must not come back to b.
    api.put(&pod("late", "default", "n1"));
    let second = start_controller(&api, nb_client(&ovn).await, Arc::new(Metrics::new()));
    eventually(
        "all 204 pods routed after restart",
        Duration::from_secs(30),
        || routed(&api).len() == 204,
    )
    .await;
    eventually("NB converged", Duration::from_secs(10), || {
        // 204 pods, 2 node ports, 4 subnet router ports (ovn-default, join, tenant, secure).
        ports(&client).len() == 204 + 2 + 4
    })
    .await;
    assert_consistent(&api, &client).await;
    assert!(
        partial < 203,
        "the first controller finished before it was killed"
    );
    eprintln!("restart: {partial} of 203 pods were routed when the first controller was killed");

    // A Subnet deleted by a user: the finalizer removes its switch and router port first,
    // then lets the object go.
    api.put(&subnet("scratch", "10.50.0.0/24", "2026-01-01T00:00:04Z"));
    client
        .wait_until(Duration::from_secs(10), |c| {
            has_row::<LogicalSwitch>(c, "scratch")
        })
        .await
        .expect("scratch switch in NB");
    eventually("scratch finalizer", Duration::from_secs(10), || {
        api.all::<Subnet>()
            .iter()
            .any(|s| s.name_any() == "scratch" && !s.finalizers().is_empty())
    })
    .await;
    api.delete::<Subnet>(None, "scratch");
    client
        .wait_until(Duration::from_secs(10), |c| {
            !has_row::<LogicalSwitch>(c, "scratch")
                && !has_row::<LogicalRouterPort>(c, "ovn-cluster-scratch")
        })
        .await
        .expect("scratch switch and router port removed");
    eventually("scratch Subnet gone", Duration::from_secs(10), || {
        api.all::<Subnet>()
            .iter()
            .all(|s| s.name_any() != "scratch")
    })
    .await;

    // A custom VPC: its own router with its static route; its subnet attaches there, and a
    // pod in it gets the subnet's gateway. Deleting the VPC removes the router.
    api.put(&api::Vpc::new(
        "vpc1",
        api::VpcSpec {
            static_routes: vec![api::StaticRoute {
                cidr: "0.0.0.0/0".into(),
                next_hop_ip: "10.40.0.254".into(),
                ..api::StaticRoute::default()
            }],
            ..api::VpcSpec::default()
        },
    ));
    let mut vpc_net = subnet("vpc1-net", "10.40.0.0/24", "2026-01-01T00:00:05Z");
    vpc_net.spec.vpc = "vpc1".into();
    api.put(&vpc_net);
    api.put(&namespace("vpc1-ns", Some("vpc1-net")));
    api.put(&pod("e", "vpc1-ns", "n1"));
    eventually("e routed", Duration::from_secs(10), || {
        routed(&api).contains_key("e.vpc1-ns")
    })
    .await;
    assert_eq!(routed(&api)["e.vpc1-ns"][annotations::GATEWAY], "10.40.0.1");
    // A Service whose endpoint is e: it lives in vpc1 (from its endpoints, as Kube-OVN
    // decides it), so its VIP is in vpc1's load balancer only, and the Service says so in
    // its ovn.kubernetes.io/vpc annotation, where the agents read it.
    let e_ip = routed(&api)["e.vpc1-ns"][annotations::IP_ADDRESS].clone();
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "vpc1-ns"},
        "spec": {"clusterIP": "10.96.50.1", "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    api.put(&service);
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "vpc1-ns",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [e_ip], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "e", "namespace": "vpc1-ns"}}]
        }))
        .unwrap();
    api.put(&slice);
    let backend = format!("{e_ip}:80");
    client
        .wait_until(Duration::from_secs(10), |c| {
            let lbs = c
                .table(LoadBalancer::TABLE)
                .map(|t| t.typed::<LoadBalancer>())
                .unwrap_or_default();
            let in_lb = |name: &str| {
                lbs.iter()
                    .any(|lb| lb.name == name && lb.vips.get("10.96.50.1:80") == Some(&backend))
            };
            in_lb("vpc-vpc1-tcp-load") && !in_lb("cluster-tcp-loadbalancer")
        })
        .await
        .expect("web's VIP in vpc1's load balancer, not the default VPC's");
    eventually("web annotated with vpc1", Duration::from_secs(10), || {
        api.all::<k8s_openapi::api::core::v1::Service>()
            .iter()
            .any(|s| {
                s.name_any() == "web"
                    && s.annotations().get(annotations::VPC).map(String::as_str) == Some("vpc1")
            })
    })
    .await;
    client
        .wait_until(Duration::from_secs(10), |c| {
            let Some(router) = c
                .table(LogicalRouter::TABLE)
                .unwrap()
                .typed::<LogicalRouter>()
                .into_iter()
                .find(|r| r.name == "vpc1")
            else {
                return false;
            };
            let routes = c
                .table(LogicalRouterStaticRoute::TABLE)
                .unwrap()
                .typed::<LogicalRouterStaticRoute>();
            let has_route = routes.iter().any(|r| {
                router.static_routes.contains(&r.uuid)
                    && r.ip_prefix == "0.0.0.0/0"
                    && r.nexthop == "10.40.0.254"
            });
            let lrp = c
                .table(LogicalRouterPort::TABLE)
                .unwrap()
                .typed::<LogicalRouterPort>()
                .into_iter()
                .find(|p| p.name == "vpc1-vpc1-net");
            has_route
                && lrp.is_some_and(|p| {
                    router.ports.contains(&p.uuid) && p.networks == vec!["10.40.0.1/24".to_owned()]
                })
        })
        .await
        .expect("vpc1 router with its route and vpc1-net's router port");
    eventually("vpc1 status", Duration::from_secs(10), || {
        api.all::<api::Vpc>().iter().any(|v| {
            v.name_any() == "vpc1" && v.status.as_ref().is_some_and(|s| s.router == "vpc1")
        })
    })
    .await;
    api.delete::<Pod>(Some("vpc1-ns"), "e");
    api.delete::<Subnet>(None, "vpc1-net");
    api.delete::<api::Vpc>(None, "vpc1");
    client
        .wait_until(Duration::from_secs(10), |c| {
            !has_row::<LogicalRouter>(c, "vpc1") && !has_row::<LogicalSwitch>(c, "vpc1-net")
        })
        .await
        .expect("vpc1 router and vpc1-net switch removed");
    eventually("vpc1 gone", Duration::from_secs(10), || {
        api.all::<api::Vpc>().iter().all(|v| v.name_any() != "vpc1")
    })
    .await;
    second.abort();
    metrics_server.abort();
}

/// The join port of a node, by its owner's port name: (uuid, addresses).
fn join_port(client: &ovsdb::Client, node: &str) -> Option<(ovsdb::Uuid, Vec<String>)> {
    ports(client)
        .get(&api::Owner::node(node).port_name())
        .map(|p| (p.uuid, p.addresses.clone()))
}

/// A node named as EKS names them has dots in its name, as pod ports do: the controller must
/// not take its join port for a leaked pod's. Before owners were typed, every controller start
/// released that port (and bumped nb_cfg, invalidating every node's fast path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotted_node_keeps_its_join_port_across_restarts_and_a_quiet_restart_bumps_nothing() {
    const EKS_NODE: &str = "ip-10-0-1-5.ec2.internal";
    let ovn = start_ovn();
    let api = FakeApi::new();
    api.put(&namespace("default", None));
    api.put(&node(EKS_NODE));
    api.put(&node("n2"));
    api.put(&pod("a", "default", EKS_NODE));
    let client = nb_client(&ovn).await;
    let mut metrics = Arc::new(Metrics::new());
    let mut controller = start_controller(&api, nb_client(&ovn).await, metrics.clone());
    eventually("a routed", Duration::from_secs(30), || {
        routed(&api).contains_key("a.default")
    })
    .await;
    client
        .wait_until(Duration::from_secs(10), |cache| {
            let ports = topology::owned_ports(cache);
            ports.contains_key(&format!("node-{EKS_NODE}")) && ports.contains_key("node-n2")
        })
        .await
        .expect("both join ports in NB");
    // Let the first controller's reconciles settle before taking the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = join_port(&client, EKS_NODE).expect("EKS node's join port");
    let cfg = nb_cfg(&client);
    for restart in 1..=3 {
        controller.abort();
        let _ = controller.await;
        metrics = Arc::new(Metrics::new());
        controller = start_controller(&api, nb_client(&ovn).await, metrics.clone());
        eventually("IPAM restored", Duration::from_secs(20), || {
            metrics.is_ready()
        })
        .await;
        // Every object is reconciled again after the restart: give that time to happen.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            join_port(&client, EKS_NODE),
            Some(before.clone()),
            "restart {restart}: the join port of {EKS_NODE} was replaced"
        );
        assert_eq!(
            nb_cfg(&client),
            cfg,
            "restart {restart} changed nothing but bumped nb_cfg"
        );
        assert_consistent(&api, &client).await;
    }
    controller.abort();
}

/// `--cluster-router` is the one name of the default VPC's router: the controller builds
/// exactly one router, under that name, and pods of two subnets reach each other through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_default_cluster_router_is_the_only_router_and_routes_between_subnets() {
    let ovn = start_ovn();
    let api = FakeApi::new();
    api.put(&namespace("default", None));
    api.put(&namespace("tenant-ns", Some("tenant")));
    api.put(&node("n1"));
    api.put(&subnet("tenant", "10.20.0.0/16", "2026-01-01T00:00:01Z"));
    api.put(&pod("a", "default", "n1"));
    api.put(&pod("c", "tenant-ns", "n1"));
    let mut settings = Settings::default();
    settings.names.cluster_router = "edge-router".into();
    let client = nb_client(&ovn).await;
    let controller = start_controller_with(
        &api,
        nb_client(&ovn).await,
        Arc::new(Metrics::new()),
        settings,
    );
    eventually("2 pods routed", Duration::from_secs(30), || {
        routed(&api).len() == 2
    })
    .await;
    assert_consistent(&api, &client).await;
    client
        .wait_until(Duration::from_secs(10), |c| {
            has_row::<LogicalRouterPort>(c, "edge-router-tenant")
                && has_row::<LogicalRouterPort>(c, "edge-router-ovn-default")
        })
        .await
        .expect("both subnets attached to edge-router");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let routers: Vec<String> = client.read(|c| {
        c.table(LogicalRouter::TABLE)
            .unwrap()
            .typed::<LogicalRouter>()
            .into_iter()
            .map(|r| r.name)
            .collect()
    });
    assert_eq!(routers, vec!["edge-router".to_owned()]);
    assert!(
        api.all::<api::Vpc>()
            .iter()
            .all(|v| v.name_any() == "edge-router"),
        "a second default VPC object"
    );
    let pods = routed(&api);
    // ovn-northd needs a moment to compile the new router's flows into SB.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = delivered(&ovn, &pods, "a.default", "c.tenant-ns");
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a -> c not delivered across subnets:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    controller.abort();
}

/// A node moved from Kube-OVN keeps a pod's secondary attachment record
/// (`<pod>.<namespace>.<provider>`, same podName and namespace as the pod's own): kovn's
/// restore does not take it for the pod's address (it is the attachment's own holder), and
/// while its subnet is not kovn's it is no conflict and is never deleted, across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_ovn_attachment_ip_object_is_neither_restored_nor_released() {
    const ATTACHMENT: &str = "a.default.net1.default.ovn";
    let ovn = start_ovn();
    let api = FakeApi::new();
    api.put(&namespace("default", None));
    api.put(&node("n1"));
    api.put(&pod("a", "default", "n1"));
    api.put(&api::IP::new(
        ATTACHMENT,
        api::IPSpec {
            pod_name: "a".into(),
            namespace: "default".into(),
            subnet: "net1".into(),
            node_name: "n1".into(),
            ip_address: "172.30.0.5".into(),
            v4_ip_address: "172.30.0.5".into(),
            mac_address: "00:00:00:aa:bb:cc".into(),
            ..api::IPSpec::default()
        },
    ));
    let mut metrics = Arc::new(Metrics::new());
    let mut controller = start_controller(&api, nb_client(&ovn).await, metrics.clone());
    eventually("a routed", Duration::from_secs(30), || {
        routed(&api).contains_key("a.default")
    })
    .await;
    for restart in 0..2 {
        let annotated = routed(&api)["a.default"][annotations::IP_ADDRESS].clone();
        assert!(
            annotated.starts_with("10.16."),
            "restart {restart}: a got {annotated}, not an ovn-default address"
        );
        assert!(
            api.all::<api::IP>()
                .iter()
                .any(|ip| ip.name_any() == ATTACHMENT),
            "restart {restart}: the attachment's IP object was deleted"
        );
        assert_eq!(
            metrics.ipam_conflicts.get(),
            0,
            "restart {restart}: counted as a conflict"
        );
        controller.abort();
        let _ = controller.await;
        metrics = Arc::new(Metrics::new());
        controller = start_controller(&api, nb_client(&ovn).await, metrics.clone());
        eventually("IPAM restored", Duration::from_secs(20), || {
            metrics.is_ready()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    controller.abort();
}
