//! Multus: the `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition, the pod annotation that asks
//! for attachments (`k8s.v1.cni.cncf.io/networks`), and which of them are kovn's to serve —
//! as Kube-OVN reads them. Multus installs the CRD; kovn only reads it.
//!
//! A NAD whose CNI config has `"type": "kube-ovn"` is an OVN network: the pod gets a
//! Logical_Switch_Port in the subnet of provider `<nad>.<namespace>.ovn`. A NAD of another
//! plugin with `"ipam": {"type": "kube-ovn"}` is IPAM only: provider `<nad>.<namespace>`, an
//! address from that subnet and nothing in OVN.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pod annotation listing the networks Multus attaches besides the default one.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The CNI type of kovn's plugin (Kube-OVN's).
pub const CNI_TYPE: &str = "kube-ovn";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    namespaced
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// A CNI config or conflist, as JSON text.
    #[serde(default)]
    pub config: String,
}

/// One network a pod asks Multus for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSelection {
    /// The NAD's namespace (the pod's when the annotation names none).
    pub namespace: String,
    pub name: String,
    /// The interface inside the pod: the annotation's, else Multus's `net<n>` (n counting
    /// from 1 in the annotation's order).
    pub interface: String,
}

#[derive(Deserialize)]
struct SelectionJson {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    interface: String,
}

/// Parses the networks annotation: Multus's JSON list (`[{"name": …, "namespace": …,
/// "interface": …}]`) or its short form (`[ns/]name[@interface]`, comma-separated).
pub fn parse_networks(
    annotation: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, String> {
    let text = annotation.trim();
    let raw: Vec<SelectionJson> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|e| format!("{NETWORKS_ANNOTATION}: {e}"))?
    } else {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (rest, interface) = match item.split_once('@') {
                    Some((rest, interface)) => (rest, interface),
                    None => (item, ""),
                };
                let (namespace, name) = rest.split_once('/').unwrap_or(("", rest));
                SelectionJson {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                    interface: interface.to_owned(),
                }
            })
            .collect()
    };
    let mut out = Vec::new();
    for (index, s) in raw.into_iter().enumerate() {
        if s.name.is_empty() || s.name.contains('/') {
            return Err(format!(
                "{NETWORKS_ANNOTATION}: network {} has no valid name",
                index + 1
            ));
        }
        let interface = if s.interface.is_empty() {
            format!("net{}", index + 1)
        } else {
            s.interface
        };
        if interface == "eth0" || interface.len() > 15 {
            return Err(format!(
                "{NETWORKS_ANNOTATION}: interface {interface:?} of {} is the pod's own or longer than 15 bytes",
                s.name
            ));
        }
        if out
            .iter()
            .any(|o: &NetworkSelection| o.interface == interface)
        {
            return Err(format!(
                "{NETWORKS_ANNOTATION}: interface {interface} is asked for twice"
            ));
        }
        out.push(NetworkSelection {
            namespace: if s.namespace.is_empty() {
                pod_namespace.to_owned()
            } else {
                s.namespace
            },
            name: s.name,
            interface,
        });
    }
    Ok(out)
}

/// What kovn serves of a NAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentKind {
    /// `"type": "kube-ovn"`: a port on an OVN logical switch.
    Ovn,
    /// Another plugin using `"ipam": {"type": "kube-ovn"}`: addresses only.
    IpamOnly,
}

/// A NAD kovn serves: its provider and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentNetwork {
    pub provider: String,
    pub kind: AttachmentKind,
}

#[derive(Deserialize, Default)]
struct CniConfig {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    ipam: Option<Box<CniConfig>>,
    /// A conflist's plugins.
    #[serde(default)]
    plugins: Vec<CniConfig>,
}

impl AttachmentNetwork {
    /// Kube-OVN's provider of an OVN network `<nad>.<namespace>.ovn`, of an IPAM-only one
    /// `<nad>.<namespace>`.
    pub fn provider_of(namespace: &str, name: &str, kind: &AttachmentKind) -> String {
        match kind {
            AttachmentKind::Ovn => format!(
                "{name}.{namespace}.{}",
                crate::annotations::DEFAULT_PROVIDER
            ),
            AttachmentKind::IpamOnly => format!("{name}.{namespace}"),
        }
    }

