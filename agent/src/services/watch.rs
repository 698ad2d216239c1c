//! The agent's Service and EndpointSlice watches, feeding [`ServiceSync`]: every event marks
//! the one Service it concerns, and only that Service's VIPs are recomputed and programmed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::{SERVICE_NAME_LABEL, ServiceSync, service_name, vips};
use crate::datapath::Datapath;

/// What the watches have seen, indexed by Service (`namespace/name`).
#[derive(Debug, Default)]
pub struct ServiceIndex {
    services: HashMap<String, Service>,
    /// Service → slice name → slice.
    slices: HashMap<String, HashMap<String, EndpointSlice>>,
    /// Objects seen since the last relist began (a relist drops what it does not list).
    relisting_services: Option<HashSet<String>>,
    relisting_slices: Option<HashSet<(String, String)>>,
}

fn slice_owner(slice: &EndpointSlice) -> Option<String> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(service_name(
        &slice.namespace().unwrap_or_default(),
        service,
    ))
}

impl ServiceIndex {
    /// Applies a Service watch event; returns the Services it changed.
    pub fn service_event(&mut self, event: watcher::Event<Service>) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        match event {
            watcher::Event::Init => self.relisting_services = Some(HashSet::new()),
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let name = service_name(&s.namespace().unwrap_or_default(), &s.name_any());
                if let Some(seen) = &mut self.relisting_services {
                    seen.insert(name.clone());
                }
                self.services.insert(name.clone(), s);
                dirty.insert(name);
            }
            watcher::Event::Delete(s) => {
                let name = service_name(&s.namespace().unwrap_or_default(), &s.name_any());
                self.services.remove(&name);
                dirty.insert(name);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_services.take() {
                    let gone: Vec<String> = self
                        .services
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.services.remove(&name);
                        dirty.insert(name);
                    }
                }
            }
        }
        dirty
    }

    /// Applies an EndpointSlice watch event; returns the Services it changed.
    pub fn slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        match event {
            watcher::Event::Init => self.relisting_slices = Some(HashSet::new()),
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let Some(owner) = slice_owner(&s) else {
                    return dirty;
                };
                if let Some(seen) = &mut self.relisting_slices {
                    seen.insert((owner.clone(), s.name_any()));
                }
                self.slices
                    .entry(owner.clone())
                    .or_default()
                    .insert(s.name_any(), s);
                dirty.insert(owner);
            }
            watcher::Event::Delete(s) => {
                if let Some(owner) = slice_owner(&s) {
                    if let Some(slices) = self.slices.get_mut(&owner) {
                        slices.remove(&s.name_any());
                    }
                    dirty.insert(owner);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_slices.take() {
                    for (owner, slices) in self.slices.iter_mut() {
                        let before = slices.len();
                        slices.retain(|name, _| seen.contains(&(owner.clone(), name.clone())));
                        if slices.len() != before {
                            dirty.insert(owner.clone());
                        }
                    }
                }
            }
        }
        dirty
    }

    /// The VIPs `service` should have now (none when it is gone).
    pub fn vips(&self, service: &str) -> Vec<super::Vip> {
        let Some(svc) = self.services.get(service) else {
            return Vec::new();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(service)
            .map(|s| s.values().collect())
            .unwrap_or_default();
        vips(svc, &slices)
    }
}

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
            let vips = index.vips(service);
            if let Err(e) = sync.apply(&mut datapath, service, &vips) {
                tracing::warn!(%service, error = %e, "programming the service maps");
            }
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
