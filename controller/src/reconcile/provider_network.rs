//! A ProviderNetwork's status, as Kube-OVN shows it: the nodes where it is ready (their agent
//! bridged its NIC and labelled the node `<name>.provider-network.kubernetes.io/ready`), the
//! nodes it should reach but has not (`notReadyNodes`), its Vlans, and one `Ready` condition
//! per node; the fields kovn does not act on in an `Unsupported` condition (node ""). Each of
//! its Vlans gets the subnets on it in its status. Nothing in NB: the bridges are the
//! agents', the localnet ports the subnets'.

use std::sync::Arc;
use std::time::Duration;

use api::{
    Condition, ProviderNetwork, ProviderNetworkCondition, ProviderNetworkStatus, Vlan, ready_label,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::Result;

/// Vlans and subnets joining or leaving trigger nothing here: the status is looked at again
/// this often.
const STATUS_REFRESH: Duration = Duration::from_secs(10);

/// The status `pn` should show, from the nodes (their labels), Vlans and Subnets.
pub fn status_of(
    pn: &ProviderNetwork,
    nodes: &[k8s_openapi::api::core::v1::Node],
    vlans: &[Vlan],
) -> ProviderNetworkStatus {
    let name = pn.name_any();
    let mut ready_nodes = Vec::new();
    let mut not_ready_nodes = Vec::new();
    let mut conditions = Vec::new();
    for node in nodes {
        let node_name = node.name_any();
        if pn.spec.interface_of(&node_name, node.labels()).is_none() {
            continue;
        }
        let ready = node.labels().get(&ready_label(&name)).map(String::as_str) == Some("true");
        if ready {
            ready_nodes.push(node_name.clone());
        } else {
            not_ready_nodes.push(node_name.clone());
        }
        conditions.push(ProviderNetworkCondition {
            node: node_name,
            condition: Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: if ready {
                    "InitOVSBridgeSucceeded"
                } else {
                    "InitOVSBridgeFailed"
                }
                .into(),
                ..Condition::default()
            },
        });
    }
    let unsupported = pn.spec.unsupported_fields();
    if !unsupported.is_empty() {
        conditions.push(ProviderNetworkCondition {
            node: String::new(),
            condition: Condition {
                type_: "Unsupported".into(),
                status: "True".into(),
                reason: "NotImplemented".into(),
                message: format!("kovn does not implement yet: {}", unsupported.join(", ")),
                ..Condition::default()
            },
        });
    }
    ready_nodes.sort();
    not_ready_nodes.sort();
    let mut on_it: Vec<String> = vlans
        .iter()
        .filter(|v| v.spec.provider == name)
        .map(|v| v.name_any())
        .collect();
    on_it.sort();
    ProviderNetworkStatus {
        ready: not_ready_nodes.is_empty() && !ready_nodes.is_empty(),
        ready_nodes,
        not_ready_nodes,
        vlans: on_it,
        conditions,
    }
}

pub async fn reconcile(pn: Arc<ProviderNetwork>, ctx: Arc<Context>) -> Result<Action> {
    let nodes: Vec<_> = ctx
        .stores
        .nodes
        .state()
        .iter()
        .map(|n| (**n).clone())
        .collect();
    let vlans: Vec<Vlan> = ctx
        .stores
        .vlans
        .state()
        .iter()
        .map(|v| (**v).clone())
        .collect();
    let status = status_of(&pn, &nodes, &vlans);
    super::write_status(&ctx, &*pn, pn.status.as_ref(), &status).await?;
    // Its Vlans' subnets.
    for vlan in vlans.iter().filter(|v| v.spec.provider == pn.name_any()) {
        let mut subnets: Vec<String> = ctx
            .stores
            .subnets
            .state()
            .iter()
            .filter(|s| s.spec.vlan == vlan.name_any())
            .map(|s| s.name_any())
            .collect();
        subnets.sort();
        if vlan.status.as_ref().map(|s| &s.subnets) != Some(&subnets) {
            Api::<Vlan>::all(ctx.kube.clone())
                .patch_status(
                    &vlan.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "subnets": subnets } })),
                )
                .await?;
        }
    }
    Ok(Action::requeue(STATUS_REFRESH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_where_labelled_not_ready_where_selected_but_not_labelled() {
        let pn: ProviderNetwork = serde_json::from_value(json!({
            "apiVersion": "kubeovn.io/v1", "kind": "ProviderNetwork", "metadata": {"name": "net1"},
            "spec": {"defaultInterface": "eth1", "excludeNodes": ["n2"], "exchangeLinkName": true}
        }))
        .unwrap();
        let node = |name: &str, ready: bool| -> k8s_openapi::api::core::v1::Node {
            let mut labels = serde_json::Map::new();
            if ready {
                labels.insert(ready_label("net1"), "true".into());
            }
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
        };
        let vlan: Vlan = serde_json::from_value(json!({
            "apiVersion": "kubeovn.io/v1", "kind": "Vlan", "metadata": {"name": "vlan0"},
            "spec": {"id": 0, "provider": "net1"}
        }))
        .unwrap();
        let status = status_of(
            &pn,
            &[node("n0", true), node("n1", false), node("n2", false)],
            &[vlan],
        );
        assert_eq!(status.ready_nodes, ["n0"]);
        assert_eq!(status.not_ready_nodes, ["n1"], "n2 is excluded");
        assert!(!status.ready);
        assert_eq!(status.vlans, ["vlan0"]);
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.condition.type_ == "Unsupported"
                    && c.condition.message.contains("exchangeLinkName"))
        );
        let all = status_of(&pn, &[node("n0", true)], &[]);
        assert!(all.ready);
    }
}
