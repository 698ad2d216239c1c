//! The datapath's maps and the small helpers around them.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
};
use datapath_common::{
    DatapathConfig, ENDPOINTS_MAX_ENTRIES, EndpointKey, FLOWS_MAX_ENTRIES, Fault, FlowEntry,
    FlowKey, PORTS_MAX_ENTRIES, PodPort, REASONS_MAX_ENTRIES, Reason, ReasonKey, Scope,
    TUNNEL_FLOWS_MAX_ENTRIES, TUNNEL_RX_MAX_ENTRIES, TunnelEntry, TunnelRxEntry,
    UPLINKS_MAX_ENTRIES,
};

#[map(name = "KOVN_FLOWS")]
pub(crate) static FLOWS: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(FLOWS_MAX_ENTRIES, 0);

#[map(name = "KOVN_PORTS")]
pub(crate) static PORTS: HashMap<u32, PodPort> = HashMap::with_max_entries(PORTS_MAX_ENTRIES, 0);

#[map(name = "KOVN_ENDPOINTS")]
pub(crate) static ENDPOINTS: HashMap<EndpointKey, PodPort> =
    HashMap::with_max_entries(ENDPOINTS_MAX_ENTRIES, 0);

#[map(name = "KOVN_TUNNEL_FLOWS")]
pub(crate) static TUNNEL_FLOWS: LruHashMap<FlowKey, TunnelEntry> =
    LruHashMap::with_max_entries(TUNNEL_FLOWS_MAX_ENTRIES, 0);

#[map(name = "KOVN_TUNNEL_RX")]
pub(crate) static TUNNEL_RX: LruHashMap<FlowKey, TunnelRxEntry> =
    LruHashMap::with_max_entries(TUNNEL_RX_MAX_ENTRIES, 0);

#[map(name = "KOVN_UPLINKS")]
static UPLINKS: HashMap<u32, u32> = HashMap::with_max_entries(UPLINKS_MAX_ENTRIES, 0);

#[map(name = "KOVN_DEFAULT_SCOPE")]
static DEFAULT_SCOPE: Array<Scope> = Array::with_max_entries(1, 0);

#[map(name = "KOVN_CROSS_NODE")]
static CROSS_NODE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "KOVN_GENERATION")]
static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "KOVN_CONFIG")]
static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

#[map(name = "KOVN_REASONS")]
static REASONS: PerCpuHashMap<ReasonKey, u64> =
    PerCpuHashMap::with_max_entries(REASONS_MAX_ENTRIES, 0);

/// The current policy generation (0 before the agent sets one).
#[inline(always)]
pub(crate) fn generation() -> u64 {
    GENERATION.get(0).copied().unwrap_or(0)
}

/// The default VPC's scope, as the agent wrote it (None before it did).
#[inline(always)]
pub(crate) fn default_scope() -> Option<Scope> {
    DEFAULT_SCOPE.get(0).copied().filter(|s| *s != 0)
}

/// Whether learned encapsulations are replayed (the cross-node fast path is switched on).
#[inline(always)]
pub(crate) fn cross_node_enabled() -> bool {
    CROSS_NODE.get(0).is_some_and(|on| *on != 0)
}

/// Where a split uplink's interface `ifindex` sends what is not the fast path's: Some(0) up the
/// node's stack, Some(n) out of interface n; None when the agent has not paired it.
#[inline(always)]
pub(crate) fn uplink_pair(ifindex: u32) -> Option<u32> {
    // SAFETY: a plain-data value copied out at once.
    unsafe { UPLINKS.get(&ifindex).copied() }
}

/// The agent's settings; the defaults until it writes some.
#[inline(always)]
pub(crate) fn config() -> DatapathConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_ns() }
}

/// Whether the service balancer is switched off (one field read, not a copy of the whole
/// config: the balancer's call chain has little stack to spare).
#[inline(always)]
pub(crate) fn service_lb_off() -> bool {
    CONFIG.get(0).is_some_and(|c| c.service_lb_off != 0)
}

/// The idle timeout of a flow of protocol `proto` (one field read).
#[inline(always)]
pub(crate) fn idle_timeout_ns(tcp: bool) -> u64 {
    match CONFIG.get(0) {
        Some(c) if tcp => c.tcp_timeout_ns,
        Some(c) => c.udp_timeout_ns,
        None if tcp => DatapathConfig::default().tcp_timeout_ns,
        None => DatapathConfig::default().udp_timeout_ns,
    }
}

/// Counts one packet under `reason` for interface `ifindex`.
#[inline(always)]
pub(crate) fn count(ifindex: u32, reason: Reason) {
    let key = ReasonKey {
        ifindex,
        reason: reason as u32,
    };
    if let Some(slot) = REASONS.get_ptr_mut(&key) {
        // SAFETY: a per-CPU value of a live map entry, touched only by this CPU.
        unsafe { *slot = (*slot).wrapping_add(1) };
    } else if REASONS
        .insert(&key, &1, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_err()
        && REASONS.get_ptr(&key).is_none()
    {
        // The map is full (the agent removes a pod's counters with the pod, so this is a
        // leak or an oversized node): the packet is unaffected, the lost count is a fault.
        crate::counters::record_fault(Fault::ReasonMapFull);
    }
}

#[inline(always)]
pub(crate) fn port(ifindex: u32) -> Option<PodPort> {
    // SAFETY: a plain-data value copied out at once.
    unsafe { PORTS.get(&ifindex).copied() }
}

#[inline(always)]
pub(crate) fn endpoint(ip: &[u8; 16], scope: u32) -> Option<PodPort> {
    let key = EndpointKey { ip: *ip, scope };
    // SAFETY: a plain-data value copied out at once.
    unsafe { ENDPOINTS.get(&key).copied() }
}
