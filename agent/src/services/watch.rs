//! The agent's Service and EndpointSlice watches, feeding [`ServiceSync`]: every event marks
//! the one Service it concerns, and only that Service's VIPs are recomputed and programmed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::service::ServiceIndex;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::ServiceSync;
use crate::datapath::Datapath;

/// Watches Services and EndpointSlices and keeps the datapath's service maps in step, until
/// the task is dropped. The maps a previous agent left are adopted first and, once both
/// initial lists are in, whatever no Service claims is removed.
pub async fn run(
    kube: kube::Client,
    datapath: Arc<Mutex<Datapath>>,
    sync: Arc<Mutex<ServiceSync>>,
) {
    let mut services = watcher(
        Api::<Service>::all(kube.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut slices = watcher(Api::<EndpointSlice>::all(kube), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut index = ServiceIndex::default();
    let (mut services_listed, mut slices_listed, mut resynced) = (false, false, false);
    // Nothing is programmed before both initial lists are in: a Service seen before its
    // EndpointSlices would look like a Service without endpoints, and a restarted agent would
    // cut its established connections.
    let mut pending = BTreeSet::new();
    // After a failed write (a full map, say) the maps, not our record, say what is programmed:
    // re-read them and program every Service again after a pause, doubling up to a minute.
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let retry_at = retry.map(|(at, _)| at);
        let mut retrying = false;
        let dirty = tokio::select! {
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                // The datapath, then the record: the order every holder of both takes them in.
                let datapath = datapath.lock().unwrap_or_else(|e| e.into_inner());
                let mut sync = sync.lock().unwrap_or_else(|e| e.into_inner());
                match ServiceSync::adopt(&datapath) {
                    Ok(adopted) => *sync = adopted,
                    Err(e) => tracing::warn!(error = %e, "re-reading the service maps"),
                }
                resynced = false;
                retrying = true;
                index.service_names().cloned().collect()
            },
            Some(event) = services.next() => match event {
                Ok(event) => {
                    services_listed |= matches!(event, watcher::Event::InitDone);
                    index.service_event(event)
                }
                Err(e) => { tracing::warn!(error = %e, "Service watch"); continue; }
            },
            Some(event) = slices.next() => match event {
                Ok(event) => {
                    slices_listed |= matches!(event, watcher::Event::InitDone);
                    index.slice_event(event)
                }
                Err(e) => { tracing::warn!(error = %e, "EndpointSlice watch"); continue; }
            },
            else => return,
        };
        pending.extend(dirty);
        if !(services_listed && slices_listed) {
            continue;
        }
        let mut datapath = datapath.lock().unwrap_or_else(|e| e.into_inner());
        let mut sync = sync.lock().unwrap_or_else(|e| e.into_inner());
        for service in std::mem::take(&mut pending) {
            let service = &service;
            // SCTP is OVN's alone.
            let mut vips = index.vips(service);
            vips.retain(|v| v.proto == 6 || v.proto == 17);
            sync.stage(service, &vips);
        }
        let mut written = sync.flush(&mut datapath);
        if written.is_ok() && !resynced {
            resynced = true;
            written = sync.finish_resync(&mut datapath).map(|n| {
                tracing::info!(removed = n, "service maps in step with the API");
            });
        }
        retry = match written {
            // Only a full re-read and rewrite clears a failure: a later partial write
            // succeeding says nothing about what the failed one left out.
            Ok(()) if retrying || retry.is_none() => None,
            Ok(()) => retry,
            Err(e) => {
                let pause = retry.map_or(Duration::from_secs(1), |(_, p)| {
                    (p * 2).min(Duration::from_secs(60))
                });
                tracing::warn!(error = %e, retry_in = ?pause, "programming the service maps; VIPs not in them are served by OVN meanwhile");
                Some((tokio::time::Instant::now() + pause, pause))
            }
        };
    }
}
