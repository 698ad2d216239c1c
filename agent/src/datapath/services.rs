//! The service maps as the agent writes and reads them: services, backends, Maglev tables
//! (one inner map each, swapped whole), and the LB conntrack, affinity and counters.

use aya::maps::{Array, HashMap, HashOfMaps, MapData, PerCpuHashMap};
use datapath_common::{
    BACKENDS_MAP, FlowKey, LB_CONNTRACK_MAP, LbConnection, MAGLEV_MAP, MAGLEV_TABLE_SIZE,
    MaglevTable, SERVICE_COUNTERS_MAP, SERVICES_MAP, ServiceBackend, ServiceCounterKey,
    ServiceEntry, ServiceEvent, ServiceKey,
};

use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};

use super::{Datapath, DatapathError, MapSource, MapSourceMut, map_error};

/// One service's counter, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCount {
    pub service_id: u32,
    pub event: ServiceEvent,
    pub count: u64,
}

impl ServiceMapOps for Datapath {}

/// Writing the service maps, for every handle that has them (the loaded datapath, or the
/// [`super::ServiceMaps`] the Service sync owns).
pub trait ServiceMapOps: MapSourceMut {
    fn write_service(&mut self, key: ServiceKey, entry: ServiceEntry) -> Result<(), DatapathError> {
        let mut map: HashMap<_, ServiceKey, ServiceEntry> = self.map_mut_typed(SERVICES_MAP)?;
        map.insert(key, entry, 0)
            .map_err(|e| map_error(SERVICES_MAP, e))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        let mut map: HashMap<_, ServiceKey, ServiceEntry> = self.map_mut_typed(SERVICES_MAP)?;
        ignore_missing(map.remove(key)).map_err(|e| map_error(SERVICES_MAP, e))
    }

    fn write_backend(&mut self, id: u32, backend: ServiceBackend) -> Result<(), DatapathError> {
        let mut map: HashMap<_, u32, ServiceBackend> = self.map_mut_typed(BACKENDS_MAP)?;
        map.insert(id, backend, 0)
            .map_err(|e| map_error(BACKENDS_MAP, e))
    }

    /// Writes many backends in one BPF_MAP_UPDATE_BATCH.
    fn write_backends(&mut self, backends: &[(u32, ServiceBackend)]) -> Result<(), DatapathError> {
        if backends.is_empty() {
            return Ok(());
        }
        let fd = match self.map(BACKENDS_MAP)? {
            aya::maps::Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => return Err(DatapathError::MissingMap { name: BACKENDS_MAP }),
        };
        let (ids, values): (Vec<u32>, Vec<ServiceBackend>) = backends.iter().copied().unzip();
        map_batch(BPF_MAP_UPDATE_BATCH, fd, &ids, Some(&values))
            .map_err(|e| map_io_error(BACKENDS_MAP, "BPF_MAP_UPDATE_BATCH", e))
    }

