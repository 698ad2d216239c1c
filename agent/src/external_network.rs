//! The default external network on this node, as Kube-OVN's daemon lays it from the
//! `kube-system/ovn-external-gw-config` ConfigMap: when `enable-external-gw` is `"true"` and
//! this node is one of `external-gw-nodes`, its NIC `external-gw-nic` becomes the uplink of the
//! provider bridge `br-external`, mapped as provider network `external`. ovn-controller then
//! connects the external logical switch's localnet port here, and the VPC router ports
//! scheduled on this chassis reach the outside world through that NIC. Disabled, the node not
//! listed, or the ConfigMap gone: kovn's bridge and mapping are removed.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::ovs::provider_bridge;

/// Kube-OVN's names.
pub const CONFIG_MAP: &str = "ovn-external-gw-config";
pub const CONFIG_NAMESPACE: &str = "kube-system";
pub const PROVIDER: &str = "external";
/// A refused setting (the NIC not there yet) is tried again this often.
const RETRY: Duration = Duration::from_secs(10);

/// What the ConfigMap asks of the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalGatewayConfig {
    pub enabled: bool,
    pub nodes: Vec<String>,
    pub nic: String,
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
        ExternalGatewayConfig {
            enabled: get("enable-external-gw") == "true",
            nodes: get("external-gw-nodes")
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
            nic: get("external-gw-nic"),
        }
    }

    /// The NIC this node bridges, if it is an external gateway.
    pub fn nic_of(&self, node: &str) -> Option<&str> {
        (self.enabled && !self.nic.is_empty() && self.nodes.iter().any(|n| n == node))
            .then_some(self.nic.as_str())
    }
}

/// Follows the ConfigMap until the task is dropped.
pub async fn run(
    kube: kube::Client,
    ovs: ovsdb::Client,
    node: String,
    datapath_type: Option<String>,
) {
    let api: Api<ConfigMap> = Api::namespaced(kube, CONFIG_NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // Nothing is done before the first list: a restarted agent must not remove the bridge
    // it made before it has seen the ConfigMap again.
    let mut listed = false;
    let mut listing: Option<ConfigMap> = None;
    let mut current: Option<ConfigMap> = None;
    let mut done: Option<Option<String>> = None;
    let mut retry = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => listing = None,
                Some(Ok(watcher::Event::InitApply(cm))) => listing = Some(cm),
                Some(Ok(watcher::Event::InitDone)) => {
                    current = listing.take();
                    listed = true;
                }
                Some(Ok(watcher::Event::Apply(cm))) => current = Some(cm),
                Some(Ok(watcher::Event::Delete(_))) => current = None,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching {CONFIG_NAMESPACE}/{CONFIG_MAP}");
                    continue;
                }
                None => break,
            },
            _ = retry.tick() => {}
        }
        if !listed {
            continue;
        }
        let wanted: Option<String> = current
            .as_ref()
            .map(ExternalGatewayConfig::from_config_map)
            .and_then(|c| c.nic_of(&node).map(str::to_owned));
        if done.as_ref() == Some(&wanted) {
            continue;
        }
        let result = match &wanted {
            Some(nic) => {
                provider_bridge::ensure(&ovs, PROVIDER, nic, datapath_type.as_deref()).await
            }
            None => provider_bridge::remove(&ovs, PROVIDER).await,
        };
        match result {
            Ok(()) => {
                tracing::info!(nic = ?wanted, "external network provider bridge");
                done = Some(wanted.clone());
            }
            Err(e) => tracing::warn!(error = %e, "external network provider bridge"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_nodes_of_an_enabled_config_bridge_their_nic() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": CONFIG_MAP, "namespace": CONFIG_NAMESPACE},
            "data": {"enable-external-gw": "true", "external-gw-nodes": "n1, n2",
                "external-gw-nic": "eth1", "type": "centralized",
                "external-gw-addr": "192.168.200.254/24"}
        }))
        .unwrap();
        let config = ExternalGatewayConfig::from_config_map(&cm);
        assert_eq!(config.nic_of("n1"), Some("eth1"));
        assert_eq!(config.nic_of("n2"), Some("eth1"));
        assert_eq!(config.nic_of("n0"), None);
        let disabled = ExternalGatewayConfig {
            enabled: false,
            ..config
        };
        assert_eq!(disabled.nic_of("n1"), None);
    }
}
