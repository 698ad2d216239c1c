//! Ingress of a pod's host veth: every packet the pod sends. A packet of a flow that OVS has
//! already delivered (and that the current policy generation still covers) goes straight into
//! the destination pod, rewritten as OVS rewrote it; everything else is handed to OVS through
//! the pod's OVS port pair.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use datapath_common::{PodPort, Reason, flow_flags};

use crate::lb;
use crate::maps::{self, FLOWS, TUNNEL_FLOWS};
use crate::parse::{IPPROTO_TCP, Packet, parse};
use crate::reject;
use crate::rejudge;
use crate::tunnel;

#[inline(always)]
pub(crate) fn from_pod(ctx: &TcContext) -> i32 {
    // SAFETY: reading the ifindex of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(port) = maps::port(ifindex) else {
        maps::count(ifindex, Reason::UnknownPort);
        return TC_ACT_UNSPEC;
    };
    let mut packet = Packet::empty();
    if !parse(ctx, &mut packet) {
        maps::count(ifindex, Reason::ParseFailure);
        return handoff(ifindex, &port);
    }
    // Addresses mean something within the pod's VPC only: every lookup is in its scope.
    packet.key.scope = port.scope;
    // Only what the pod sends from its own addresses is acted on; everything else is OVS's
    // to judge (its port security drops it). Before the Service balancer and the flow map:
    // a spoofed packet must neither create LB state, nor ride or retire another pod's flow.
    // The port's primary address needs no lookup; other addresses of the pod (dual stack)
    // are found in the endpoint map.
    let own_source = packet.src_mac == port.mac
        && (packet.key.src == port.ip
            || maps::endpoint(&packet.key.src, port.scope)
                .is_some_and(|ep| ep.host_ifindex == ifindex));
    if !own_source {
        maps::count(ifindex, Reason::ForeignSource);
        return handoff(ifindex, &port);
    }
    // Services first: from here on a packet to a VIP is a packet to its backend.
    match lb::balance(ctx, &mut packet, ifindex) {
        lb::CONTINUE => {}
        lb::NO_BACKEND => {
            // As kube-proxy does: the client learns at once that nobody serves the port.
            if !reject::port_unreachable(ctx, &packet) {
                return TC_ACT_SHOT;
            }
            // SAFETY: a helper call with plain arguments.
            return unsafe { bpf_redirect_peer(ifindex, 0) as i32 };
        }
        verdict => return verdict,
    }
    if packet.is_control() {
        let verdict = lb::hairpin_reply(ctx, &mut packet, ifindex);
        if verdict != lb::CONTINUE {
            return verdict;
        }
        if packet.ends_connection() {
            let local = FLOWS.remove(&packet.key).is_ok();
            let remote = TUNNEL_FLOWS.remove(&packet.key).is_ok();
            if local || remote {
                maps::count(ifindex, Reason::Retired);
            }
        }
        maps::count(ifindex, Reason::Control);
        return handoff(ifindex, &port);
    }
    let config = maps::config();
    if config.fast_path_enabled == 0 {
        return handoff(ifindex, &port);
    }
    let Some(entry) = FLOWS.get_ptr_mut(&packet.key) else {
        let verdict = lb::hairpin_reply(ctx, &mut packet, ifindex);
        if verdict != lb::CONTINUE {
            return verdict;
        }
        // Not a local pod's flow: one to another node, if OVS encapsulated it before.
        if let Some(verdict) = tunnel::replay(ctx, &packet, &port, ifindex) {
            return verdict;
        }
        maps::count(ifindex, Reason::Miss);
        return handoff(ifindex, &port);
    };
    // SAFETY: the pointer comes from the lookup and stays valid while the program runs; a
    // concurrent update of the same entry can only mix in another valid entry's fields.
    let entry = unsafe { &mut *entry };
    let now = maps::now_ns();
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
            let _ = FLOWS.remove(&packet.key);
        }
        maps::count(ifindex, reason);
        return handoff(ifindex, &port);
    }
    if entry.flags & flow_flags::ROUTED != 0 && !decrement_ttl(ctx, packet.l3, packet.ipv6) {
        // TTL would expire: OVS sends the ICMP error.
        return handoff(ifindex, &port);
    }
    if entry.flags & flow_flags::SERVICE_REPLY != 0 && !lb::reverse(ctx, &mut packet) {
        // The connection is gone from the LB maps: OVS (and OVN's load balancer) decide.
        return handoff(ifindex, &port);
    }
    // Rewrite only what OVS changed (a routed flow): a write to a cloned packet (TCP keeps
    // clones for retransmission) makes the kernel copy the header first.
    if entry.src_mac != packet.src_mac && ctx.store(6, &entry.src_mac, 0).is_err() {
        return handoff(ifindex, &port);
    }
    if entry.dst_mac != packet.dst_mac && ctx.store(0, &entry.dst_mac, 0).is_err() {
        return handoff(ifindex, &port);
    }
    entry.last_seen_ns = now;
    maps::count(ifindex, Reason::FastHit);
    // SAFETY: a helper call with plain arguments.
    unsafe { bpf_redirect_peer(entry.dst_host_ifindex, 0) as i32 }
}

/// To OVS: out of the OVS port pair's outer end, into the OVS port.
#[inline(always)]
pub(crate) fn handoff(ifindex: u32, port: &PodPort) -> i32 {
    maps::count(ifindex, Reason::HandoffToOvs);
    // SAFETY: a helper call with plain arguments.
    unsafe { bpf_redirect(port.ovs_peer_ifindex, 0) as i32 }
}

/// Decrements the IPv4 TTL (fixing the header checksum) or the IPv6 hop limit; false if it
/// would reach zero or the packet cannot be written.
#[inline(always)]
pub(crate) fn decrement_ttl(ctx: &TcContext, l3: usize, ipv6: bool) -> bool {
    if ipv6 {
        let Ok(hop_limit) = ctx.load::<u8>(l3 + 7) else {
            return false;
        };
        return hop_limit > 1 && ctx.store(l3 + 7, &(hop_limit - 1), 0).is_ok();
    }
    let Ok(word) = ctx.load::<[u8; 2]>(l3 + 8) else {
        return false;
    };
    if word[0] <= 1 {
        return false;
    }
    let new = [word[0] - 1, word[1]];
    let (old_raw, new_raw) = (u16::from_ne_bytes(word), u16::from_ne_bytes(new));
    ctx.l3_csum_replace(l3 + 10, u64::from(old_raw), u64::from(new_raw), 2)
        .is_ok()
        && ctx.store(l3 + 8, &new, 0).is_ok()
}
