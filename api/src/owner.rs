//! Who holds a network identity: a pod in a namespace, or a node (its join port). One type and
//! one function for each name derived from it, so no component guesses an owner from the
//! shape of a string (a node named `ip-10-0-1-5.ec2.internal` has dots, as pod ports do).

use std::fmt;

/// The holder of addresses, a logical switch port and an IP object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A pod: port and IP object `<name>.<namespace>`, as Kube-OVN names them.
    Pod { namespace: String, name: String },
    /// A node: join port and IP object `node-<name>`, as Kube-OVN names them.
    Node { name: String },
    /// An `OvnEip` (an address of an external subnet, for NAT or a VPC router's external
    /// port): no switch port and no IP object; the OvnEip's status records it.
    Eip { name: String },
    /// An `IptablesEIP` (a VPC NAT gateway's address; a kind of its own, so an OvnEip and an
    /// IptablesEIP of one name are two holders).
    IptablesEip { name: String },
}

/// The `external_ids:pod` value of a logical switch port (`<namespace>/<name>`; a node's join
/// port has an empty namespace), from which an owner is read back without parsing port names.
pub const PORT_OWNER_KEY: &str = "pod";

impl Owner {
    pub fn pod(namespace: impl Into<String>, name: impl Into<String>) -> Owner {
        Owner::Pod {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn node(name: impl Into<String>) -> Owner {
        Owner::Node { name: name.into() }
    }

    pub fn eip(name: impl Into<String>) -> Owner {
        Owner::Eip { name: name.into() }
    }

    pub fn iptables_eip(name: impl Into<String>) -> Owner {
        Owner::IptablesEip { name: name.into() }
    }

    /// The owner of a Kubernetes pod object.
    pub fn of_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Owner {
        Owner::pod(
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// The Logical_Switch_Port name, which is also the OVS `iface-id` that binds it and the
    /// name of the IP object recording the allocation.
    pub fn port_name(&self) -> String {
        match self {
            Owner::Pod { namespace, name } => format!("{name}.{namespace}"),
            Owner::Node { name } => format!("node-{name}"),
            Owner::Eip { name } => name.clone(),
            Owner::IptablesEip { name } => format!("iptables-eip.{name}"),
        }
    }

    /// The `external_ids:pod` value recorded on the owner's port ([`PORT_OWNER_KEY`]).
    pub fn port_owner_id(&self) -> String {
        match self {
            Owner::Pod { namespace, name } => format!("{namespace}/{name}"),
            Owner::Node { name } => format!("/{name}"),
            // Never on a port; a form from_port_owner_id does not read back.
            Owner::Eip { name } => format!("eip:{name}"),
            Owner::IptablesEip { name } => format!("iptables-eip:{name}"),
        }
    }

    /// Reads back [`Owner::port_owner_id`]; `None` for a value kovn did not write.
    pub fn from_port_owner_id(value: &str) -> Option<Owner> {
        let (namespace, name) = value.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some(if namespace.is_empty() {
            Owner::node(name)
        } else {
            Owner::pod(namespace, name)
        })
    }

    /// What an IP object is: the owner's own record (named `<pod>.<namespace>` or
    /// `node-<name>`), or one of a pod's secondary attachments that Kube-OVN records as
    /// `<pod>.<namespace>.<provider>` with the same `podName` and `namespace`. Read from the
    /// object's fields first (the owner) and its name second (which record of that owner).
    pub fn ip_object_role(ip: &crate::IP) -> IpObjectRole {
        let Some(owner) = Owner::of_ip_object(ip) else {
            return IpObjectRole::Unowned;
        };
        let name = ip.metadata.name.as_deref().unwrap_or_default();
        let own = owner.port_name();
        match name
            .strip_prefix(own.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
        {
            Some(provider) if !provider.is_empty() && owner.is_pod() => IpObjectRole::Attachment {
                owner,
                provider: provider.to_owned(),
            },
            _ => IpObjectRole::Primary(owner),
        }
    }

    pub fn is_pod(&self) -> bool {
        matches!(self, Owner::Pod { .. })
    }

    /// The owner an IP object records (its `podName` and `namespace`; a node's has none).
    pub fn of_ip_object(ip: &crate::IP) -> Option<Owner> {
        let spec = &ip.spec;
        if spec.pod_name.is_empty() {
            return None;
        }
        Some(if spec.namespace.is_empty() {
            Owner::node(&spec.pod_name)
        } else {
            Owner::pod(&spec.namespace, &spec.pod_name)
        })
    }
}

/// See [`Owner::ip_object_role`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpObjectRole {
    /// The record of the owner's own port (its eth0, or a node's join port).
    Primary(Owner),
    /// A pod's secondary attachment (Multus, `<nad>.<namespace>.<provider>`): not the pod's
    /// own address, which kovn does not serve yet; never restored as, or released as, the
    /// pod's own.
    Attachment { owner: Owner, provider: String },
    /// No `podName`: nobody's.
    Unowned,
}

impl fmt::Display for Owner {
    /// The port name: what logs, errors and OVN tools show for the owner.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.port_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kube_ovns() {
        assert_eq!(Owner::pod("default", "web-0").port_name(), "web-0.default");
        assert_eq!(Owner::node("n1").port_name(), "node-n1");
        assert_eq!(
            Owner::node("ip-10-0-1-5.ec2.internal").port_name(),
            "node-ip-10-0-1-5.ec2.internal"
        );
    }

    #[test]
    fn ip_objects_of_secondary_attachments_are_told_from_the_pods_own() {
        let ip = |name: &str, pod: &str, namespace: &str| crate::IP {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: crate::IPSpec {
                pod_name: pod.into(),
                namespace: namespace.into(),
                ..Default::default()
            },
        };
        let owner = Owner::pod("default", "web-0");
        assert_eq!(
            Owner::ip_object_role(&ip("web-0.default", "web-0", "default")),
            IpObjectRole::Primary(owner.clone())
        );
        assert_eq!(
            Owner::ip_object_role(&ip("web-0.default.net1.default.ovn", "web-0", "default")),
            IpObjectRole::Attachment {
                owner,
                provider: "net1.default.ovn".into()
            }
        );
        // A node's record is never an attachment, dots or not.
        assert_eq!(
            Owner::ip_object_role(&ip("node-a.b", "a.b", "")),
            IpObjectRole::Primary(Owner::node("a.b"))
        );
        assert_eq!(
            Owner::ip_object_role(&ip("x", "", "")),
            IpObjectRole::Unowned
        );
    }

    #[test]
    fn a_dotted_node_and_a_pod_named_like_it_stay_apart() {
        // `node-a.b` could be pod `node-a` in namespace `b` or node `a.b`: the owner id says.
        let node = Owner::node("a.b");
        let pod = Owner::pod("b", "node-a");
        assert_eq!(node.port_name(), pod.port_name());
        assert_eq!(Owner::from_port_owner_id(&node.port_owner_id()), Some(node));
        assert_eq!(Owner::from_port_owner_id(&pod.port_owner_id()), Some(pod));
        assert_eq!(Owner::from_port_owner_id("no-slash"), None);
        assert_eq!(Owner::from_port_owner_id("ns/"), None);
    }
}
