//! A pod's secondary attachments, as Multus asks for them (`k8s.v1.cni.cncf.io/networks`) and
//! Kube-OVN serves them: for each NetworkAttachmentDefinition that is kovn's, addresses from
//! the subnet of its provider, an `IP` object `<pod>.<namespace>.<provider>`, for an OVN network
//! a Logical_Switch_Port of that name, and the `<provider>.kubernetes.io/*` annotations the
//! agent waits for (`allocated`, then `routed`). The pod's own network is `reconcile::pod`'s.
//!
//! NetworkPolicies select pods on their own network only (as Kubernetes defines them, and as
//! Kube-OVN does without `network_policy_for`): an attachment's port is in no policy's group.

use std::collections::BTreeMap;

use api::annotations::NetworkKeys;
use api::network_attachment::{AttachmentKind, NETWORKS_ANNOTATION, parse_networks};
use api::{AttachmentNetwork, NetworkAttachmentDefinition, Owner, Subnet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::allocate_network;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::topology::{self, PodPortPlan};

/// One attachment kovn serves, resolved from the pod's annotation and its NAD.
#[derive(Debug, Clone)]
struct Attachment {
    owner: Owner,
    network: AttachmentNetwork,
    subnet: String,
}

/// The subnet of an attachment: the pod's `<provider>.kubernetes.io/logical_switch`, else the
/// (first by name) subnet of that provider. A subnet of another provider is refused.
fn subnet_for(pod: &Pod, ctx: &Context, network: &AttachmentNetwork) -> Result<String> {
    let keys = NetworkKeys::of(&network.provider);
    let provider_of = |s: &Subnet| s.spec.provider().to_owned();
    if let Some(named) = pod.annotations().get(&keys.logical_switch) {
        let subnet = ctx
            .stores
            .subnets
            .get(&ObjectRef::new(named))
            .ok_or_else(|| Error::SubnetNotReady(named.clone()))?;
        if provider_of(&subnet) != network.provider {
            return Err(Error::BadAnnotation(format!(
                "{}: subnet {named} is of provider {}, not {}",
                keys.logical_switch,
                provider_of(&subnet),
                network.provider
            )));
        }
        return Ok(named.clone());
    }
    let mut of_provider: Vec<String> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .filter(|s| provider_of(s) == network.provider && s.metadata.deletion_timestamp.is_none())
        .map(|s| s.name_any())
        .collect();
    of_provider.sort();
    of_provider
        .into_iter()
        .next()
        .ok_or_else(|| Error::SubnetNotReady(format!("(none of provider {})", network.provider)))
}

/// The attachments of `pod` that kovn serves; those of other plugins are left to them.
async fn attachments_of(pod: &Pod, ctx: &Context) -> Result<Vec<Attachment>> {
    let Some(annotation) = pod.annotations().get(NETWORKS_ANNOTATION) else {
        return Ok(Vec::new());
    };
    let namespace = pod.namespace().unwrap_or_default();
    let selections = parse_networks(annotation, &namespace).map_err(Error::BadAnnotation)?;
    let mut out = Vec::new();
    for selection in selections {
        // Read when needed rather than watched: a cluster without Multus has no such
        // resource, and only pods asking for attachments pay for the read.
        let nads: Api<NetworkAttachmentDefinition> =
            Api::namespaced(ctx.kube.clone(), &selection.namespace);
        let nad = nads.get_opt(&selection.name).await?.ok_or_else(|| {
            Error::BadAnnotation(format!(
                "{NETWORKS_ANNOTATION}: NetworkAttachmentDefinition {}/{} does not exist",
                selection.namespace, selection.name
            ))
        })?;
        let Some(network) = AttachmentNetwork::of(&nad).map_err(Error::BadAnnotation)? else {
            continue;
        };
        let subnet = subnet_for(pod, ctx, &network)?;
        out.push(Attachment {
            owner: Owner::pod_network(&namespace, &pod.name_any(), &network.provider),
            network,
            subnet,
        });
    }
    Ok(out)
}

/// Allocates and programs every attachment of `pod` kovn serves; returns the annotations
/// that describe them (each network's `allocated` and `routed` included).
pub async fn reconcile(pod: &Pod, ctx: &Context, node: &str) -> Result<BTreeMap<String, String>> {
    let mut desired = BTreeMap::new();
    for attachment in attachments_of(pod, ctx).await? {
        let keys = NetworkKeys::of(&attachment.network.provider);
        let (allocation, annotations) = allocate_network(
            ctx,
            &attachment.subnet,
            &attachment.owner,
            pod.annotations(),
            &keys,
        )?;
        if attachment.network.kind == AttachmentKind::Ovn {
            let plan = PodPortPlan {
                owner: attachment.owner.clone(),
                switch: attachment.subnet.clone(),
                mac: allocation.mac.clone(),
                ips: allocation.ips.clone(),
                node: node.to_owned(),
                port_security: true,
            };
            ctx.nb
                .apply(move |cache, t| {
                    topology::pod_port_ops(cache, &plan, t).map_err(|e| e.to_string())?;
                    Ok(())
                })
                .await?;
        }
        super::pod::record_allocation(ctx, &attachment.owner, node, &allocation).await?;
        desired.extend(annotations);
        desired.insert(keys.routed.clone(), "true".to_owned());
    }
    Ok(desired)
}
