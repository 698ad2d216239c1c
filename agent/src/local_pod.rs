//! The agent's one model of a pod on this node: one attachment (a pod sandbox's interface)
//! with the owner it serves, its addresses and MAC. CNI ADD builds it, the OVS port records
//! it (one typed record beside Kube-OVN's own keys), a restarted agent reads it back to adopt
//! the pod, and DEL and GC remove it by its [`AttachmentId`] — never by the pod's name, which
//! a newer sandbox of the same pod shares.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use api::Owner;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::datapath::{PodInterfaces, parse_mac};
use crate::pod_network::PodLinks;

/// Kube-OVN's provider name of a pod's default network.
pub const DEFAULT_PROVIDER: &str = api::annotations::DEFAULT_PROVIDER;
/// The interface a CNI request names when it names none.
pub const DEFAULT_INTERFACE: &str = "eth0";

/// The OVS `external_ids` key holding the [`LocalPod`] record (JSON).
const RECORD_KEY: &str = "kovn-pod";
/// Marks what kovn made on the node's OVS.
pub const VENDOR: (&str, &str) = ("vendor", "kovn");

/// Which attachment: a container's interface, as the runtime names it in CNI requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub if_name: String,
}

impl AttachmentId {
    pub fn new(container_id: &str, if_name: &str) -> AttachmentId {
        AttachmentId {
            container_id: container_id.to_owned(),
            if_name: if if_name.is_empty() {
                DEFAULT_INTERFACE.to_owned()
            } else {
                if_name.to_owned()
            },
        }
    }
}

impl fmt::Display for AttachmentId {
    /// `<container id>/<interface>`: the datapath's key for the attachment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.if_name)
    }
}

/// One pod attachment on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPod {
    pub namespace: String,
    pub name: String,
    pub attachment: AttachmentId,
    /// The addresses on the pod's interface with their prefix; the first is the primary (the
    /// datapath's key for the pod), the others are the pod's too (dual stack).
    pub addresses: Vec<IpNet>,
    /// `0a:58:…`, as the controller allocated it.
    pub mac: String,
    /// Kube-OVN's provider (`ovn` for the default network).
    pub provider: String,
    /// The VPC the addresses are in (the pod's subnet's); `None` in a record of an agent
    /// before VPCs scoped addresses: such a pod shares its address scope with no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// The pod's network namespace (the ADD's `CNI_NETNS`): where the probe proxy connects
    /// for a custom-VPC pod. `None` in records of agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The TCP ports the pod's spec probes (see `probe_proxy::probe_ports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_ports: Vec<u16>,
}

impl LocalPod {
    /// The holder of the attachment's port and IP object: the pod on its own network, its
    /// attachment of `provider` on a secondary one.
    pub fn owner(&self) -> Owner {
        Owner::pod_network(&self.namespace, &self.name, &self.provider)
    }

    /// The pod the attachment belongs to.
    pub fn pod(&self) -> Owner {
        Owner::pod(&self.namespace, &self.name)
    }

    /// Whether the datapath serves the attachment. Only a pod's own network is fast-pathed:
    /// the datapath's trust and invalidation key a pod by its own address in its VPC, so a
    /// secondary attachment's traffic is all OVS's (through the kernel's hand-off).
    pub fn fast_path(&self) -> bool {
        LocalPod::is_pod_network(&self.provider)
    }

    /// Whether `provider` is the pod's own network (eth0's: the default route, the fast path),
    /// not a secondary attachment.
    pub fn is_pod_network(provider: &str) -> bool {
        provider == DEFAULT_PROVIDER
    }

