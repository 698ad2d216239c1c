//! Kube-OVN's default external network, configured by the `kube-system/ovn-external-gw-config`
//! ConfigMap: which nodes are external gateways, the NIC they bridge into `br-external`
//! (provider network `external`), and the external subnet VPC routers and EIPs take their
//! addresses from. One parser for the agent (the bridges) and the controller (the switch, the
//! VPC router ports and their gateway chassis).

use k8s_openapi::api::core::v1::{ConfigMap, Node};

pub const CONFIG_MAP: &str = "ovn-external-gw-config";
pub const CONFIG_NAMESPACE: &str = "kube-system";
/// The provider network (and bridge mapping) of the default external network.
pub const PROVIDER: &str = "external";
/// The external subnet's name when the ConfigMap names none (Kube-OVN's
/// `--external-gateway-switch` default).
pub const DEFAULT_SWITCH: &str = "external";
/// The node label Kube-OVN puts on (and reads from) external gateway nodes.
pub const GATEWAY_LABEL: &str = "ovn.kubernetes.io/external-gw";

/// What the ConfigMap asks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalGatewayConfig {
    pub enabled: bool,
    /// `external-gw-nodes`, in the order given (the first gets the highest priority).
    pub nodes: Vec<String>,
    pub nic: String,
    /// `external-gw-switch`: the Subnet of the external network.
    pub switch: String,
    /// `type`: `centralized` (the default) or `distributed`.
    pub distributed: bool,
}

impl ExternalGatewayConfig {
    pub fn from_config_map(cm: &ConfigMap) -> ExternalGatewayConfig {
        let get = |k: &str| {
            cm.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let switch = get("external-gw-switch");
        ExternalGatewayConfig {
            enabled: get("enable-external-gw") == "true",
            nodes: get("external-gw-nodes")
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
            nic: get("external-gw-nic"),
            switch: if switch.is_empty() {
                DEFAULT_SWITCH.to_owned()
            } else {
                switch
            },
            distributed: get("type") == "distributed",
        }
    }

    /// The NIC this node bridges, if it is an external gateway.
    pub fn nic_of(&self, node: &str) -> Option<&str> {
        (self.enabled && !self.nic.is_empty() && self.nodes.iter().any(|n| n == node))
            .then_some(self.nic.as_str())
    }

    /// The gateway chassis of VPC routers' external ports, highest priority first: the
    /// listed nodes in their order (not for `type: distributed`, as Kube-OVN reads it), then
    /// nodes labelled [`GATEWAY_LABEL`]`=true`, by name. A node must exist to be one (a typo
    /// names no chassis).
    pub fn gateway_nodes(&self, nodes: &[&Node]) -> Vec<String> {
        if !self.enabled {
            return Vec::new();
        }
        let exists = |name: &str| {
            nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(name))
        };
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !self.distributed && exists(n))
            .cloned()
            .collect();
        let mut labelled: Vec<String> = nodes
            .iter()
            .filter(|n| {
                n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(GATEWAY_LABEL))
                    .is_some_and(|v| v == "true")
            })
            .filter_map(|n| n.metadata.name.clone())
            .filter(|n| !out.contains(n))
            .collect();
        labelled.sort();
        out.extend(labelled);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_config_map_reads_as_kube_ovn_writes_it() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": CONFIG_MAP, "namespace": CONFIG_NAMESPACE},
            "data": {"enable-external-gw": "true", "external-gw-nodes": "n2, n1,",
                "external-gw-nic": "eth1", "type": "centralized"}
        }))
        .unwrap();
        let c = ExternalGatewayConfig::from_config_map(&cm);
        assert!(c.enabled && !c.distributed);
        assert_eq!(c.switch, "external");
        assert_eq!(c.nic_of("n1"), Some("eth1"));
        assert_eq!(c.nic_of("n3"), None);
        let node = |name: &str, label: bool| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": if label { json!({GATEWAY_LABEL: "true"}) } else { json!({}) }}}))
            .unwrap()
        };
        let (n1, n2, n3, n4) = (
            node("n1", false),
            node("n2", false),
            node("n4", true),
            node("n3", true),
        );
        assert_eq!(
            c.gateway_nodes(&[&n1, &n2, &n3, &n4]),
            ["n2", "n1", "n3", "n4"]
        );
        // n2 does not exist: it names no chassis.
        assert_eq!(c.gateway_nodes(&[&n1]), ["n1"]);
        // Distributed: the labelled nodes only.
        let distributed = ExternalGatewayConfig {
            distributed: true,
            ..c.clone()
        };
        assert_eq!(
            distributed.gateway_nodes(&[&n1, &n2, &n3, &n4]),
            ["n3", "n4"]
        );
    }
}
