//! The provider networks on this node, as Kube-OVN's daemon lays them: each ProviderNetwork
//! that does not exclude the node (and whose `nodeSelector`, if any, selects it) gets
//! `br-<name>` with the node's NIC for it (see [`provider_bridge`]). A NIC that carries
//! addresses is refused: in a bridge it would cut the node off, and kovn does not move the
//! addresses onto the bridge yet.
//!
//! And the default external network, as Kube-OVN's daemon lays it from the
//! `kube-system/ovn-external-gw-config` ConfigMap: when `enable-external-gw` is `"true"` and
//! this node is one of `external-gw-nodes`, its NIC `external-gw-nic` becomes the uplink of the
//! provider bridge `br-external`, mapped as provider network `external`. ovn-controller then
//! connects the external logical switch's localnet port here, and the VPC router ports
//! scheduled on this chassis reach the outside world through that NIC. Disabled, the node not
//! listed, or the ConfigMap gone: kovn's bridge and mapping are removed. The controller lays
//! the external network's logical side (see `controller::external`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};

use api::external_gateway::{CONFIG_MAP, CONFIG_NAMESPACE, ExternalGatewayConfig, PROVIDER};
use api::{interface_label, provider_of_ready_label, ready_label};

use crate::ovs::provider_bridge;

/// A refused setting (the NIC not there yet) is tried again this often.
const RETRY: Duration = Duration::from_secs(10);

/// Which NIC this node bridges for which provider network: every ProviderNetwork that does
/// not exclude the node (its custom interface for the node, else its default), and the
/// default external network when the ConfigMap names this node.
pub fn wanted_bridges(
    node: &str,
    labels: &BTreeMap<String, String>,
    provider_networks: &[api::ProviderNetwork],
    external: Option<&ConfigMap>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = provider_networks
        .iter()
        .filter_map(|pn| {
            let nic = pn.spec.interface_of(node, labels)?;
            Some((pn.name_any(), nic.to_owned()))
        })
        .collect();
    if let Some(nic) = external
        .map(ExternalGatewayConfig::from_config_map)
        .and_then(|c| c.nic_of(node).map(str::to_owned))
    {
        out.entry(PROVIDER.to_owned()).or_insert(nic);
    }
    out
}

