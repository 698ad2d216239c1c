//! Reading the counter maps: per-interface packets and bytes, and bookkeeping faults.

use aya::maps::{Array, HashMap, PerCpuArray, PerCpuHashMap};
use datapath_common::{
    Direction, ENDPOINTS_MAP, EndpointKey, FAULTS_MAP, FLOWS_MAP, Fault, FlowEntry, FlowKey,
    GENERATION_MAP, IF_COUNTERS_MAP, IfCounterKey, IfCounters, PodPort, REASONS_MAP, Reason,
    ReasonKey, TUNNEL_FLOWS_MAP, TUNNEL_RX_MAP, TunnelEntry, TunnelRxEntry,
};

use super::{DatapathError, MapSource, MapSourceMut, map_error};

/// How many packets one interface's programs decided for one [`Reason`], summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonCount {
    pub ifindex: u32,
    pub reason: Reason,
    pub packets: u64,
}

/// Packets and bytes one hook of one interface has seen, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub ifindex: u32,
    pub direction: Direction,
    pub packets: u64,
    pub bytes: u64,
}

/// How often the programs hit one [`Fault`], summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultCount {
    pub fault: Fault,
    pub count: u64,
}

/// Reading the datapath's maps; implemented for everything that can hand out the maps (the
/// loaded [`super::Datapath`], or [`super::PinnedMaps`] of a running agent).
pub trait ReadMaps: MapSource {
    /// Every interface counter in the map.
    fn interface_counters(&self) -> Result<Vec<InterfaceCounters>, DatapathError> {
        let map = self.map(IF_COUNTERS_MAP)?;
        let map: PerCpuHashMap<_, IfCounterKey, IfCounters> =
            PerCpuHashMap::try_from(map).map_err(|e| map_error(IF_COUNTERS_MAP, e))?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let (key, per_cpu) = entry.map_err(|e| map_error(IF_COUNTERS_MAP, e))?;
            // A key with an unknown direction can only come from a newer program; skip it
            // rather than misreport it.
            let Some(direction) = Direction::from_u32(key.direction) else {
                continue;
            };
            let total = IfCounters::sum(per_cpu.iter());
            out.push(InterfaceCounters {
                ifindex: key.ifindex,
                direction,
                packets: total.packets,
                bytes: total.bytes,
            });
        }
        out.sort_by_key(|c| (c.ifindex, c.direction as u32));
        Ok(out)
    }

    /// The counters of one hook of one interface, if it has seen a packet.
    fn interface_counter(
        &self,
        ifindex: u32,
        direction: Direction,
    ) -> Result<Option<InterfaceCounters>, DatapathError> {
        Ok(self
            .interface_counters()?
            .into_iter()
            .find(|c| c.ifindex == ifindex && c.direction == direction))
    }

    /// Every bookkeeping fault with its count (zero included, so metrics show the series).
    fn faults(&self) -> Result<Vec<FaultCount>, DatapathError> {
        let map = self.map(FAULTS_MAP)?;
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_error(FAULTS_MAP, e))?;
        // A map pinned by an older agent may have fewer slots: its missing faults read 0.
        Ok(Fault::ALL
            .iter()
            .map(|&fault| FaultCount {
                fault,
                count: map.get(&(fault as u32), 0).map_or(0, |per_cpu| {
                    per_cpu.iter().copied().fold(0u64, u64::wrapping_add)
                }),
            })
            .collect())
    }

    /// Packets decided for `reason`, over every interface.
    fn packets_for(&self, reason: Reason) -> Result<u64, DatapathError> {
        Ok(self
            .reason_counts()?
            .iter()
            .filter(|c| c.reason == reason)
            .map(|c| c.packets)
            .sum())
    }

    /// Every (interface, reason) counter.
    fn reason_counts(&self) -> Result<Vec<ReasonCount>, DatapathError> {
        let map = self.map(REASONS_MAP)?;
        let map: PerCpuHashMap<_, ReasonKey, u64> =
            PerCpuHashMap::try_from(map).map_err(|e| map_error(REASONS_MAP, e))?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let (key, per_cpu) = entry.map_err(|e| map_error(REASONS_MAP, e))?;
            let Some(reason) = Reason::from_u32(key.reason) else {
                continue;
            };
            out.push(ReasonCount {
                ifindex: key.ifindex,
                reason,
                packets: per_cpu.iter().copied().fold(0u64, u64::wrapping_add),
            });
        }
        out.sort_by_key(|c| (c.ifindex, c.reason as u32));
        Ok(out)
    }

    /// Packets interface `ifindex` counted under `reason` (0 if none).
    fn reason_count(&self, ifindex: u32, reason: Reason) -> Result<u64, DatapathError> {
        Ok(self
            .reason_counts()?
            .iter()
            .find(|c| c.ifindex == ifindex && c.reason == reason)
            .map_or(0, |c| c.packets))
    }

    /// Every learned flow.
    fn flows(&self) -> Result<Vec<(FlowKey, FlowEntry)>, DatapathError> {
        let map = self.map(FLOWS_MAP)?;
        let flows: HashMap<_, FlowKey, FlowEntry> =
            HashMap::try_from(map).map_err(|e| map_error(FLOWS_MAP, e))?;
        Ok(flows.iter().filter_map(Result::ok).collect())
    }

    /// Every local pod flow to another node, with how OVS encapsulated it.
    fn tunnel_flows(&self) -> Result<Vec<(FlowKey, TunnelEntry)>, DatapathError> {
        let map = self.map(TUNNEL_FLOWS_MAP)?;
        let flows: HashMap<_, FlowKey, TunnelEntry> =
            HashMap::try_from(map).map_err(|e| map_error(TUNNEL_FLOWS_MAP, e))?;
        Ok(flows.iter().filter_map(Result::ok).collect())
    }

    /// Every flow from another node's pod to a local pod, as it arrived and (once confirmed)
    /// as OVS delivered it.
    fn tunnel_rx(&self) -> Result<Vec<(FlowKey, TunnelRxEntry)>, DatapathError> {
        let map = self.map(TUNNEL_RX_MAP)?;
        let flows: HashMap<_, FlowKey, TunnelRxEntry> =
            HashMap::try_from(map).map_err(|e| map_error(TUNNEL_RX_MAP, e))?;
        Ok(flows.iter().filter_map(Result::ok).collect())
    }

    /// Every local pod address and the port that holds it.
    fn endpoints(&self) -> Result<Vec<(EndpointKey, PodPort)>, DatapathError> {
        let map = self.map(ENDPOINTS_MAP)?;
        let endpoints: HashMap<_, EndpointKey, PodPort> =
            HashMap::try_from(map).map_err(|e| map_error(ENDPOINTS_MAP, e))?;
        Ok(endpoints.iter().filter_map(Result::ok).collect())
    }

    /// The current policy generation.
    fn generation(&self) -> Result<u64, DatapathError> {
        let map = self.map(GENERATION_MAP)?;
        let array: Array<_, u64> =
            Array::try_from(map).map_err(|e| map_error(GENERATION_MAP, e))?;
        array.get(&0, 0).map_err(|e| map_error(GENERATION_MAP, e))
    }
}

impl<T: MapSource + ?Sized> ReadMaps for T {}

impl super::Datapath {
    /// Removes the decision and packet counters of an interface that goes with its pod: a
    /// reused ifindex must not inherit them, and pod churn must not fill the maps.
    pub(super) fn remove_counters(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        {
            let mut reasons: PerCpuHashMap<_, ReasonKey, u64> = self.map_mut_typed(REASONS_MAP)?;
            for reason in Reason::ALL {
                let _ = reasons.remove(&ReasonKey {
                    ifindex,
                    reason: reason as u32,
                });
            }
        }
        let mut interfaces: PerCpuHashMap<_, IfCounterKey, IfCounters> =
            self.map_mut_typed(IF_COUNTERS_MAP)?;
        for direction in Direction::ALL {
            let _ = interfaces.remove(&IfCounterKey {
                ifindex,
                direction: direction as u32,
            });
        }
        Ok(())
    }
}
