//! Policy generations, runtime settings and the flow table's upkeep. Bumping the generation
//! turns every learned flow into a miss at once (O(1)), so the next packet of each flow is
//! judged by OVS again.

use aya::maps::{Array, HashMap};
use datapath_common::{
    CONFIG_MAP, DatapathConfig, FLOWS_MAP, FlowEntry, FlowKey, GENERATION_MAP, TUNNEL_FLOWS_MAP,
    TUNNEL_RX_MAP, TunnelEntry, TunnelRxEntry,
};

use super::{Datapath, DatapathError, MapSourceMut, ReadMaps, map_error};

impl Datapath {
    pub fn set_config(&mut self, config: &DatapathConfig) -> Result<(), DatapathError> {
        let mut array: Array<_, DatapathConfig> = self.map_mut_typed(CONFIG_MAP)?;
        array
            .set(0, *config, 0)
            .map_err(|e| map_error(CONFIG_MAP, e))
    }
}

impl FlowTableOps for Datapath {}

/// What a garbage collection removed, and what it left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries idle longer than their protocol's timeout.
    pub expired: usize,
    /// Entries of an older policy generation (misses anyway; their slots are freed).
    pub stale: usize,
    /// Entries left (the flow count metrics publish).
    pub kept: usize,
}

/// Now on the clock `bpf_ktime_get_ns` reads (CLOCK_MONOTONIC).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The flow table's operations, for every handle that has it (the loaded datapath, or a
/// [`super::FlowTable`] owned by the GC or the nb-cfg follower).
pub trait FlowTableOps: MapSourceMut {
    /// Moves to the next generation; returns it.
    fn bump_generation(&mut self) -> Result<u64, DatapathError> {
        let next = self.generation()?.wrapping_add(1);
        let mut array: Array<_, u64> = self.map_mut_typed(GENERATION_MAP)?;
        array
            .set(0, next, 0)
            .map_err(|e| map_error(GENERATION_MAP, e))?;
        Ok(next)
    }

    /// The settings the programs use now.
    fn config(&self) -> Result<DatapathConfig, DatapathError> {
        let map = self.map(CONFIG_MAP)?;
        let array: Array<_, DatapathConfig> =
            Array::try_from(map).map_err(|e| map_error(CONFIG_MAP, e))?;
        array.get(&0, 0).map_err(|e| map_error(CONFIG_MAP, e))
    }

    /// Deletes expired and stale entries, local, to and from other nodes. The programs already
    /// treat them as misses; this frees their slots so live flows are not evicted from the LRU
    /// maps instead.
    fn collect_garbage(&mut self) -> Result<GcReport, DatapathError> {
        let now = monotonic_ns();
        let config = self.config()?;
        let generation = self.generation()?;
        // One pass over each map; the predicate counts why each entry goes.
        let stale = std::cell::Cell::new(0);
        let doomed = |proto: u8, entry_generation: u64, last_seen_ns: u64| {
            if entry_generation != generation {
                stale.set(stale.get() + 1);
                return true;
            }
            let timeout = if proto == datapath_common::L4Proto::Tcp.number() {
                config.tcp_timeout_ns
            } else {
                config.udp_timeout_ns
            };
            now.saturating_sub(last_seen_ns) > timeout
        };
        let (removed, kept) =
            self.purge_flows(|k, e| doomed(k.proto, e.generation, e.last_seen_ns))?;
        let (tunnel_removed, tunnel_kept) =
            self.purge_tunnel_flows(|k, e| doomed(k.proto, e.generation, e.last_seen_ns))?;
        let (rx_removed, rx_kept) =
            self.purge_tunnel_rx(|k, e| doomed(k.proto, e.generation, e.last_seen_ns))?;
        Ok(GcReport {
            expired: removed + tunnel_removed + rx_removed - stale.get(),
            stale: stale.get(),
            kept: kept + tunnel_kept + rx_kept,
        })
    }

    /// Deletes the local flows for which `doomed` is true; returns how many went and how many
    /// stay.
    fn purge_flows(
        &mut self,
        doomed: impl Fn(&FlowKey, &FlowEntry) -> bool,
    ) -> Result<(usize, usize), DatapathError> {
        purge(&mut self.map_mut_typed(FLOWS_MAP)?, doomed)
    }

    /// Deletes the flows from other nodes for which `doomed` is true; returns how many went and
    /// how many stay.
    fn purge_tunnel_rx(
        &mut self,
        doomed: impl Fn(&FlowKey, &TunnelRxEntry) -> bool,
    ) -> Result<(usize, usize), DatapathError> {
        purge(&mut self.map_mut_typed(TUNNEL_RX_MAP)?, doomed)
    }

    /// Deletes the flows to other nodes for which `doomed` is true; returns how many went and
    /// how many stay.
    fn purge_tunnel_flows(
        &mut self,
        doomed: impl Fn(&FlowKey, &TunnelEntry) -> bool,
    ) -> Result<(usize, usize), DatapathError> {
        purge(&mut self.map_mut_typed(TUNNEL_FLOWS_MAP)?, doomed)
    }

    /// Writes a flow entry directly (tests and tooling; the programs learn flows themselves).
    fn insert_flow(&mut self, key: FlowKey, entry: FlowEntry) -> Result<(), DatapathError> {
        let mut flows: HashMap<_, FlowKey, FlowEntry> = self.map_mut_typed(FLOWS_MAP)?;
        flows
            .insert(key, entry, 0)
            .map_err(|e| map_error(FLOWS_MAP, e))
    }
}

/// One pass over a flow map: deletes the entries for which `doomed` is true; returns how many
/// went and how many stay.
fn purge<V: aya::Pod>(
    map: &mut HashMap<&mut aya::maps::MapData, FlowKey, V>,
    doomed: impl Fn(&FlowKey, &V) -> bool,
) -> Result<(usize, usize), DatapathError> {
    let mut kept = 0;
    let victims: Vec<FlowKey> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, e)| {
            let doomed = doomed(k, e);
            kept += usize::from(!doomed);
            doomed
        })
        .map(|(k, _)| k)
        .collect();
    for key in &victims {
        let _ = map.remove(key);
    }
    Ok((victims.len(), kept))
}
