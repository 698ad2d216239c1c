//! A node's lifecycle: an address on the join subnet and the port `node-<name>` there (the
//! agent binds it to the node's `ovn0`), Kube-OVN's node annotations, and the node's
//! distributed-gateway state (its port group and reroute policy). Released when the node goes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api::Owner;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use ovsdb::models::ovn_northbound::LogicalSwitchPort;
use ovsdb::{Datum, Model};

use super::pod::patch_annotations;
use super::{allocate_for, uses_node_gateway};
use crate::context::Context;
use crate::error::Result;
use crate::topology::{self, PodPortPlan, gateway};

/// Kube-OVN's node annotation naming the join port.
pub use api::annotations::PORT_NAME;
/// Gateway state is rebuilt this often even without a change (port group membership races
/// with pods created in the same batch).
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action> {
    let name = node.name_any();
    let owner = Owner::node(&name);
    let join = ctx.settings.names.join_subnet.clone();
    let node_annotations = node.annotations();
    let (allocation, mut desired) = allocate_for(&ctx, &join, &owner, node_annotations)?;
    desired.insert(PORT_NAME.to_owned(), owner.port_name());

    // Pods of this node in distributed subnets of the default VPC form its port group.
    let distributed: BTreeSet<String> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .filter(|s| uses_node_gateway(s, &ctx.settings))
        .map(|s| s.name_any())
        .collect();
    let plan = PodPortPlan {
        owner,
        switch: join.clone(),
        mac: allocation.mac.clone(),
        ips: allocation.ips.clone(),
        node: name.clone(),
        port_security: false,
    };
    let router = ctx.settings.names.cluster_router.clone();
    let join_ips = allocation.ips.clone();
    let node_name = name.clone();
    let network_policy = ctx.settings.enable_np;
    ctx.nb
        .apply(move |cache, t| {
            topology::pod_port_ops(cache, &plan, t).map_err(|e| e.to_string())?;
            let ports: Vec<String> = cache
                .table(LogicalSwitchPort::TABLE)
                .map(|table| {
                    table
                        .find(&["external_ids:node"], &[Datum::atom(node_name.as_str())])
                        .into_iter()
                        .filter_map(|r| LogicalSwitchPort::from_row(r).ok())
                        .filter(|p| {
                            p.external_ids
                                .get("ls")
                                .is_some_and(|ls| distributed.contains(ls))
                        })
                        .map(|p| p.name)
                        .collect()
                })
                .unwrap_or_default();
            gateway::node_gateway_ops(
                cache,
                t,
                &router,
                &node_name,
                &join_ips,
                &ports,
                network_policy,
            );
            Ok(())
        })
        .await?;

    if desired
        .iter()
        .any(|(k, v)| node_annotations.get(k) != Some(v))
    {
        let nodes: Api<Node> = Api::all(ctx.kube.clone());
        patch_annotations(&nodes, &name, &desired).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// Releases a deleted node's join address, port, port group and policies.
pub async fn release(ctx: &Context, node: &str) -> Result<()> {
    let owner = Owner::node(node);
    ctx.ipam().release(&owner);
    let port = owner.port_name();
    let router = ctx.settings.names.cluster_router.clone();
    let node = node.to_owned();
    ctx.nb
        .apply(move |cache, t| {
            topology::delete_port_ops(cache, &port, t);
            gateway::delete_node_gateway_ops(cache, t, &router, &node);
            Ok(())
        })
        .await
}
