//! Policy is never bypassed: when ovn-controller reports that it installed a newer NB
//! configuration (`Bridge br-int external_ids:ovn-nb-cfg` in the node's Open_vSwitch
//! database), the datapath moves to a new generation, which turns every learned flow into a
//! miss. It does so twice, a few milliseconds apart: a packet OVS forwarded under the old
//! flows but delivered after the first bump would re-learn its flow in the new generation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovsdb::Client;

use super::Datapath;

pub use crate::ovs::nb_cfg::{INTEGRATION_BRIDGE, installed_nb_cfg};

/// Delay between the two generation bumps.
pub const SECOND_BUMP_DELAY: Duration = Duration::from_millis(5);

/// Follows `ovn-nb-cfg` forever, bumping the datapath generation whenever it advances.
/// `on_bump` is called after each pair of bumps (for metrics and tests).
pub async fn follow_nb_cfg(
    client: Client,
    datapath: Arc<Mutex<Datapath>>,
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
        let bump = |datapath: &Arc<Mutex<Datapath>>| {
            let mut dp = datapath.lock().unwrap_or_else(|e| e.into_inner());
            dp.bump_generation()
        };
        match bump(&datapath) {
            Ok(_) => {
                tokio::time::sleep(SECOND_BUMP_DELAY).await;
                match bump(&datapath) {
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
/// config (when the node's OVS client is given) to invalidate the fast path, and collects expired and
/// stale flows every 10 s so live flows are not evicted instead. Tasks on the current runtime.
pub fn spawn_upkeep(datapath: Arc<Mutex<Datapath>>, ovs: Option<Client>) {
    if let Some(client) = ovs {
        tokio::spawn(follow_nb_cfg(
            client,
            datapath.clone(),
            |nb_cfg, generation| {
                tracing::info!(nb_cfg, generation, "policy changed: fast path invalidated");
            },
        ));
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            every.tick().await;
            let result = datapath
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .collect_garbage();
            match result {
                Ok(r) => tracing::debug!(expired = r.expired, stale = r.stale, "flow GC"),
                Err(e) => tracing::warn!(error = %e, "flow GC failed"),
            }
        }
    });
}
