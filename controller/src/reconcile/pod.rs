//! A pod's lifecycle: once scheduled, it gets addresses from its subnet, a
//! Logical_Switch_Port `<pod>.<namespace>`, an `IP` object recording the allocation and the
//! annotations Kube-OVN's CNI reads (`allocated`, then `routed`). When it is deleted, all of
//! that is released.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::annotations;
use api::{IP, Owner};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use ovsdb::Condition;
use ovsdb::models::ovn_northbound::PortGroup;
use serde_json::json;

use super::{allocate_for, uses_node_gateway};
use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::ipam::IpamError;
use crate::pod::ip_object;
use crate::topology::gateway::node_port_group;
use crate::topology::{self, PodPortPlan, find};

/// The subnet a pod belongs to: its own `logical_switch` annotation, else its namespace's,
/// else a subnet listing the namespace, else the default subnet.
pub fn subnet_for(pod: &Pod, ctx: &Context) -> String {
    if let Some(ls) = pod.annotations().get(annotations::LOGICAL_SWITCH)
        && !ls.is_empty()
    {
        return ls.clone();
    }
    let ns = pod.namespace().unwrap_or_default();
    if let Some(namespace) = ctx
        .stores
        .namespaces
        .get(&ObjectRef::new(&ns))
        .and_then(|n| {
            n.annotations()
                .get(annotations::NAMESPACE_LOGICAL_SWITCH)
                .cloned()
        })
        && !namespace.is_empty()
    {
        return namespace.split(',').next().unwrap_or_default().to_owned();
    }
    let mut listing: Vec<String> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .filter(|s| s.spec.namespaces.contains(&ns))
        .map(|s| s.name_any())
        .collect();
    listing.sort();
    listing
        .into_iter()
        .next()
        .unwrap_or_else(|| ctx.settings.names.default_subnet.clone())
}

pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action> {
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(node) = spec.node_name.clone() else {
        return Ok(Action::await_change());
    };
    if spec.host_network == Some(true) || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = pod.name_any();
    let namespace = pod.namespace().unwrap_or_default();
    let owner = Owner::of_pod(&pod);
    let subnet_name = subnet_for(&pod, &ctx);
    if subnet_name == ctx.settings.names.join_subnet {
        // The join subnet is the nodes' (their ovn0 ports), and every private subnet's ACLs
        // let it in: a pod there would pass for a node.
        return Err(Error::BadAnnotation(format!(
            "{}: the join subnet {subnet_name} holds node ports only",
            annotations::LOGICAL_SWITCH
        )));
    }
    let subnet = ctx
        .stores
        .subnets
        .get(&ObjectRef::new(&subnet_name))
        .ok_or_else(|| Error::SubnetNotReady(subnet_name.clone()))?;

    // Addresses: static ones from the annotations (a user's, or our own from before a
    // restart), else the next free ones. Idempotent for an owner that already holds some.
    let pod_annotations = pod.annotations();
    let (allocation, mut desired) = allocate_for(&ctx, &subnet_name, &owner, pod_annotations)?;

    let plan = PodPortPlan {
        owner: owner.clone(),
        switch: subnet_name.clone(),
        mac: allocation.mac.clone(),
        ips: allocation.ips.clone(),
        node: node.clone(),
        port_security: true,
    };
    let distributed = uses_node_gateway(&subnet, &ctx.settings);
    let port_group = node_port_group(&node);
    // Isolated from its first transaction: the policies selecting it hold its port at once.
    let policy_groups = super::network_policy::selecting_port_groups(&ctx, &pod);
    ctx.nb
        .apply(move |cache, t| {
            let port = topology::pod_port_ops(cache, &plan, t).map_err(|e| e.to_string())?;
            // Joins the node's port group, whose address set the node's gateway policy
            // matches (the group exists once the node is reconciled).
            if distributed
                && let Some(pg) = find::<PortGroup>(cache, &port_group)
                && port.as_uuid().is_none_or(|u| !pg.ports.contains(&u))
            {
                t.mutate_where(
                    &[Condition::uuid(pg.uuid)],
                    [PortGroup::PORTS.insert([&port])],
                );
            }
            for name in &policy_groups {
                if let Some(pg) = find::<PortGroup>(cache, name)
                    && port.as_uuid().is_none_or(|u| !pg.ports.contains(&u))
                {
                    t.mutate_where(
                        &[Condition::uuid(pg.uuid)],
                        [PortGroup::PORTS.insert([&port])],
                    );
                    topology::bump_nb_cfg(t);
                }
            }
            Ok(())
        })
        .await?;

    record_allocation(&ctx, &owner, &node, &allocation).await?;

    // The port and its routes are in NB: the pod may start. Its attachments' annotations
    // join the same patch; a failed attachment leaves the pod's own network written.
    desired.insert(annotations::ROUTED.to_owned(), "true".to_owned());
    let attachments = super::attachment::reconcile(&pod, &ctx, &node).await;
    if let Ok(more) = &attachments {
        desired.extend(more.clone());
    }
    if desired
        .iter()
        .any(|(k, v)| pod_annotations.get(k) != Some(v))
    {
        let pods: Api<Pod> = Api::namespaced(ctx.kube.clone(), &namespace);
        patch_annotations(&pods, &name, &desired).await?;
    }
    attachments?;
    Ok(Action::await_change())
}

