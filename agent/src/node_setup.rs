//! The node's own attachment to the overlay, as Kube-OVN's daemon makes it: the `ovn0`
//! internal port on br-int bound to the node's join port (`node-<name>`, allocated by the
//! controller and named in the Node's annotations), with the node's join address, and a route
//! to every pod subnet through the join gateway, so the node reaches pods and pods reach the
//! node.

use std::net::IpAddr;
use std::time::Duration;

use api::{Subnet, TopologyNames, annotations};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use ovsdb::Client;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::netlink::{connect, index_of, netlink};
use crate::pod_network::NetworkError;

pub use crate::ovs::node_port::NODE_PORT;

/// Why the node's own attachment is not (yet) in place; each says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum NodeSetupError {
    /// The Node object: gone, unwatchable, or not (correctly) annotated by the controller.
    #[error("node {node}: {reason}")]
    Node { node: String, reason: String },
    #[error("ovs-vswitchd did not create {NODE_PORT} within 5 s")]
    NodePortMissing,
    #[error("route {cidr}: {reason}")]
    Route { cidr: IpNet, reason: String },
    /// Running `nft`, or the rules it refused.
    #[error("nft: {0}")]
    Nft(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Ovs(#[from] crate::ovs::OvsError),
}

/// The node's join attachment, from its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGateway {
    pub port_name: String,
    pub mac: String,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
}

fn ready(node: &Node) -> bool {
    let a = node.annotations();
    [
        annotations::PORT_NAME,
        annotations::IP_ADDRESS,
        annotations::MAC_ADDRESS,
        annotations::CIDR,
        annotations::GATEWAY,
    ]
    .iter()
    .all(|k| a.get(*k).is_some_and(|v| !v.is_empty()))
}

/// Waits until the controller has given this node its join port, at most `timeout`.
pub async fn wait_for_node(
    kube: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<NodeGateway, NodeSetupError> {
    let nodes: Api<Node> = Api::all(kube.clone());
    let condition = await_condition(nodes, name, |n: Option<&Node>| n.is_some_and(ready));
    let node_error = |reason: String| NodeSetupError::Node {
        node: name.to_owned(),
        reason,
    };
    let node = match tokio::time::timeout(timeout, condition).await {
        Ok(Ok(Some(node))) => node,
        Ok(Ok(None)) => return Err(node_error("deleted".into())),
        Ok(Err(e)) => return Err(node_error(format!("watching it: {e}"))),
        Err(_) => {
            return Err(node_error(format!(
                "no {} annotation after {} s: kovn-controller allocates the node's join port; is it running?",
                annotations::PORT_NAME,
                timeout.as_secs()
            )));
        }
    };
    let a = node.annotations();
    let bad = |what: &str| node_error(format!("bad {what} annotation"));
    let first = |key: &str| a[key].split(',').next().unwrap_or_default().to_owned();
    crate::datapath::parse_mac(&a[annotations::MAC_ADDRESS]).map_err(|_| bad("mac_address"))?;
    let address: IpAddr = first(annotations::IP_ADDRESS)
        .parse()
        .map_err(|_| bad("ip_address"))?;
    let prefix_len = first(annotations::CIDR)
        .parse::<IpNet>()
        .ok()
        .map(|net| net.prefix_len())
        .ok_or_else(|| bad("cidr"))?;
    Ok(NodeGateway {
        port_name: a[annotations::PORT_NAME].clone(),
        mac: a[annotations::MAC_ADDRESS].clone(),
        address,
        prefix_len,
        gateway: first(annotations::GATEWAY)
            .parse()
            .map_err(|_| bad("gateway"))?,
    })
}

/// Makes `ovn0` exist on `bridge`, bound to the node's join port, with its MAC, MTU and
/// address. Idempotent. Returns its interface index.
pub async fn ensure_node_port(
    ovs: &Client,
    bridge: &str,
    gateway: &NodeGateway,
    mtu: u32,
) -> Result<u32, NodeSetupError> {
    crate::ovs::node_port::bind(ovs, bridge, &gateway.port_name, &gateway.mac).await?;

    let handle = connect()?;
    // ovs-vswitchd creates the device once it sees the port.
    let mut index = None;
    for _ in 0..100 {
        index = index_of(&handle, NODE_PORT).await?;
        if index.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let index = index.ok_or(NodeSetupError::NodePortMissing)?;
    let mac = crate::datapath::parse_mac(&gateway.mac).map_err(|reason| NodeSetupError::Node {
        node: gateway.port_name.clone(),
        reason: format!("its join port's MAC: {reason}"),
    })?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink(format!("configuring {NODE_PORT}")))?;
    match handle
        .address()
        .add(index, gateway.address, gateway.prefix_len)
        .execute()
        .await
    {
        Ok(()) => {}
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
        Err(e) => {
            return Err(netlink(format!("adding {} to {NODE_PORT}", gateway.address))(e).into());
        }
    }
    // The node forwards between ovn0 and its other interfaces: hostPorts, NodePorts, and
    // replies to traffic that reached a pod through the node.
    // The DaemonSet's node-sysctls init container sets them (the agent's own /proc/sys is
    // read-only: it is not privileged); written here only where they are not on yet.
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        let on = std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1");
        if !on && let Err(e) = std::fs::write(path, "1") {
            tracing::warn!(%path, error = %e, "forwarding is off and cannot be turned on: hostPorts, NodePorts and replies through the node fail");
        }
    }
    Ok(index)
}

