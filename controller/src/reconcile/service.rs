//! A Service's lifecycle in OVN: its VIPs in its VPC's load balancers (see
//! [`crate::topology::load_balancer`]). Every Service or EndpointSlice event marks the one
//! Service it concerns; only that Service's VIPs are rewritten, and only those that changed.
//! Nothing is written before both initial lists are in (a Service seen before its slices would
//! lose its backends); then VIPs that no Service claims are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::Owner;
use api::service::{ServiceFeed, ServiceIndex, Vip, WatchEvents as Events};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::context::Context;
use crate::topology::load_balancer::{LbKind, LbVip, ensure_ops, programmed_vips, vip_ops};

/// How often every VPC's load balancers are re-attached to its switches (a new Subnet gets
/// them within this time).
const ATTACH_EVERY: Duration = Duration::from_secs(10);

/// `10.96.0.10:80`, `[fd00::10]:80`.
fn vip_key(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The VPC serving `service`, as Kube-OVN decides it: its `ovn.kubernetes.io/vpc`
/// annotation; else the VPC of the pods behind its endpoints (the subnets the controller
/// allocated them from), when they all share one; else the default VPC.
fn vpc_of(index: &ServiceIndex, service: &str, ctx: &Context) -> String {
    if let Some(vpc) = index
        .service(service)
        .and_then(|s| s.annotations().get(api::annotations::VPC))
    {
        return vpc.clone();
    }
    let namespace = service.split('/').next().unwrap_or_default();
    let subnets: BTreeSet<String> = {
        let ipam = ctx.ipam.lock().unwrap_or_else(|e| e.into_inner());
        index
            .endpoint_pods(service)
            .iter()
            .filter_map(|pod| ipam.lookup(&Owner::pod(namespace, pod)))
            .map(|allocation| allocation.subnet)
            .collect()
    };
    let names = &ctx.settings.names;
    if subnets.is_empty() {
        return names.cluster_router.clone();
    }
    let vpcs: BTreeSet<String> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .filter(|s| subnets.contains(&s.name_any()))
        .map(|s| names.router_of(s))
        .collect();
    match vpcs.len() {
        1 => vpcs.into_iter().next().unwrap_or_default(),
        _ => names.cluster_router.clone(),
    }
}

/// The VPC's switches that carry its load balancers: every Subnet of the VPC but `join`.
fn switches_of(vpc: &str, ctx: &Context) -> Vec<String> {
    ctx.stores
        .subnets
        .state()
        .iter()
        .filter(|s| {
            ctx.settings.names.router_of(s) == vpc && s.name_any() != ctx.settings.names.join_subnet
        })
        .map(|s| s.name_any())
        .collect()
}

/// The load-balancer entries `vips` need in `vpc`.
fn lb_vips(vips: &[Vip], vpc: &str, default_vpc: bool) -> Vec<LbVip> {
    vips.iter()
        .filter_map(|v| {
            let kind = LbKind::for_proto(v.proto, v.affinity_timeout_s.is_some())?;
            let backends = (!v.backends.is_empty()).then(|| {
                v.backends
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            });
            Some(LbVip {
                load_balancer: kind.name(vpc, default_vpc),
                vip: vip_key(v.ip, v.port),
                backends,
            })
        })
        .collect()
}

/// Runs until both streams end. The VIP writes of every Service changed at once are handed
/// to the NB writer together, which folds them into as few transactions as it can (a cold
/// start with 10,000 Services is not 10,000 transactions one after another).
pub async fn run(ctx: Arc<Context>, services: Events<Service>, slices: Events<EndpointSlice>) {
    let mut feed = ServiceFeed::new(services, slices);
    // What each Service has in the load balancers: (load balancer, VIP).
    let mut programmed: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut resynced = false;
    let mut pending = BTreeSet::new();
    let mut attach = tokio::time::interval(ATTACH_EVERY);
    loop {
        tokio::select! {
            Some(changes) = feed.next_changes() => pending.extend(changes),
            _ = attach.tick() => {
                if resynced {
                    for vpc in vpcs(&ctx) {
                        ensure_load_balancers(&ctx, &vpc).await;
                    }
                }
            },
            else => return,
        }
        if !feed.listed() {
            continue;
        }
        let index = feed.index();
        let mut ensured = BTreeSet::new();
        // Each Service's wanted VIPs, then one write per slice of Services: the VIPs of a
        // slice become one delete and one insert per load balancer, not one mutation per
        // Service (10,000 mutations of one row make ovsdb-server copy its map 10,000 times).
        let mut changes = Vec::new();
        let mut to_annotate = Vec::new();
        for service in std::mem::take(&mut pending) {
            let vpc = vpc_of(index, &service, &ctx);
            let default_vpc = vpc == ctx.settings.names.cluster_router;
            let annotated = index
                .service(&service)
                .is_some_and(|s| s.annotations().contains_key(api::annotations::VPC));
            if !default_vpc && !annotated && index.service(&service).is_some() {
                to_annotate.push((service.clone(), vpc.clone()));
            }
            if ensured.insert(vpc.clone()) {
                ensure_load_balancers(&ctx, &vpc).await;
            }
            let mut wanted = lb_vips(&index.vips(&service), &vpc, default_vpc);
            let now: BTreeSet<(String, String)> = wanted
                .iter()
                .filter(|v| v.backends.is_some())
                .map(|v| (v.load_balancer.clone(), v.vip.clone()))
                .collect();
            let before = programmed.remove(&service).unwrap_or_default();
            for (lb, vip) in before.difference(&now) {
                if !wanted
                    .iter()
                    .any(|w| &w.load_balancer == lb && &w.vip == vip)
                {
                    wanted.push(LbVip {
                        load_balancer: lb.clone(),
                        vip: vip.clone(),
                        backends: None,
                    });
                }
            }
            changes.push((service, now, before, wanted));
        }
        let nb = &ctx.nb;
        let writes = changes.chunks(SERVICES_PER_WRITE).map(|slice| {
            let wanted = merge_vips(slice.iter().flat_map(|(_, _, _, w)| w));
            async move { nb.apply(move |cache, t| vip_ops(cache, t, &wanted)).await }
        });
        let results = futures::future::join_all(writes).await;
        for (slice, result) in changes.chunks(SERVICES_PER_WRITE).zip(results) {
            for (service, now, before, _) in slice {
                match &result {
                    Ok(()) => {
                        if !now.is_empty() {
                            programmed.insert(service.clone(), now.clone());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%service, error = %e, "programming load balancer VIPs; retrying");
                        programmed.insert(service.clone(), before.clone());
                        pending.insert(service.clone());
                    }
                }
            }
        }
        for (service, vpc) in to_annotate {
            if let Err(e) = annotate_vpc(&ctx, &service, &vpc).await {
                tracing::warn!(%service, error = %e, "writing the Service's VPC annotation; retrying");
                pending.insert(service);
            }
        }
        if !resynced {
            resynced = true;
            remove_unclaimed(&ctx, &programmed).await;
        }
    }
}

/// Writes the VPC a Service's endpoints put it in as `ovn.kubernetes.io/vpc`, as Kube-OVN
/// does: the agents leave such a Service to its VPC's load balancers (their eBPF balancer
/// serves the default VPC only).
async fn annotate_vpc(ctx: &Context, service: &str, vpc: &str) -> Result<(), kube::Error> {
    let (namespace, name) = service.split_once('/').unwrap_or(("default", service));
    let services: kube::Api<Service> = kube::Api::namespaced(ctx.kube.clone(), namespace);
    services
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {api::annotations::VPC: vpc}}
            })),
        )
        .await
        .map(|_| ())
}

