//! Egress of the NIC this node's tunnels leave through: every packet OVS encapsulated for
//! another node passes here, as OVS built it (outer Ethernet, IPv4, UDP, Geneve or VXLAN, the
//! inner frame as OVN forwarded it). A packet of a local pod's flow teaches the datapath how
//! OVS encapsulated that flow: its outer headers, as bytes to replay. Nothing is changed; the
//! packet goes on. Egress is safe on a NIC OVS reads: the AF_PACKET taps OVS's userspace
//! datapath reads with see outgoing packets after this hook, and ignore them.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use datapath_common::{GENEVE_PORT, Reason, TUNNEL_HEADER_MAX, TunnelEntry, VXLAN_PORT};

use crate::maps::{self, TUNNEL_FLOWS};
use crate::parse::{Packet, parse_at};

const ETH_P_IP: u16 = 0x0800;
/// Geneve's protocol type of an inner Ethernet frame.
const ETH_P_TEB: u16 = 0x6558;
/// Outer Ethernet (14), IPv4 without options (20), UDP (8).
const OUTER_UDP_END: usize = 42;
/// Geneve's and VXLAN's fixed header.
const TUNNEL_HLEN: usize = 8;
const ETH_HLEN: usize = 14;

#[inline(always)]
pub(crate) fn tunnel_egress(ctx: &TcContext) -> i32 {
    let Some(inner) = inner_frame(ctx) else {
        // Not a tunnel packet (the node's own traffic): not ours to count.
        return TC_ACT_UNSPEC;
    };
    // SAFETY: reading the ifindex of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let reason = learn(ctx, ifindex, inner);
    maps::count(ifindex, reason);
    TC_ACT_UNSPEC
}

/// Where the inner Ethernet frame of a Geneve or VXLAN packet over IPv4 starts; None for
/// anything else (or a header that would not fit the template).
#[inline(always)]
fn inner_frame(ctx: &TcContext) -> Option<usize> {
    let ethertype: u16 = u16::from_be(ctx.load(12).ok()?);
    if ethertype != ETH_P_IP {
        return None;
    }
    let ip: [u8; 20] = ctx.load(ETH_HLEN).ok()?;
    // IPv4 without options, UDP, not a fragment.
    if ip[0] != 0x45 || ip[9] != 17 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let udp: [u8; 8] = ctx.load(ETH_HLEN + 20).ok()?;
    let tunnel: [u8; TUNNEL_HLEN] = ctx.load(OUTER_UDP_END).ok()?;
    let inner = match u16::from_be_bytes([udp[2], udp[3]]) {
        GENEVE_PORT => {
            // Version 0, an Ethernet payload; options in 4-byte units.
            if tunnel[0] >> 6 != 0 || u16::from_be_bytes([tunnel[2], tunnel[3]]) != ETH_P_TEB {
                return None;
            }
            OUTER_UDP_END + TUNNEL_HLEN + usize::from(tunnel[0] & 0x3f) * 4
        }
        // The VNI flag must be set.
        VXLAN_PORT if tunnel[0] & 0x08 != 0 => OUTER_UDP_END + TUNNEL_HLEN,
        _ => return None,
    };
    (inner + ETH_HLEN <= TUNNEL_HEADER_MAX).then_some(inner)
}

/// Records the encapsulation of the inner frame's flow if its source is a local pod of the
/// default VPC; FIN and RST retire it (the connection ends through OVS, as on one node).
#[inline(always)]
fn learn(ctx: &TcContext, ifindex: u32, inner: usize) -> Reason {
    let mut packet = Packet::empty();
    if !parse_at(ctx, inner, &mut packet) {
        return Reason::TunnelNotLearned;
    }
    let Some(scope) = maps::default_scope() else {
        return Reason::TunnelNotLearned;
    };
    packet.key.scope = scope;
    if packet.is_control() {
        if packet.ends_connection() && TUNNEL_FLOWS.remove(&packet.key).is_ok() {
            return Reason::Retired;
        }
        return Reason::TunnelNotLearned;
    }
    // The inner source must be a local pod: OVS encapsulates what it forwards for others too
    // (a node's own traffic to pods, a gateway's), and those are no pod's flows to replay.
    if maps::endpoint(&packet.key.src, scope).is_none() {
        return Reason::TunnelNotLearned;
    }
    let Ok(header) = ctx.load::<[u8; TUNNEL_HEADER_MAX]>(0) else {
        return Reason::TunnelNotLearned;
    };
    let entry = TunnelEntry {
        egress_ifindex: ifindex,
        inner_offset: inner as u32,
        generation: maps::generation(),
        last_seen_ns: maps::now_ns(),
        header,
    };
    if TUNNEL_FLOWS.insert(&packet.key, &entry, 0).is_ok() {
        Reason::TunnelLearned
    } else {
        Reason::MapFull
    }
}
