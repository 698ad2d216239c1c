//! The service maps as the agent writes and reads them: services, backends, Maglev tables
//! (one inner map each, swapped whole), and the LB conntrack, affinity and counters.

use aya::maps::{Array, HashMap, HashOfMaps, MapData, PerCpuHashMap};
use datapath_common::{
    BACKENDS_MAP, FlowKey, LB_CONNTRACK_MAP, LbConnection, MAGLEV_MAP, MAGLEV_TABLE_SIZE,
    MaglevTable, SERVICE_COUNTERS_MAP, SERVICES_MAP, ServiceBackend, ServiceCounterKey,
    ServiceEntry, ServiceEvent, ServiceKey,
};

use super::{Datapath, DatapathError, MapSource, map_error};

/// One service's counter, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCount {
    pub service_id: u32,
    pub event: ServiceEvent,
    pub count: u64,
}

impl Datapath {
    pub fn write_service(
        &mut self,
        key: ServiceKey,
        entry: ServiceEntry,
    ) -> Result<(), DatapathError> {
        let mut map: HashMap<_, ServiceKey, ServiceEntry> = self.map_mut_typed(SERVICES_MAP)?;
        map.insert(key, entry, 0)
            .map_err(|e| map_error(SERVICES_MAP, e))
    }

    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        let mut map: HashMap<_, ServiceKey, ServiceEntry> = self.map_mut_typed(SERVICES_MAP)?;
        ignore_missing(map.remove(key)).map_err(|e| map_error(SERVICES_MAP, e))
    }

    pub fn write_backend(&mut self, id: u32, backend: ServiceBackend) -> Result<(), DatapathError> {
        let mut map: HashMap<_, u32, ServiceBackend> = self.map_mut_typed(BACKENDS_MAP)?;
        map.insert(id, backend, 0)
            .map_err(|e| map_error(BACKENDS_MAP, e))
    }

    /// Removes a backend: connections pinned to it end (their next packet is balanced anew).
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        let mut map: HashMap<_, u32, ServiceBackend> = self.map_mut_typed(BACKENDS_MAP)?;
        ignore_missing(map.remove(&id)).map_err(|e| map_error(BACKENDS_MAP, e))
    }

    /// Installs a service's Maglev table (backend ids, MAGLEV_TABLE_SIZE of them): written into
    /// a new inner map, then swapped into the outer map in one update.
    pub fn write_maglev(
        &mut self,
        service_id: u32,
        table: &MaglevTable,
    ) -> Result<(), DatapathError> {
        let mut inner: Array<MapData, MaglevTable> =
            Array::create(1, 0).map_err(|e| map_error(MAGLEV_MAP, e))?;
        inner
            .set(0, table, 0)
            .map_err(|e| map_error(MAGLEV_MAP, e))?;
        let mut outer: HashOfMaps<_, u32, Array<MapData, MaglevTable>> =
            self.map_mut_typed(MAGLEV_MAP)?;
        outer
            .insert(service_id, &inner, 0)
            .map_err(|e| map_error(MAGLEV_MAP, e))
    }

    pub fn remove_maglev(&mut self, service_id: u32) -> Result<(), DatapathError> {
        let mut outer: HashOfMaps<_, u32, Array<MapData, MaglevTable>> =
            self.map_mut_typed(MAGLEV_MAP)?;
        ignore_missing(outer.remove(&service_id)).map_err(|e| map_error(MAGLEV_MAP, e))
    }
}

/// Reading the service maps: the agent's own (after a restart) or a running agent's pins.
pub trait ReadServiceMaps: MapSource {
    fn services(&self) -> Result<Vec<(ServiceKey, ServiceEntry)>, DatapathError> {
        let map: HashMap<_, ServiceKey, ServiceEntry> =
            HashMap::try_from(self.map(SERVICES_MAP)?).map_err(|e| map_error(SERVICES_MAP, e))?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    fn backends(&self) -> Result<Vec<(u32, ServiceBackend)>, DatapathError> {
        let map: HashMap<_, u32, ServiceBackend> =
            HashMap::try_from(self.map(BACKENDS_MAP)?).map_err(|e| map_error(BACKENDS_MAP, e))?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// The backend ids of a service's Maglev table, as the programs see it now.
    fn maglev(&self, service_id: u32) -> Result<Option<Vec<u32>>, DatapathError> {
        let outer: HashOfMaps<_, u32, Array<MapData, MaglevTable>> =
            HashOfMaps::try_from(self.map(MAGLEV_MAP)?).map_err(|e| map_error(MAGLEV_MAP, e))?;
        let inner = match outer.get(&service_id, 0) {
            Ok(inner) => inner,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_error(MAGLEV_MAP, e)),
        };
        let table = inner.get(&0, 0).map_err(|e| map_error(MAGLEV_MAP, e))?;
        debug_assert_eq!(table.backends.len(), MAGLEV_TABLE_SIZE);
        Ok(Some(table.backends.to_vec()))
    }

    /// Established service connections: client flow → backend.
    fn lb_connections(&self) -> Result<Vec<(FlowKey, LbConnection)>, DatapathError> {
        let map: HashMap<_, FlowKey, LbConnection> = HashMap::try_from(self.map(LB_CONNTRACK_MAP)?)
            .map_err(|e| map_error(LB_CONNTRACK_MAP, e))?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Per-service counters (hits, new connections, no backend, conntrack full, hairpin).
    fn service_counts(&self) -> Result<Vec<ServiceCount>, DatapathError> {
        let map: PerCpuHashMap<_, ServiceCounterKey, u64> =
            PerCpuHashMap::try_from(self.map(SERVICE_COUNTERS_MAP)?)
                .map_err(|e| map_error(SERVICE_COUNTERS_MAP, e))?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, per_cpu)| {
                Some(ServiceCount {
                    service_id: key.service_id,
                    event: ServiceEvent::from_u32(key.event)?,
                    count: per_cpu.iter().copied().fold(0u64, u64::wrapping_add),
                })
            })
            .collect())
    }
}

impl<T: MapSource> ReadServiceMaps for T {}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        // A delete of a missing key reports ENOENT through the syscall error.
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