/// Writes the IP object recording `owner`'s allocation (the record a restarted controller
/// restores from, and the agent trusts), unless it says that already. An IP object of that
/// name recording another holder is never overwritten: names of attachments
/// (`<pod>.<namespace>.<provider>`) can be made to collide with another pod's own.
pub async fn record_allocation(
    ctx: &Context,
    owner: &Owner,
    node: &str,
    allocation: &crate::ipam::Allocation,
) -> Result<()> {
    let ip = ip_object(owner, node, allocation);
    let name = owner.port_name();
    let recorded = ctx.stores.ips.get(&ObjectRef::new(&name));
    if let Some(r) = &recorded
        && Owner::of_ip_object(r).as_ref() != Some(owner)
    {
        return Err(Error::BadSpec(format!(
            "IP object {name} records another holder ({}): {owner} cannot have that name",
            Owner::of_ip_object(r).map_or_else(|| "nobody".to_owned(), |o| o.to_string())
        )));
    }
    if recorded.is_none_or(|r| r.spec != ip.spec) {
        let ips: Api<IP> = Api::all(ctx.kube.clone());
        ips.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&ip),
        )
        .await?;
    }
    Ok(())
}

/// A merge patch of `metadata.annotations`.
pub async fn patch_annotations<K>(
    api: &Api<K>,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await?;
    Ok(())
}

/// Releases what a deleted pod held on its own network and on each of its attachments.
pub async fn release_pod(ctx: &Context, pod: &Owner) -> Result<()> {
    let attachments = ctx.ipam().attachments_of(pod);
    for attachment in &attachments {
        release(ctx, attachment).await?;
    }
    release(ctx, pod).await
}

/// Releases what a deleted pod (or one of its attachments) held: its addresses, its port (bumping the NB config
/// generation, so node agents drop its fast-path flows) and its IP object.
pub async fn release(ctx: &Context, owner: &Owner) -> Result<()> {
    ctx.ipam().release(owner);
    let port = owner.port_name();
    ctx.nb
        .apply(move |cache, t| {
            topology::delete_port_ops(cache, &port, t);
            Ok(())
        })
        .await?;
    let ips: Api<IP> = Api::all(ctx.kube.clone());
    match ips
        .delete(&owner.port_name(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether an IPAM error is the user's (a static address that cannot be had), worth an event.
pub fn is_user_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Ipam(
            IpamError::Taken { .. }
                | IpamError::MacTaken { .. }
                | IpamError::OutOfRange { .. }
                | IpamError::Excluded { .. }
                | IpamError::Exhausted { .. }
        ) | Error::BadAnnotation(_)
    )
}