/// Follows the ProviderNetworks and the external network's ConfigMap until the task is
/// dropped: each wanted provider bridge made, kovn's others (of providers gone) removed.
pub async fn run(
    kube: kube::Client,
    ovs: ovsdb::Client,
    node: String,
    datapath_type: Option<String>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let (cm_store, cm_writer) = reflector::store::<ConfigMap>();
    let (pn_store, pn_writer) = reflector::store::<api::ProviderNetwork>();
    let config_maps = watcher(
        Api::<ConfigMap>::namespaced(kube.clone(), CONFIG_NAMESPACE),
        config,
    )
    .default_backoff()
    .reflect(cm_writer)
    .map(|_| ());
    let kube_for_node = kube.clone();
    let kube_for_labels = kube.clone();
    let provider_networks = watcher(
        Api::<api::ProviderNetwork>::all(kube),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(pn_writer)
    .map(|_| ());
    // This node's labels, for the networks' nodeSelector.
    let (node_store, node_writer) = reflector::store::<Node>();
    let nodes = watcher(
        Api::<Node>::all(kube_for_node),
        watcher::Config::default().fields(&format!("metadata.name={node}")),
    )
    .default_backoff()
    .reflect(node_writer)
    .map(|_| ());
    let mut events = futures::stream::select_all([
        config_maps.boxed(),
        provider_networks.boxed(),
        nodes.boxed(),
    ]);
    let mut retry = tokio::time::interval(RETRY);
    let mut done: Option<BTreeMap<String, String>> = None;
    let mut refused: std::collections::BTreeSet<(String, String)> = Default::default();
    loop {
        tokio::select! {
            event = events.next() => if event.is_none() { break },
            _ = retry.tick() => {}
        }
        // Nothing is done before both first lists: a restarted agent must not remove a
        // bridge it made before it has seen what asks for it.
        let (Ok(_), Ok(_), Ok(_)) = (
            tokio::time::timeout(Duration::ZERO, cm_store.wait_until_ready()).await,
            tokio::time::timeout(Duration::ZERO, pn_store.wait_until_ready()).await,
            tokio::time::timeout(Duration::ZERO, node_store.wait_until_ready()).await,
        ) else {
            continue;
        };
        let labels = node_store
            .state()
            .first()
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        let networks: Vec<api::ProviderNetwork> =
            pn_store.state().iter().map(|p| (**p).clone()).collect();
        let cm = cm_store.state().first().map(|c| (**c).clone());
        let wanted = wanted_bridges(&node, &labels, &networks, cm.as_ref());
        if done.as_ref() == Some(&wanted) {
            continue;
        }
        let mut ok = true;
        for (provider, nic) in &wanted {
            // A NIC carrying the node's addresses would cut the node off once in a bridge:
            // kovn does not move addresses onto the bridge (Kube-OVN's IP migration) yet.
            match addresses_of(nic).await {
                Ok(held) if !held.is_empty() => {
                    if refused.insert((provider.clone(), nic.clone())) {
                        tracing::error!(%provider, %nic, addresses = ?held, "the provider network's NIC carries addresses: not bridged (kovn does not move them onto br-{provider}); give the provider network a NIC without addresses");
                    }
                    ok = false;
                    continue;
                }
                Ok(_) => {
                    refused.remove(&(provider.clone(), nic.clone()));
                }
                // No such NIC (yet): ovs-vswitchd reports it, the bridge waits for it.
                Err(_) => {}
            }
            if let Err(e) =
                provider_bridge::ensure(&ovs, provider, nic, datapath_type.as_deref()).await
            {
                tracing::warn!(%provider, %nic, error = %e, "provider bridge");
                ok = false;
            }
        }
        for provider in provider_bridge::kovn_providers(&ovs) {
            if !wanted.contains_key(&provider)
                && let Err(e) = provider_bridge::remove(&ovs, &provider).await
            {
                tracing::warn!(%provider, error = %e, "removing a provider bridge");
                ok = false;
            }
        }
        // The node's labels tell the controller (ProviderNetwork status) where each network
        // is ready, with Kube-OVN's keys.
        let ready: BTreeMap<String, String> = wanted
            .iter()
            .filter(|(p, n)| !refused.contains(&((*p).clone(), (*n).clone())))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        let current = node_store
            .state()
            .first()
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        if let Some(patch) = readiness_labels(&current, &ready)
            && let Err(e) = Api::<Node>::all(kube_for_labels.clone())
                .patch(
                    &node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await
        {
            tracing::warn!(error = %e, "labelling the node's provider networks");
            ok = false;
        }
        if ok {
            tracing::info!(bridges = ?wanted, "provider bridges");
            done = Some(wanted);
        }
    }
}

/// The merge patch that makes the node's provider-network labels say `ready` (provider →
/// NIC), or None when they already do. Labels of providers not ready are removed.
pub fn readiness_labels(
    current: &BTreeMap<String, String>,
    ready: &BTreeMap<String, String>,
) -> Option<serde_json::Value> {
    let mut labels = serde_json::Map::new();
    for (provider, nic) in ready {
        if current.get(&ready_label(provider)).map(String::as_str) != Some("true") {
            labels.insert(ready_label(provider), "true".into());
        }
        if current.get(&interface_label(provider)) != Some(nic) {
            labels.insert(interface_label(provider), nic.clone().into());
        }
    }
    for key in current.keys() {
        if let Some(provider) = provider_of_ready_label(key)
            && !ready.contains_key(provider)
        {
            labels.insert(key.clone(), serde_json::Value::Null);
            labels.insert(interface_label(provider), serde_json::Value::Null);
        }
    }
    (!labels.is_empty()).then(|| serde_json::json!({"metadata": {"labels": labels}}))
}

/// The global (not link-local) addresses on `nic`; an error when there is no such NIC.
async fn addresses_of(nic: &str) -> Result<Vec<std::net::IpAddr>, String> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
    let handle = crate::netlink::connect().map_err(|e| e.to_string())?;
    let index = crate::netlink::index_of(&handle, nic)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no {nic}"))?;
    let addresses: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(addresses
        .into_iter()
        .filter(|a| a.header.scope == AddressScope::Universe)
        .filter_map(|a| {
            a.attributes.into_iter().find_map(|attr| match attr {
                AddressAttribute::Address(ip) => Some(ip),
                _ => None,
            })
        })
        .collect())
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

    #[test]
    fn provider_networks_give_each_node_its_nic_and_exclude_whom_they_name() {
        let pn: api::ProviderNetwork = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork",
            "metadata": {"name": "net1"},
            "spec": {"defaultInterface": "eth1",
                "customInterfaces": [{"interface": "ens5", "nodes": ["n2"]}],
                "excludeNodes": ["n3"]}
        }))
        .unwrap();
        let none = BTreeMap::new();
        let of = |node: &str| wanted_bridges(node, &none, std::slice::from_ref(&pn), None);
        assert_eq!(of("n1").get("net1").map(String::as_str), Some("eth1"));
        assert_eq!(of("n2").get("net1").map(String::as_str), Some("ens5"));
        assert!(of("n3").is_empty());
        // With a nodeSelector, only the nodes it selects.
        let mut selective = pn.clone();
        selective.spec.node_selector = Some(
            serde_json::from_value(serde_json::json!({"matchLabels": {"underlay": "true"}}))
                .unwrap(),
        );
        let labelled: BTreeMap<String, String> =
            [("underlay".to_owned(), "true".to_owned())].into();
        assert!(wanted_bridges("n1", &none, std::slice::from_ref(&selective), None).is_empty());
        assert_eq!(
            wanted_bridges("n1", &labelled, std::slice::from_ref(&selective), None).len(),
            1
        );
    }

    #[test]
    fn readiness_labels_are_added_and_removed_with_kube_ovns_keys() {
        let ready: BTreeMap<String, String> = [("net1".to_owned(), "eth1".to_owned())].into();
        let patch = readiness_labels(&BTreeMap::new(), &ready).unwrap();
        assert_eq!(
            patch["metadata"]["labels"]["net1.provider-network.kubernetes.io/ready"],
            "true"
        );
        assert_eq!(
            patch["metadata"]["labels"]["net1.provider-network.kubernetes.io/interface"],
            "eth1"
        );
        let labelled: BTreeMap<String, String> = [
            (ready_label("net1"), "true".to_owned()),
            (interface_label("net1"), "eth1".to_owned()),
            (ready_label("old"), "true".to_owned()),
        ]
        .into();
        let patch = readiness_labels(&labelled, &ready).unwrap();
        assert!(patch["metadata"]["labels"][ready_label("old")].is_null());
        assert!(
            patch["metadata"]["labels"]
                .get(ready_label("net1"))
                .is_none()
        );
        let settled: BTreeMap<String, String> = labelled
            .into_iter()
            .filter(|(k, _)| !k.starts_with("old."))
            .collect();
        assert!(
            readiness_labels(&settled, &ready).is_none(),
            "nothing to patch"
        );
    }
}
