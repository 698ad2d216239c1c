//! How this node tunnels to the others, as Kube-OVN's daemon decides it: the encapsulation
//! (`--encap-type`: Geneve, VXLAN or STT), the tunnel interface (`--iface`: a comma-separated
//! list of names or regular expressions, the first entry that names a link wins; the node's
//! `ovn.kubernetes.io/tunnel_interface` annotation overrides it, so nodes whose NICs have
//! different names can each name theirs), the tunnel endpoint (`--encap-ip`, else the
//! interface's first IPv4 address) and the pod MTU (`--mtu`, else the interface's MTU less the
//! encapsulation's overhead: Geneve 100, VXLAN 50, STT 72, as Kube-OVN reserves).
//!
//! Without `--iface`, the interface is the one holding `--encap-ip`, else the one of the
//! default route. A `--iface` that names no link is an error: tunnelling from another NIC
//! than the operator chose would be worse than not starting.

use std::net::IpAddr;
use std::str::FromStr;

/// The node annotation naming this node's tunnel interface (Kube-OVN's).
pub const TUNNEL_INTERFACE_ANNOTATION: &str = "ovn.kubernetes.io/tunnel_interface";
/// The MTU assumed when no tunnel interface is found (and `--mtu` is not given).
const FALLBACK_LINK_MTU: u32 = 1500;

/// An encapsulation OVN can tunnel with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    Geneve,
    Vxlan,
    Stt,
}

impl Encap {
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::Geneve => "geneve",
            Encap::Vxlan => "vxlan",
            Encap::Stt => "stt",
        }
    }

    /// The bytes a tunnelled packet needs beyond the pod's, as Kube-OVN reserves them.
    pub fn overhead(self) -> u32 {
        match self {
            Encap::Geneve => 100,
            Encap::Vxlan => 50,
            Encap::Stt => 72,
        }
    }
}

impl FromStr for Encap {
    type Err = String;

    fn from_str(s: &str) -> Result<Encap, String> {
        match s {
            "geneve" => Ok(Encap::Geneve),
            "vxlan" => Ok(Encap::Vxlan),
            "stt" => Ok(Encap::Stt),
            other => Err(format!(
                "--encap-type {other:?}: OVN tunnels with geneve, vxlan or stt"
            )),
        }
    }
}

/// A link of the node, as far as choosing the tunnel interface goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLink {
    pub name: String,
    pub mtu: u32,
    /// Global addresses, in the kernel's order.
    pub addresses: Vec<IpAddr>,
    /// The default route leaves through it.
    pub default_route: bool,
}

/// What the node tunnels with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPlan {
    pub encap: Encap,
    /// The chosen interface (None: none found, the MTU assumed from [`FALLBACK_LINK_MTU`]).
    pub interface: Option<String>,
    pub encap_ip: Option<String>,
    pub pod_mtu: u32,
}

