//! A NetworkPolicy's lifecycle: its port group, address sets and ACLs follow the policy and
//! every pod and namespace it selects (`--enable-np`, on by default as in Kube-OVN). A pod or
//! namespace change requeues the policies it can affect ([`affected_by_pod`],
//! [`affected_by_namespace`]); a deleted policy's rows go; rows of policies deleted while the
//! controller was down are collected at start ([`collect_stale`]).
//!
//! A new pod is put into the port groups of the policies selecting it in the same transaction
//! as its port ([`selecting_port_groups`], used by the pod reconciler): it is never reachable
//! unisolated while this reconciler catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api::Owner;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::network_policy::{self, PodView, PolicyKey};
use crate::topology::ip_family;
use crate::topology::network_policy::{
    delete_policy_ops, policy_ops, policy_rows, recorded_policies,
};

/// Whether a pod takes part in policy (has, or will have, a port of its own).
fn networked(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.is_some_and(|s| s.node_name.is_some() && s.host_network != Some(true))
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The policy view of a pod: addresses from IPAM (what its port really has), never from
/// its annotations.
fn pod_view(pod: &Pod, ipam: &crate::ipam::Ipam) -> Option<PodView> {
    if !networked(pod) {
        return None;
    }
    let owner = Owner::of_pod(pod);
    let ips = ipam.lookup(&owner).map(|a| a.ips).unwrap_or_default();
    let named_ports = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = u16::try_from(p.container_port).ok()?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            Some((p.name.clone()?, (protocol, port)))
        })
        .collect();
    Some(PodView {
        owner,
        namespace: pod.namespace().unwrap_or_default(),
        labels: pod.labels().clone(),
        ips,
        named_ports,
    })
}

fn namespace_labels(ctx: &Context) -> BTreeMap<String, BTreeMap<String, String>> {
    ctx.stores
        .namespaces
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect()
}

pub async fn reconcile(policy: Arc<NetworkPolicy>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.settings.enable_np {
        return Ok(Action::await_change());
    }
    let programmed = program(&policy, &ctx).await;
    if let Err(e) = &programmed {
        // Kube-OVN's reason, where `kubectl describe networkpolicy` shows why a policy is
        // not in force (it is retried with backoff; the rows of its last good spec stay).
        ctx.event(&*policy, true, "CreateACLFailed", e.to_string())
            .await;
    }
    programmed
}

