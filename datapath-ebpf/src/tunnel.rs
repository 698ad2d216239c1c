//! Egress of the NIC this node's tunnels leave through: every packet OVS encapsulated for
//! another node passes here, as OVS built it (outer Ethernet, IPv4, UDP, Geneve or VXLAN, the
//! inner frame as OVN forwarded it). A packet of a local pod's flow teaches the datapath how
//! OVS encapsulated that flow: its outer headers, as bytes to replay. Nothing is changed; the
//! packet goes on. Egress is safe on a NIC OVS reads: the AF_PACKET taps OVS's userspace
//! datapath reads with see outgoing packets after this hook, and ignore them.
//!
//! [`replay`] is the other half, called by `kovn_from_pod` for a flow with no local entry:
//! the pod's packet gets the outer headers OVS gave the flow's last packet and leaves through
//! the same NIC, so the receiving node's OVS gets what it would have got from this node's
//! (its to-lport ACLs judge it as before). The invariants are those of the local fast path:
//! only what OVS emitted is replayed, an older generation is a miss, and every flow is
//! re-judged: now and then a packet goes through OVS, and only OVS emitting one of the flow's
//! packets again (seen here) confirms the entry.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_UNSPEC, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::bpf_redirect,
    programs::TcContext,
};
use datapath_common::{
    GENEVE_PORT, PodPort, REPLAY_MARK, Reason, TUNNEL_HEADER_MAX, TunnelEntry, VXLAN_PORT,
};

use crate::maps::{self, TUNNEL_FLOWS};
use crate::parse::{IPPROTO_TCP, Packet, parse_at};
use crate::rejudge;

const ETH_P_IP: u16 = 0x0800;
/// Geneve's protocol type of an inner Ethernet frame.
const ETH_P_TEB: u16 = 0x6558;
/// Outer Ethernet (14), IPv4 without options (20), UDP (8).
pub(crate) const OUTER_UDP_END: usize = 42;
/// Geneve's and VXLAN's fixed header.
const TUNNEL_HLEN: usize = 8;
const ETH_HLEN: usize = 14;

