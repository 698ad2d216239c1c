//! What the controller writes for a pod once IPAM has given it addresses: the pod annotations
//! (as Kube-OVN writes them, so kube-ovn's CNI and tools read them) and the `IP` object that
//! records the allocation for restarts.

use std::collections::BTreeMap;

use api::annotations;
use api::{IP, IPSpec, Owner};

use crate::ipam::{Allocation, SubnetAllocator};

/// The annotations of an allocated pod (or of its attachment, under its provider's keys): ip_address, mac_address, cidr, gateway,
/// logical_switch, allocated=true (routed=true is added once the port and routes are in NB).
pub fn annotations_for(
    allocation: &Allocation,
    subnet: &SubnetAllocator,
    keys: &annotations::NetworkKeys,
) -> BTreeMap<String, String> {
    let join = |items: Vec<String>| items.join(",");
    BTreeMap::from([
        (
            keys.ip_address.clone(),
            join(allocation.ips.iter().map(ToString::to_string).collect()),
        ),
        (keys.mac_address.clone(), allocation.mac.clone()),
        (
            keys.cidr.clone(),
            join(
                subnet
                    .pools()
                    .iter()
                    .map(|p| p.cidr().to_string())
                    .collect(),
            ),
        ),
        (
            keys.gateway.clone(),
            join(
                subnet
                    .pools()
                    .iter()
                    .map(|p| p.gateway().to_string())
                    .collect(),
            ),
        ),
        (keys.logical_switch.clone(), allocation.subnet.clone()),
        (keys.allocated.clone(), "true".to_owned()),
    ])
}

/// The `IP` object recording a pod's allocation, named as its port (`<pod>.<namespace>`).
pub fn ip_object(owner: &Owner, node: &str, allocation: &Allocation) -> IP {
    let (namespace, pod) = match owner {
        Owner::Pod { namespace, name }
        | Owner::Attachment {
            namespace, name, ..
        } => (namespace.as_str(), name.as_str()),
        // Kube-OVN's node IP objects record the node as the pod, in no namespace.
        Owner::Node { name } => ("", name.as_str()),
        // An EIP's record is its OvnEip; an IP object made for one anyway names no owner, so
        // it is neither restored nor released as anyone's.
        Owner::Eip { .. } | Owner::IptablesEip { .. } => ("", ""),
    };
    let find = |v4: bool| {
        allocation
            .ips
            .iter()
            .find(|ip| ip.is_ipv4() == v4)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    IP::new(
        &owner.port_name(),
        IPSpec {
            pod_name: pod.to_owned(),
            namespace: namespace.to_owned(),
            subnet: allocation.subnet.clone(),
            node_name: node.to_owned(),
            ip_address: allocation
                .ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            v4_ip_address: find(true),
            v6_ip_address: find(false),
            mac_address: allocation.mac.clone(),
            ..IPSpec::default()
        },
    )
}

/// Parses the static addresses a user asked for in `ovn.kubernetes.io/ip_address`
/// (comma-separated; Kube-OVN also accepts a CIDR-suffixed address).
pub fn static_ips(annotation: &str) -> Result<Vec<std::net::IpAddr>, String> {
    annotation
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let addr = s.trim().split('/').next().unwrap_or_default();
            addr.parse()
                .map_err(|e| format!("{} {s:?}: {e}", annotations::IP_ADDRESS))
        })
        .collect()
}
