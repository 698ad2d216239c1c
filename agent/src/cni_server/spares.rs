//! Spare OVS port pairs, built before the ADDs that take them.
//!
//! Attaching a TCX program waits for an RCU grace period while it holds the RTNL lock (the
//! kernel swaps the device's program array, then waits until no packet can still be using the
//! old one): 5–25 ms per attach on this 2-core VM (HZ 250), two per pod, most of an ADD. With
//! the kernel's RCU forced to expedited grace periods, `kovn-bench cni` measured ADD p50 22 ms
//! instead of 38. A spare is a pod's OVS port pair (`kovn~<n>_o`, `kovn~<n>_p`) with the
//! delivery program already attached to its peer; an ADD that takes one renames the pair to
//! the pod's names (a rename under the RTNL lock waits for an expedited grace period only),
//! and the datapath takes over the program's link, its pin renamed. That halves the grace
//! periods an ADD waits for. The pod's own veth cannot be built ahead: its pod end must be
//! created inside the pod's namespace, because moving an interface there waits for an
//! `rcu_barrier` (20–30 ms measured when spares moved the pod end in).
//!
//! The pool refills in the background, and only while no ADD is being served, so an ADD
//! waits at most for the one attach in progress. An ADD that finds the pool empty builds its
//! pair itself, as without a pool (`kovn_cni_adds_without_spare_total`). Spares an earlier
//! agent left are removed at start-up rather than adopted: rebuilding takes well under a
//! second, and nothing then depends on what a killed agent had finished.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, watch};

use crate::datapath::Datapath;
use crate::pod_network::{SpareLinks, links};

/// How long the pool waits after a spare could not be built before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The pool's figures, registered with the CNI server's.
#[derive(Debug, Default, Clone)]
pub struct SpareMetrics {
    /// `kovn_cni_spare_interfaces`: spares ready now.
    pub ready: Gauge,
    /// `kovn_cni_adds_without_spare_total`: ADDs that found the pool empty.
    pub adds_without_spare: Counter,
    /// `kovn_cni_spare_failures_total`: spares that could not be built.
    pub failures: Counter,
}

impl SpareMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "kovn_cni_spare_interfaces",
            "Spare pod interfaces with the datapath attached, ready for an ADD",
            self.ready.clone(),
        );
        registry.register(
            "kovn_cni_adds_without_spare",
            "CNI ADDs that found no spare interfaces and built their own",
            self.adds_without_spare.clone(),
        );
        registry.register(
            "kovn_cni_spare_failures",
            "Spare pod interfaces that could not be built (retried)",
            self.failures.clone(),
        );
    }
}

/// The ready spares, and what refills them.
#[derive(Debug)]
pub struct Spares {
    ready: Mutex<VecDeque<SpareLinks>>,
    wanted: usize,
    taken: Notify,
    /// ADDs being served: the pool builds only while there are none.
    adds: watch::Sender<usize>,
    next: AtomicU32,
    metrics: SpareMetrics,
}

/// An ADD being served, from its request to its answer.
#[derive(Debug)]
pub struct AddInFlight(Arc<Spares>);

impl Drop for AddInFlight {
    fn drop(&mut self) {
        self.0.adds.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Spares {
    /// A pool that keeps `wanted` spares ready once [`Spares::start`]ed.
    pub fn new(wanted: usize, metrics: SpareMetrics) -> Arc<Spares> {
        Arc::new(Spares {
            ready: Mutex::new(VecDeque::new()),
            wanted,
            taken: Notify::new(),
            adds: watch::Sender::new(0),
            next: AtomicU32::new(0),
            metrics,
        })
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<SpareLinks>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks an ADD in flight until the guard drops: the pool's next step waits for it.
    pub fn add_started(self: &Arc<Self>) -> AddInFlight {
        self.adds.send_modify(|n| *n += 1);
        AddInFlight(self.clone())
    }

    /// Until no ADD is being served.
    async fn quiet(&self) {
        let _ = self.adds.subscribe().wait_for(|n| *n == 0).await;
    }

    /// A ready spare for an ADD, if there is one; the pool starts building its replacement.
    pub fn take(&self) -> Option<SpareLinks> {
        let spare = {
            let mut ready = self.ready();
            let spare = ready.pop_front();
            self.metrics.ready.set(ready.len() as i64);
            spare
        };
        if spare.is_none() {
            self.metrics.adds_without_spare.inc();
        }
        self.taken.notify_one();
        spare
    }

    /// Removes what an earlier agent left (spare interfaces in the calling thread's
    /// namespace, the node's, and their pinned links), then keeps the pool full in the
    /// background.
    pub async fn start(self: &Arc<Self>, datapath: Arc<Mutex<Datapath>>, mtu: u32) {
        match links::delete_all_spares().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(links = n, "removed an earlier agent's spare interfaces"),
            Err(e) => tracing::warn!(error = %e, "listing an earlier agent's spare interfaces"),
        }
        let pins = lock(&datapath).remove_stale_spare_pins();
        if pins > 0 {
            tracing::info!(pins, "removed an earlier agent's spare links");
        }
        tokio::spawn(self.clone().refill(datapath, mtu));
    }

    async fn refill(self: Arc<Self>, datapath: Arc<Mutex<Datapath>>, mtu: u32) {
        loop {
            while self.ready().len() >= self.wanted {
                self.taken.notified().await;
            }
            let spare = SpareLinks::numbered(self.next.fetch_add(1, Ordering::Relaxed));
            match self.build(&spare, &datapath, mtu).await {
                Ok(()) => {
                    let mut ready = self.ready();
                    ready.push_back(spare);
                    self.metrics.ready.set(ready.len() as i64);
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::warn!(spare = %spare.id, error = %e, "could not build a spare pod interface; ADDs build their own meanwhile");
                    lock(&datapath).discard_spare(&spare.id);
                    let _ = links::delete_spare(&spare).await;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Builds one spare: its interfaces, then the delivery program, each step once no ADD is
    /// being served (the attach holds the RTNL lock for a grace period, and every netlink step
    /// of an ADD would wait behind it).
    async fn build(
        &self,
        spare: &SpareLinks,
        datapath: &Arc<Mutex<Datapath>>,
        mtu: u32,
    ) -> Result<(), String> {
        self.quiet().await;
        links::create_spare(spare, mtu)
            .await
            .map_err(|e| e.to_string())?;
        self.quiet().await;
        let (datapath, id, ovs_peer) = (datapath.clone(), spare.id.clone(), spare.ovs_peer.clone());
        tokio::task::spawn_blocking(move || lock(&datapath).attach_spare(&id, &ovs_peer))
            .await
            .map_err(|e| format!("the attach task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn lock(datapath: &Mutex<Datapath>) -> std::sync::MutexGuard<'_, Datapath> {
    datapath.lock().unwrap_or_else(|e| e.into_inner())
}