    /// Whether a provider is an OVN network's (Kube-OVN: `ovn` or `*.ovn`).
    pub fn is_ovn_provider(provider: &str) -> bool {
        provider.is_empty()
            || provider == crate::annotations::DEFAULT_PROVIDER
            || provider.ends_with(".ovn")
    }

    /// The network of a NAD: `Ok(None)` when it is another plugin's entirely; an error when
    /// its config is not JSON, or names a provider other than the one Kube-OVN derives (the
    /// plugin would ask the agent for annotations nobody writes).
    pub fn of(nad: &NetworkAttachmentDefinition) -> Result<Option<AttachmentNetwork>, String> {
        let name = nad.metadata.name.clone().unwrap_or_default();
        let namespace = nad.metadata.namespace.clone().unwrap_or_default();
        let config: CniConfig = serde_json::from_str(&nad.spec.config)
            .map_err(|e| format!("NetworkAttachmentDefinition {namespace}/{name}: config: {e}"))?;
        let plugins = if config.plugins.is_empty() {
            vec![config]
        } else {
            config.plugins
        };
        for plugin in plugins {
            let (kind, named) = if plugin.type_ == CNI_TYPE {
                (AttachmentKind::Ovn, plugin.provider)
            } else if let Some(ipam) = plugin.ipam.filter(|i| i.type_ == CNI_TYPE) {
                (AttachmentKind::IpamOnly, ipam.provider)
            } else {
                continue;
            };
            let provider = AttachmentNetwork::provider_of(&namespace, &name, &kind);
            if !named.is_empty() && named != provider {
                return Err(format!(
                    "NetworkAttachmentDefinition {namespace}/{name}: provider {named:?} must be {provider:?} (Kube-OVN derives it from the NAD's name and namespace)"
                ));
            }
            return Ok(Some(AttachmentNetwork { provider, kind }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_annotation_forms_are_read_with_multus_defaults() {
        let short = parse_networks("attachnet, other/macvlan@data", "default").unwrap();
        assert_eq!(
            short,
            vec![
                NetworkSelection {
                    namespace: "default".into(),
                    name: "attachnet".into(),
                    interface: "net1".into()
                },
                NetworkSelection {
                    namespace: "other".into(),
                    name: "macvlan".into(),
                    interface: "data".into()
                },
            ]
        );
        let json = parse_networks(
            r#"[{"name":"attachnet","namespace":"default"},{"name":"m","interface":"net9"}]"#,
            "x",
        )
        .unwrap();
        assert_eq!(json[0].interface, "net1");
        assert_eq!(json[1].namespace, "x");
        assert_eq!(json[1].interface, "net9");
        assert!(parse_networks("a@eth0", "x").is_err());
        assert!(parse_networks("a@n1,b@n1", "x").is_err());
        assert!(parse_networks("[{\"name\":", "x").is_err());
        assert!(parse_networks("/", "x").is_err());
    }

    fn nad(config: &str) -> NetworkAttachmentDefinition {
        let mut nad = NetworkAttachmentDefinition::new(
            "attachnet",
            NetworkAttachmentDefinitionSpec {
                config: config.into(),
            },
        );
        nad.metadata.namespace = Some("default".into());
        nad
    }

    #[test]
    fn providers_are_kube_ovns() {
        let ovn = nad(
            r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"attachnet.default.ovn"}"#,
        );
        assert_eq!(
            AttachmentNetwork::of(&ovn).unwrap(),
            Some(AttachmentNetwork {
                provider: "attachnet.default.ovn".into(),
                kind: AttachmentKind::Ovn
            })
        );
        let ipam = nad(
            r#"{"cniVersion":"0.3.1","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"kube-ovn","provider":"attachnet.default"}}]}"#,
        );
        assert_eq!(
            AttachmentNetwork::of(&ipam).unwrap().unwrap().kind,
            AttachmentKind::IpamOnly
        );
        assert_eq!(
            AttachmentNetwork::of(&nad(r#"{"type":"bridge"}"#)).unwrap(),
            None
        );
        assert!(AttachmentNetwork::of(&nad(r#"{"type":"kube-ovn","provider":"x.ovn"}"#)).is_err());
        assert!(AttachmentNetwork::of(&nad("not json")).is_err());
        assert!(AttachmentNetwork::is_ovn_provider("a.b.ovn"));
        assert!(!AttachmentNetwork::is_ovn_provider("a.b"));
    }
}
