//! Programs VIPs into the datapath's service maps, touching only what changed, and keeps the
//! ids stable: a backend keeps its id as long as it stays a backend of its VIP, because the
//! LB conntrack entries of established connections hold that id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use datapath_common::{
    MAGLEV_TABLE_SIZE, MaglevTable, Scope, ServiceBackend, ServiceEntry, ServiceKey, service_flags,
};

use super::maglev;
use crate::datapath::{DatapathError, ReadServiceMaps, ServiceMapOps, ip_bytes};
use api::service::Vip;

/// The programmed VIPs as metrics label them: by service id, `(service, "vip:port/proto")`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSummary {
    pub vips: HashMap<u32, (String, String)>,
    pub backends: usize,
    pub unprogrammed: usize,
}

/// What is programmed for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgrammedVip {
    /// The Service (`namespace/name`) it belongs to; empty for entries adopted from a previous
    /// agent and not yet claimed.
    pub service: String,
    pub entry: ServiceEntry,
    pub backends: BTreeMap<SocketAddr, u32>,
}

/// Ids handed out and returned (services and backends).
#[derive(Debug, Default)]
struct Ids {
    next: u32,
    free: Vec<u32>,
}

impl Ids {
    fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        })
    }

    fn give_back(&mut self, id: u32) {
        self.free.push(id);
    }

    /// After adopting ids from the maps: never hand out one in use.
    fn reserve(&mut self, used: impl IntoIterator<Item = u32>) {
        self.next = used.into_iter().fold(self.next, u32::max);
        self.free.clear();
    }
}

/// Changes decided by [`ServiceSync::stage`] and written by [`ServiceSync::flush`], in an
/// order that never shows a packet a half-made service: new backends (written at once), then
/// the Maglev tables that name them (one batch), then the service entries, then what goes.
#[derive(Debug, Default)]
struct Staged {
    backends: Vec<(u32, ServiceBackend)>,
    /// Services whose Maglev table is to be computed (at flush, in parallel) and swapped in.
    tables: Vec<(u32, BTreeMap<SocketAddr, u32>)>,
    entries: Vec<(ServiceKey, ServiceEntry)>,
    /// Tables of services left without backends (their entry says so first).
    emptied: Vec<u32>,
    removed_entries: Vec<ServiceKey>,
    removed_tables: Vec<u32>,
    removed_backends: Vec<u32>,
}

/// The address scope the programmed VIPs are reached in: the default VPC's, whose pods the
/// eBPF balancer serves (a custom VPC's pods reach its Services through OVN's load balancers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceScope(pub Scope);

impl Default for ServiceScope {
    fn default() -> Self {
        ServiceScope(datapath_common::vpc_scope(
            api::names::DEFAULT_CLUSTER_ROUTER,
        ))
    }
}

/// The agent's view of the service maps.
#[derive(Debug, Default)]
pub struct ServiceSync {
    scope: ServiceScope,
    vips: HashMap<ServiceKey, ProgrammedVip>,
    by_service: HashMap<String, BTreeSet<ServiceKey>>,
    service_ids: Ids,
    backend_ids: Ids,
    staged: Staged,
    /// VIPs that found the services map full (see [`ServiceSync::flush`]).
    unprogrammed: BTreeSet<ServiceKey>,
    vips_removed: u64,
}

fn key_of(scope: ServiceScope, vip: &Vip) -> ServiceKey {
    ServiceKey {
        scope: scope.0,
        vip: ip_bytes(vip.ip),
        port: vip.port,
        proto: vip.proto,
        _pad: 0,
    }
}

impl ServiceSync {
    /// Nothing programmed yet; VIPs are reached in `scope`.
    pub fn in_scope(scope: ServiceScope) -> ServiceSync {
        ServiceSync {
            scope,
            ..ServiceSync::default()
        }
    }

    /// The scope the VIPs are programmed in.
    pub fn scope(&self) -> ServiceScope {
        self.scope
    }

    /// Takes over what a previous agent programmed (the maps are pinned), ids included, so
    /// established connections keep their backends across a restart. Entries no Service
    /// claims by [`ServiceSync::finish_resync`] are removed then.
    pub fn adopt(
        datapath: &impl ReadServiceMaps,
        scope: ServiceScope,
    ) -> Result<ServiceSync, DatapathError> {
        let mut sync = ServiceSync::in_scope(scope);
        let services = datapath.services()?;
        let backends = datapath.backends()?;
        let mut by_id: HashMap<u32, BTreeMap<SocketAddr, u32>> = HashMap::new();
        for (id, b) in &backends {
            let ip = crate::datapath::ip_from_bytes(&b.ip);
            by_id
                .entry(b.service_id)
                .or_default()
                .insert(SocketAddr::new(ip, b.port), *id);
        }
        for (key, entry) in services {
            sync.vips.insert(
                key,
                ProgrammedVip {
                    service: String::new(),
                    entry,
                    backends: by_id.remove(&entry.id).unwrap_or_default(),
                },
            );
        }
        sync.service_ids
            .reserve(sync.vips.values().map(|v| v.entry.id));
        sync.backend_ids.reserve(backends.iter().map(|(id, _)| *id));
        Ok(sync)
    }

