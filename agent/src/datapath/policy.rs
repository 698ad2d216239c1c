//! Policy generations and runtime settings. Bumping the generation turns every learned flow
//! into a miss at once (O(1)), so the next packet of each flow is judged by OVS again.

use aya::maps::Array;
use datapath_common::{CONFIG_MAP, DatapathConfig, GENERATION_MAP};

use super::{Datapath, DatapathError, MapSource, ReadMaps, map_error};

impl Datapath {
    /// Moves to the next generation; returns it.
    pub fn bump_generation(&mut self) -> Result<u64, DatapathError> {
        let next = self.generation()?.wrapping_add(1);
        let mut array: Array<_, u64> = self.map_mut_typed(GENERATION_MAP)?;
        array
            .set(0, next, 0)
            .map_err(|e| map_error(GENERATION_MAP, e))?;
        Ok(next)
    }

    pub fn set_config(&mut self, config: &DatapathConfig) -> Result<(), DatapathError> {
        let mut array: Array<_, DatapathConfig> = self.map_mut_typed(CONFIG_MAP)?;
        array
            .set(0, *config, 0)
            .map_err(|e| map_error(CONFIG_MAP, e))
    }
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries idle longer than their protocol's timeout.
    pub expired: usize,
    /// Entries of an older policy generation (misses anyway; their slots are freed).
    pub stale: usize,
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

impl Datapath {
    /// The settings the programs use now.
    pub fn config(&self) -> Result<DatapathConfig, DatapathError> {
        let map = self.map(CONFIG_MAP)?;
        let array: Array<_, DatapathConfig> =
            Array::try_from(map).map_err(|e| map_error(CONFIG_MAP, e))?;
        array.get(&0, 0).map_err(|e| map_error(CONFIG_MAP, e))
    }

    /// Deletes expired and stale entries. The programs already treat them as misses; this
    /// frees their slots so live flows are not evicted from the LRU map instead.
    pub fn collect_garbage(&mut self) -> Result<GcReport, DatapathError> {
        let now = monotonic_ns();
        let config = self.config()?;
        let generation = self.generation()?;
        // One pass over the map; the predicate counts why each entry goes.
        let stale = std::cell::Cell::new(0);
        let removed = self.purge_flows(|k, e| {
            if e.generation != generation {
                stale.set(stale.get() + 1);
                return true;
            }
            let timeout = if k.proto == 6 {
                config.tcp_timeout_ns
            } else {
                config.udp_timeout_ns
            };
            now.saturating_sub(e.last_seen_ns) > timeout
        })?;
        Ok(GcReport {
            expired: removed - stale.get(),
            stale: stale.get(),
        })
    }
}
