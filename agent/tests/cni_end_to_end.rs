//! The product path on a real node, multi-process: the kubelet's part (the `kube-ovn` CNI
//! binary run with CNI_* and Kube-OVN's conflist on stdin) → `kovn-agent daemon` (a process in
//! the node's namespace, talking to the API stand-in with a kubeconfig) → netlink, OVS and
//! the datapath. Pods get their network and talk through OVN; DEL leaves nothing; a pod whose
//! annotations never arrive, or that does not exist, gets the right CNI error and no leftovers.
//!
//! The controller's part (annotations, the NB port) is played by the test here.

mod common;
use common::on_node;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use agent::datapath::{PinnedMaps, ReadMaps};
use agent::ovs::pod_port;
use agent::pod_network::{PodLinks, links};
use api::annotations;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec};
use kube::api::ObjectMeta;
use sandbox::kovn::{KovnCluster, Process, conflist, wait_for};
use sandbox::kube_api::FakeApi;
use sandbox::kubelet::{Kubelet, PodSandbox, PortMapping};
use sandbox::{Cmd, Handoff, Node, Sandbox, SandboxConfig, mac_for, netns};
use serde_json::{Value, json};

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

/// The kubelet of `node`: Kube-OVN's conflist, kube-ovn from this build and the reference
/// plugins from Debian, run in the node's namespace.
fn node_kubelet(node: &Node, socket: &Path) -> Kubelet {
    let kube_ovn = common::workspace_binary("cni", "kube-ovn");
    Kubelet {
        conflist: conflist(socket),
        plugin_dirs: vec![
            kube_ovn.parent().unwrap().to_path_buf(),
            PathBuf::from("/usr/lib/cni"),
            PathBuf::from("/opt/cni/bin"),
        ],
        node_netns: node.netns.clone(),
    }
}

/// ADD results by container ID, as the kubelet caches them for CHECK and DEL.
static RESULTS: std::sync::Mutex<BTreeMap<String, Value>> = std::sync::Mutex::new(BTreeMap::new());

/// The kubelet running the conflist for a pod sandbox: (success, result or error JSON).
fn kubelet(
    command: &str,
    pod: &str,
    container_id: &str,
    netns_name: &str,
    k: &Kubelet,
) -> (bool, Value) {
    kubelet_with_ports(command, pod, container_id, netns_name, k, vec![])
}

fn kubelet_with_ports(
    command: &str,
    pod: &str,
    container_id: &str,
    netns_name: &str,
    k: &Kubelet,
    port_mappings: Vec<PortMapping>,
) -> (bool, Value) {
    let sandbox = PodSandbox {
        name: pod.into(),
        namespace: "default".into(),
        container_id: container_id.into(),
        netns: netns_name.into(),
        if_name: "eth0".into(),
        port_mappings,
    };
    let cached = RESULTS.lock().unwrap().get(container_id).cloned();
    let outcome = match command {
        "ADD" => k.add(&sandbox).inspect(|r| {
            RESULTS
                .lock()
                .unwrap()
                .insert(container_id.into(), r.clone());
        }),
        "CHECK" => k
            .check(&sandbox, cached.as_ref().unwrap_or(&Value::Null))
            .map(|()| Value::Null),
        "DEL" => k.del(&sandbox, cached.as_ref()).map(|()| Value::Null),
        other => panic!("no CNI command {other}"),
    };
    match outcome {
        Ok(v) => (true, v),
        Err(failure) => (false, failure.output),
    }
}

