//! Who holds a network identity: a pod in a namespace, or a node (its join port). One type and
//! one function for each name derived from it, so no component guesses an owner from the
//! shape of a string (a node named `ip-10-0-1-5.ec2.internal` has dots, as pod ports do).

use std::fmt;

/// The holder of addresses, a logical switch port and an IP object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A pod: port and IP object `<name>.<namespace>`, as Kube-OVN names them.
    Pod { namespace: String, name: String },
    /// One of a pod's secondary attachments (a Multus network served by kovn): port and IP
    /// object `<name>.<namespace>.<provider>`, as Kube-OVN names them. Its own addresses in
    /// its own subnet; the pod it belongs to is [`Owner::pod_of`].
    Attachment {
        namespace: String,
        name: String,
        provider: String,
    },
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

    /// The holder of a pod's network `provider`: the pod itself for Kube-OVN's default
    /// provider (`ovn`, or none named), else its attachment of that provider.
    pub fn pod_network(namespace: &str, name: &str, provider: &str) -> Owner {
        if provider.is_empty() || provider == crate::annotations::DEFAULT_PROVIDER {
            Owner::pod(namespace, name)
        } else {
            Owner::Attachment {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                provider: provider.to_owned(),
            }
        }
    }

    /// The pod a pod's or an attachment's holder belongs to (`None` for nodes and EIPs).
    pub fn pod_of(&self) -> Option<Owner> {
        match self {
            Owner::Pod { .. } => Some(self.clone()),
            Owner::Attachment {
                namespace, name, ..
            } => Some(Owner::pod(namespace, name)),
            _ => None,
        }
    }

    /// Kube-OVN's provider of the network this holder is on (`ovn` for a pod's own).
    pub fn provider(&self) -> &str {
        match self {
            Owner::Attachment { provider, .. } => provider,
            _ => crate::annotations::DEFAULT_PROVIDER,
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
            Owner::Attachment {
                namespace,
                name,
                provider,
            } => format!("{name}.{namespace}.{provider}"),
            Owner::Node { name } => format!("node-{name}"),
            Owner::Eip { name } => name.clone(),
            Owner::IptablesEip { name } => format!("iptables-eip.{name}"),
        }
    }

    /// The `external_ids:pod` value recorded on the owner's port ([`PORT_OWNER_KEY`]).
    pub fn port_owner_id(&self) -> String {
        match self {
            Owner::Pod { namespace, name } => format!("{namespace}/{name}"),
            // Kube-OVN writes the pod alone; the provider is kovn's, so the holder reads back.
            Owner::Attachment {
                namespace,
                name,
                provider,
            } => format!("{namespace}/{name}/{provider}"),
            Owner::Node { name } => format!("/{name}"),
            // Never on a port; a form from_port_owner_id does not read back.
            Owner::Eip { name } => format!("eip:{name}"),
            Owner::IptablesEip { name } => format!("iptables-eip:{name}"),
        }
    }

    /// Reads back [`Owner::port_owner_id`]; `None` for a value kovn did not write.
    pub fn from_port_owner_id(value: &str) -> Option<Owner> {
        let (namespace, name) = value.split_once('/')?;
        if let Some((name, provider)) = name.split_once('/') {
            let valid = !namespace.is_empty()
                && !name.is_empty()
                && !provider.is_empty()
                && !provider.contains('/')
                && provider != crate::annotations::DEFAULT_PROVIDER;
            return valid.then(|| Owner::pod_network(namespace, name, provider));
        }
        if name.is_empty() {
            return None;
        }
        Some(if namespace.is_empty() {
            Owner::node(name)
        } else {
            Owner::pod(namespace, name)
        })
    }

    pub fn is_pod(&self) -> bool {
        matches!(self, Owner::Pod { .. })
    }

    /// The holder an IP object records: its `podName` and `namespace` (a node's has none),
    /// and, for a pod, which of its networks — its own record is named `<pod>.<namespace>`, a
    /// secondary attachment's `<pod>.<namespace>.<provider>`. The owner comes from the
    /// object's fields, never from its name alone.
    pub fn of_ip_object(ip: &crate::IP) -> Option<Owner> {
        let spec = &ip.spec;
        if spec.pod_name.is_empty() {
            return None;
        }
        if spec.namespace.is_empty() {
            return Some(Owner::node(&spec.pod_name));
        }
        let pod = Owner::pod(&spec.namespace, &spec.pod_name);
        let name = ip.metadata.name.as_deref().unwrap_or_default();
        let provider = name
            .strip_prefix(pod.port_name().as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|p| !p.is_empty());
        Some(match provider {
            Some(provider) => Owner::pod_network(&spec.namespace, &spec.pod_name, provider),
            None => pod,
        })
    }
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
            Owner::of_ip_object(&ip("web-0.default", "web-0", "default")),
            Some(owner.clone())
        );
        let attachment =
            Owner::of_ip_object(&ip("web-0.default.net1.default.ovn", "web-0", "default")).unwrap();
        assert_eq!(
            attachment,
            Owner::pod_network("default", "web-0", "net1.default.ovn")
        );
        assert_eq!(attachment.pod_of(), Some(owner));
        assert_eq!(attachment.port_name(), "web-0.default.net1.default.ovn");
        assert_eq!(
            Owner::from_port_owner_id(&attachment.port_owner_id()),
            Some(attachment)
        );
        // `ovn` is the pod's own network.
        assert_eq!(
            Owner::pod_network("default", "web-0", "ovn"),
            Owner::pod("default", "web-0")
        );
        // A node's record is never an attachment, dots or not.
        assert_eq!(
            Owner::of_ip_object(&ip("node-a.b", "a.b", "")),
            Some(Owner::node("a.b"))
        );
        assert_eq!(Owner::of_ip_object(&ip("x", "", "")), None);
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
        assert_eq!(Owner::from_port_owner_id("ns/a/"), None);
        assert_eq!(Owner::from_port_owner_id("ns/a/ovn"), None);
    }
}
