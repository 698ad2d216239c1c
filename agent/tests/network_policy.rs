//! NetworkPolicy end to end, with real packets: kovn-controller and kovn-agent processes on the
//! sandbox (real OVN, OVS and the eBPF datapath), policies written to the API stand-in as
//! `kubectl apply` would. The cases follow Kubernetes' own netpol e2e suite: namespaces x, y,
//! z labelled `ns=<name>`, pods a, b, c labelled `pod=<name>`, each serving TCP and UDP on 80
//! and 81 (container ports named `serve-<port>-<proto>`). x and y run on node 0, where the
//! fast path works; z on node 1, through Geneve.
//!
//! Each case is judged twice, as a user's traffic meets it:
//! - **new connections** (their first packets go through OVS): the reachability matrix must
//!   become exactly the expected one;
//! - **connections the fast path had learned before the policy**: none that the matrix denies
//!   may still get an answer (the fast path never outlives OVN's verdict). Allowed UDP flows
//!   keep working; an allowed TCP connection may be cut by OVS itself (its conntrack does not
//!   pick up connections it never saw begin), which is OVN's behaviour, not the fast path's.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use sandbox::kovn::{KovnCluster, RunningPod};
use sandbox::netns;
use serde_json::{Value, json};

/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// How long a case may take to converge.
const CONVERGE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
}

/// What a probe tries: a protocol and a port.
type Probe = (Proto, u16);
const TCP80: Probe = (Proto::Tcp, 80);
const TCP81: Probe = (Proto::Tcp, 81);
const UDP80: Probe = (Proto::Udp, 80);
const UDP81: Probe = (Proto::Udp, 81);

/// A pod of the world: namespace and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Id {
    ns: &'static str,
    pod: &'static str,
}

const PODS: [(Id, usize); 6] = [
    (Id { ns: "x", pod: "a" }, 0),
    (Id { ns: "x", pod: "b" }, 0),
    (Id { ns: "x", pod: "c" }, 0),
    (Id { ns: "y", pod: "a" }, 0),
    (Id { ns: "y", pod: "b" }, 0),
    (Id { ns: "z", pod: "a" }, 1),
];

fn id(ns: &'static str, pod: &'static str) -> Id {
    Id { ns, pod }
}

fn pod_object(who: Id, labels: &[(&str, &str)]) -> Pod {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": who.pod, "namespace": who.ns, "labels": labels},
        "spec": {"containers": [{"name": "server", "ports": [
            {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
            {"name": "serve-81-tcp", "containerPort": 81, "protocol": "TCP"},
            {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
            {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
        ]}]}
    }))
    .unwrap()
}