/// The annotations kovn-controller writes once a pod's port is in NB.
fn annotated_pod(name: &str, node: &str, ip: &str) -> Pod {
    let ip_addr: std::net::Ipv4Addr = ip.parse().unwrap();
    let a: BTreeMap<String, String> = [
        (annotations::ALLOCATED, "true".to_owned()),
        (annotations::ROUTED, "true".to_owned()),
        (annotations::IP_ADDRESS, ip.to_owned()),
        (annotations::MAC_ADDRESS, mac_for(ip_addr)),
        (annotations::CIDR, "10.16.0.0/16".to_owned()),
        (annotations::GATEWAY, "10.16.0.1".to_owned()),
        (annotations::LOGICAL_SWITCH, "ovn-default".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            annotations: Some(a),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// What kovn-controller writes for an allocated pod: the pod's annotations and its IP object
/// (the record the agent checks the annotations against).
fn allocate(api: &FakeApi, name: &str, node: &str, ip: &str) {
    // The subnet the controller allocated from (the agent reads its VPC).
    api.put(&api::Subnet::new(
        "ovn-default",
        api::SubnetSpec {
            cidr_block: "10.16.0.0/16".into(),
            ..api::SubnetSpec::default()
        },
    ));
    api.put(&annotated_pod(name, node, ip));
    api.put(&api::IP::new(
        &format!("{name}.default"),
        api::IPSpec {
            pod_name: name.to_owned(),
            namespace: "default".to_owned(),
            subnet: "ovn-default".to_owned(),
            node_name: node.to_owned(),
            ip_address: ip.to_owned(),
            v4_ip_address: ip.to_owned(),
            mac_address: mac_for(ip.parse().unwrap()),
            ..api::IPSpec::default()
        },
    ));
}

fn start_agent(
    sb: &Sandbox,
    node: &Node,
    kubeconfig: &Path,
    socket: &Path,
    annotation_timeout: u64,
) -> Process {
    let mut child = Cmd::new(env!("CARGO_BIN_EXE_kovn-agent"))
        .arg("daemon")
        .args(["--node-name", &node.name])
        .arg("--cni-socket")
        .arg(socket.display().to_string())
        .arg("--ovs-db")
        .arg(format!("unix:{}", node.db.socket.display()))
        .args([
            "--metrics-addr",
            "127.0.0.1:10665",
            "--gc-interval",
            "1",
            "--annotation-timeout",
        ])
        .arg(annotation_timeout.to_string())
        .arg("--pin-dir")
        .arg(sb.bpffs_dir().join(&node.name).display().to_string())
        .env("KUBECONFIG", kubeconfig.display().to_string())
        .env("RUST_LOG", "info,kube=warn")
        .netns_keep_mounts(&node.netns)
        .to_command()
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kovn-agent daemon");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "kovn-agent daemon did not come up");
    Process(child)
}

/// The pod's Logical_Switch_Port in `ovn-default`, as the controller would make it: addresses
/// and port security from `ip`.
fn add_pod_port(nbctl: &sandbox::Ctl, name: &str, ip: &str) {
    let address = format!("{} {ip}", mac_for(ip.parse().unwrap()));
    let lsp = format!("{name}.default");
    nbctl
        .run([
            "lsp-add",
            "ovn-default",
            &lsp,
            "--",
            "lsp-set-addresses",
            &lsp,
            &address,
            "--",
            "lsp-set-port-security",
            &lsp,
            &address,
        ])
        .unwrap();
}

/// Whether anything of container `id` is left on the node: interfaces or an OVS port.
fn leftovers(node: &Node, id: &str) -> Vec<String> {
    let links = PodLinks::for_container(id);
    on_node(node, async || {
        let mut left: Vec<String> = links::present(&links)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, p)| *p)
            .map(|(n, _)| n)
            .collect();
        let ovs = ovsdb::Client::connect(agent::ovs::client_config(&format!(
            "unix:{}",
            node.db.socket.display()
        )))
        .await
        .unwrap();
        if pod_port::bound(&ovs, &links.ovs_port).is_some() {
            left.push(format!("OVS port {}", links.ovs_port));
        }
        left
    })
}

/// `path` of the agent's HTTP endpoint (:10665), fetched inside the node's namespace: the
/// whole response, status line and headers included.
fn agent_http(node: &Node, path: &str) -> String {
    netns::run_in(&node.netns, || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect("127.0.0.1:10665").expect("agent :10665");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// The agent's /metrics.
fn scrape(node: &Node) -> String {
    agent_http(node, "/metrics")
}

/// The agent's /readyz: (HTTP status, body).
fn readyz(node: &Node) -> (u16, String) {
    let response = agent_http(node, "/readyz");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// The spares on the node as the agent reports them, and as the node holds them: (ready per
/// `kovn_cni_spare_interfaces`, `kovn~` interfaces, `kovn~` pinned links).
fn spares(node: &Node, pins: &Path) -> (f64, usize, usize) {
    let ready = sum(&scrape(node), "kovn_cni_spare_interfaces", "");
    let pinned = std::fs::read_dir(pins.join("links"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("kovn~"))
                .count()
        })
        .unwrap_or(0);
    (ready, spare_interfaces(node), pinned)
}

/// The node's interfaces named as spares.
fn spare_interfaces(node: &Node) -> usize {
    let links = Cmd::new("ip")
        .args(["-o", "link"])
        .netns(&node.netns)
        .run()
        .unwrap();
    links.lines().filter(|l| l.contains(": kovn~")).count()
}

/// Waits until the agent has its 8 spares (the default), each one OVS port pair with one
/// pinned link, and nothing else of spares on the node.
fn spares_ready(node: &Node, pins: &Path) {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let state = spares(node, pins);
        if state == (8.0, 16, 8) {
            return;
        }
        assert!(
            std::time::Instant::now() < limit,
            "spares (ready, interfaces, pinned links): {state:?}, expected (8, 16, 8)"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The sum of the samples of `metric` whose labels contain `labels`.
fn sum(text: &str, metric: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_kubelet_path_networks_pods_through_the_agent_and_del_leaves_nothing() {
    if !sandbox::privileged(
        "the_kubelet_path_networks_pods_through_the_agent_and_del_leaves_nothing",
    ) {
        return;
    }
    let sb = Sandbox::start(SandboxConfig {
        nodes: 1,
        handoff: Handoff::Datapath,
        ..Default::default()
    })
    .expect("sandbox");
    let node = sb.node(0).clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();

    // The API stand-in, reachable at 127.0.0.1 inside the node's namespace.
    let api = FakeApi::new();
    api.put(&Namespace {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    });
    let listener = netns::run_in(&node.netns, || std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let served = api.serve_listener(listener).unwrap();
    let dir = sb.dir().join("cni-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    served.write_kubeconfig(&kubeconfig).unwrap();
    let socket = dir.join("kube-ovn-daemon.sock");
    let mut _agent = start_agent(&sb, &node, &kubeconfig, &socket, 2);
    let pins = sb.bpffs_dir().join(&node.name);
    // The ADDs below take spare OVS port pairs (their delivery program attached already).
    spares_ready(&node, &pins);
    // Serving CNI, but this API has no Node for it, so no join port, no ovn0: not ready, and
    // /readyz says what it waits for.
    let (status, body) = readyz(&node);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("node setup") && !body.contains("CNI:") && !body.contains("datapath:"),
        "{body}"
    );
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600,
        "the CNI socket is for root only"
    );
    let conf = node_kubelet(&node, &socket);

    // Two pods, as the controller would leave them: annotated, with their NB ports.
    let prefix = sandbox::registry::netns_prefix(sb.id());
    let pods = [
        ("a", "10.16.0.21", "aaaa0000000000000001"),
        ("b", "10.16.0.22", "bbbb0000000000000002"),
    ];
    let _namespaces = Namespaces(
        ["a", "b", "c", "gone", "evil"]
            .iter()
            .map(|p| format!("{prefix}k-{p}"))
            .collect(),
    );
    let nbctl = sb.central().nbctl();
    for (name, ip, id) in pods {
        allocate(&api, name, &node.name, ip);
        add_pod_port(&nbctl, name, ip);
        let ns = format!("{prefix}k-{name}");
        netns::add(&ns).unwrap();
        let (ok, result) = kubelet("ADD", name, id, &ns, &conf);
        assert!(ok, "ADD {name}: {result}");
        // A 0.3.1 result, as the conflist asks.
        assert_eq!(result["cniVersion"], "0.3.1");
        assert_eq!(result["ips"][0]["address"], format!("{ip}/16"));
        assert_eq!(result["ips"][0]["version"], "4");
        assert_eq!(result["ips"][0]["gateway"], "10.16.0.1");
        assert_eq!(result["interfaces"][0]["name"], "eth0");
        assert_eq!(
            result["interfaces"][0]["sandbox"],
            format!("/var/run/netns/{ns}")
        );
        nbctl
            .run([
                "--timeout=20",
                "wait-until",
                "Logical_Switch_Port",
                &format!("{name}.default"),
                "up=true",
            ])
            .expect("ovn-controller binds the port");
    }
    nbctl.run(["--wait=hv", "sync"]).unwrap();
    // Closer together than the fast path's 100 ms refresh, so that the flow is fast-pathed
    // between re-judgements (a sparser flow is judged by OVS at every packet).
    let ping = Cmd::new("ping")
        .args(["-c", "10", "-i", "0.02", "-W", "2", "10.16.0.22"])
        .netns(format!("{prefix}k-a"))
        .run();
    assert!(ping.is_ok(), "a cannot reach b: {ping:?}");

    // A pod whose creator wrote a's addresses and `allocated`/`routed` into its annotations
    // (the controller refused the taken address, so no IP object of its own exists) gets a
    // CNI error naming the IP object, and no network: nothing of it on the node, a unharmed.
    api.put(&annotated_pod("evil", &node.name, "10.16.0.21"));
    let evil_ns = format!("{prefix}k-evil");
    netns::add(&evil_ns).unwrap();
    let evil_id = "e0110000000000000009";
    let (ok, out) = kubelet("ADD", "evil", evil_id, &evil_ns, &conf);
    assert!(!ok, "a pod claiming a's address was networked: {out}");
    let details = format!("{} {}", out["msg"], out["details"]);
    assert!(details.contains("IP object"), "{out}");
    let left = on_node(&node, async || {
        links::present(&PodLinks::for_container(evil_id)).await
    })
    .unwrap();
    assert!(left.iter().all(|(_, p)| !p), "evil's interfaces: {left:?}");
    let inside = Cmd::new("ip")
        .args(["-o", "addr"])
        .netns(&evil_ns)
        .run()
        .unwrap();
    assert!(
        !inside.contains("10.16.0.21"),
        "evil holds a's address: {inside}"
    );
    let ping = Cmd::new("ping")
        .args(["-c", "3", "-i", "0.02", "-W", "2", "10.16.0.22"])
        .netns(format!("{prefix}k-a"))
        .run();
    assert!(ping.is_ok(), "a lost b after the attempt: {ping:?}");

    // The agent's metrics: the datapath is loaded and took over the flow (a and b were
    // networked on spares: the flow was learned by the program attached to a spare); ADDs
    // are timed.
    let metrics = scrape(&node);
    assert!(metrics.contains("kovn_datapath_loaded 1"), "{metrics}");
    assert_eq!(
        sum(&metrics, "kovn_cni_adds_without_spare_total", ""),
        0.0,
        "{metrics}"
    );
    assert!(
        sum(
            &metrics,
            "kovn_datapath_packets_total",
            r#"reason="fast_hit""#
        ) > 0.0,
        "no fast-path hit:\n{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            "cni_op_latency_seconds_count",
            r#"method="add",status_code="200""#
        ),
        2.0,
        "{metrics}"
    );

    // CHECK verifies what ADD built (CHECK exists from CNI 0.4.0 on: a 1.0.0 list here).
    let (ok, out) = kubelet("CHECK", "a", pods[0].2, &format!("{prefix}k-a"), &conf);
    assert!(!ok, "libcni refuses CHECK for Kube-OVN's 0.3.1 list: {out}");
    let mut check_conf = conf.clone();
    check_conf.conflist["cniVersion"] = json!("1.0.0");
    check_conf.conflist["plugins"] = json!([check_conf.conflist["plugins"][0].clone()]);
    let (ok, out) = kubelet(
        "CHECK",
        "a",
        pods[0].2,
        &format!("{prefix}k-a"),
        &check_conf,
    );
    assert!(ok, "CHECK a: {out}");

    // Learned flows of the pods, in the agent's pinned flow map: GC (like DEL) purges them.
    let flows_of = |ip: &str| common::flows_involving(&pins, ip.parse().unwrap());
    assert!(flows_of(pods[0].1) > 0, "no flow learned for a");

    // GC (CNI 1.1.0) with only b still valid: a's interfaces and port go, b keeps working.
    let mut gc_conf = check_conf.clone();
    gc_conf.conflist["cniVersion"] = json!("1.1.0");
    gc_conf
        .gc(&[(pods[1].2.to_owned(), "eth0".to_owned())])
        .expect("GC");
    assert_eq!(
        leftovers(&node, pods[0].2),
        Vec::<String>::new(),
        "after GC"
    );
    let (ok, out) = kubelet(
        "CHECK",
        "b",
        pods[1].2,
        &format!("{prefix}k-b"),
        &check_conf,
    );
    assert!(ok, "CHECK b after GC: {out}");

    // DEL (twice: it is idempotent) leaves nothing.
    for (name, _, id) in pods {
        for _ in 0..2 {
            let (ok, out) = kubelet("DEL", name, id, &format!("{prefix}k-{name}"), &conf);
            assert!(ok, "DEL {name}: {out}");
        }
        assert_eq!(
            leftovers(&node, id),
            Vec::<String>::new(),
            "after DEL {name}"
        );
    }

    // The annotations never arrive: a retryable error naming what is missing, nothing left.
    let mut c = annotated_pod("c", &node.name, "10.16.0.23");
    c.metadata.annotations = None;
    api.put(&c);
    netns::add(&format!("{prefix}k-c")).unwrap();
    let started = std::time::Instant::now();
    let out = kubelet(
        "ADD",
        "c",
        "cccc0000000000000003",
        &format!("{prefix}k-c"),
        &conf,
    );
    assert!(!out.0);
    assert_eq!(out.1["code"], 11, "{}", out.1);
    let details = out.1["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("ovn.kubernetes.io/allocated") && details.contains("kovn-controller"),
        "{}",
        out.1
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "not bounded"
    );
    assert_eq!(
        leftovers(&node, "cccc0000000000000003"),
        Vec::<String>::new()
    );

    // A pod the API does not know: code 3.
    let out = kubelet(
        "ADD",
        "nobody",
        "dddd0000000000000004",
        &format!("{prefix}k-c"),
        &conf,
    );
    assert_eq!(out.1["code"], 3, "{}", out.1);

    // A pod deleted while no DEL comes (the kubelet was down): the agent's periodic garbage
    // collection removes its network.
    allocate(&api, "z", &node.name, "10.16.0.25");
    let (ok, out) = kubelet(
        "ADD",
        "z",
        "ffff0000000000000006",
        &format!("{prefix}k-c"),
        &conf,
    );
    assert!(ok, "ADD z: {out}");
    assert_eq!(
        leftovers(&node, "ffff0000000000000006").len(),
        4,
        "z plumbed"
    );
    api.delete::<Pod>(Some("default"), "z");
    wait(
        "z's network collected",
        std::time::Duration::from_secs(15),
        || leftovers(&node, "ffff0000000000000006").is_empty(),
    );

    // The netns is gone (the runtime tore the sandbox down first): an error, nothing left.
    allocate(&api, "gone", &node.name, "10.16.0.24");
    let out = kubelet(
        "ADD",
        "gone",
        "eeee0000000000000005",
        &format!("{prefix}k-gone"),
        &conf,
    );
    assert!(!out.0, "ADD into a missing netns succeeded: {}", out.1);
    assert_eq!(
        leftovers(&node, "eeee0000000000000005"),
        Vec::<String>::new()
    );
    // Every ADD that failed gave its spare back to nobody: the pool is whole again, and no
    // spare interface or pinned link is left beside it.
    spares_ready(&node, &pins);

    // An agent killed while it holds spares: the next one removes them and builds its own.
    drop(_agent);
    assert_eq!(
        spare_interfaces(&node),
        16,
        "the killed agent's spares stay"
    );
    _agent = start_agent(&sb, &node, &kubeconfig, &socket, 2);
    spares_ready(&node, &pins);
    drop(_agent);
    sb.teardown().expect("teardown");
}

/// The runtime re-creates a pod's sandbox (same pod, new container) and the old sandbox's DEL
/// comes after the new one's ADD: the DEL removes the old sandbox only. Before attachments
/// were keyed by container and interface, it detached the new sandbox's programs and removed
/// its address from the datapath, and the pod was cut off.
#[test]
fn a_late_del_of_an_old_sandbox_leaves_the_new_sandbox_of_the_same_pod_working() {
    if !sandbox::privileged(
        "a_late_del_of_an_old_sandbox_leaves_the_new_sandbox_of_the_same_pod_working",
    ) {
        return;
    }
    let sb = Sandbox::start(SandboxConfig {
        nodes: 1,
        handoff: Handoff::Datapath,
        ..Default::default()
    })
    .expect("sandbox");
    let node = sb.node(0).clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let api = FakeApi::new();
    let dir = sb.dir().join("cni-resandbox");
    std::fs::create_dir_all(&dir).unwrap();
    let (_served, kubeconfig) = sandbox::kovn::serve_in(&api, &node.netns, &dir).unwrap();
    let socket = dir.join("kube-ovn-daemon.sock");
    let _agent = start_agent(&sb, &node, &kubeconfig, &socket, 5);
    let conf = node_kubelet(&node, &socket);
    let prefix = sandbox::registry::netns_prefix(sb.id());
    let ns = |n: &str| format!("{prefix}k-{n}");
    let _namespaces = Namespaces(["a1", "a2", "b"].iter().map(|n| ns(n)).collect());
    let nbctl = sb.central().nbctl();
    let (old, new, b_id) = (
        "a1a1000000000000000a",
        "a2a2000000000000000a",
        "b0b0000000000000000b",
    );
    for (name, ip) in [("a", "10.16.0.31"), ("b", "10.16.0.32")] {
        allocate(&api, name, &node.name, ip);
        add_pod_port(&nbctl, name, ip);
    }
    for (name, id, netns_name) in [("a", old, ns("a1")), ("b", b_id, ns("b"))] {
        netns::add(&netns_name).unwrap();
        let (ok, out) = kubelet("ADD", name, id, &netns_name, &conf);
        assert!(ok, "ADD {name}: {out}");
    }
    ports_up(&nbctl, ["a", "b"]);
    assert!(
        pinged(&ns("a1"), "10.16.0.32"),
        "the first sandbox of a cannot reach b"
    );

    // The new sandbox, then the old one's late DEL.
    netns::add(&ns("a2")).unwrap();
    let (ok, out) = kubelet("ADD", "a", new, &ns("a2"), &conf);
    assert!(ok, "ADD of a's new sandbox: {out}");
    let (ok, out) = kubelet("DEL", "a", old, &ns("a1"), &conf);
    assert!(ok, "late DEL of a's old sandbox: {out}");
    assert_eq!(leftovers(&node, old), Vec::<String>::new(), "old sandbox");
    assert_eq!(
        leftovers(&node, new).len(),
        4,
        "the new sandbox lost its network"
    );
    // ovn-controller moves the binding to the remaining interface of a.default.
    wait(
        "a's new sandbox reaches b",
        std::time::Duration::from_secs(20),
        || pinged(&ns("a2"), "10.16.0.32"),
    );
    assert!(
        pinged(&ns("b"), "10.16.0.31"),
        "b cannot reach a's new sandbox"
    );
    let metrics = scrape(&node);
    let hits = sum(
        &metrics,
        "kovn_datapath_packets_total",
        r#"reason="fast_hit""#,
    );
    assert!(pinged(&ns("a2"), "10.16.0.32"));
    let after = sum(
        &scrape(&node),
        "kovn_datapath_packets_total",
        r#"reason="fast_hit""#,
    );
    assert!(after > hits, "the new sandbox is not on the fast path");
    drop(_agent);
    sb.teardown().expect("teardown");
}

fn routed_pod(api: &FakeApi, name: &str) -> Option<BTreeMap<String, String>> {
    api.all::<Pod>()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.metadata.annotations)
        .filter(|a| a.get(annotations::ROUTED).map(String::as_str) == Some("true"))
}

fn wait(what: &str, limit: std::time::Duration, check: impl FnMut() -> bool) {
    wait_for(what, limit, check).unwrap();
}

/// Waits until ovn-controller has bound the ports of `pods` (in `default`) and every chassis
/// has the flows.
fn ports_up(nbctl: &sandbox::Ctl, pods: impl IntoIterator<Item = impl std::fmt::Display>) {
    for name in pods {
        nbctl
            .run([
                "--timeout=20",
                "wait-until",
                "Logical_Switch_Port",
                &format!("{name}.default"),
                "up=true",
            ])
            .expect("port up");
    }
    nbctl.run(["--wait=hv", "sync"]).unwrap();
}

/// Ten pings 20 ms apart: closer than the fast path's refresh, so a flow between local pods
/// is fast-pathed after the first.
fn pinged(netns_name: &str, ip: &str) -> bool {
    Cmd::new("ping")
        .args(["-c", "10", "-i", "0.02", "-W", "2", ip])
        .netns(netns_name)
        .run()
        .is_ok()
}

#[test]
fn with_the_controller_pods_on_two_nodes_reach_each_other_and_their_nodes() {
    if !sandbox::privileged(
        "with_the_controller_pods_on_two_nodes_reach_each_other_and_their_nodes",
    ) {
        return;
    }
    let cluster = KovnCluster::start(2, common::binaries()).expect("kovn on the sandbox");
    let (sb, api, confs) = (&cluster.sb, &cluster.api, &cluster.kubelets);

    // Pods a and b on n0, c on n1, created the way the scheduler leaves them.
    let prefix = sandbox::registry::netns_prefix(sb.id());
    let pods = [
        ("a", 0, "a0a0000000000001"),
        ("b", 0, "b0b0000000000002"),
        ("c", 1, "c0c0000000000003"),
    ];
    let _namespaces = Namespaces(
        pods.iter()
            .map(|(p, _, _)| format!("{prefix}x-{p}"))
            .collect(),
    );
    let mut ips = BTreeMap::new();
    for (name, node, id) in pods {
        api.put(&Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(sb.node(node).name.clone()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        });
        let ns = format!("{prefix}x-{name}");
        netns::add(&ns).unwrap();
        // The kubelet runs the plugins at once; the agent waits for the controller. Pod a
        // has a hostPort, which the chained portmap plugin programs.
        let ports = if name == "a" {
            vec![PortMapping {
                host_port: 18080,
                container_port: 5201,
                protocol: "tcp".into(),
            }]
        } else {
            vec![]
        };
        let (ok, result) = kubelet_with_ports("ADD", name, id, &ns, &confs[node], ports);
        assert!(ok, "ADD {name}: {result}");
        let ip = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(routed_pod(api, name).unwrap()[annotations::IP_ADDRESS], ip);
        ips.insert(name, ip);
    }
    let nbctl = sb.central().nbctl();
    ports_up(&nbctl, pods.iter().map(|(name, _, _)| *name));
    let a = format!("{prefix}x-a");
    assert!(pinged(&a, &ips["b"]), "a -> b (same node)");
    assert!(pinged(&a, &ips["c"]), "a -> c (across nodes, Geneve)");
    // Pod -> its node's ovn0, and a node -> a pod on another node, over the join network.
    let n0 = api
        .all::<k8s_openapi::api::core::v1::Node>()
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("n0"))
        .unwrap();
    let n0_ip = n0.metadata.annotations.unwrap()[annotations::IP_ADDRESS].clone();
    for node in sb.nodes() {
        wait(
            &format!("{} routes the pod subnet via ovn0", node.name),
            std::time::Duration::from_secs(20),
            || {
                Cmd::new("ip")
                    .args(["route", "show", "10.16.0.0/16"])
                    .netns(&node.netns)
                    .run()
                    .is_ok_and(|o| o.contains("ovn0"))
            },
        );
        // Node setup done, datapath loaded, CNI answering: the readiness probe passes.
        wait(
            &format!("{}'s agent ready", node.name),
            std::time::Duration::from_secs(10),
            || readyz(node).0 == 200,
        );
        let (_, body) = readyz(node);
        assert!(
            body.contains("eBPF datapath loaded"),
            "{}: {body}",
            node.name
        );
    }
    if !pinged(&a, &n0_ip) {
        let diag = |args: &[&str]| {
            Cmd::new("ip")
                .args(args.iter().copied())
                .netns(&sb.node(0).netns)
                .run()
        };
        panic!(
            "a -> its node's ovn0 {n0_ip} failed\nroutes: {:?}\novn0: {:?}\nneigh: {:?}\nNB: {}",
            diag(&["route"]),
            diag(&["addr", "show", "ovn0"]),
            diag(&["neigh"]),
            nbctl.run(["show"]).unwrap_or_default()
        );
    }
    assert!(pinged(&sb.node(1).netns, &ips["a"]), "node n1 -> a on n0");

    // hostPort (Kube-OVN's conflist: kube-ovn, then portmap): n1 reaches a's server at n0's
    // address, port 18080.
    let mut server = Cmd::new("iperf3")
        .args(["-s", "-p", "5201", "-1"])
        .netns(&a)
        .to_command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let client = Cmd::new("iperf3")
        .args(["-c", &sb.node(0).address, "-p", "18080", "-t", "1"])
        .netns(&sb.node(1).netns)
        .timeout(std::time::Duration::from_secs(8))
        .run();
    let _ = server.kill();
    let _ = server.wait();
    if client.is_err() {
        let on = |node: usize, program: &str, args: &[&str]| {
            Cmd::new(program)
                .args(args.iter().copied())
                .netns(&sb.node(node).netns)
                .run()
        };
        panic!(
            "hostPort 18080 on n0 does not reach a:5201: {client:?}\nnat: {:?}\nroutes: {:?}\npolicies: {:?}\nport groups: {:?}\nforward: {:?}",
            on(0, "iptables-save", &["-t", "nat"]),
            on(0, "ip", &["route"]),
            nbctl.run(["lr-policy-list", "ovn-cluster"]),
            nbctl.run(["--columns=name,ports", "list", "Port_Group"]),
            on(0, "sysctl", &["net.ipv4.ip_forward"]),
        );
    }

    // natOutgoing (ovn-default has it): a reaches an address outside the cluster, the OVN
    // central's on the fabric, which has no route back to pods: only masquerading at n0
    // makes the reply come back.
    let outside = sb.central().address.clone();
    assert!(
        pinged(&a, &outside),
        "a -> {outside} outside the cluster (natOutgoing)"
    );

    // The agent on n0 is stopped as the kubelet stops a container: it exits cleanly and
    // leaves the pods and the datapath running (a -> b still talks, through the fast path).
    let pins = sb.bpffs_dir().join(&sb.node(0).name);
    let hits = || {
        let maps = PinnedMaps::open(&pins).expect("n0's pinned maps");
        maps.reason_counts()
            .unwrap()
            .iter()
            .filter(|c| c.reason == datapath_common::Reason::FastHit)
            .map(|c| c.packets)
            .sum::<u64>()
    };
    assert!(hits() > 0, "no fast-path hit on n0");
    let stopped_clean = cluster
        .stop_agent(0, std::time::Duration::from_secs(10))
        .unwrap();
    assert!(stopped_clean, "kovn-agent did not exit cleanly on SIGTERM");
    let before = hits();
    assert!(pinged(&a, &ips["b"]), "a -> b with n0's agent stopped");
    assert!(hits() > before, "the fast path stopped with the agent");

    // The pod goes: CNI DEL on its node, then the API delete; the controller releases it.
    let (ok, out) = kubelet("DEL", "c", pods[2].2, &format!("{prefix}x-c"), &confs[1]);
    assert!(ok, "DEL c: {out}");
    assert_eq!(leftovers(sb.node(1), pods[2].2), Vec::<String>::new());
    api.delete::<Pod>(Some("default"), "c");
    wait(
        "c's IP released",
        std::time::Duration::from_secs(10),
        || {
            api.all::<api::IP>()
                .iter()
                .all(|i| i.metadata.name.as_deref() != Some("c.default"))
        },
    );
    cluster.teardown().expect("teardown");
}

#[test]
fn restarting_the_agent_and_the_controller_during_50_adds_networks_every_pod_once() {
    if !sandbox::privileged(
        "restarting_the_agent_and_the_controller_during_50_adds_networks_every_pod_once",
    ) {
        return;
    }
    const PODS: usize = 50;
    let mut cluster = KovnCluster::start(1, common::binaries()).expect("kovn on the sandbox");
    let prefix = sandbox::registry::netns_prefix(cluster.sb.id());
    let names: Vec<String> = (0..PODS).map(|i| format!("r{i}")).collect();
    let _namespaces = Namespaces(names.iter().map(|n| format!("{prefix}x-{n}")).collect());
    for name in &names {
        cluster.add_pod(name, 0);
        netns::add(&format!("{prefix}x-{name}")).unwrap();
    }
    // The kubelet: one ADD after another, each retried while it fails with "try again
    // later" (as the kubelet retries a sandbox whose network setup failed).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worker = std::thread::spawn({
        let node_kubelet = cluster.kubelets[0].clone();
        let names = names.clone();
        let prefix = prefix.clone();
        let done = done.clone();
        move || {
            let mut results = BTreeMap::new();
            let mut retries = 0;
            for (i, name) in names.iter().enumerate() {
                // Unique in the first 12 characters, as real container IDs are.
                let id = format!("{:012x}{:052x}", 0x5eed_0000_0000_u64 + i as u64, 0);
                let ns = format!("{prefix}x-{name}");
                let result = loop {
                    let (ok, out) = kubelet("ADD", name, &id, &ns, &node_kubelet);
                    if ok {
                        break out;
                    }
                    assert_eq!(out["code"], 11, "ADD {name}: {out}");
                    retries += 1;
                    assert!(retries < 200, "too many retries; last: {out}");
                    std::thread::sleep(std::time::Duration::from_millis(300));
                };
                results.insert(name.clone(), result);
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (results, retries)
        }
    });
    let at = |n: usize| {
        wait(
            &format!("{n} ADDs"),
            std::time::Duration::from_secs(120),
            || done.load(std::sync::atomic::Ordering::SeqCst) >= n,
        )
    };
    at(15);
    cluster.restart_agent(0).expect("agent restart");
    at(30);
    cluster.restart_controller().expect("controller restart");
    let (results, retries) = worker.join().expect("kubelet thread");
    eprintln!("50 ADDs with the agent and the controller restarted: {retries} retried");

    // Every pod networked once: its own address, its interface holding it, one OVS port.
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        let ip = results[name]["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        let annotated = routed_pod(&cluster.api, name).expect("routed");
        assert_eq!(
            ip.split('/').next().unwrap(),
            annotated[annotations::IP_ADDRESS]
        );
        let inside = Cmd::new("ip")
            .args(["-o", "addr", "show", "eth0"])
            .netns(format!("{prefix}x-{name}"))
            .run()
            .unwrap();
        assert!(inside.contains(&ip), "{name}'s eth0 lacks {ip}: {inside}");
    }
    let ports = on_node(cluster.sb.node(0), async || {
        let ovs = ovsdb::Client::connect(agent::ovs::client_config(&format!(
            "unix:{}",
            cluster.sb.node(0).db.socket.display()
        )))
        .await
        .unwrap();
        pod_port::kovn_ports(&ovs)
    });
    assert_eq!(ports.len(), PODS, "one OVS port per pod: {ports:?}");
    let nbctl = cluster.sb.central().nbctl();
    ports_up(&nbctl, [&names[0], &names[PODS - 1]]);
    let last_ip = results[&names[PODS - 1]]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        pinged(&format!("{prefix}x-{}", names[0]), &last_ip),
        "first pod cannot reach the last"
    );

    // DEL of the first pod purges its learned flows from the datapath at once.
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    let first_ip = results[&names[0]]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let flows_of_first = || common::flows_involving(&pins, first_ip);
    assert!(flows_of_first() > 0, "no flow learned for the first pod");
    let first_id = format!("{:012x}{:052x}", 0x5eed_0000_0000_u64, 0);
    let (ok, out) = kubelet(
        "DEL",
        &names[0],
        &first_id,
        &format!("{prefix}x-{}", names[0]),
        &cluster.kubelets[0],
    );
    assert!(ok, "DEL: {out}");
    assert_eq!(
        flows_of_first(),
        0,
        "the first pod's flows outlived its DEL"
    );
    cluster.teardown().expect("teardown");
}
