//! Policy is never bypassed: when ovn-controller reports that it installed a newer NB
//! configuration (`Bridge br-int external_ids:ovn-nb-cfg` in the node's Open_vSwitch
//! database), the datapath moves to a new generation, which turns every learned flow into a
//! miss; also when it goes backwards (an NB rebuilt). It does so twice, a few milliseconds
//! apart: a packet OVS forwarded under the old flows but delivered after the first bump would
//! re-learn its flow in the new generation.
//!
//! The follower and the flow GC each own a [`FlowTable`] handle: a GC pass over a full flow
//! map never delays a bump, and neither waits for the CNI server or the Service sync.

use std::sync::Arc;
use std::time::Duration;

use ovsdb::Client;

use super::{Datapath, DatapathError, DatapathStats, FlowTable, FlowTableOps, LbConntrack};

pub use crate::ovs::nb_cfg::{INTEGRATION_BRIDGE, installed_nb_cfg};

/// Delay between the two generation bumps.
pub const SECOND_BUMP_DELAY: Duration = Duration::from_millis(5);
/// How often expired and stale flows are collected (and the counts published).
pub const GC_INTERVAL: Duration = Duration::from_secs(10);

/// How long a failed generation bump waits before it is tried again.
pub const BUMP_RETRY: Duration = Duration::from_millis(10);

/// Follows `ovn-nb-cfg` forever, bumping the generation of `flows` whenever it changes:
/// forward (a new NB configuration installed) and backward too (an NB database rebuilt or
/// restored starts its count again, and what it holds is not what the flows were judged
/// by). A failed bump is retried until it succeeds, each failure counted in `stats`; the
/// refresh keeps bounding what the fast path serves meanwhile. `on_bump` is called after
/// each pair of bumps (for logs and tests).
pub async fn follow_nb_cfg(
    client: Client,
    mut flows: impl FlowTableOps + Send,
    stats: Arc<DatapathStats>,
    on_bump: impl Fn(i64, u64) + Send,
) {
    let mut changes = client.subscribe();
    let mut seen = installed_nb_cfg(&client);
    loop {
        // Any change (or a lagged receiver) is a reason to look again.
        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = changes.recv().await {
            return;
        }
        let current = installed_nb_cfg(&client);
        let Some(nb_cfg) = current else { continue };
        if current == seen {
            continue;
        }
        if seen.is_some_and(|before| nb_cfg < before) {
            tracing::warn!(
                nb_cfg,
                before = seen,
                "ovn-nb-cfg went backwards (NB rebuilt or restored?): fast path invalidated"
            );
        }
        seen = current;
        stats.count_invalidation();
        bump_until_done(&mut flows, &stats).await;
        tokio::time::sleep(SECOND_BUMP_DELAY).await;
        let generation = bump_until_done(&mut flows, &stats).await;
        on_bump(nb_cfg, generation);
    }
}

/// One generation bump, retried every [`BUMP_RETRY`] until it succeeds.
async fn bump_until_done(flows: &mut impl FlowTableOps, stats: &DatapathStats) -> u64 {
    loop {
        match flows.bump_generation() {
            Ok(generation) => return generation,
            Err(e) => {
                stats.count_bump_failure();
                tracing::error!(error = %e, "generation bump failed; retrying (the refresh still bounds the fast path)");
                tokio::time::sleep(BUMP_RETRY).await;
            }
        }
    }
}

/// Keeps a loaded datapath current while the agent runs: follows the node's installed NB
/// config (when the node's OVS client is given) to invalidate the fast path, and collects
/// expired and stale flows every [`GC_INTERVAL`] so live flows are not evicted instead,
/// publishing the flow and LB-connection counts into `stats`. Tasks on the current runtime,
/// each with its own handles.
pub fn spawn_upkeep(
    datapath: &Datapath,
    ovs: Option<Client>,
    stats: Arc<DatapathStats>,
) -> Result<(), DatapathError> {
    if let Some(client) = ovs {
        tokio::spawn(follow_nb_cfg(
            client,
            datapath.flow_table()?,
            stats.clone(),
            |nb_cfg, generation| {
                tracing::info!(nb_cfg, generation, "policy changed: fast path invalidated");
            },
        ));
    }
    let mut flows: FlowTable = datapath.flow_table()?;
    let mut lb: LbConntrack = datapath.lb_conntrack()?;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(GC_INTERVAL);
        loop {
            every.tick().await;
            // Walks of up to whole maps: on a blocking thread, not a runtime worker.
            let (handles, result) = tokio::task::spawn_blocking(move || {
                let result = flows.collect_garbage();
                let lb_result = lb.collect_garbage(super::policy::monotonic_ns());
                ((flows, lb), result.map(|r| (r, lb_result)))
            })
            .await
            .expect("the flow GC does not panic");
            (flows, lb) = handles;
            match result {
                Ok((r, lb_result)) => {
                    if let Err(e) = &lb_result {
                        tracing::warn!(error = %e, "LB conntrack GC failed");
                    }
                    let lb_report = lb_result.as_ref().ok();
                    stats.publish(r.kept, lb_report.map(|l| l.kept));
                    tracing::debug!(
                        expired = r.expired,
                        stale = r.stale,
                        kept = r.kept,
                        lb_expired = lb_report.map(|l| l.expired),
                        reverse_nat_orphaned = lb_report.map(|l| l.orphaned),
                        "flow GC"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "flow GC failed"),
            }
        }
    });
    Ok(())
}