    /// The node-side interface names of the attachment.
    pub fn links(&self) -> PodLinks {
        PodLinks::for_attachment(&self.attachment)
    }

    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.iter().map(IpNet::addr)
    }

    /// What the datapath needs of the attachment, keyed by its [`AttachmentId`].
    pub fn datapath_interfaces(&self) -> Result<PodInterfaces, String> {
        let links = self.links();
        let mut ips = self.ips();
        let ip = ips
            .next()
            .ok_or_else(|| format!("{}: no address", self.attachment))?;
        Ok(PodInterfaces {
            name: self.attachment.to_string(),
            owner: self.owner().port_name(),
            host_veth: links.host_veth,
            ovs_peer: links.ovs_peer,
            ip,
            mac: parse_mac(&self.mac)?,
            other_ips: ips.collect(),
            vpc: self.vpc.clone(),
        })
    }

    /// What the pod's OVS interface records: Kube-OVN's keys (`iface-id` binds the logical
    /// port; `pod_name`, `pod_namespace`, `ip`, `attached-mac`, `container_id` for its tools)
    /// and this record, which a restarted agent reads back.
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        let ips = self.ips().map(|ip| ip.to_string()).collect::<Vec<_>>();
        [
            ("iface-id", self.owner().port_name()),
            ("pod_name", self.name.clone()),
            ("pod_namespace", self.namespace.clone()),
            ("container_id", self.attachment.container_id.clone()),
            ("ifname", self.attachment.if_name.clone()),
            ("ip", ips.join(",")),
            ("attached-mac", self.mac.clone()),
            (VENDOR.0, VENDOR.1.to_owned()),
            (
                RECORD_KEY,
                serde_json::to_string(self).expect("a LocalPod serializes"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Reads back what [`LocalPod::external_ids`] wrote. Ports written by an agent before the
    /// record existed are read from Kube-OVN's keys (prefix lengths unknown: host routes).
    /// `None` for an interface that is not a kovn pod's.
    pub fn from_external_ids(ids: &BTreeMap<String, String>) -> Option<LocalPod> {
        if ids.get(VENDOR.0).map(String::as_str) != Some(VENDOR.1) {
            return None;
        }
        if let Some(record) = ids.get(RECORD_KEY) {
            return serde_json::from_str(record).ok();
        }
        let container_id = ids.get("container_id").filter(|c| !c.is_empty())?;
        let get = |k: &str| ids.get(k).cloned().unwrap_or_default();
        let addresses = get("ip")
            .split(',')
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .map(IpNet::from)
            .collect::<Vec<_>>();
        (!addresses.is_empty()).then(|| LocalPod {
            namespace: get("pod_namespace"),
            name: get("pod_name"),
            attachment: AttachmentId::new(container_id, ""),
            addresses,
            mac: get("attached-mac"),
            provider: DEFAULT_PROVIDER.to_owned(),
            vpc: None,
            netns: None,
            probe_ports: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> LocalPod {
        LocalPod {
            namespace: "default".into(),
            name: "web".into(),
            attachment: AttachmentId::new("3f1c2a9b8d7e6f5a", "eth0"),
            addresses: vec![
                "10.16.0.5/16".parse().unwrap(),
                "fd00:10:16::5/112".parse().unwrap(),
            ],
            mac: "00:00:00:aa:bb:cc".into(),
            provider: DEFAULT_PROVIDER.into(),
            vpc: Some("ovn-cluster".into()),
            netns: Some("/var/run/netns/cni-1".into()),
            probe_ports: vec![8080],
        }
    }

    #[test]
    fn the_record_reads_back_and_kube_ovns_keys_are_there() {
        let ids = pod().external_ids();
        assert_eq!(ids["iface-id"], "web.default");
        assert_eq!(ids["ip"], "10.16.0.5,fd00:10:16::5");
        assert_eq!(LocalPod::from_external_ids(&ids), Some(pod()));
    }

    #[test]
    fn a_port_of_an_older_agent_is_read_from_kube_ovns_keys() {
        let mut ids = pod().external_ids();
        ids.remove(RECORD_KEY);
        let old = LocalPod::from_external_ids(&ids).expect("legacy port");
        assert_eq!(old.attachment, pod().attachment);
        assert_eq!(
            old.ips().collect::<Vec<_>>(),
            pod().ips().collect::<Vec<_>>()
        );
        assert_eq!(old.owner(), Owner::pod("default", "web"));
    }

    #[test]
    fn only_kovns_ports_are_pods() {
        let mut ids = pod().external_ids();
        ids.remove(VENDOR.0);
        assert_eq!(LocalPod::from_external_ids(&ids), None);
    }

    #[test]
    fn an_unnamed_interface_is_eth0() {
        assert_eq!(AttachmentId::new("c1", "").to_string(), "c1/eth0");
    }
}