    /// Programs `service`'s VIPs now (see [`ServiceSync::stage`]).
    pub fn apply(
        &mut self,
        datapath: &mut impl ServiceMapOps,
        service: &str,
        vips: &[Vip],
    ) -> Result<usize, DatapathError> {
        let changed = self.stage(service, vips);
        self.flush(datapath)?;
        Ok(changed)
    }

    /// Stages `service`'s VIPs (replacing what it had): changed VIPs are rewritten, VIPs it
    /// no longer has are removed, unchanged ones are not touched. New backends are written at
    /// once; the rest waits for [`ServiceSync::flush`], so many services cost one batch.
    /// Returns how many VIPs change.
    pub fn stage(&mut self, service: &str, vips: &[Vip]) -> usize {
        let mut changed = 0;
        let wanted: BTreeSet<ServiceKey> = vips.iter().map(|v| key_of(self.scope, v)).collect();
        let before = self.by_service.remove(service).unwrap_or_default();
        for key in before.difference(&wanted) {
            self.remove_vip(key);
            changed += 1;
        }
        for vip in vips {
            if self.write_vip(service, vip) {
                changed += 1;
            }
        }
        if !wanted.is_empty() {
            self.by_service.insert(service.to_owned(), wanted);
        }
        changed
    }

    /// Removes every programmed VIP no Service has claimed since [`ServiceSync::adopt`].
    pub fn finish_resync(
        &mut self,
        datapath: &mut impl ServiceMapOps,
    ) -> Result<usize, DatapathError> {
        let orphans: Vec<ServiceKey> = self
            .vips
            .iter()
            .filter(|(_, v)| v.service.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in &orphans {
            self.remove_vip(key);
        }
        self.flush(datapath)?;
        Ok(orphans.len())
    }

    /// The programmed VIPs (inspection and metrics).
    pub fn programmed(&self) -> impl Iterator<Item = (&ServiceKey, &ProgrammedVip)> {
        self.vips.iter()
    }

    /// The Service owning a service id (metrics labels).
    pub fn service_of(&self, id: u32) -> Option<(&ServiceKey, &ProgrammedVip)> {
        self.vips.iter().find(|(_, v)| v.entry.id == id)
    }

    fn write_vip(&mut self, service: &str, vip: &Vip) -> bool {
        let key = key_of(self.scope, vip);
        let (id, old_backends) = match self.vips.get_mut(&key) {
            Some(existing) => {
                existing.service = service.to_owned();
                (existing.entry.id, existing.backends.clone())
            }
            None => (self.service_ids.take(), BTreeMap::new()),
        };
        let mut backends = BTreeMap::new();
        for addr in &vip.backends {
            let backend_id = match old_backends.get(addr) {
                Some(id) => *id,
                None => self.backend_ids.take(),
            };
            backends.insert(*addr, backend_id);
        }
        let entry = ServiceEntry {
            id,
            backend_count: backends.len() as u32,
            flags: if vip.affinity_timeout_s.is_some() {
                service_flags::AFFINITY
            } else {
                0
            },
            affinity_timeout_s: vip.affinity_timeout_s.unwrap_or(0),
        };
        if let Some(existing) = self.vips.get(&key)
            && existing.entry == entry
            && existing.backends == backends
        {
            return false;
        }
        // New backends first, then the table that names them, then the entry; a packet sees
        // either the old state or the new one.
        for (addr, backend_id) in &backends {
            if !old_backends.contains_key(addr) {
                self.staged.backends.push((
                    *backend_id,
                    ServiceBackend {
                        ip: ip_bytes(addr.ip()),
                        port: addr.port(),
                        _pad: 0,
                        service_id: id,
                    },
                ));
            }
        }
        if backends.is_empty() {
            self.staged.emptied.push(id);
        } else {
            self.staged.tables.push((id, backends.clone()));
        }
        self.staged.entries.push((key, entry));
        for (addr, backend_id) in &old_backends {
            if !backends.contains_key(addr) {
                self.staged.removed_backends.push(*backend_id);
            }
        }
        self.vips.insert(
            key,
            ProgrammedVip {
                service: service.to_owned(),
                entry,
                backends,
            },
        );
        true
    }

    fn remove_vip(&mut self, key: &ServiceKey) {
        let Some(vip) = self.vips.remove(key) else {
            return;
        };
        self.staged.removed_entries.push(*key);
        self.staged.removed_tables.push(vip.entry.id);
        self.staged.removed_backends.extend(vip.backends.values());
    }

    /// Writes what [`ServiceSync::stage`] decided. Ids of what was removed are reused only
    /// after this. A VIP the services map has no room for is left to OVN's load balancer: it
    /// is written nowhere, the record forgets it (the next attempt sees it as new), and the
    /// error says how many there were, after everything else was written.
    pub fn flush(&mut self, datapath: &mut impl ServiceMapOps) -> Result<(), DatapathError> {
        let staged = std::mem::take(&mut self.staged);
        datapath.write_backends(&staged.backends)?;
        // In slices, so that 10,000 services do not hold 10,000 tables (64 KiB each) at once;
        // the next slice is computed while this one is written.
        std::thread::scope(|scope| -> Result<(), DatapathError> {
            let mut slices = staged.tables.chunks(TABLES_PER_BATCH);
            let mut current = slices.next().map(|slice| (slice, maglev_tables(slice)));
            while let Some((slice, tables)) = current.take() {
                let next = slices
                    .next()
                    .map(|slice| (slice, scope.spawn(move || maglev_tables(slice))));
                let written: Vec<(u32, &MaglevTable)> = slice
                    .iter()
                    .zip(&tables)
                    .map(|((id, _), t)| (*id, &**t))
                    .collect();
                datapath.write_maglev_tables(&written)?;
                current = next.map(|(slice, worker)| {
                    let tables = worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (slice, tables)
                });
            }
            Ok(())
        })?;
        // Entries that go before those that come: in a full map, their room is what the new
        // ones need.
        for key in &staged.removed_entries {
            datapath.remove_service(key)?;
            self.unprogrammed.remove(key);
            self.vips_removed += 1;
        }
        let mut gone_tables: BTreeSet<u32> = staged.emptied.iter().copied().collect();
        gone_tables.extend(&staged.removed_tables);
        let mut gone_backends = staged.removed_backends;
        let mut freed_ids = staged.removed_tables;
        let mut no_room = 0;
        for (key, entry) in &staged.entries {
            match datapath.write_service(*key, *entry) {
                Ok(()) => {
                    self.unprogrammed.remove(key);
                }
                // Only a new key meets a full map (an existing one is updated in place), so
                // the table and backends written for it are its own and go with it.
                Err(e) if e.is_map_full() => {
                    no_room += 1;
                    self.unprogrammed.insert(*key);
                    if let Some(vip) = self.vips.remove(key) {
                        gone_tables.insert(vip.entry.id);
                        freed_ids.push(vip.entry.id);
                        gone_backends.extend(vip.backends.values());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        datapath.remove_maglev_tables(&gone_tables.into_iter().collect::<Vec<_>>())?;
        // Removed backends last: their connections end with them.
        for id in &gone_backends {
            datapath.remove_backend(*id)?;
            self.backend_ids.give_back(*id);
        }
        for id in freed_ids {
            self.service_ids.give_back(id);
        }
        if no_room > 0 {
            return Err(DatapathError::ServicesFull { vips: no_room });
        }
        Ok(())
    }

    /// What metrics show of the programmed VIPs, published after every flush.
    pub fn summary(&self) -> ServiceSummary {
        ServiceSummary {
            vips: self
                .programmed()
                .map(|(key, vip)| {
                    let ip = crate::datapath::ip_from_bytes(&key.vip);
                    let proto = datapath_common::proto_name(key.proto);
                    let label = format!("{}/{proto}", SocketAddr::new(ip, key.port));
                    (vip.entry.id, (vip.service.clone(), label))
                })
                .collect(),
            backends: self.programmed().map(|(_, v)| v.backends.len()).sum(),
            unprogrammed: self.unprogrammed(),
        }
    }

    /// VIPs the services map had no room for at the last attempt: OVN balances them.
    pub fn unprogrammed(&self) -> usize {
        self.unprogrammed.len()
    }

    /// How many VIPs have been removed from the maps so far: after a change that freed room,
    /// what did not fit is worth another try at once.
    pub fn vips_removed(&self) -> u64 {
        self.vips_removed
    }
}

/// Maglev tables computed and written per batch (64 MiB of tables).
const TABLES_PER_BATCH: usize = 1024;

/// The Maglev tables of many services, computed on every core but one: at 16381 slots a table
/// takes about 0.2 ms, which for 10,000 services is the bulk of programming them. The flush
/// writes the previous slice meanwhile, so this and the writer keep `cores` threads busy and
/// leave nothing over for CNI ADDs; one core less keeps them out of each other's way.
fn maglev_tables(services: &[(u32, BTreeMap<SocketAddr, u32>)]) -> Vec<Box<MaglevTable>> {
    let cores = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .saturating_sub(1);
    if cores <= 1 || services.len() < 16 {
        return services.iter().map(|(_, b)| maglev_table(b)).collect();
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = services
            .chunks(services.len().div_ceil(cores))
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, b)| maglev_table(b))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// The Maglev table of backend ids for these backends (sorted by address, so every node
/// computes the same table).
pub fn maglev_table(backends: &BTreeMap<SocketAddr, u32>) -> Box<MaglevTable> {
    let names: Vec<String> = backends.keys().map(|a| a.to_string()).collect();
    let ids: Vec<u32> = backends.values().copied().collect();
    let mut table = Box::new(MaglevTable {
        backends: [0; MAGLEV_TABLE_SIZE],
    });
    maglev::populate(&names, &mut table.backends);
    for slot in table.backends.iter_mut() {
        *slot = ids[*slot as usize];
    }
    table
}
