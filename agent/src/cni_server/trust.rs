//! What a pod's annotations claim, checked against what the controller owns. Annotations are
//! written by the controller, but also by whoever creates the pod: a pod created with another
//! pod's `ip_address`, `mac_address` and `allocated`/`routed` would otherwise be plumbed with
//! that pod's address, and its packets would match the other pod's learned flows. The IP
//! object (`kubeovn.io/v1`, cluster-scoped, written by the controller once it allocated the
//! addresses and before it marks the pod routed; a pod's creator cannot write it) is the
//! record the agent trusts: the annotations must say what it says.

use std::collections::BTreeSet;
use std::net::IpAddr;

use api::{IP, Owner};

use super::annotations::PodNetwork;

/// Why a pod's claimed network is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "no IP object {0}: kovn-controller has not allocated this pod's addresses (annotations alone are not trusted)"
    )]
    NoIpObject(String),
    #[error("IP object {name} belongs to {recorded}, not to this pod")]
    OtherOwner { name: String, recorded: String },
    #[error("the annotations claim {claimed}, but the pod's IP object records {recorded}")]
    Mismatch { claimed: String, recorded: String },
    #[error("the pod is in subnet {0}, which holds the nodes' join ports only")]
    JoinSubnet(String),
    #[error("the pod's IP object places it on node {recorded}, not on this node ({node})")]
    OtherNode { recorded: String, node: String },
}

/// Checks `claimed` (from the pod's annotations) against `ip`, the pod's IP object.
pub fn verify(
    owner: &Owner,
    claimed: &PodNetwork,
    ip: Option<&IP>,
    node: &str,
    join_subnet: &str,
) -> Result<(), Untrusted> {
    let name = owner.port_name();
    let Some(ip) = ip else {
        return Err(Untrusted::NoIpObject(name));
    };
    let recorded_owner = Owner::of_ip_object(ip);
    if recorded_owner.as_ref() != Some(owner) {
        return Err(Untrusted::OtherOwner {
            name,
            recorded: recorded_owner.map_or_else(|| "nobody".to_owned(), |o| o.to_string()),
        });
    }
    let spec = &ip.spec;
    if spec.subnet == join_subnet || claimed.logical_switch == join_subnet {
        return Err(Untrusted::JoinSubnet(join_subnet.to_owned()));
    }
    if !spec.node_name.is_empty() && spec.node_name != node {
        return Err(Untrusted::OtherNode {
            recorded: spec.node_name.clone(),
            node: node.to_owned(),
        });
    }
    let recorded: BTreeSet<IpAddr> = [&spec.ip_address, &spec.v4_ip_address, &spec.v6_ip_address]
        .iter()
        .flat_map(|list| list.split(','))
        .filter_map(|a| a.trim().split('/').next()?.parse().ok())
        .collect();
    let addresses: BTreeSet<IpAddr> = claimed.ips.iter().map(|(ip, _, _)| *ip).collect();
    if addresses != recorded {
        return Err(Untrusted::Mismatch {
            claimed: format!("addresses {addresses:?}"),
            recorded: format!("{recorded:?}"),
        });
    }
    if !claimed.mac.eq_ignore_ascii_case(&spec.mac_address) {
        return Err(Untrusted::Mismatch {
            claimed: format!("MAC {}", claimed.mac),
            recorded: spec.mac_address.clone(),
        });
    }
    if !claimed.logical_switch.is_empty() && claimed.logical_switch != spec.subnet {
        return Err(Untrusted::Mismatch {
            claimed: format!("subnet {}", claimed.logical_switch),
            recorded: spec.subnet.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::IPSpec;

    fn network(ip: &str, mac: &str, switch: &str) -> PodNetwork {
        PodNetwork {
            mac: mac.to_owned(),
            ips: vec![(ip.parse().unwrap(), 16, None)],
            logical_switch: switch.to_owned(),
        }
    }

    fn ip_object(pod: &str, ip: &str, mac: &str, subnet: &str) -> IP {
        IP::new(
            &format!("{pod}.default"),
            IPSpec {
                pod_name: pod.to_owned(),
                namespace: "default".to_owned(),
                subnet: subnet.to_owned(),
                node_name: "n0".to_owned(),
                ip_address: ip.to_owned(),
                v4_ip_address: ip.to_owned(),
                mac_address: mac.to_owned(),
                ..IPSpec::default()
            },
        )
    }

    const MAC: &str = "0a:58:0a:10:00:05";

    #[test]
    fn the_controllers_record_is_accepted() {
        let a = Owner::pod("default", "a");
        let ip = ip_object("a", "10.16.0.5", MAC, "ovn-default");
        let claimed = network("10.16.0.5", &MAC.to_uppercase(), "ovn-default");
        assert_eq!(verify(&a, &claimed, Some(&ip), "n0", "join"), Ok(()));
    }

    #[test]
    fn a_pod_claiming_another_pods_address_is_refused() {
        let evil = Owner::pod("default", "evil");
        let claimed = network("10.16.0.5", MAC, "ovn-default");
        // No record of its own: the controller refused the taken address.
        assert!(matches!(
            verify(&evil, &claimed, None, "n0", "join"),
            Err(Untrusted::NoIpObject(_))
        ));
        // Its own record says otherwise.
        let own = ip_object("evil", "10.16.0.9", "0a:58:0a:10:00:09", "ovn-default");
        assert!(matches!(
            verify(&evil, &claimed, Some(&own), "n0", "join"),
            Err(Untrusted::Mismatch { .. })
        ));
        // Another pod's record is not its own.
        let a = ip_object("a", "10.16.0.5", MAC, "ovn-default");
        assert!(matches!(
            verify(&evil, &claimed, Some(&a), "n0", "join"),
            Err(Untrusted::OtherOwner { .. })
        ));
    }

    #[test]
    fn the_join_subnet_and_other_nodes_are_refused() {
        let a = Owner::pod("default", "a");
        let ip = ip_object("a", "100.64.0.9", MAC, "join");
        let claimed = network("100.64.0.9", MAC, "join");
        assert!(matches!(
            verify(&a, &claimed, Some(&ip), "n0", "join"),
            Err(Untrusted::JoinSubnet(_))
        ));
        let ip = ip_object("a", "10.16.0.5", MAC, "ovn-default");
        let claimed = network("10.16.0.5", MAC, "ovn-default");
        assert!(matches!(
            verify(&a, &claimed, Some(&ip), "n1", "join"),
            Err(Untrusted::OtherNode { .. })
        ));
        let claimed = network("10.16.0.5", "0a:58:0a:10:00:06", "ovn-default");
        assert!(matches!(
            verify(&a, &claimed, Some(&ip), "n0", "join"),
            Err(Untrusted::Mismatch { .. })
        ));
    }
}