/// Echo servers on TCP and UDP 80 and 81 inside the pod (threads of this process whose
/// sockets live in the pod's namespace).
///
/// The pod sends no ICMP "port unreachable" (a late answer to a probe that gave up, reaching
/// a closed socket): OVN commits such related packets with `ct_commit_nat`, and OVS 3.1's
/// userspace conntrack then aborts on a later packet of the same tuple ("assertion
/// conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()"), taking the node's
/// switch down. The kernel datapath of a real node has no such bug.
fn serve(pod: &RunningPod) {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(
                b"table inet probe {
                    chain out {
                        type filter hook output priority 0;
                        icmp type destination-unreachable drop;
                        icmpv6 type destination-unreachable drop;
                    }
                }
",
            )?;
            child.wait()
        })
        .expect("nft in the pod");
    assert!(status.success(), "nft in the pod");
    // Every IPv4 address, and the pod's IPv6 one in a dual-stack subnet (bound apart: a
    // `[::]` socket would take the IPv4 port too).
    let addresses: Vec<IpAddr> = std::iter::once(IpAddr::from(Ipv4Addr::UNSPECIFIED))
        .chain(pod.ipv6.map(IpAddr::from))
        .collect();
    for (address, port) in addresses
        .iter()
        .flat_map(|a| [80u16, 81].map(move |p| (*a, p)))
    {
        let (tcp, udp) = netns::run_in(&pod.netns, move || {
            (
                TcpListener::bind((address, port)).unwrap(),
                UdpSocket::bind((address, port)).unwrap(),
            )
        })
        .unwrap();
        std::thread::spawn(move || {
            for conn in tcp.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
    }
}

/// A connection or socket pair that exchanged data before a case's policies: what the
/// fast path learned.
enum Established {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Established {
    fn open(from: &RunningPod, to: impl Into<IpAddr>, probe: Probe) -> Option<Established> {
        let to: IpAddr = to.into();
        let target = SocketAddr::new(to, probe.1);
        let any: IpAddr = if to.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let e = netns::run_in(&from.netns, move || match probe.0 {
            Proto::Tcp => TcpStream::connect_timeout(&target, PROBE_TIMEOUT)
                .ok()
                .map(Established::Tcp),
            Proto::Udp => {
                let s = UdpSocket::bind((any, 0)).ok()?;
                s.connect(target).ok()?;
                Some(Established::Udp(s))
            }
        })
        .unwrap()?;
        Some(e)
    }

    /// Sends one message and waits for its echo.
    fn exchange(&mut self) -> bool {
        let msg = b"ping";
        let mut buf = [0u8; 4];
        match self {
            Established::Tcp(s) => {
                let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
                s.write_all(msg).is_ok() && s.read_exact(&mut buf).is_ok()
            }
            Established::Udp(s) => {
                let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
                s.send(msg).is_ok() && s.recv(&mut buf).is_ok_and(|n| n == 4)
            }
        }
    }
}

/// Waits until new connections from `from` to each of `to` are all answered (or all
/// refused), on TCP and UDP 80; panics after [`CONVERGE`].
fn converge_between(case: &str, from: &RunningPod, to: &[IpAddr], allowed: bool) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let wrong: Vec<String> = to
            .iter()
            .flat_map(|ip| BASIC.iter().map(move |p| (*ip, *p)))
            .filter(|(ip, p)| probe(from, *ip, *p) != allowed)
            .map(|(ip, p)| format!("{} -> {ip} {p:?}: {}", from.name, wrong_verdict(!allowed)))
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "case {case}: after {CONVERGE:?}:\n{}",
            wrong.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How a probe that answered (or not) differs from what was expected.
fn wrong_verdict(answered: bool) -> &'static str {
    if answered {
        "answered, expected denied"
    } else {
        "denied, expected answered"
    }
}

/// A new connection (TCP) or a first datagram (UDP) from `from` to `to`, answered.
fn probe(from: &RunningPod, to: impl Into<IpAddr>, probe: Probe) -> bool {
    Established::open(from, to, probe).is_some_and(|mut e| e.exchange())
}

struct World {
    cluster: KovnCluster,
    pods: BTreeMap<Id, RunningPod>,
}

type Expect = dyn Fn(Id, Id, Probe) -> bool + Sync;

impl World {
    fn start() -> World {
        let cluster = KovnCluster::start(2, common::binaries()).expect("kovn on the sandbox");
        for ns in ["x", "y", "z"] {
            cluster.put_namespace(ns, &[("ns", ns)]);
        }
        let mut pods = BTreeMap::new();
        for (who, node) in PODS {
            let pod = cluster
                .start_pod_object(pod_object(who, &[("pod", who.pod)]), node)
                .unwrap_or_else(|e| panic!("pod {who:?}: {e}"));
            serve(&pod);
            pods.insert(who, pod);
        }
        let world = World { cluster, pods };
        // Ports bound by ovn-controller: every pair reaches every other.
        world.converge("no policy", &[TCP80, UDP80], &|_, _, _| true);
        world
    }

    fn ip(&self, who: Id) -> Ipv4Addr {
        self.pods[&who].ip
    }

    fn pairs(&self) -> Vec<(Id, Id)> {
        let ids: Vec<Id> = self.pods.keys().copied().collect();
        ids.iter()
            .flat_map(|a| ids.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a != b)
            .collect()
    }

    /// Probes every pair with every probe, in parallel: (from, to, probe) → answered.
    fn matrix(&self, probes: &[Probe]) -> BTreeMap<(Id, Id, Probe), bool> {
        let cells: Vec<(Id, Id, Probe)> = self
            .pairs()
            .into_iter()
            .flat_map(|(a, b)| probes.iter().map(move |p| (a, b, *p)))
            .collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = cells
                .iter()
                .map(|&(a, b, p)| {
                    let from = &self.pods[&a];
                    let to = self.ip(b);
                    scope.spawn(move || ((a, b, p), probe(from, to, p)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Waits until new connections match `expect` exactly; panics with the differences.
    fn converge(&self, case: &str, probes: &[Probe], expect: &Expect) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = self.matrix(probes);
            let first_wrong = got
                .iter()
                .find(|((a, b, p), ok)| expect(*a, *b, *p) != **ok)
                .map(|((a, b, _), _)| (*a, *b));
            let wrong: Vec<String> = got
                .iter()
                .filter(|((a, b, p), ok)| expect(*a, *b, *p) != **ok)
                .map(|((a, b, p), ok)| {
                    format!(
                        "{}/{} -> {}/{} {:?}/{}: {}",
                        a.ns,
                        a.pod,
                        b.ns,
                        b.pod,
                        p.0,
                        p.1,
                        wrong_verdict(*ok)
                    )
                })
                .collect();
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "case {case}: new connections differ from the policy after {CONVERGE:?}:\n{}\n{}",
                wrong.join("\n"),
                self.diagnostics(first_wrong)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What a failed case leaves to look at: NB's policy rows, node 0's conntrack, and for
    /// the first wrong pair OVS's datapath flows and the fast path's entries between them.
    fn diagnostics(&self, pair: Option<(Id, Id)>) -> String {
        self.diagnostics_between(pair.map(|(a, b)| (self.ip(a), self.ip(b))))
    }

    /// [`World::diagnostics`] for two addresses.
    fn diagnostics_between(&self, pair: Option<(Ipv4Addr, Ipv4Addr)>) -> String {
        let mut between: String = self
            .pods
            .iter()
            .map(|(who, pod)| format!("{}/{} = {}\n", who.ns, who.pod, pod.ip))
            .collect();
        if let Some((ia, ib)) = pair {
            let megaflows = self
                .cluster
                .sb
                .node(0)
                .appctl()
                .arg("dpctl/dump-flows")
                .run()
                .unwrap_or_default();
            let ours: Vec<&str> = megaflows
                .lines()
                .filter(|l| l.contains(&ia.to_string()) && l.contains(&ib.to_string()))
                .collect();
            // The OpenFlow rules ovn-controller installed that name the destination (stale
            // rules of an earlier case would show here).
            let mgmt = self.cluster.sb.node(0).dir.join("br-int.mgmt");
            let openflow = sandbox::Cmd::new("ovs-ofctl")
                .arg("dump-flows")
                .arg(format!("unix:{}", mgmt.display()))
                .run()
                .unwrap_or_default();
            let rules: Vec<&str> = openflow
                .lines()
                .filter(|l| l.contains(&ib.to_string()) || l.contains(&ia.to_string()))
                .collect();
            between += &format!(
                "OpenFlow rules naming {ia} or {ib}:\n{}\n",
                rules.join("\n")
            );
            let pins = self
                .cluster
                .sb
                .bpffs_dir()
                .join(&self.cluster.sb.node(0).name);
            let fast: Vec<String> = {
                use agent::datapath::{PinnedMaps, ReadMaps};
                let (ma, mb) = (ia.to_ipv6_mapped().octets(), ib.to_ipv6_mapped().octets());
                PinnedMaps::open(&pins)
                    .and_then(|m| m.flows())
                    .map(|flows| {
                        flows
                            .iter()
                            .filter(|(k, _)| {
                                (k.src == ma && k.dst == mb) || (k.src == mb && k.dst == ma)
                            })
                            .map(|(k, v)| format!("{k:?} -> {v:?}"))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            between += &format!(
                "OVS datapath flows {ia} <-> {ib}:\n{}\nfast-path entries {ia} <-> {ib}:\n{}\n",
                ours.join("\n"),
                fast.join("\n")
            );
        }
        let nbctl = self.cluster.sb.central().nbctl();
        let groups = nbctl
            .run(["--columns=name,ports,acls", "list", "Port_Group"])
            .unwrap_or_default();
        let acls = nbctl
            .run(["--columns=direction,priority,match,action", "list", "ACL"])
            .unwrap_or_default();
        let conntrack = self
            .cluster
            .sb
            .node(0)
            .appctl()
            .arg("dpctl/dump-conntrack")
            .run()
            .unwrap_or_default();
        format!(
            "{between}NB port groups:\n{groups}\nNB ACLs:\n{acls}\nnode 0 conntrack:\n{conntrack}"
        )
    }

    /// Connections between same-node pods that exchanged enough to be fast-pathed.
    fn establish(&self, probes: &[Probe]) -> Vec<((Id, Id, Probe), Established)> {
        let mut out = Vec::new();
        for (a, b) in self.pairs() {
            if self.pods[&a].node != 0 || self.pods[&b].node != 0 {
                continue;
            }
            for p in probes {
                // Five answered exchanges (a slow-path packet may be lost on a busy machine:
                // a few tries, bounded).
                let deadline = Instant::now() + Duration::from_secs(10);
                let e = loop {
                    if let Some(mut e) = Established::open(&self.pods[&a], self.ip(b), *p)
                        && (0..5).all(|_| e.exchange())
                    {
                        break e;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{a:?} -> {b:?} {p:?} before the case"
                    );
                };
                out.push(((a, b, *p), e));
            }
        }
        // Learned flows are in the fast path's map.
        let pins = self
            .cluster
            .sb
            .bpffs_dir()
            .join(&self.cluster.sb.node(0).name);
        let x_a = self.ip(id("x", "a"));
        assert!(
            common::flows_involving(&pins, x_a) > 0,
            "the warm-up taught the fast path nothing"
        );
        out
    }

    /// Runs one case: learned connections, `change`, convergence of new connections to
    /// `expect`, then no learned connection the policy denies gets an answer.
    fn case(&self, name: &str, probes: &[Probe], change: impl FnOnce(&World), expect: &Expect) {
        let started = Instant::now();
        let mut learned = self.establish(probes);
        change(self);
        self.converge(name, probes, expect);
        let bypass: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = learned
                .iter_mut()
                .map(|((a, b, p), e)| {
                    let (a, b, p) = (*a, *b, *p);
                    scope.spawn(move || {
                        // Three tries: a denied flow must answer none, an allowed one at
                        // least one (a slow-path packet may be lost right after a change).
                        let answered = (0..3).any(|_| e.exchange());
                        let allowed = expect(a, b, p);
                        match (allowed, answered, p.0) {
                            (false, true, _) => Some(format!(
                                "{a:?} -> {b:?} {p:?}: a learned flow the policy denies was answered"
                            )),
                            (true, false, Proto::Udp) => Some(format!(
                                "{a:?} -> {b:?} {p:?}: a learned UDP flow the policy allows was cut"
                            )),
                            _ => None,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert!(bypass.is_empty(), "case {name}:\n{}", bypass.join("\n"));
        println!(
            "case {name}: ok in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    fn apply(&self, policy: Value) {
        let p: NetworkPolicy = serde_json::from_value(policy).expect("a NetworkPolicy");
        self.cluster.api.put(&p);
    }

    fn relabel_pod(&self, who: Id, labels: &[(&str, &str)]) {
        let mut pod = self
            .cluster
            .api
            .all::<Pod>()
            .into_iter()
            .find(|p| {
                p.metadata.name.as_deref() == Some(who.pod)
                    && p.metadata.namespace.as_deref() == Some(who.ns)
            })
            .expect("the pod object");
        pod.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.cluster.api.put(&pod);
    }

    fn relabel_namespace(&self, ns: &str, labels: &[(&str, &str)]) {
        let mut namespace = self
            .cluster
            .api
            .all::<Namespace>()
            .into_iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns))
            .expect("the namespace");
        namespace.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.cluster.api.put(&namespace);
    }

    /// Once NB holds no policy's port group, has every ovn-controller recompute its flows
    /// and every ovs-vswitchd drop its datapath flows. Stale verdicts outlived deleted
    /// policies by 20 s and more: in CI a drop megaflow for x/c -> x/a TCP 80 stayed in use
    /// with no policy in NB (once an allow of y/b -> x/a outlived its policy the same way),
    /// and after a recompute alone a `+new ... udp(dst=81) actions:drop` megaflow y/a -> x/a
    /// still was: ovs-vswitchd 3.1's userspace datapath kept a megaflow its OpenFlow rules no
    /// longer give. Every case starts from flows that match NB; within a case, the flows are
    /// OVN's and OVS's incremental ones, as in a cluster.
    fn recompute_when_nb_is_clean(&self) {
        let nbctl = self.cluster.sb.central().nbctl();
        let deadline = Instant::now() + CONVERGE;
        loop {
            let names = nbctl
                .run(["--bare", "--columns=name", "list", "Port_Group"])
                .unwrap_or_default();
            if names
                .lines()
                .all(|n| n.trim().is_empty() || n.starts_with("node."))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "policy port groups left in NB: {names}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nbctl.run(["--wait=hv", "sync"]);
        for node in self.cluster.sb.nodes() {
            let pid =
                std::fs::read_to_string(node.dir.join("ovn-controller.pid")).unwrap_or_default();
            let ctl = node.dir.join(format!("ovn-controller.{}.ctl", pid.trim()));
            sandbox::Cmd::new("ovn-appctl")
                .arg("-t")
                .arg(ctl.display().to_string())
                .arg("recompute")
                .run()
                .expect("ovn-controller recompute");
        }
        let _ = nbctl.run(["--wait=hv", "sync"]);
        for node in self.cluster.sb.nodes() {
            node.appctl()
                .arg("dpctl/del-flows")
                .run()
                .expect("flush the node's datapath flows");
        }
    }

    /// A ClusterIP Service `name` in x at `vip` (TCP and UDP 80) whose one backend is `backend`.
    fn put_service(&self, name: &str, vip: Ipv4Addr, backend: Id) {
        let service: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "x"},
            "spec": {"clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()],
                "ipFamilies": ["IPv4"],
                "ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 80},
                          {"name": "udp", "port": 80, "protocol": "UDP", "targetPort": 80}]}
        }))
        .expect("a Service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "x",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "tcp", "port": 80, "protocol": "TCP"},
                      {"name": "udp", "port": 80, "protocol": "UDP"}],
            "endpoints": [{"addresses": [self.ip(backend).to_string()],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": backend.pod, "namespace": backend.ns}}]
        }))
        .expect("an EndpointSlice");
        self.cluster.api.put(&service);
        self.cluster.api.put(&slice);
    }

    fn delete_service(&self, name: &str) {
        self.cluster
            .api
            .delete::<EndpointSlice>(Some("x"), &format!("{name}-1"));
        self.cluster.api.delete::<Service>(Some("x"), name);
    }

    /// Waits until new connections from `from` to each VIP answer as `expect` says (VIP,
    /// answered); panics with the differences and the diagnostics of `from` and the first
    /// wrong VIP's backend.
    fn converge_vips(&self, case: &str, from: Id, expect: &[(Ipv4Addr, Id, bool)]) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let wrong: Vec<(String, Id)> = expect
                .iter()
                .flat_map(|&(vip, backend, allowed)| {
                    BASIC.iter().filter_map(move |&p| {
                        let answered = probe(&self.pods[&from], vip, p);
                        (answered != allowed).then(|| {
                            (
                                format!(
                                    "{from:?} -> {vip} (backend {backend:?}) {p:?}: {}",
                                    wrong_verdict(answered)
                                ),
                                backend,
                            )
                        })
                    })
                })
                .collect();
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "case {case}: connections to Services differ after {CONVERGE:?}:\n{}\n{}",
                wrong
                    .iter()
                    .map(|(w, _)| w.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.diagnostics(Some((from, wrong[0].1)))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// VPC `tenant` with subnet `tenant-net` (10.40.0.0/24) for namespace t, and pods t/a
    /// and t/b in it on node 0.
    fn tenant_pods(&self) -> (RunningPod, RunningPod) {
        let vpc = json!({"apiVersion": "kubeovn.io/v1", "kind": "Vpc",
            "metadata": {"name": "tenant"}, "spec": {}});
        let subnet = json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet",
            "metadata": {"name": "tenant-net", "creationTimestamp": "2026-01-01T00:00:10Z"},
            "spec": {"cidrBlock": "10.40.0.0/24", "vpc": "tenant", "protocol": "IPv4",
                "namespaces": ["t"]}});
        let pods = self.pods_in_subnet("t", subnet, Some(vpc));
        for pod in [&pods.0, &pods.1] {
            assert!(
                pod.ip.octets()[..3] == [10, 40, 0],
                "{} is not in tenant-net: {}",
                pod.name,
                pod.ip
            );
        }
        pods
    }

    /// Subnet `dual-net` (10.41.0.0/24 and fd00:41::/120) for namespace d, and pods d/a and
    /// d/b in it on node 0, serving on both families.
    fn dual_stack_pods(&self) -> (RunningPod, RunningPod) {
        let subnet = json!({"apiVersion": "kubeovn.io/v1", "kind": "Subnet",
            "metadata": {"name": "dual-net", "creationTimestamp": "2026-01-01T00:00:11Z"},
            "spec": {"protocol": "Dual", "cidrBlock": "10.41.0.0/24,fd00:41::/120",
                "gateway": "10.41.0.1,fd00:41::1", "namespaces": ["d"]}});
        let pods = self.pods_in_subnet("d", subnet, None);
        for pod in [&pods.0, &pods.1] {
            assert!(
                pod.ipv6.is_some(),
                "{} has no IPv6 address: {}",
                pod.name,
                pod.ip
            );
        }
        pods
    }

    /// `subnet` (and `vpc`, if one) for namespace `ns`, then pods `<ns>/a` and `<ns>/b` in
    /// it on node 0, serving as the others do.
    fn pods_in_subnet(
        &self,
        ns: &'static str,
        subnet: Value,
        vpc: Option<Value>,
    ) -> (RunningPod, RunningPod) {
        if let Some(vpc) = vpc {
            let vpc: api::Vpc = serde_json::from_value(vpc).expect("a Vpc");
            self.cluster.api.put(&vpc);
        }
        let subnet: api::Subnet = serde_json::from_value(subnet).expect("a Subnet");
        let switch = subnet.metadata.name.clone().unwrap_or_default();
        self.cluster.api.put(&subnet);
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"ns": ns},
                "annotations": {"ovn.kubernetes.io/logical_switch": switch}}
        }))
        .expect("a Namespace");
        self.cluster.api.put(&namespace);
        // The subnet's switch first: the namespace's pods are allocated from it.
        self.cluster
            .wait_for_switch(&switch, CONVERGE)
            .unwrap_or_else(|e| panic!("{e}"));
        let start = |who: Id| {
            let pod = self
                .cluster
                .start_pod_object(pod_object(who, &[("pod", who.pod)]), 0)
                .unwrap_or_else(|e| panic!("pod {who:?}: {e}"));
            serve(&pod);
            pod
        };
        (start(id(ns, "a")), start(id(ns, "b")))
    }

    /// Replaces the default subnet's `spec.acls`.
    fn set_default_subnet_acls(&self, acls: Value) {
        let mut subnet = self
            .cluster
            .api
            .all::<api::Subnet>()
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some("ovn-default"))
            .expect("the default subnet");
        subnet.spec.acls = serde_json::from_value(acls).expect("Kube-OVN's acls");
        self.cluster.api.put(&subnet);
    }

    /// Deletes every policy and restores labels; waits until everything reaches everything.
    /// Then empties the nodes' conntrack tables: with stateful ACLs OVN commits every
    /// connection with `nat(src)`, and OVS 3.1's userspace conntrack aborts ("assertion
    /// conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()") when a packet
    /// meets the NAT entry of a connection that has expired (after about 30 s here). The
    /// cases are short; a clean table before each keeps every entry younger than that. A
    /// kernel datapath has no such bug.
    fn reset(&self) {
        for p in self.cluster.api.all::<NetworkPolicy>() {
            self.cluster.api.delete::<NetworkPolicy>(
                p.metadata.namespace.as_deref(),
                p.metadata.name.as_deref().unwrap_or_default(),
            );
        }
        for (who, _) in PODS {
            self.relabel_pod(who, &[("pod", who.pod)]);
        }
        for ns in ["x", "y", "z"] {
            self.relabel_namespace(ns, &[("ns", ns)]);
        }
        self.set_default_subnet_acls(json!([]));
        self.recompute_when_nb_is_clean();
        self.converge("reset", ALL_PORTS, &|_, _, _| true);
        for node in self.cluster.sb.nodes() {
            node.appctl()
                .arg("dpctl/flush-conntrack")
                .run()
                .expect("flush the node's conntrack");
        }
    }
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn only_x_a() -> Value {
    json!({"matchLabels": {"pod": "a"}})
}

const X_A: Id = Id { ns: "x", pod: "a" };
const BASIC: &[Probe] = &[TCP80, UDP80];
const ALL_PORTS: &[Probe] = &[TCP80, TCP81, UDP80, UDP81];

#[test]
fn network_policies_hold_for_new_and_fast_pathed_connections() {
    if !sandbox::privileged("network_policies_hold_for_new_and_fast_pathed_connections") {
        return;
    }
    let w = World::start();
    let mut cases = 0;
    let mut run = |name: &str, probes: &[Probe], change: &dyn Fn(&World), expect: &Expect| {
        w.case(name, probes, change, expect);
        w.reset();
        cases += 1;
    };

    // With Kube-OVN's logging annotation: ovn-controller logs the drops under the policy's
    // name (where an operator looks for what a policy refused).
    run(
        "deny all ingress in x, drops logged",
        BASIC,
        &|w| {
            let mut p = policy("x", "deny-all", json!({"podSelector": {}}));
            p["metadata"]["annotations"] = json!({"ovn.kubernetes.io/enable_log": "true"});
            w.apply(p)
        },
        &|_, to, _| to.ns != "x",
    );
    let logged = std::fs::read_to_string(w.cluster.sb.node(0).dir.join("ovn-controller.log"))
        .unwrap_or_default();
    assert!(
        logged.lines().any(|l| l.contains("acl_log")
            && l.contains("name=\"x/deny-all\"")
            && l.contains("verdict=drop")),
        "no drop of x/deny-all in node 0's ovn-controller log:\n{}",
        logged
            .lines()
            .filter(|l| l.contains("acl_log"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    run(
        "deny all, then allow all ingress in x (policies union)",
        BASIC,
        &|w| {
            w.apply(policy("x", "deny-all", json!({"podSelector": {}})));
            w.apply(policy(
                "x",
                "allow-all",
                json!({"podSelector": {}, "ingress": [{}]}),
            ));
        },
        &|_, _, _| true,
    );
    run(
        "deny all egress from x",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "deny-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            ))
        },
        &|from, _, _| from.ns != "x",
    );
    run(
        "allow ingress to x/a from pods of x labelled pod=b",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-b",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || from == id("x", "b"),
    );
    run(
        "allow ingress to x/a from namespace y",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-y",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || from.ns == "y",
    );
    run(
        "pod and namespace selector in one peer (AND)",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-y-b",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}},
                     "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || from == id("y", "b"),
    );
    run(
        "pod selector or namespace selector (two peers)",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-y-or-b",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                    {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || from.ns == "y" || from == id("x", "b"),
    );
    run(
        "pods labelled pod=b in every namespace (empty namespace selector)",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-any-b",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || from.pod == "b",
    );
    run(
        "match expressions: namespaces NotIn [y], pods In [a, c]",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "expressions",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {"matchExpressions": [
                        {"key": "ns", "operator": "NotIn", "values": ["y"]}]},
                     "podSelector": {"matchExpressions": [
                        {"key": "pod", "operator": "In", "values": ["a", "c"]}]}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || (from.ns != "y" && from.pod != "b"),
    );
    run(
        "ingress on TCP 80 only",
        ALL_PORTS,
        &|w| {
            w.apply(policy(
                "x",
                "tcp-80",
                json!({"podSelector": only_x_a(), "ingress": [{"ports": [{"port": 80}]}]}),
            ))
        },
        &|_, to, p| to != X_A || p == TCP80,
    );
    run(
        "ingress on UDP 81 only",
        ALL_PORTS,
        &|w| {
            w.apply(policy(
                "x",
                "udp-81",
                json!({"podSelector": only_x_a(), "ingress": [{"ports": [
                    {"protocol": "UDP", "port": 81}]}]}),
            ))
        },
        &|_, to, p| to != X_A || p == UDP81,
    );
    run(
        "named port serve-81-tcp",
        ALL_PORTS,
        &|w| {
            w.apply(policy(
                "x",
                "named",
                json!({"podSelector": only_x_a(), "ingress": [{"ports": [
                    {"port": "serve-81-tcp"}]}]}),
            ))
        },
        &|_, to, p| to != X_A || p == TCP81,
    );
    run(
        "port range 80-81 (endPort) on TCP",
        ALL_PORTS,
        &|w| {
            w.apply(policy(
                "x",
                "range",
                json!({"podSelector": only_x_a(), "ingress": [{"ports": [
                    {"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
            ))
        },
        &|_, to, p| to != X_A || p.0 == Proto::Tcp,
    );
    run(
        "protocol without a port: every UDP port",
        ALL_PORTS,
        &|w| {
            w.apply(policy(
                "x",
                "udp-any",
                json!({"podSelector": only_x_a(), "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
            ))
        },
        &|_, to, p| to != X_A || p.0 == Proto::Udp,
    );
    let y_b = w.ip(id("y", "b"));
    run(
        "ipBlock: the pod network except y/b",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "block",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [{"ipBlock": {
                    "cidr": "10.16.0.0/16", "except": [format!("{y_b}/32")]}}]}]}),
            ))
        },
        &|from, to, _| to != X_A || from != id("y", "b"),
    );
    run(
        "egress from x/a to pods of x labelled pod=b only",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "to-b",
                json!({"podSelector": only_x_a(), "policyTypes": ["Egress"], "egress": [{"to": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ))
        },
        &|from, to, _| from != X_A || to == id("x", "b"),
    );
    let y_a = w.ip(id("y", "a"));
    run(
        "egress from x/a to an ipBlock (y/a's address)",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "to-block",
                json!({"podSelector": only_x_a(), "policyTypes": ["Egress"], "egress": [{"to": [
                    {"ipBlock": {"cidr": format!("{y_a}/32")}}]}]}),
            ))
        },
        &|from, to, _| from != X_A || to == id("y", "a"),
    );
    run(
        "egress from x/a on UDP 80 only",
        ALL_PORTS,
        &|w| {
            w.apply(policy(
                "x",
                "egress-udp-80",
                json!({"podSelector": only_x_a(), "policyTypes": ["Egress"], "egress": [{"ports": [
                    {"protocol": "UDP", "port": 80}]}]}),
            ))
        },
        &|from, _, p| from != X_A || p == UDP80,
    );
    run(
        "two policies on x/a union: from x/b, and from namespace z (another node)",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-b",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ));
            w.apply(policy(
                "x",
                "from-z",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
            ));
        },
        &|from, to, _| to != X_A || from == id("x", "b") || from.ns == "z",
    );
    run(
        "policyTypes Ingress and Egress with only ingress rules: egress denied",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "both",
                json!({"podSelector": only_x_a(), "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{}]}),
            ))
        },
        &|from, _, _| from != X_A,
    );
    run(
        "egress rules without policyTypes isolate egress only",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "egress-implied",
                json!({"podSelector": only_x_a(), "egress": [{"to": [
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            ))
        },
        // Ingress is isolated too (policyTypes default to Ingress), with no ingress rule.
        &|from, to, _| (from != X_A || to.ns == "y") && to != X_A,
    );
    run(
        "a pod relabelled into a peer selector is let in",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-b",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ));
            w.relabel_pod(id("x", "c"), &[("pod", "b")]);
        },
        &|from, to, _| to != X_A || from == id("x", "b") || from == id("x", "c"),
    );
    run(
        "a pod relabelled out of the policy's selection is no longer isolated",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "deny-a",
                json!({"podSelector": {"matchLabels": {"pod": "c"}}}),
            ));
            w.relabel_pod(id("x", "c"), &[("pod", "c2")]);
            w.relabel_pod(X_A, &[("pod", "c")]);
        },
        &|_, to, _| to != X_A,
    );
    run(
        "a namespace relabelled into a namespace selector is let in",
        BASIC,
        &|w| {
            w.apply(policy(
                "x",
                "from-team",
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}),
            ));
            w.relabel_namespace("y", &[("ns", "y"), ("team", "blue")]);
        },
        &|from, to, _| to != X_A || from.ns == "y",
    );
    run(
        "a policy updated: from pod=b becomes from pod=c",
        BASIC,
        &|w| {
            let spec = |pod: &str| {
                json!({"podSelector": only_x_a(), "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"pod": pod}}}]}]})
            };
            w.apply(policy("x", "from", spec("b")));
            w.converge("from pod=b", BASIC, &|from, to, _| {
                to != X_A || from == id("x", "b")
            });
            w.apply(policy("x", "from", spec("c")));
        },
        &|from, to, _| to != X_A || from == id("x", "c"),
    );
    run(
        "a policy deleted lets everything in again",
        BASIC,
        &|w| {
            w.apply(policy("x", "deny-all", json!({"podSelector": {}})));
            w.converge("deny all", BASIC, &|_, to, _| to.ns != "x");
            w.cluster.api.delete::<NetworkPolicy>(Some("x"), "deny-all");
        },
        &|_, _, _| true,
    );

    // Subnet `spec.acls`, Kube-OVN's way to write ACLs on a subnet's switch: a drop of UDP 80
    // towards x/a in ovn-default.
    let x_a_ip = w.ip(X_A);
    run(
        "a Subnet's spec.acls drop UDP 80 towards x/a",
        BASIC,
        &|w| {
            w.set_default_subnet_acls(json!([{"direction": "to-lport", "priority": 2500,
                "match": format!("ip4.dst == {x_a_ip} && udp.dst == 80"), "action": "drop"}]))
        },
        &|_, to, p| to != X_A || p != UDP80,
    );

    // Egress to a Service is judged on its backend: kovn's balancer translates the VIP at
    // x/a's veth, before OVS, so OVN's egress ACLs see the backend (as they do after OVN's own
    // load balancer). x/a may send only to pods labelled pod=b in x: through a VIP, x/b
    // answers and y/a does not, for new connections and for ones learned before the policy.
    let (vip_x_b, vip_y_a) = (
        Ipv4Addr::new(10, 96, 100, 10),
        Ipv4Addr::new(10, 96, 100, 11),
    );
    let (x_b, y_a) = (id("x", "b"), id("y", "a"));
    w.put_service("to-x-b", vip_x_b, x_b);
    w.put_service("to-y-a", vip_y_a, y_a);
    w.converge_vips(
        "Services without policy",
        X_A,
        &[(vip_x_b, x_b, true), (vip_y_a, y_a, true)],
    );
    let mut learned: Vec<((Ipv4Addr, Probe), Established)> = [vip_x_b, vip_y_a]
        .iter()
        .flat_map(|&vip| BASIC.iter().map(move |&p| (vip, p)))
        .map(|(vip, p)| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(mut e) = Established::open(&w.pods[&X_A], vip, p)
                    && (0..5).all(|_| e.exchange())
                {
                    break ((vip, p), e);
                }
                assert!(
                    Instant::now() < deadline,
                    "x/a -> {vip} {p:?} before the case"
                );
            }
        })
        .collect();
    w.apply(policy(
        "x",
        "egress-to-b",
        json!({"podSelector": only_x_a(), "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    ));
    w.converge_vips(
        "egress through a Service judged on the backend",
        X_A,
        &[(vip_x_b, x_b, true), (vip_y_a, y_a, false)],
    );
    for ((vip, p), e) in &mut learned {
        let answered = (0..3).any(|_| e.exchange());
        if *vip == vip_y_a {
            assert!(
                !answered,
                "x/a -> {vip} {p:?}: a learned flow to a denied backend was answered"
            );
        } else if p.0 == Proto::Udp {
            assert!(
                answered,
                "x/a -> {vip} {p:?}: a learned UDP flow to an allowed backend was cut"
            );
        }
    }
    drop(learned);
    w.delete_service("to-x-b");
    w.delete_service("to-y-a");
    w.reset();
    cases += 1;
    println!("case egress through a Service judged on the backend: ok");

    // A custom VPC: a policy holds on its switch as on the default VPC's (port groups and
    // ACLs follow the pods, whatever switch and router they sit behind), for new
    // connections and for ones the fast path learned before it.
    let (t_a, t_b) = w.tenant_pods();
    let answered = |e: &mut Established| (0..3).any(|_| e.exchange());
    let tenant_converge =
        |case: &str, allowed: bool| converge_between(case, &t_b, &[t_a.ip.into()], allowed);
    tenant_converge("a custom VPC without policy", true);
    let mut learned: Vec<Established> = BASIC
        .iter()
        .map(|p| {
            let mut e = Established::open(&t_b, t_a.ip, *p).expect("t/b -> t/a");
            assert!(
                (0..5).all(|_| e.exchange()),
                "t/b -> t/a {p:?} before the case"
            );
            e
        })
        .collect();
    w.apply(policy("t", "deny-all", json!({"podSelector": {}})));
    tenant_converge("deny all ingress in a custom VPC", false);
    for (e, p) in learned.iter_mut().zip(BASIC) {
        assert!(
            !answered(e),
            "t/b -> t/a {p:?}: a learned flow in the custom VPC outlived deny-all\n{}",
            w.diagnostics_between(Some((t_b.ip, t_a.ip)))
        );
    }
    w.apply(policy(
        "t",
        "from-b",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    ));
    tenant_converge("allow from pod=b in a custom VPC", true);
    w.reset();
    drop((t_a, t_b));
    cases += 2;
    println!("cases in a custom VPC: ok");

    // IPv6: a dual-stack namespace. A policy holds for both families (an address set per
    // family), and neighbour discovery survives default deny (else no IPv6 peer is reached
    // once allowed), on new connections and learned flows.
    let (d_a, d_b) = w.dual_stack_pods();
    let d_a6 = IpAddr::V6(d_a.ipv6.expect("d/a has an IPv6 address"));
    let both = [IpAddr::V4(d_a.ip), d_a6];
    converge_between("a dual-stack namespace without policy", &d_b, &both, true);
    let mut learned: Vec<(IpAddr, Probe, Established)> = both
        .iter()
        .flat_map(|ip| BASIC.iter().map(move |p| (*ip, *p)))
        .map(|(ip, p)| {
            let mut e = Established::open(&d_b, ip, p).expect("d/b -> d/a");
            assert!(
                (0..5).all(|_| e.exchange()),
                "d/b -> {ip} {p:?} before the case"
            );
            (ip, p, e)
        })
        .collect();
    w.apply(policy("d", "deny-all", json!({"podSelector": {}})));
    converge_between("deny all ingress, IPv4 and IPv6", &d_b, &both, false);
    for (ip, p, e) in &mut learned {
        assert!(
            !answered(e),
            "d/b -> {ip} {p:?}: a learned flow outlived deny-all"
        );
    }
    w.apply(policy(
        "d",
        "from-b",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    ));
    converge_between("allow from pod=b, IPv4 and IPv6", &d_b, &both, true);
    w.reset();
    drop((d_a, d_b));
    cases += 2;
    println!("cases in a dual-stack namespace: ok");

    // The node's own traffic (kubelet probes, from its join address) passes default deny.
    // (Another node's join address is not let in, as in Kube-OVN; not checked here: a node
    // does not reach pods of other nodes through its join address even without policy.)
    let target = SocketAddr::from((w.ip(X_A), 80));
    let from_node = |i: usize| {
        netns::run_in(&w.cluster.sb.node(i).netns, move || {
            TcpStream::connect_timeout(&target, PROBE_TIMEOUT).is_ok()
        })
        .unwrap()
    };
    assert!(from_node(0), "x/a's node reaches it without policy");
    w.apply(policy("x", "deny-all", json!({"podSelector": {}})));
    w.converge("deny all for node probes", BASIC, &|_, to, _| to.ns != "x");
    assert!(from_node(0), "x/a's own node is refused under default deny");
    cases += 1;
    println!("{cases} cases held");
    assert!(cases >= 25);
}

/// A NetworkPolicy written while a one-way UDP stream is fast-pathed ends it within 200 ms,
/// measured at the receiver: the controller writes the ACLs with an nb_cfg bump in the same
/// transaction, ovn-controller reports it, the agent invalidates the fast path; OVS drops.
#[test]
fn a_network_policy_written_mid_stream_stops_a_fast_pathed_stream_within_200ms() {
    if !sandbox::privileged(
        "a_network_policy_written_mid_stream_stops_a_fast_pathed_stream_within_200ms",
    ) {
        return;
    }
    let cluster = KovnCluster::start(1, common::binaries()).expect("kovn on the sandbox");
    let start = |name: &'static str| {
        cluster
            .start_pod_object(pod_object(id("default", name), &[("pod", name)]), 0)
            .expect("pod")
    };
    // The running pods own their namespaces: kept for the whole test.
    let (running_a, running_b) = (start("a"), start("b"));
    let (a, b) = (running_a.as_pod(&cluster), running_b.as_pod(&cluster));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (_sink, sending) = common::udp_stream(&a, &b, 5001, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let pins = cluster.sb.bpffs_dir().join(&cluster.sb.node(0).name);
    assert!(
        common::flows_involving(&pins, b.ip) > 0,
        "the stream is fast-pathed"
    );
    let capture = sandbox::traffic::Capture::start(
        &b.netns,
        "eth0",
        &format!("udp and src host {} and dst port 5001", a.ip),
        cluster.sb.dir().join("np-revocation.pcap"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let written = common::epoch_seconds();
    let deny: NetworkPolicy = serde_json::from_value(policy(
        "default",
        "deny-b",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}}),
    ))
    .unwrap();
    cluster.api.put(&deny);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = sending.join().unwrap();
    let times = capture.stop_with_times().unwrap();
    let last = times.iter().map(|t| t - written).fold(f64::MIN, f64::max);
    println!(
        "last datagram at b {:.0} ms after the NetworkPolicy was written",
        last * 1e3
    );
    let before = common::assert_none_200ms_after(&times, written, "a NetworkPolicy's write");
    assert!(
        before > 50,
        "b received the stream before the policy ({before} of {sent} datagrams)"
    );
}
