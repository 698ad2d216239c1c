//! The agent's Service and EndpointSlice watches, feeding [`ServiceSync`]: every event marks
//! the one Service it concerns, and only that Service's VIPs are recomputed and programmed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

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
    loop {
        let dirty = tokio::select! {
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
        if let Err(e) = sync.flush(&mut datapath) {
            tracing::warn!(error = %e, "programming the service maps");
        }
        if !resynced {
            resynced = true;
            match sync.finish_resync(&mut datapath) {
                Ok(n) => tracing::info!(removed = n, "service maps in step with the API"),
                Err(e) => tracing::warn!(error = %e, "removing stale service entries"),
            }
        }
    }
}
