//! Policy is never bypassed: when ovn-controller reports that it installed a newer NB
//! configuration (`Bridge br-int external_ids:ovn-nb-cfg` in the node's Open_vSwitch
//! database), the datapath moves to a new generation, which turns every learned flow into a
//! miss. It does so twice, a few milliseconds apart: a packet OVS forwarded under the old
//! flows but delivered after the first bump would re-learn its flow in the new generation.
//!
//! The follower and the flow GC each own a [`FlowTable`] handle: a GC pass over a full flow
//! map never delays a bump, and neither waits for the CNI server or the Service sync.

use std::sync::Arc;
use std::time::Duration;

use ovsdb::Client;

use super::{Datapath, DatapathError, DatapathStats, FlowTable, FlowTableOps, ReadServiceMaps};

pub use crate::ovs::nb_cfg::{INTEGRATION_BRIDGE, installed_nb_cfg};

/// Delay between the two generation bumps.
pub const SECOND_BUMP_DELAY: Duration = Duration::from_millis(5);
/// How often expired and stale flows are collected (and the counts published).
pub const GC_INTERVAL: Duration = Duration::from_secs(10);

/// Follows `ovn-nb-cfg` forever, bumping the generation of `flows` whenever it advances.
/// `on_bump` is called after each pair of bumps (for metrics and tests).
pub async fn follow_nb_cfg(
    client: Client,
    mut flows: impl FlowTableOps + Send,
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
        if current.is_none() || current <= seen {
            continue;
        }
        seen = current;
        match flows.bump_generation() {
            Ok(_) => {
                tokio::time::sleep(SECOND_BUMP_DELAY).await;
                match flows.bump_generation() {
                    Ok(generation) => on_bump(current.unwrap_or(0), generation),
                    Err(e) => tracing::error!(error = %e, "second generation bump failed"),
                }
            }
            // The fast path could keep serving revoked flows: say so loudly. The refresh
            // interval still sends each flow through OVS periodically.
            Err(e) => {
                tracing::error!(error = %e, "generation bump failed; policy change not applied to the fast path")
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
            |nb_cfg, generation| {
                tracing::info!(nb_cfg, generation, "policy changed: fast path invalidated");
            },
        ));
    }
    let mut flows: FlowTable = datapath.flow_table()?;
    let mut reader = datapath.reader()?;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(GC_INTERVAL);
        loop {
            every.tick().await;
            // A walk of up to the whole flow map: on a blocking thread, not a runtime worker.
            let (handles, result) = tokio::task::spawn_blocking(move || {
                let result = flows.collect_garbage();
                let connections = reader.lb_connection_count().ok();
                ((flows, reader), result.map(|r| (r, connections)))
            })
            .await
            .expect("the flow GC does not panic");
            (flows, reader) = handles;
            match result {
                Ok((r, connections)) => {
                    stats.publish(r.kept, connections);
                    tracing::debug!(
                        expired = r.expired,
                        stale = r.stale,
                        kept = r.kept,
                        "flow GC"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "flow GC failed"),
            }
        }
    });
    Ok(())
}
