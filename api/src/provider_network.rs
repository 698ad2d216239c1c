//! `kubeovn.io/v1` ProviderNetwork and Vlan: the physical networks of an underlay, as Kube-OVN
//! defines them. A ProviderNetwork names the NIC each node bridges into `br-<name>` (the
//! default, per-node overrides, excluded nodes); a Vlan is a tag on one provider network; an
//! underlay Subnet names its Vlan.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, is_false};

/// Kube-OVN's node labels for a provider network: the node's agent bridged its NIC, and
/// which NIC (the controller's status of the network reads them).
const LABEL_DOMAIN: &str = "provider-network.kubernetes.io";

pub fn ready_label(provider: &str) -> String {
    format!("{provider}.{LABEL_DOMAIN}/ready")
}

pub fn interface_label(provider: &str) -> String {
    format!("{provider}.{LABEL_DOMAIN}/interface")
}

/// The provider network a [`ready_label`] is about.
pub fn provider_of_ready_label(label: &str) -> Option<&str> {
    label.strip_suffix(&format!(".{LABEL_DOMAIN}/ready"))
}

/// A NIC for some nodes, instead of the default one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CustomInterface {
    pub interface: String,
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// `kubeovn.io/v1` ProviderNetwork.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "ProviderNetwork",
    plural = "provider-networks",
    status = "ProviderNetworkStatus",
    printcolumn = r#"{"name":"DefaultInterface","type":"string","jsonPath":".spec.defaultInterface"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ProviderNetworkSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_interface: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_interfaces: Vec<CustomInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exchange_link_name: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub preserve_vlan_interfaces: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlan_interfaces: Vec<String>,
    /// Fields no Kube-OVN version known to kovn has.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl ProviderNetworkSpec {
    /// The NIC `node` (with `labels`) bridges, or None when the node is excluded, not
    /// selected by `nodeSelector`, or has none.
    pub fn interface_of(&self, node: &str, labels: &BTreeMap<String, String>) -> Option<&str> {
        if self.exclude_nodes.iter().any(|n| n == node) {
            return None;
        }
        if let Some(selector) = &self.node_selector
            && !crate::selects(selector, labels)
        {
            return None;
        }
        self.custom_interfaces
            .iter()
            .find(|c| c.nodes.iter().any(|n| n == node))
            .map(|c| c.interface.as_str())
            .or(Some(self.default_interface.as_str()))
            .filter(|i| !i.is_empty())
    }

    /// The fields set to something kovn does not act on (yet), by their Kube-OVN names.
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.exchange_link_name {
            out.push("exchangeLinkName".to_owned());
        }
        if self.preserve_vlan_interfaces {
            out.push("preserveVlanInterfaces".to_owned());
        }
        if !self.vlan_interfaces.is_empty() {
            out.push("vlanInterfaces".to_owned());
        }
        out.extend(
            self.unknown
                .keys()
                .map(|k| format!("{k} (not a Kube-OVN field kovn knows)")),
        );
        out
    }
}

/// A node's condition on a provider network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ProviderNetworkCondition {
    pub node: String,
    #[serde(flatten)]
    pub condition: Condition,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderNetworkStatus {
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ProviderNetworkCondition>,
}

/// `kubeovn.io/v1` Vlan.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Vlan",
    plural = "vlans",
    status = "VlanStatus",
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".spec.id"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VlanSpec {
    /// 0 (untagged) to 4095.
    #[serde(default)]
    pub id: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Deprecated by Kube-OVN (`id` and `provider` instead); read when those are unset.
    #[serde(rename = "vlanId", default, skip_serializing_if = "crate::is_zero")]
    pub vlan_id: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_interface_name: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl VlanSpec {
    /// The tag: `id`, else the deprecated `vlanId`.
    pub fn tag(&self) -> u32 {
        if self.id != 0 { self.id } else { self.vlan_id }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VlanStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