/// The first link `spec` names: its entries in order, each a name or a regular expression
/// matched against the whole link name.
pub fn choose<'a>(links: &'a [NodeLink], spec: &str) -> Result<Option<&'a NodeLink>, String> {
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let pattern = regex::Regex::new(&format!("^(?:{entry})$"))
            .map_err(|e| format!("--iface entry {entry:?} is not a regular expression: {e}"))?;
        if let Some(link) = links.iter().find(|l| pattern.is_match(&l.name)) {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

/// Decides the tunnel from the flags, the node's annotation and its links.
pub fn plan(
    encap_type: &str,
    iface: &str,
    annotation: Option<&str>,
    encap_ip: Option<&str>,
    mtu: u32,
    links: &[NodeLink],
) -> Result<TunnelPlan, String> {
    let encap: Encap = encap_type.parse()?;
    let spec = annotation.filter(|a| !a.trim().is_empty()).unwrap_or(iface);
    let link = if spec.trim().is_empty() {
        let holding = |ip: &str| {
            links
                .iter()
                .find(|l| l.addresses.iter().any(|a| a.to_string() == ip))
        };
        encap_ip
            .and_then(holding)
            .or_else(|| links.iter().find(|l| l.default_route))
    } else {
        Some(choose(links, spec)?.ok_or_else(|| {
            format!(
                "the tunnel interface {spec:?} names none of this node's links ({})",
                links
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?)
    };
    let encap_ip = encap_ip.map(str::to_owned).or_else(|| {
        link.and_then(|l| l.addresses.iter().find(|a| a.is_ipv4()))
            .map(ToString::to_string)
    });
    let pod_mtu = if mtu != 0 {
        mtu
    } else {
        link.map_or(FALLBACK_LINK_MTU, |l| l.mtu)
            .saturating_sub(encap.overhead())
    };
    Ok(TunnelPlan {
        encap,
        interface: link.map(|l| l.name.clone()),
        encap_ip,
        pod_mtu,
    })
}

/// The node's links with their MTU, global addresses and whether the default route uses them
/// (in the calling thread's network namespace).
pub async fn node_links() -> Result<Vec<NodeLink>, String> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
    use rtnetlink::packet_route::link::LinkAttribute;
    use rtnetlink::packet_route::route::RouteAttribute;
    let handle = crate::netlink::connect().map_err(|e| e.to_string())?;
    let messages: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing links: {e}"))?;
    let addresses: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing addresses: {e}"))?;
    let routes: Vec<_> = handle
        .route()
        .get(rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing routes: {e}"))?;
    let default_index: Option<u32> = routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0)
        .find_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(index) => Some(*index),
                _ => None,
            })
        });
    Ok(messages
        .into_iter()
        .map(|m| {
            let index = m.header.index;
            let mut name = String::new();
            let mut mtu = 0;
            for attribute in &m.attributes {
                match attribute {
                    LinkAttribute::IfName(n) => name.clone_from(n),
                    LinkAttribute::Mtu(v) => mtu = *v,
                    _ => {}
                }
            }
            let addresses = addresses
                .iter()
                .filter(|a| a.header.index == index && a.header.scope == AddressScope::Universe)
                .filter_map(|a| {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })
                .collect();
            NodeLink {
                name,
                mtu,
                addresses,
                default_route: default_index == Some(index),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, mtu: u32, address: &str, default_route: bool) -> NodeLink {
        NodeLink {
            name: name.into(),
            mtu,
            addresses: address.parse().into_iter().collect(),
            default_route,
        }
    }

    #[test]
    fn the_tunnel_follows_kube_ovns_choice() {
        let links = [
            link("lo", 65536, "", false),
            link("ens3", 9000, "10.0.0.5", true),
            link("eth1", 1500, "192.168.1.5", false),
        ];
        // Geneve on the default route's NIC, its MTU less 100.
        let p = plan("geneve", "", None, None, 0, &links).unwrap();
        assert_eq!(
            (p.interface.as_deref(), p.encap_ip.as_deref(), p.pod_mtu),
            (Some("ens3"), Some("10.0.0.5"), 8900)
        );
        // VXLAN on the NIC a regex names, less 50.
        let p = plan("vxlan", "eth9,eth[0-9]+", None, None, 0, &links).unwrap();
        assert_eq!((p.interface.as_deref(), p.pod_mtu), (Some("eth1"), 1450));
        // The node's annotation overrides --iface; --mtu and --encap-ip are kept as given.
        let p = plan(
            "geneve",
            "eth1",
            Some("ens3"),
            Some("10.0.0.9"),
            1300,
            &links,
        )
        .unwrap();
        assert_eq!(
            (p.interface.as_deref(), p.encap_ip.as_deref(), p.pod_mtu),
            (Some("ens3"), Some("10.0.0.9"), 1300)
        );
        // Without --iface, the NIC holding --encap-ip.
        let p = plan("geneve", "", None, Some("192.168.1.5"), 0, &links).unwrap();
        assert_eq!(p.interface.as_deref(), Some("eth1"));
        // A regex matches whole names only.
        assert!(plan("geneve", "eth", None, None, 0, &links).is_err());
        assert!(plan("geneve", "(", None, None, 0, &links).is_err());
        assert!(plan("gre", "", None, None, 0, &links).is_err());
    }
}