/// The pod subnets the node must route through `ovn0`: every subnet of the default VPC but
/// the join subnet itself and underlay subnets (the physical network routes those), of the
/// join address's family.
pub fn pod_cidrs(subnets: &[Subnet], join: &NodeGateway, names: &TopologyNames) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = subnets
        .iter()
        .filter(|s| {
            names.in_default_vpc(s)
                && s.name_any() != names.join_subnet
                && !s.spec.routed_by_physical_gateway()
        })
        .flat_map(cidrs_of)
        .filter(|c| c.addr().is_ipv4() == join.gateway.is_ipv4())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Routes every pod CIDR (and the service CIDR) via the join gateway on `ovn0`. Adds what is
/// missing; a route already there is left alone.
pub async fn ensure_routes(
    ovn0: u32,
    gateway: IpAddr,
    cidrs: &[IpNet],
) -> Result<(), NodeSetupError> {
    let handle = connect()?;
    for cidr in cidrs {
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(cidr.addr(), cidr.prefix_len())
            .and_then(|b| b.gateway(gateway))
            .map_err(|e| NodeSetupError::Route {
                cidr: *cidr,
                reason: e.to_string(),
            })?
            .output_interface(ovn0)
            .build();
        match handle.route().add(message).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(netlink(format!("route {cidr} via {gateway}"))(e).into()),
        }
    }
    Ok(())
}

/// A centralized natOutgoing subnet whose `gatewayNode` gives this node an egress address
/// (`node:ip`): its pods leave this node with that address instead of the masqueraded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSnat {
    pub cidr: IpNet,
    pub to: std::net::Ipv4Addr,
}

/// The egress addresses this node (`node`) is given by centralized natOutgoing subnets (IPv4:
/// the nat table is `ip`).
pub fn egress_snats(subnets: &[Subnet], node: &str) -> Vec<EgressSnat> {
    let mut out = Vec::new();
    for s in subnets {
        if !s.spec.nat_outgoing || s.spec.gateway_type != api::GatewayType::Centralized {
            continue;
        }
        let Ok(gateways) = s.spec.gateway_nodes() else {
            continue;
        };
        let Some(IpAddr::V4(to)) = gateways
            .iter()
            .find(|g| g.node == node)
            .and_then(|g| g.egress_ip)
        else {
            continue;
        };
        out.extend(
            cidrs_of(s)
                .into_iter()
                .filter(|c| c.addr().is_ipv4())
                .map(|cidr| EgressSnat { cidr, to }),
        );
    }
    out
}

/// Whether `ip` is an address of this node (binding to it works only then): an egress
/// address the node does not hold would send replies nowhere.
fn is_local(ip: std::net::Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The masquerade rules for natOutgoing: pods of those subnets reach addresses outside the
/// cluster with the node's address, or with the egress address a centralized subnet gives
/// this node (`snats`, matched first). One nftables table, replaced atomically.
pub fn nat_ruleset(nat_outgoing: &[IpNet], cluster: &[IpNet], snats: &[EgressSnat]) -> String {
    let set = |name: &str, cidrs: &[IpNet]| {
        let v4: Vec<String> = cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4())
            .map(ToString::to_string)
            .collect();
        let elements = if v4.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", v4.join(", "))
        };
        // auto-merge: overlapping CIDRs (a Subnet the controller refused for overlapping
        // another still exists) would otherwise make nft refuse the whole table.
        format!("  set {name} {{ type ipv4_addr; flags interval; auto-merge;{elements} }}\n")
    };
    let snat: String = snats
        .iter()
        .map(|r| {
            format!(
                "    ip saddr {} ip daddr != @cluster oifname != \"{NODE_PORT}\" snat to {}\n",
                r.cidr, r.to
            )
        })
        .collect();
    format!(
        "add table ip kovn\ndelete table ip kovn\ntable ip kovn {{\n{}{}  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{snat}    ip saddr @nat_outgoing ip daddr != @cluster oifname != \"{NODE_PORT}\" masquerade\n  }}\n}}\n",
        set("nat_outgoing", nat_outgoing),
        set("cluster", cluster),
    )
}

