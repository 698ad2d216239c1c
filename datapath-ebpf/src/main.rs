//! kovn's eBPF datapath. One program per job; the map ABI lives in `datapath-common`.
//!
//! Every program hands the packet on with `TC_ACT_UNSPEC`: under TCX that is "next", so other
//! programs on the same hook still run; under a clsact direct-action filter it continues with
//! the next filter and then the default action. kovn never drops a packet because of its own
//! bookkeeping.
#![no_std]
#![no_main]

mod counters;
mod from_pod;
mod lb;
mod maps;
mod nat;
mod parse;
mod reject;
mod rejudge;
mod to_pod;
mod tunnel;
mod uplink;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use datapath_common::Direction;

/// Counts packets and bytes at the TC ingress hook of the interface it is attached to.
#[classifier]
pub fn kovn_count_ingress(ctx: TcContext) -> i32 {
    counters::count_interface(&ctx, Direction::Ingress);
    TC_ACT_UNSPEC
}

/// Counts packets and bytes at the TC egress hook of the interface it is attached to.
#[classifier]
pub fn kovn_count_egress(ctx: TcContext) -> i32 {
    counters::count_interface(&ctx, Direction::Egress);
    TC_ACT_UNSPEC
}

/// The pod's host veth, ingress: fast path, or hand-off to OVS.
#[classifier]
pub fn kovn_from_pod(ctx: TcContext) -> i32 {
    from_pod::from_pod(&ctx)
}

/// The outer end of the pod's OVS port pair, ingress: learn from what OVS delivered, then
/// deliver into the pod.
#[classifier]
pub fn kovn_to_pod(ctx: TcContext) -> i32 {
    to_pod::to_pod(&ctx)
}

/// The NIC the node's tunnels leave through, egress: learn how OVS encapsulated a local
/// pod's flow to another node; the packet goes on untouched.
#[classifier]
pub fn kovn_tunnel_egress(ctx: TcContext) -> i32 {
    tunnel::tunnel_egress(&ctx)
}

/// The node's uplink NIC, ingress: a tunnel packet of a flow OVS delivered into a local pod
/// goes straight into the pod; everything else to OVS (through the split uplink's pair).
#[classifier]
pub fn kovn_uplink_ingress(ctx: TcContext) -> i32 {
    uplink::uplink_ingress(&ctx)
}

/// The split uplink's pair, ingress: what OVS sends out of its port leaves through the NIC.
#[classifier]
pub fn kovn_uplink_return(ctx: TcContext) -> i32 {
    uplink::uplink_return(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists to satisfy no_std.
    loop {}
}

/// License of the object: GPL-compatible, so the programs may call GPL-only helpers
/// (bpf_redirect_peer and friends, later).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
