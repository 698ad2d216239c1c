//! Kubelet probes of pods in custom VPCs, as Kube-OVN's daemon serves them with tproxy: a
//! custom VPC's addresses are not routed from the node (they may overlap the node's own
//! networks or another VPC's), so the kubelet's TCP and HTTP probes could not reach the pod.
//! The agent intercepts the node's own connections to a local custom-VPC pod's probe ports
//! and opens them again inside the pod's network namespace, to the pod's address there.
//!
//! The path of one probe, all on the node:
//! 1. nftables `output` (route hook): a connection from the node to `<pod ip> . <probe port>`
//!    gets [`MARK`]; the mark's policy rule (priority [`RULE_PRIORITY`]) looks up
//!    [`ROUTE_TABLE`], whose one route is `local default dev lo`, so the packet comes back in
//!    on `lo`;
//! 2. nftables `prerouting` hands it to the proxy's transparent listener on
//!    `127.0.0.1:`[`PROXY_PORT`], which accepts it with the pod's address as its local one;
//! 3. the proxy connects, from a thread inside the pod's namespace, to the pod's own address
//!    and port, and copies both ways.
//!
//! What is trusted: the pod's address and namespace are the agent's own records of the
//! attachment (the address the controller allocated and CNI ADD verified), never the pod's
//! status or annotations; the ports are those the pod's spec probes, so a pod can only have
//! the node's connections to its own address intercepted. Two local pods with the same
//! address (two VPCs) are ambiguous: neither is intercepted, and that is logged. A connection
//! to anything else the listener is handed is closed. IPv4 only (the IPv6 table is not
//! written): an IPv6-only custom-VPC pod's probes are not served yet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::{IpVersion, RouteMessageBuilder};

use crate::local_pod::{AttachmentId, LocalPod};
use crate::netlink::{connect, index_of};

/// Kube-OVN's tproxy port.
pub const PROXY_PORT: u16 = 8102;
/// The mark of intercepted connections (in the upper half; the lower half is left to others).
pub const MARK: u32 = 0x6b76_0000;
pub const MARK_MASK: u32 = 0xffff_0000;
/// Kube-OVN's tproxy route table.
pub const ROUTE_TABLE: u32 = 10001;
pub const RULE_PRIORITY: u32 = 10001;
/// The nftables table (ip family).
pub const NFT_TABLE: &str = "kovn_probe";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The TCP ports a pod's probes connect to (tcpSocket and httpGet of liveness, readiness and
/// startup probes; named ports through the container's ports), sorted, once each.
pub fn probe_ports(pod: &Pod) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    let containers: &[Container] = pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice());
    for c in containers {
        let probes: [&Option<Probe>; 3] = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
        for probe in probes.into_iter().flatten() {
            let port = probe
                .tcp_socket
                .as_ref()
                .map(|t| &t.port)
                .or(probe.http_get.as_ref().map(|h| &h.port));
            let port = match port {
                Some(IntOrString::Int(p)) => u16::try_from(*p).ok(),
                Some(IntOrString::String(name)) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
                None => None,
            };
            ports.extend(port.filter(|p| *p != 0));
        }
    }
    ports.into_iter().collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    netns: PathBuf,
    ports: BTreeSet<u16>,
}

/// The local custom-VPC pods whose probes are intercepted, and the nftables rules last
/// written for them.
#[derive(Debug)]
pub struct ProbeProxy {
    default_vpc: String,
    pods: Mutex<BTreeMap<AttachmentId, (Vec<Ipv4Addr>, Target)>>,
    applied: Mutex<Option<String>>,
}

