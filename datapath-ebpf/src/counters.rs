//! Per-interface packet and byte counters, and the counter of bookkeeping failures.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use datapath_common::{Direction, Fault, IF_COUNTERS_MAX_ENTRIES, IfCounterKey, IfCounters};

#[map(name = "KOVN_IF_COUNTERS")]
static IF_COUNTERS: PerCpuHashMap<IfCounterKey, IfCounters> =
    PerCpuHashMap::with_max_entries(IF_COUNTERS_MAX_ENTRIES, 0);

#[map(name = "KOVN_FAULTS")]
static FAULTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Fault::COUNT, 0);

/// Adds one packet of `ctx.len()` bytes to the counters of this interface and hook.
#[inline(always)]
pub(crate) fn count_interface(ctx: &TcContext, direction: Direction) {
    // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel handed to this program; reading
    // `ifindex` is a plain context access the verifier checks.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = IfCounterKey {
        ifindex,
        direction: direction as u32,
    };
    let bytes = u64::from(ctx.len());
    if let Some(counters) = IF_COUNTERS.get_ptr_mut(&key) {
        // SAFETY: a per-CPU value is only touched by this CPU, and the pointer came from the
        // map lookup, so it is valid for the duration of this program run.
        unsafe {
            (*counters).packets = (*counters).packets.wrapping_add(1);
            (*counters).bytes = (*counters).bytes.wrapping_add(bytes);
        }
        return;
    }
    let first = IfCounters { packets: 1, bytes };
    // BPF_NOEXIST: if another CPU created the entry meanwhile, our insert fails with EEXIST and
    // this packet is lost from the count; that race happens once per interface, ever.
    if IF_COUNTERS
        .insert(&key, &first, u64::from(BPF_NOEXIST))
        .is_err()
        && IF_COUNTERS.get_ptr(&key).is_none()
    {
        record_fault(Fault::CounterMapFull);
        debug!(ctx, "interface counter map full, ifindex {}", ifindex);
    }
}

#[inline(always)]
pub(crate) fn record_fault(fault: Fault) {
    if let Some(slot) = FAULTS.get_ptr_mut(fault as u32) {
        // SAFETY: per-CPU slot, valid while the program runs (see above).
        unsafe { *slot = (*slot).wrapping_add(1) };
    }
}