#[inline(always)]
pub(crate) fn tunnel_egress(ctx: &TcContext) -> i32 {
    // SAFETY: reading a field of the context the kernel handed us.
    if unsafe { (*ctx.skb.skb).mark } == REPLAY_MARK {
        // The fast path's own packet: it confirms nothing.
        return TC_ACT_UNSPEC;
    }
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
pub(crate) fn inner_frame(ctx: &TcContext) -> Option<usize> {
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
    let now = maps::now_ns();
    // A fresh entry, or a confirmation: OVS emitted this flow's packet (a pending re-judgement
    // is answered).
    let entry = TunnelEntry {
        egress_ifindex: ifindex,
        inner_offset: inner as u32,
        generation: maps::generation(),
        last_seen_ns: now,
        last_slow_ns: now,
        flags: 0,
        _pad: 0,
        header,
    };
    if TUNNEL_FLOWS.insert(&packet.key, &entry, 0).is_ok() {
        Reason::TunnelLearned
    } else {
        Reason::MapFull
    }
}

/// The outer headers of the two layouts replayed: Geneve with OVN's one 8-byte option, VXLAN.
const GENEVE_OVN_INNER: u32 = 58;
const VXLAN_INNER: u32 = 50;

/// Replays the encapsulation OVS gave `packet`'s flow, if there is a usable entry: Some(the
/// verdict) when the entry decided (sent, or handed to OVS to be re-judged), None when there
/// is no entry (the caller counts the miss and hands the packet to OVS). A BPF-to-BPF call:
/// its frame (the header it writes) stays off the balancer's call chain, which has little
/// stack to spare.
#[inline(never)]
pub(crate) fn replay(
    ctx: &TcContext,
    packet: &Packet,
    port: &PodPort,
    ifindex: u32,
) -> Option<i32> {
    if !maps::cross_node_enabled() || packet.ipv6 {
        return None;
    }
    let config = maps::config();
    let entry = TUNNEL_FLOWS.get_ptr_mut(&packet.key)?;
    // SAFETY: the pointer comes from the lookup and stays valid while the program runs.
    let entry = unsafe { &mut *entry };
    let now = maps::now_ns();
    // Re-judged as on one node: OVS emitting the refresh packet (seen by the observer)
    // confirms the entry.
    if let Some(reason) = rejudge::stale(
        entry.generation,
        entry.last_seen_ns,
        &mut entry.last_slow_ns,
        &mut entry.flags,
        packet.key.proto == IPPROTO_TCP,
        now,
        maps::generation(),
        &config,
    ) {
        if reason == Reason::RefreshUnconfirmed {
            let _ = TUNNEL_FLOWS.remove(&packet.key);
        }
        maps::count(ifindex, reason);
        return Some(crate::from_pod::handoff(ifindex, port));
    }
    let inner_offset = entry.inner_offset;
    if inner_offset != GENEVE_OVN_INNER && inner_offset != VXLAN_INNER {
        return None;
    }
    // The inner source MAC OVS wrote is a router's: OVN routed the packet (TTL one less).
    let inner_source = if inner_offset == GENEVE_OVN_INNER {
        mac_at::<{ GENEVE_OVN_INNER as usize + 6 }>(&entry.header)
    } else {
        mac_at::<{ VXLAN_INNER as usize + 6 }>(&entry.header)
    };
    let routed = inner_source != port.mac;
    if routed && !crate::from_pod::decrement_ttl(ctx, packet.l3, false) {
        return Some(crate::from_pod::handoff(ifindex, port));
    }
    // Room for the outer headers after the pod's Ethernet header, which becomes the outer
    // one; the inner Ethernet header is written into the room. FIXED_GSO: the pod's MTU
    // already leaves the encapsulation's overhead, so its segment size stays.
    let flags = u64::from(
        BPF_F_ADJ_ROOM_FIXED_GSO
            | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
            | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
            | BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
    ) | (14u64 << 56);
    if ctx
        .adjust_room(inner_offset as i32, BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        maps::count(ifindex, Reason::TunnelEncapFailed);
        return Some(crate::from_pod::handoff(ifindex, port));
    }
    let written = if inner_offset == GENEVE_OVN_INNER {
        write_header::<72>(ctx, &entry.header)
    } else {
        write_header::<64>(ctx, &entry.header)
    };
    if !written {
        // Take the room back: OVS gets the packet as the pod sent it.
        let _ = ctx.adjust_room(-(inner_offset as i32), BPF_ADJ_ROOM_MAC, 0);
        maps::count(ifindex, Reason::TunnelEncapFailed);
        return Some(crate::from_pod::handoff(ifindex, port));
    }
    entry.last_seen_ns = now;
    ctx.set_mark(REPLAY_MARK);
    maps::count(ifindex, Reason::TunnelFastHit);
    // SAFETY: a helper call with plain arguments.
    Some(unsafe { bpf_redirect(entry.egress_ifindex, 0) as i32 })
}

/// The MAC address at byte `AT` of `header` (a constant offset: the verifier bounds it).
#[inline(always)]
fn mac_at<const AT: usize>(header: &[u8; TUNNEL_HEADER_MAX]) -> [u8; 6] {
    [
        header[AT],
        header[AT + 1],
        header[AT + 2],
        header[AT + 3],
        header[AT + 4],
        header[AT + 5],
    ]
}

/// Writes the first `N` bytes of `header` (outer headers and the inner Ethernet header) at
/// the packet's start, then the outer IPv4 total length and checksum and the UDP length for
/// this packet (UDP checksum 0, valid over IPv4; the kernel's segmentation rewrites lengths
/// and checksum per segment of a GSO packet).
#[inline(always)]
fn write_header<const N: usize>(ctx: &TcContext, header: &[u8; TUNNEL_HEADER_MAX]) -> bool {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&header[..N]);
    let ip_len = (ctx.len() as usize - ETH_HLEN).min(0xffff) as u16;
    let udp_len = ip_len.saturating_sub(20);
    bytes[16..18].copy_from_slice(&ip_len.to_be_bytes());
    bytes[24] = 0;
    bytes[25] = 0;
    let mut sum: u32 = 0;
    let mut i = ETH_HLEN;
    while i < ETH_HLEN + 20 {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    bytes[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    bytes[38..40].copy_from_slice(&udp_len.to_be_bytes());
    bytes[40] = 0;
    bytes[41] = 0;
    ctx.store(0, &bytes, 0).is_ok()
}
