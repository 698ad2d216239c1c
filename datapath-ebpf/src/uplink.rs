//! The node's uplink NIC, ingress: what arrives from other nodes. A tunnel packet of a flow
//! that OVS has delivered into a local pod, arriving with the same outer source and tunnel
//! header (the logical datapath and ports OVN put there), is decapsulated and goes straight
//! into the pod; everything else goes to OVS as before, and a tunnel packet's outer headers
//! are recorded so that OVS delivering it confirms the flow ([`confirm`], from `kovn_to_pod`).
//! The invariants are the local fast path's: only what OVS delivered, an older generation is
//! a miss, every flow re-judged by OVS now and then (only a delivery confirms it), TCP SYN,
//! FIN, RST and anything unparsed through OVS.
//!
//! OVS's userspace datapath reads a NIC with AF_PACKET taps, which see a packet before TC
//! does: a NIC served here is no port of OVS's. The agent splits it (a veth pair takes its
//! place in the bridge); [`to_ovs`] hands what is not the fast path's to the pair, and
//! [`uplink_return`] sends what OVS emits into the pair out of the NIC.

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_UNSPEC, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use datapath_common::{FlowKey, PodPort, Reason, TUNNEL_RX_HEADER, TunnelRxEntry, rx_flags};

use crate::maps::{self, TUNNEL_RX};
use crate::parse::{IPPROTO_TCP, Packet, parse_at};
use crate::rejudge;
use crate::tunnel::{OUTER_UDP_END, inner_frame};

/// Where the outer IPv4 source address is.
const OUTER_SRC: usize = 26;

#[inline(always)]
pub(crate) fn uplink_ingress(ctx: &TcContext) -> i32 {
    // SAFETY: reading the ifindex of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // An unpaired NIC may still be read by OVS (the agent could not swap it out): nothing is
    // delivered here, or it would arrive twice.
    let Some(pair) = maps::uplink_pair(ifindex) else {
        maps::count(ifindex, Reason::UplinkUnpaired);
        return TC_ACT_UNSPEC;
    };
    if maps::cross_node_enabled()
        && maps::config().fast_path_enabled != 0
        && let Some(inner) = inner_frame(ctx)
        && let Some(verdict) = receive(ctx, ifindex, inner)
    {
        return verdict;
    }
    to_ovs(pair)
}

/// The split uplink's pair, ingress: what OVS sent out of its port leaves through the NIC.
#[inline(always)]
pub(crate) fn uplink_return(ctx: &TcContext) -> i32 {
    // SAFETY: reading the ifindex of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match maps::uplink_pair(ifindex) {
        Some(nic) if nic != 0 => {
            // SAFETY: a helper call with plain arguments.
            unsafe { bpf_redirect(nic, 0) as i32 }
        }
        _ => {
            maps::count(ifindex, Reason::UplinkUnpaired);
            TC_ACT_UNSPEC
        }
    }
}