/// Writes the policy's rows into NB.
async fn program(policy: &NetworkPolicy, ctx: &Context) -> Result<Action> {
    let namespaces = namespace_labels(ctx);
    // Only the pods the policy can name: those of its namespace and of the namespaces its
    // namespace selectors match (every namespace when an egress rule names a port and lets
    // any destination in: the name is resolved on whatever pod is reached).
    let relevant = relevant_namespaces(policy, &namespaces);
    let pods: Vec<PodView> = {
        let all = ctx.stores.pods.state();
        let ipam = ctx.ipam();
        all.iter()
            .filter(|p| {
                relevant
                    .as_ref()
                    .is_none_or(|r| p.metadata.namespace.as_ref().is_some_and(|n| r.contains(n)))
            })
            .filter_map(|p| pod_view(p, &ipam))
            .collect()
    };
    let plan = network_policy::plan(policy, &pods, &namespaces)
        .map_err(|e| Error::BadSpec(format!("NetworkPolicy {}: {e}", PolicyKey::of(policy))))?;
    let families: BTreeSet<&'static str> = {
        let selected: BTreeSet<&Owner> = plan.selected.iter().collect();
        let mut f: BTreeSet<&'static str> = pods
            .iter()
            .filter(|p| selected.contains(&p.owner))
            .flat_map(|p| p.ips.iter().map(|ip| ip_family(*ip)))
            .collect();
        if f.is_empty() {
            f.insert("ip4");
        }
        f
    };
    let rows = policy_rows(&plan, &families);
    let ports: Vec<String> = plan.selected.iter().map(Owner::port_name).collect();
    ctx.nb
        .apply(move |cache, t| {
            policy_ops(cache, t, &plan, &ports, rows.clone())
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await?;
    Ok(Action::await_change())
}

/// Removes a deleted policy's rows.
pub async fn release(ctx: &Context, key: PolicyKey) -> Result<()> {
    ctx.nb
        .apply(move |cache, t| {
            delete_policy_ops(cache, t, &key);
            Ok(())
        })
        .await
}

/// Removes the rows of every policy NB records that no longer exists (deleted while the
/// controller was down).
pub async fn collect_stale(ctx: &Context) -> Result<usize> {
    let alive: BTreeSet<PolicyKey> = ctx
        .stores
        .network_policies
        .state()
        .iter()
        .map(|p| PolicyKey::of(p))
        .collect();
    let stale: Vec<PolicyKey> = ctx
        .nb
        .client()
        .read(recorded_policies)
        .into_iter()
        .filter(|k| !alive.contains(k))
        .collect();
    let n = stale.len();
    for key in stale {
        release(ctx, key).await?;
    }
    Ok(n)
}

/// The namespaces whose pods `policy` can select or name as peers; None: every namespace.
fn relevant_namespaces(
    policy: &NetworkPolicy,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<BTreeSet<String>> {
    let spec = policy.spec.as_ref()?;
    let mut out = BTreeSet::from([policy.namespace().unwrap_or_default()]);
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten());
    let egress_rules = spec.egress.iter().flatten();
    for rule in egress_rules.clone() {
        let open = rule.to.as_ref().is_none_or(|t| t.is_empty())
            || rule.to.iter().flatten().any(|p| p.ip_block.is_some());
        let named = rule.ports.iter().flatten().any(|p| {
            matches!(
                p.port,
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_))
            )
        });
        if open && named {
            return None;
        }
    }
    let egress = egress_rules.flat_map(|r| r.to.iter().flatten());
    for selector in ingress
        .chain(egress)
        .filter_map(|peer| peer.namespace_selector.as_ref())
    {
        out.extend(
            namespaces
                .iter()
                .filter(|(_, labels)| network_policy::selects(selector, labels))
                .map(|(name, _)| name.clone()),
        );
    }
    Some(out)
}

fn has_namespace_selector(policy: &NetworkPolicy) -> bool {
    let spec = policy.spec.as_ref();
    let ingress = spec
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten());
    let egress = spec
        .and_then(|s| s.egress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.to.iter().flatten());
    ingress
        .chain(egress)
        .any(|peer| peer.namespace_selector.is_some())
}

/// The policies a change of a pod in `namespace` can affect: those of its namespace (it may
/// be selected, or a peer) and those with namespace selectors (it may be a peer).
pub fn affected_by_pod(ctx: &Context, namespace: &str) -> Vec<ObjectRef<NetworkPolicy>> {
    ctx.stores
        .network_policies
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace) || has_namespace_selector(p))
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

/// The policies a namespace's label change can affect: those with namespace selectors.
pub fn affected_by_namespace(ctx: &Context) -> Vec<ObjectRef<NetworkPolicy>> {
    ctx.stores
        .network_policies
        .state()
        .iter()
        .filter(|p| has_namespace_selector(p))
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

/// The port groups of the policies that select `pod` (for its port's first transaction).
pub fn selecting_port_groups(ctx: &Context, pod: &Pod) -> Vec<String> {
    if !ctx.settings.enable_np {
        return Vec::new();
    }
    let namespace = pod.namespace().unwrap_or_default();
    ctx.stores
        .network_policies
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|p| {
            let selector = p
                .spec
                .as_ref()
                .and_then(|s| s.pod_selector.clone())
                .unwrap_or_default();
            network_policy::selects(&selector, pod.labels())
        })
        .map(|p| PolicyKey::of(p).port_group())
        .collect()
}