impl ProbeProxy {
    pub fn new(default_vpc: &str) -> ProbeProxy {
        ProbeProxy {
            default_vpc: default_vpc.to_owned(),
            pods: Mutex::new(BTreeMap::new()),
            applied: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AttachmentId, (Vec<Ipv4Addr>, Target)>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `pod`'s probes if it is in a custom VPC and has any; rewrites the rules.
    pub fn register(&self, pod: &LocalPod) {
        let custom = pod.vpc.as_deref().is_some_and(|v| v != self.default_vpc);
        let (Some(netns), false) = (pod.netns.as_ref(), pod.probe_ports.is_empty()) else {
            return;
        };
        if !custom {
            return;
        }
        let ips: Vec<Ipv4Addr> = pod
            .addresses
            .iter()
            .filter_map(|a| match a.addr() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        let target = Target {
            netns: PathBuf::from(netns),
            ports: pod.probe_ports.iter().copied().collect(),
        };
        self.lock().insert(pod.attachment.clone(), (ips, target));
        self.apply();
    }

    /// Stops serving an attachment's probes (its DEL, its garbage collection).
    pub fn unregister(&self, attachment: &AttachmentId) {
        if self.lock().remove(attachment).is_some() {
            self.apply();
        }
    }

    /// Address → target, without the addresses two pods claim.
    fn by_address(&self) -> BTreeMap<Ipv4Addr, Target> {
        let mut out: BTreeMap<Ipv4Addr, Target> = BTreeMap::new();
        let mut ambiguous: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for (ips, target) in self.lock().values() {
            for ip in ips {
                if out.insert(*ip, target.clone()).is_some() {
                    ambiguous.insert(*ip);
                }
            }
        }
        for ip in &ambiguous {
            tracing::warn!(%ip, "two local pods in different VPCs hold this address: their probes are not intercepted");
            out.remove(ip);
        }
        out
    }

    fn apply(&self) {
        let ruleset = ruleset(&self.by_address());
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.as_deref() == Some(ruleset.as_str()) {
            return;
        }
        match crate::node_setup::apply_nft(&ruleset) {
            Ok(()) => *applied = Some(ruleset),
            Err(e) => tracing::warn!(error = %e, "custom-VPC probe interception"),
        }
    }

    /// The pod an intercepted connection was for, if its port is one of the pod's probes.
    fn target(&self, to: SocketAddr) -> Option<Target> {
        let IpAddr::V4(ip) = to.ip() else {
            return None;
        };
        self.by_address()
            .remove(&ip)
            .filter(|t| t.ports.contains(&to.port()))
    }
}

/// The nftables table for `targets`, replaced atomically.
fn ruleset(targets: &BTreeMap<Ipv4Addr, Target>) -> String {
    let elements: Vec<String> = targets
        .iter()
        .flat_map(|(ip, t)| t.ports.iter().map(move |p| format!("{ip} . {p}")))
        .collect();
    let elements = if elements.is_empty() {
        String::new()
    } else {
        format!("\n    elements = {{ {} }}", elements.join(", "))
    };
    format!(
        "add table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n  set probes {{\n    type ipv4_addr . inet_service{elements}\n  }}\n  chain output {{\n    type route hook output priority mangle; policy accept;\n    ip daddr . tcp dport @probes meta mark set meta mark & 0x{:08x} | 0x{MARK:08x}\n  }}\n  chain prerouting {{\n    type filter hook prerouting priority mangle; policy accept;\n    iifname \"lo\" meta mark & 0x{MARK_MASK:08x} == 0x{MARK:08x} ip daddr . tcp dport @probes tproxy to 127.0.0.1:{PROXY_PORT} accept\n  }}\n}}\n",
        !MARK_MASK
    )
}

/// The policy rule and the table's local route that bring marked connections back in on
/// `lo` (idempotent).
async fn ensure_routing() -> Result<(), String> {
    let handle = connect().map_err(|e| e.to_string())?;
    if our_rules(&handle).await?.is_empty() {
        let mut add = handle
            .rule()
            .add()
            .v4()
            .fw_mark(MARK)
            .table_id(ROUTE_TABLE)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable);
        add.message_mut()
            .attributes
            .push(RuleAttribute::FwMask(MARK_MASK));
        add.execute()
            .await
            .map_err(|e| format!("adding the fwmark rule: {e}"))?;
    }
    let lo = index_of(&handle, "lo")
        .await
        .map_err(|e| format!("finding lo: {e}"))?
        .ok_or("no lo")?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .table_id(ROUTE_TABLE)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .output_interface(lo)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(|e| format!("adding the local route of table {ROUTE_TABLE}: {e}"))
}

/// Whether the fwmark rule is there (for `kovn-agent uninstall`).
pub async fn routing_present() -> Result<bool, String> {
    let handle = connect().map_err(|e| e.to_string())?;
    Ok(!our_rules(&handle).await?.is_empty())
}

/// The fwmark rules of [`MARK`] (one, unless someone added it again by hand).
async fn our_rules(
    handle: &rtnetlink::Handle,
) -> Result<Vec<rtnetlink::packet_route::rule::RuleMessage>, String> {
    let rules: Vec<rtnetlink::packet_route::rule::RuleMessage> = handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing policy rules: {e}"))?;
    Ok(rules
        .into_iter()
        .filter(|r| {
            r.attributes
                .iter()
                .any(|a| matches!(a, RuleAttribute::FwMark(m) if *m == MARK))
        })
        .collect())
}

/// Removes the fwmark rule and the table's route (`kovn-agent uninstall`).
pub async fn remove_routing() -> Result<(), String> {
    let handle = connect().map_err(|e| e.to_string())?;
    for rule in our_rules(&handle).await? {
        handle
            .rule()
            .del(rule)
            .execute()
            .await
            .map_err(|e| format!("removing the fwmark rule: {e}"))?;
    }
    // The table's local route, as the egress gateways' tables are emptied.
    crate::egress_gateway::remove_table(&handle, ROUTE_TABLE)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A TCP connection to `to` made inside the network namespace `netns` (on a thread of its
/// own: a tokio worker never changes namespace). The socket stays in that namespace.
fn connect_in(netns: PathBuf, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        std::net::TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the connecting thread panicked")))
}

async fn relay(proxy: Arc<ProbeProxy>, mut from_node: tokio::net::TcpStream) {
    let Ok(to) = from_node.local_addr() else {
        return;
    };
    let Some(target) = proxy.target(to) else {
        tracing::debug!(%to, "an intercepted connection for no probed pod: closed");
        return;
    };
    let connected = tokio::task::spawn_blocking(move || connect_in(target.netns, to)).await;
    let stream = match connected {
        Ok(Ok(s)) => s,
        // The pod does not listen (yet): the probe sees its connection closed, as it would
        // see a refusal.
        Ok(Err(e)) => {
            tracing::debug!(%to, error = %e, "probe target did not accept");
            return;
        }
        Err(_) => return,
    };
    let Ok(()) = stream.set_nonblocking(true) else {
        return;
    };
    let Ok(mut to_pod) = tokio::net::TcpStream::from_std(stream) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut from_node, &mut to_pod).await;
}

/// Writes the routing, an empty rule table, then accepts intercepted connections until the
/// task is dropped.
pub async fn serve(proxy: Arc<ProbeProxy>) -> Result<(), String> {
    ensure_routing().await?;
    proxy.apply();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    socket
        .set_ip_transparent_v4(true)
        .map_err(|e| format!("IP_TRANSPARENT (needs NET_ADMIN): {e}"))?;
    socket.set_reuse_address(true).map_err(|e| e.to_string())?;
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, PROXY_PORT));
    socket
        .bind(&at.into())
        .map_err(|e| format!("binding {at}: {e}"))?;
    socket.listen(128).map_err(|e| e.to_string())?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(socket.into()).map_err(|e| e.to_string())?;
    tracing::info!(%at, "serving custom-VPC pods' probes");
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(relay(proxy.clone(), conn));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting an intercepted probe");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ports_come_from_tcp_and_http_probes_with_named_ports_resolved() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "ports": [{"name": "http", "containerPort": 8080}],
                 "livenessProbe": {"httpGet": {"port": "http", "path": "/"}},
                 "readinessProbe": {"tcpSocket": {"port": 9000}},
                 "startupProbe": {"exec": {"command": ["true"]}}},
                {"name": "b", "readinessProbe": {"tcpSocket": {"port": 9000}},
                 "livenessProbe": {"httpGet": {"port": "nosuch"}}}
            ]}
        }))
        .unwrap();
        assert_eq!(probe_ports(&pod), [8080, 9000]);
    }

    #[test]
    fn only_custom_vpc_pods_with_probes_are_intercepted_and_a_shared_address_by_none() {
        let proxy = ProbeProxy::new("ovn-cluster");
        let pod = |id: &str, ip: &str, vpc: &str, ports: Vec<u16>| LocalPod {
            namespace: "ns".into(),
            name: id.into(),
            attachment: AttachmentId::new(id, "eth0"),
            addresses: vec![format!("{ip}/24").parse().unwrap()],
            mac: "00:00:00:00:00:01".into(),
            provider: "ovn".into(),
            vpc: Some(vpc.into()),
            netns: Some(format!("/var/run/netns/{id}")),
            probe_ports: ports,
        };
        let insert = |p: &LocalPod| {
            // As register does, without writing nftables.
            let ips = vec![match p.addresses[0].addr() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => unreachable!(),
            }];
            let custom = p.vpc.as_deref() != Some("ovn-cluster") && !p.probe_ports.is_empty();
            if custom {
                proxy.lock().insert(
                    p.attachment.clone(),
                    (
                        ips,
                        Target {
                            netns: p.netns.clone().unwrap().into(),
                            ports: p.probe_ports.iter().copied().collect(),
                        },
                    ),
                );
            }
        };
        insert(&pod("a", "10.0.1.2", "vpc-a", vec![8080]));
        insert(&pod("d", "10.16.0.9", "ovn-cluster", vec![8080]));
        insert(&pod("n", "10.0.1.3", "vpc-a", vec![]));
        let to = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
        assert!(proxy.target(to("10.0.1.2", 8080)).is_some());
        assert!(
            proxy.target(to("10.0.1.2", 22)).is_none(),
            "not a probe port"
        );
        assert!(proxy.target(to("10.16.0.9", 8080)).is_none(), "default VPC");
        assert!(proxy.target(to("10.0.1.3", 8080)).is_none(), "no probes");
        let rules = ruleset(&proxy.by_address());
        assert!(rules.contains("elements = { 10.0.1.2 . 8080 }"), "{rules}");
        assert!(rules.contains("tproxy to 127.0.0.1:8102"));
        // Another VPC's pod with the same address: neither is intercepted.
        insert(&pod("b", "10.0.1.2", "vpc-b", vec![8080]));
        assert!(proxy.target(to("10.0.1.2", 8080)).is_none());
        assert!(!ruleset(&proxy.by_address()).contains("10.0.1.2"));
    }
}