/// The slow path of what arrives: out of the split uplink's pair, into OVS's port (`pair`
/// 0: up the node's stack, where OVS's kernel datapath or the kernel's tunnel takes it).
#[inline(always)]
fn to_ovs(pair: u32) -> i32 {
    if pair == 0 {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: a helper call with plain arguments.
    unsafe { bpf_redirect(pair, 0) as i32 }
}

/// A tunnel packet whose inner frame starts at `inner`: Some(verdict) when the fast path
/// delivered it, None when it goes to OVS (its outer headers recorded, for a flow the fast
/// path may take once OVS delivered it).
#[inline(always)]
fn receive(ctx: &TcContext, ifindex: u32, inner: usize) -> Option<i32> {
    let mut packet = Packet::empty();
    if !parse_at(ctx, inner, &mut packet) || packet.ipv6 {
        return None;
    }
    // Only the default VPC's pods: the tunnel header names a logical datapath, not a scope of
    // this node (as for the flows learned leaving).
    packet.key.scope = maps::default_scope()?;
    if packet.is_control() {
        if packet.ends_connection() && TUNNEL_RX.remove(&packet.key).is_ok() {
            maps::count(ifindex, Reason::Retired);
        }
        return None;
    }
    // The local pod's own veth is the only place the fast path may deliver to.
    maps::endpoint(&packet.key.dst, packet.key.scope)?;
    let outer_src: [u8; 4] = ctx.load(OUTER_SRC).ok()?;
    let tunnel: [u8; TUNNEL_RX_HEADER] = ctx.load(OUTER_UDP_END).ok()?;
    let now = maps::now_ns();
    if let Some(entry) = TUNNEL_RX.get_ptr_mut(&packet.key) {
        // SAFETY: the pointer comes from the lookup and stays valid while the program runs.
        let entry = unsafe { &mut *entry };
        if entry.flags & rx_flags::CONFIRMED != 0
            && entry.outer_src == outer_src
            && entry.tunnel == tunnel
            && entry.inner_offset == inner as u32
        {
            match rejudge::stale(
                entry.generation,
                entry.last_seen_ns,
                &mut entry.last_slow_ns,
                &mut entry.flags,
                packet.key.proto == IPPROTO_TCP,
                now,
                maps::generation(),
                &maps::config(),
            ) {
                None => {
                    let tcp = packet.key.proto == IPPROTO_TCP;
                    return deliver(ctx, ifindex, entry, inner, tcp, now);
                }
                // Sent to OVS to be re-judged: the entry serves on until the grace ends.
                Some(Reason::Refresh) => {
                    maps::count(ifindex, Reason::Refresh);
                    return None;
                }
                // Stale: OVS judges it again, as a new flow.
                Some(reason) => maps::count(ifindex, reason),
            }
        }
    }
    record(ifindex, &packet.key, outer_src, tunnel, inner, now);
    None
}

/// Records how a packet going to OVS arrived: OVS delivering it confirms the flow.
#[inline(always)]
fn record(
    ifindex: u32,
    key: &FlowKey,
    outer_src: [u8; 4],
    tunnel: [u8; TUNNEL_RX_HEADER],
    inner: usize,
    now: u64,
) {
    let entry = TunnelRxEntry {
        dst_host_ifindex: 0,
        flags: 0,
        generation: maps::generation(),
        last_seen_ns: now,
        last_slow_ns: now,
        outer_src,
        inner_offset: inner as u32,
        tunnel,
        src_mac: [0; 6],
        dst_mac: [0; 6],
        _pad: 0,
    };
    let reason = if TUNNEL_RX.insert(key, &entry, 0).is_ok() {
        Reason::TunnelRxPending
    } else {
        Reason::MapFull
    };
    maps::count(ifindex, reason);
}

/// Decapsulates the packet and delivers it into the pod OVS delivered its flow to, with the
/// MACs OVS delivered it with; None (to OVS, unchanged) when its inner MACs are not those or
/// the kernel refuses.
#[inline(always)]
fn deliver(
    ctx: &TcContext,
    ifindex: u32,
    entry: &mut TunnelRxEntry,
    inner: usize,
    tcp: bool,
    now: u64,
) -> Option<i32> {
    if entry.dst_host_ifindex == 0 {
        return None;
    }
    // A GSO packet keeps its segment size (FIXED_GSO) and, on this kernel (no decap flags for
    // L4 tunnels), its UDP-tunnel segmentation type: harmless for TCP, which the pod receives
    // (and segments, should it forward it, by its TCP type). Any other GSO packet is OVS's
    // (the pair segments it before OVS reads it).
    // SAFETY: reading a field of the context the kernel handed us.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 && !tcp {
        return None;
    }
    let macs: [u8; 12] = ctx.load(inner).ok()?;
    if macs[..6] != entry.dst_mac || macs[6..] != entry.src_mac {
        return None;
    }
    // The outer headers and the inner Ethernet header go; the outer Ethernet header takes
    // the inner MACs (both frames carry IPv4).
    if ctx
        .adjust_room(
            -(inner as i32),
            BPF_ADJ_ROOM_MAC,
            u64::from(BPF_F_ADJ_ROOM_FIXED_GSO),
        )
        .is_err()
    {
        maps::count(ifindex, Reason::TunnelEncapFailed);
        return None;
    }
    if ctx.store(0, &macs, 0).is_err() {
        maps::count(ifindex, Reason::TunnelEncapFailed);
    }
    entry.last_seen_ns = now;
    maps::count(ifindex, Reason::TunnelRxFastHit);
    // SAFETY: a helper call with plain arguments.
    Some(unsafe { bpf_redirect_peer(entry.dst_host_ifindex, 0) as i32 })
}

/// From `kovn_to_pod`, for a packet OVS delivered from a source that is no local pod: if it
/// arrived from another node as recorded (pending, this generation, within the grace), the
/// delivery confirms the flow for the receive fast path (and answers a pending re-judgement).
/// A Service's reply is left to OVS (its reverse NAT is applied at delivery).
#[inline(always)]
pub(crate) fn confirm(key: &FlowKey, port: &PodPort, packet: &Packet, service_reply: bool) {
    if service_reply || packet.ipv6 {
        return;
    }
    let Some(entry) = TUNNEL_RX.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: the pointer comes from the lookup and stays valid while the program runs.
    let entry = unsafe { &mut *entry };
    let now = maps::now_ns();
    if entry.generation != maps::generation()
        || now.saturating_sub(entry.last_slow_ns) > maps::config().refresh_grace_ns()
        || entry.dst_host_ifindex != 0 && entry.dst_host_ifindex != port.host_ifindex
    {
        return;
    }
    entry.dst_host_ifindex = port.host_ifindex;
    entry.src_mac = packet.src_mac;
    entry.dst_mac = packet.dst_mac;
    // Confirmed; a pending re-judgement (flow_flags::REFRESH_PENDING) is answered.
    entry.flags = rx_flags::CONFIRMED;
    entry.last_seen_ns = now;
    entry.last_slow_ns = now;
}