/// Services whose VIPs go into one NB write (one transaction when nothing else is queued).
const SERVICES_PER_WRITE: usize = 2_000;

/// One entry per (load balancer, VIP): a VIP one Service gives up and another takes keeps the
/// backends of the one that takes it.
fn merge_vips<'a>(vips: impl Iterator<Item = &'a LbVip>) -> Vec<LbVip> {
    let mut merged: BTreeMap<(&str, &str), &LbVip> = BTreeMap::new();
    for v in vips {
        let entry = merged
            .entry((v.load_balancer.as_str(), v.vip.as_str()))
            .or_insert(v);
        if entry.backends.is_none() {
            *entry = v;
        }
    }
    merged.into_values().cloned().collect()
}

/// Every VPC the controller knows (the default one included).
fn vpcs(ctx: &Context) -> BTreeSet<String> {
    let mut vpcs: BTreeSet<String> = ctx
        .stores
        .vpcs
        .state()
        .iter()
        .map(|v| v.name_any())
        .collect();
    vpcs.insert(ctx.settings.names.cluster_router.clone());
    vpcs
}

async fn ensure_load_balancers(ctx: &Context, vpc: &str) {
    let default_vpc = vpc == ctx.settings.names.cluster_router;
    let switches = switches_of(vpc, ctx);
    let vpc_name = vpc.to_owned();
    let result = ctx
        .nb
        .apply(move |cache, t| {
            ensure_ops(cache, t, &vpc_name, default_vpc, &switches);
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(%vpc, error = %e, "creating or attaching the VPC's load balancers");
    }
}

/// After a restart: VIPs in kovn's load balancers that no Service has (deleted while no
/// controller ran) are removed.
async fn remove_unclaimed(
    ctx: &Context,
    programmed: &BTreeMap<String, BTreeSet<(String, String)>>,
) {
    let claimed: BTreeSet<&(String, String)> = programmed.values().flatten().collect();
    for vpc in vpcs(ctx) {
        let default_vpc = vpc == ctx.settings.names.cluster_router;
        let unclaimed: Vec<LbVip> = ctx
            .nb
            .client()
            .read(|cache| programmed_vips(cache, &vpc, default_vpc))
            .into_iter()
            .filter(|entry| !claimed.contains(entry))
            .map(|(load_balancer, vip)| LbVip {
                load_balancer,
                vip,
                backends: None,
            })
            .collect();
        if unclaimed.is_empty() {
            continue;
        }
        let n = unclaimed.len();
        match ctx
            .nb
            .apply(move |cache, t| vip_ops(cache, t, &unclaimed))
            .await
        {
            Ok(()) => tracing::info!(%vpc, removed = n, "VIPs of deleted Services removed"),
            Err(e) => tracing::warn!(%vpc, error = %e, "removing VIPs of deleted Services"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(lb: &str, vip: &str, backends: Option<&str>) -> LbVip {
        LbVip {
            load_balancer: lb.into(),
            vip: vip.into(),
            backends: backends.map(Into::into),
        }
    }

    #[test]
    fn a_vip_given_up_by_one_service_and_taken_by_another_keeps_its_backends() {
        let given_up = vip("lb", "10.96.0.1:80", None);
        let taken = vip("lb", "10.96.0.1:80", Some("10.16.0.5:8080"));
        let other = vip("lb", "10.96.0.2:80", None);
        for order in [[&given_up, &taken, &other], [&taken, &given_up, &other]] {
            assert_eq!(
                merge_vips(order.into_iter()),
                vec![taken.clone(), other.clone()]
            );
        }
    }
}
