//! The agent's Service and EndpointSlice watches, feeding [`ServiceSync`]: every event marks
//! the one Service it concerns, and only that Service's VIPs are recomputed and programmed.
//! The task owns the sync and its [`ServiceMaps`] handle outright: a flush (Maglev tables for
//! 10,000 Services take about a second and a half) runs on a blocking thread and holds no lock
//! any other part of the agent waits for; metrics read the [`ServiceSummary`] it publishes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::service::ServiceFeed;
use datapath_common::L4Proto;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::{ServiceSummary, ServiceSync};
use crate::datapath::{DatapathError, ServiceMaps};

/// Watches Services and EndpointSlices and keeps the datapath's service maps in step, until
/// the task is dropped. The maps a previous agent left are adopted first and, once both
/// initial lists are in, whatever no Service claims is removed.
pub async fn run(
    kube: kube::Client,
    maps: ServiceMaps,
    sync: ServiceSync,
    summary: Arc<Mutex<ServiceSummary>>,
    default_vpc: String,
) {
    let mut owned = Some((maps, sync));
    let services = watcher(
        Api::<Service>::all(kube.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let slices = watcher(Api::<EndpointSlice>::all(kube), watcher::Config::default())
        .default_backoff()
        .boxed();
    // Nothing is programmed before both initial lists are in (the feed says why).
    let mut feed = ServiceFeed::new(services, slices);
    let mut resynced = false;
    let mut pending = BTreeSet::new();
    // After a failed write the maps, not our record, say what is programmed: re-read them and
    // program every Service again after a pause, doubling up to a minute. A full services map
    // is the exception: the record stays true (what did not fit is not in it), so the retry
    // only programs again, which writes just what is missing.
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;
    let mut readopt = false;
    loop {
        let retry_at = retry.map(|(at, _)| at);
        let mut retrying = false;
        let dirty = tokio::select! {
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                if readopt && let Some((maps, sync)) = owned.as_mut() {
                    match ServiceSync::adopt(maps, sync.scope()) {
                        Ok(adopted) => *sync = adopted,
                        Err(e) => tracing::warn!(error = %e, "re-reading the service maps"),
                    }
                    resynced = false;
                }
                retrying = true;
                feed.index().service_names().cloned().collect()
            },
            changes = feed.next_changes() => match changes {
                Some(changes) => changes,
                None => return,
            },
        };
        pending.extend(dirty);
        if !feed.listed() {
            continue;
        }
        let index = feed.index();
        let (mut maps, mut sync) = owned.take().expect("the sync is back after every flush");
        let changed: Vec<(String, Vec<api::service::Vip>)> = std::mem::take(&mut pending)
            .into_iter()
            .map(|service| {
                // A Service of a custom VPC is that VPC's load balancers' (the pods the eBPF
                // balancer serves are the default VPC's).
                let other_vpc = index
                    .service(&service)
                    .and_then(|s| s.metadata.annotations.as_ref()?.get(api::annotations::VPC))
                    .is_some_and(|vpc| *vpc != default_vpc);
                if other_vpc {
                    return (service, Vec::new());
                }
                // SCTP is OVN's alone.
                let mut vips = index.vips(&service);
                vips.retain(|v| {
                    matches!(
                        L4Proto::from_number(v.proto),
                        Some(L4Proto::Tcp | L4Proto::Udp)
                    )
                });
                (service, vips)
            })
            .collect();
        let removed_before = sync.vips_removed();
        let resync_now = !resynced;
        let (maps_back, sync_back, written, resynced_now) =
            tokio::task::spawn_blocking(move || {
                let _background = BackgroundPriority::enter();
                for (service, vips) in &changed {
                    sync.stage(service, vips);
                }
                let mut written = sync.flush(&mut maps);
                // A full map is no reason to keep a previous agent's leftovers: they take room too.
                let no_room = matches!(written, Err(DatapathError::ServicesFull { .. }));
                let mut resynced_now = false;
                if (written.is_ok() || no_room) && resync_now {
                    resynced_now = true;
                    let resync = sync.finish_resync(&mut maps).map(|n| {
                        tracing::info!(removed = n, "service maps in step with the API");
                    });
                    if resync.is_err() || written.is_ok() {
                        written = resync;
                    }
                }
                (maps, sync, written, resynced_now)
            })
            .await
            .expect("the service flush does not panic");
        resynced |= resynced_now;
        let made_room = sync_back.vips_removed() != removed_before;
        *summary.lock().unwrap_or_else(|e| e.into_inner()) = sync_back.summary();
        owned = Some((maps_back, sync_back));
        retry = match written {
            // Only a full re-read and rewrite clears a failure: a later partial write
            // succeeding says nothing about what the failed one left out.
            Ok(()) if retrying || retry.is_none() => {
                readopt = false;
                None
            }
            // Room was made: what did not fit may fit now.
            Ok(()) if made_room => retry.map(|(_, pause)| (tokio::time::Instant::now(), pause)),
            Ok(()) => retry,
            Err(e) => {
                readopt |= !matches!(e, DatapathError::ServicesFull { .. });
                let pause = match retry {
                    Some((_, p)) if made_room => p,
                    Some((_, p)) => (p * 2).min(Duration::from_secs(60)),
                    None => Duration::from_secs(1),
                };
                let at = if made_room && !retrying {
                    tokio::time::Instant::now()
                } else {
                    tokio::time::Instant::now() + pause
                };
                tracing::warn!(error = %e, retry_in = ?(at - tokio::time::Instant::now()), "programming the service maps; VIPs not in them are served by OVN meanwhile");
                Some((at, pause))
            }
        };
    }
}

/// Lowers the calling thread's CPU priority to nice 19 (the lowest) until dropped; entering
/// again on a thread already there changes nothing. A flush computes Maglev tables (10,000 of
/// them take about a second and a half of CPU): at normal priority it would starve CNI ADDs
/// and the node's OVS on a small node. At nice 19 it still gets a share of a busy CPU (its
/// weight is 15 against a normal thread's 1024), so Service changes are never starved out
/// of the maps, and all of an idle one. Threads the flush spawns inherit the priority (Linux
/// keeps nice per thread).
pub struct BackgroundPriority {
    tid: libc::id_t,
    before: i32,
}

impl BackgroundPriority {
    const NICE: i32 = 19;

    pub fn enter() -> BackgroundPriority {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        // SAFETY: plain syscalls on this thread's own scheduling priority.
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        // SAFETY: as above.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, before.max(Self::NICE)) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "service flush stays at normal priority");
        }
        BackgroundPriority { tid, before }
    }
}

impl Drop for BackgroundPriority {
    fn drop(&mut self) {
        // Back to normal for the next blocking task on this pooled thread (needs CAP_SYS_NICE,
        // which the agent has; without it the pool thread stays nice, which is harmless).
        // SAFETY: plain syscall on this thread's own scheduling priority.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid, self.before) };
    }
}