/// Feeds a ruleset to `nft -f -` (atomic: a whole table replaced at once).
pub(crate) fn apply_nft(ruleset: &str) -> Result<(), NodeSetupError> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NodeSetupError::Nft(format!("running nft (is nftables installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(ruleset.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NodeSetupError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NodeSetupError::Nft(format!(
            "it refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A Subnet's CIDRs (`cidrBlock` is one CIDR or "v4,v6"; the controller refuses bad ones).
/// None for a subnet of an IPAM-only provider: another plugin's network, not reached
/// through OVN, so the node neither routes nor masquerades it.
fn cidrs_of(subnet: &Subnet) -> Vec<IpNet> {
    if subnet.spec.is_ipam_only() {
        return Vec::new();
    }
    subnet
        .spec
        .cidr_block
        .split(',')
        .filter_map(|c| c.trim().parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect()
}

/// How often the node's egress rules are recomputed without a Subnet event.
const EGRESS_RECHECK: Duration = Duration::from_secs(5);

/// What the node's own attachment needs to know.
#[derive(Debug, Clone)]
pub struct NodeSetupConfig {
    pub node_name: String,
    pub bridge: String,
    pub mtu: u32,
    /// The Service CIDR, routed through ovn0 like the pod subnets.
    pub service_cidr: Option<IpNet>,
    pub names: TopologyNames,
}

/// Keeps `ovn0` and the node's routes in step with the Subnets, until the task is dropped.
/// Node setup is done for `readiness` once the routes of the Subnets the first list held are
/// in place.
pub async fn run(
    kube: kube::Client,
    ovs: Client,
    config: NodeSetupConfig,
    readiness: &crate::readiness::Readiness,
) -> Result<(), NodeSetupError> {
    let NodeSetupConfig {
        node_name,
        bridge,
        mtu,
        service_cidr,
        names,
    } = config;
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let gateway = wait_for_node(&kube, &node_name, Duration::from_secs(300)).await?;
    let mut ovn0 = ensure_node_port(&ovs, &bridge, &gateway, mtu).await?;
    tracing::info!(address = %gateway.address, port = %gateway.port_name, "ovn0 is up");
    let (store, writer) = reflector::store::<Subnet>();
    let mut changes = watcher(Api::<Subnet>::all(kube), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    let mut routed = Vec::new();
    let mut nat = String::new();
    let mut unheld: Vec<EgressSnat> = Vec::new();
    let mut egress: Option<Vec<crate::egress_gateway::EgressRoute>> = None;
    let mut listed = false;
    // Every event, InitDone included: the store shows the initial list only from InitDone on.
    // And once listed, every EGRESS_RECHECK without one: what the rules depend on beyond the
    // Subnets (an egress address added to the node's NIC) is looked at again.
    let mut recheck = tokio::time::interval(EGRESS_RECHECK);
    loop {
        let event = tokio::select! {
            event = changes.next() => match event {
                Some(event) => Some(event),
                None => break,
            },
            _ = recheck.tick() => None,
        };
        if event.is_none() && !listed {
            continue;
        }
        listed |= matches!(event, Some(Ok(watcher::Event::InitDone)));
        let subnets: Vec<Subnet> = store.state().iter().map(|s| (**s).clone()).collect();
        let mut cidrs = pod_cidrs(&subnets, &gateway, &names);
        cidrs.extend(service_cidr);
        // The default VPC's overlay subnets only: a custom VPC's traffic never leaves through
        // the node, its CIDRs may be anyone's, and an underlay subnet's is the physical
        // network's.
        let default_vpc: Vec<&Subnet> = subnets
            .iter()
            .filter(|s| names.in_default_vpc(s) && !s.spec.routed_by_physical_gateway())
            .collect();
        let masqueraded: Vec<IpNet> = default_vpc
            .iter()
            .filter(|s| s.spec.nat_outgoing)
            .flat_map(|s| cidrs_of(s))
            .collect();
        let mut cluster: Vec<IpNet> = default_vpc.iter().flat_map(|s| cidrs_of(s)).collect();
        cluster.extend(service_cidr);
        let (snats, foreign): (Vec<EgressSnat>, Vec<EgressSnat>) =
            egress_snats(&subnets, &node_name)
                .into_iter()
                .partition(|r| is_local(r.to));
        if !foreign.is_empty() && foreign != unheld {
            tracing::warn!(
                ?foreign,
                "gatewayNode gives this node an egress address it does not hold; masquerading instead"
            );
        }
        unheld = foreign;
        let ruleset = nat_ruleset(&masqueraded, &cluster, &snats);
        if ruleset != nat {
            match apply_nft(&ruleset) {
                Ok(()) => {
                    tracing::info!(?masqueraded, "natOutgoing masquerade");
                    nat = ruleset;
                }
                Err(e) => tracing::warn!(error = %e, "natOutgoing"),
            }
        }
        // Egress through external gateways: after the first list (a rule of a subnet not yet
        // listed would be removed as stale), retried on the next event when refused.
        let wanted = crate::egress_gateway::egress_routes(&subnets, &names);
        if listed && egress.as_ref() != Some(&wanted) {
            match crate::egress_gateway::ensure(&wanted).await {
                Ok(()) => {
                    tracing::info!(routes = ?wanted, "egress through external gateways");
                    egress = Some(wanted);
                }
                Err(e) => tracing::warn!(error = %e, "egress through external gateways"),
            }
        }
        if cidrs == routed {
            if listed {
                readiness.node_setup_done();
            }
            continue;
        }
        // Until ovs-vswitchd has opened ovn0 it has no carrier, and routes through it are
        // refused ("network unreachable"): retry rather than wait for the next Subnet event.
        // Every 5 s of that, ovn0 itself is made again (idempotent): once in a test run a
        // node's routes stayed refused for minutes, so the interface the routes name may not
        // be the one ovs-vswitchd serves.
        let mut attempt = 0u32;
        while let Err(e) = ensure_routes(ovn0, gateway.gateway, &cidrs).await {
            attempt += 1;
            if attempt % 20 == 1 {
                tracing::warn!(error = %e, attempt, "node routes not in place yet; retrying");
            }
            if attempt.is_multiple_of(20) {
                match ensure_node_port(&ovs, &bridge, &gateway, mtu).await {
                    Ok(index) => ovn0 = index,
                    Err(e) => tracing::warn!(error = %e, "making ovn0 again"),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tracing::info!(?cidrs, "node routes to pod subnets via ovn0");
        routed = cidrs;
        if listed {
            readiness.node_setup_done();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nat_ruleset_masquerades_only_natoutgoing_pods_leaving_the_cluster() {
        let v4 = |s: &str| -> IpNet { s.parse().unwrap() };
        let rules = nat_ruleset(
            &[v4("10.16.0.0/16")],
            &[v4("10.16.0.0/16"), v4("100.64.0.0/16")],
            &[],
        );
        assert!(
            rules.starts_with("add table ip kovn\ndelete table ip kovn\n"),
            "atomic replace"
        );
        assert!(rules.contains(
            "set nat_outgoing { type ipv4_addr; flags interval; auto-merge; elements = { 10.16.0.0/16 }; }"
        ));
        assert!(rules.contains("elements = { 10.16.0.0/16, 100.64.0.0/16 }"));
        assert!(rules.contains(
            "ip saddr @nat_outgoing ip daddr != @cluster oifname != \"ovn0\" masquerade"
        ));
        // No subnet asks for it: an empty set, still valid nftables.
        let none = nat_ruleset(&[], &[v4("10.16.0.0/16")], &[]);
        assert!(none.contains("set nat_outgoing { type ipv4_addr; flags interval; auto-merge; }"));
    }

    #[test]
    fn a_gateway_node_given_an_egress_address_snats_to_it_before_masquerading() {
        let subnet = |name: &str, cidr: &str, nat: bool, gateways: &str| -> Subnet {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": {"name": name},
                "spec": {"cidrBlock": cidr, "natOutgoing": nat, "gatewayType": "centralized",
                    "gatewayNode": gateways}
            }))
            .unwrap()
        };
        let subnets = [
            subnet("a", "10.60.0.0/24", true, "n1:172.18.0.50, n2"),
            subnet("b", "10.61.0.0/24", false, "n1:172.18.0.51"),
            subnet("c", "10.62.0.0/24", true, "n2:172.18.0.52"),
        ];
        let snats = egress_snats(&subnets, "n1");
        assert_eq!(
            snats,
            [EgressSnat {
                cidr: "10.60.0.0/24".parse().unwrap(),
                to: "172.18.0.50".parse().unwrap()
            }],
            "only natOutgoing subnets naming this node with an address"
        );
        assert!(egress_snats(&subnets, "n2").len() == 1);
        let v4 = |s: &str| -> IpNet { s.parse().unwrap() };
        let rules = nat_ruleset(&[v4("10.60.0.0/24")], &[v4("10.60.0.0/24")], &snats);
        let snat = rules
            .find("ip saddr 10.60.0.0/24 ip daddr != @cluster oifname != \"ovn0\" snat to 172.18.0.50")
            .expect("the snat rule");
        assert!(
            snat < rules.find("masquerade").unwrap(),
            "snat is matched first"
        );
    }
}