    /// Removes a backend: connections pinned to it end (their next packet is balanced anew).
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        let mut map: HashMap<_, u32, ServiceBackend> = self.map_mut_typed(BACKENDS_MAP)?;
        ignore_missing(map.remove(&id)).map_err(|e| map_error(BACKENDS_MAP, e))
    }

    /// Installs Maglev tables (backend ids, MAGLEV_TABLE_SIZE of them), each written into a
    /// new inner map, then swapped into the outer map, all in one batched update: the kernel
    /// waits for an RCU grace period after every map-of-maps update from user space (so no
    /// program still reads the old table), and one wait for 10,000 tables instead of 10,000
    /// waits is the difference between milliseconds and minutes.
    fn write_maglev_tables(&mut self, tables: &[(u32, &MaglevTable)]) -> Result<(), DatapathError> {
        if tables.is_empty() {
            return Ok(());
        }
        let mut inner_maps = Vec::with_capacity(tables.len());
        for (_, table) in tables {
            let inner =
                create_table_map().map_err(|e| map_io_error(MAGLEV_MAP, "BPF_MAP_CREATE", e))?;
            write_table(&inner, table)
                .map_err(|e| map_io_error(MAGLEV_MAP, "BPF_MAP_UPDATE_ELEM", e))?;
            inner_maps.push(inner);
        }
        let keys: Vec<u32> = tables.iter().map(|(id, _)| *id).collect();
        let fds: Vec<u32> = inner_maps.iter().map(|m| m.as_raw_fd() as u32).collect();
        let outer = self.maglev_outer_fd()?;
        map_batch(BPF_MAP_UPDATE_BATCH, outer, &keys, Some(&fds))
            .map_err(|e| map_io_error(MAGLEV_MAP, "BPF_MAP_UPDATE_BATCH", e))
        // The inner maps' fds close here; the outer map holds them.
    }

    /// Removes services' Maglev tables (one batched delete: one RCU wait).
    fn remove_maglev_tables(&mut self, service_ids: &[u32]) -> Result<(), DatapathError> {
        if service_ids.is_empty() {
            return Ok(());
        }
        let outer = self.maglev_outer_fd()?;
        // A batch delete stops at the first missing key; a table may be missing (a service
        // without endpoints has none), so delete only those present.
        let present: Vec<u32> = {
            let map = self.map(MAGLEV_MAP)?;
            let outer_map: HashOfMaps<_, u32, Array<MapData, MaglevTable>> =
                HashOfMaps::try_from(map).map_err(|e| map_error(MAGLEV_MAP, e))?;
            let existing: std::collections::HashSet<u32> =
                outer_map.keys().filter_map(Result::ok).collect();
            service_ids
                .iter()
                .copied()
                .filter(|id| existing.contains(id))
                .collect()
        };
        if present.is_empty() {
            return Ok(());
        }
        map_batch::<u32>(BPF_MAP_DELETE_BATCH, outer, &present, None)
            .map_err(|e| map_io_error(MAGLEV_MAP, "BPF_MAP_DELETE_BATCH", e))
    }

    fn maglev_outer_fd(&self) -> Result<i32, DatapathError> {
        match self.map(MAGLEV_MAP)? {
            aya::maps::Map::HashOfMaps(data) => Ok(data.fd().as_fd().as_raw_fd()),
            _ => Err(DatapathError::MissingMap { name: MAGLEV_MAP }),
        }
    }
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `bpf_attr` as BPF_MAP_CREATE reads it (the fields kovn sets; the rest zero).
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `bpf_attr` as BPF_MAP_UPDATE_ELEM reads it.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a `bpf_attr` prefix for `command` whose pointers (if any) the caller
    // keeps alive for the call; the kernel reads at most size_of::<T>() bytes of it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A one-element array holding a Maglev table: the inner map kind [`MAGLEV_MAP`] holds
/// (created by hand: aya's `Array::create` hides the fd the batch update needs).
fn create_table_map() -> std::io::Result<OwnedFd> {
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"kovn_table");
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: std::mem::size_of::<MaglevTable>() as u32,
        max_entries: 1,
        map_name: name,
        ..CreateAttr::default()
    };
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn write_table(map: &OwnedFd, table: &MaglevTable) -> std::io::Result<()> {
    let key = 0u32;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: table as *const MaglevTable as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `bpf_attr` as the BPF_MAP_*_BATCH commands read it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One BPF_MAP_UPDATE_BATCH (with `values`, one per key) or BPF_MAP_DELETE_BATCH of u32 keys.
/// aya does not wrap the batch commands.
fn map_batch<V>(
    command: libc::c_long,
    map_fd: i32,
    keys: &[u32],
    values: Option<&[V]>,
) -> std::io::Result<()> {
    if values.is_some_and(|v| v.len() != keys.len()) {
        return Err(std::io::Error::other("a batch needs one value per key"));
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: keys.len() as u32,
        map_fd: map_fd as u32,
        ..BatchAttr::default()
    };
    // The attr points at `keys` and `values`, which outlive the call.
    bpf(command, &mut attr)?;
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!(
            "batch stopped after {} of {} elements",
            attr.count,
            keys.len()
        )));
    }
    Ok(())
}

fn map_io_error(name: &'static str, call: &'static str, io_error: std::io::Error) -> DatapathError {
    map_error(
        name,
        aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
    )
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

    /// How many connections the LB conntrack holds (keys only: nothing is copied out).
    fn lb_connection_count(&self) -> Result<usize, DatapathError> {
        let map: HashMap<_, FlowKey, LbConnection> = HashMap::try_from(self.map(LB_CONNTRACK_MAP)?)
            .map_err(|e| map_error(LB_CONNTRACK_MAP, e))?;
        Ok(map.keys().filter(Result::is_ok).count())
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
