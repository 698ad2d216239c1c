//! Ingress of the outer end of a pod's OVS port pair: every packet OVS delivers to the pod.
//! Delivery proves that OVN's policy allowed this 5-tuple in this direction now, so the packet
//! teaches the fast path how OVS forwards the flow; then it goes into the pod.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, helpers::bpf_redirect_peer, programs::TcContext};
use datapath_common::{FlowEntry, FlowKey, Reason, flow_flags};

use crate::lb;
use crate::maps::{self, FLOWS};
use crate::parse::{Packet, parse};
use crate::uplink;

#[inline(always)]
pub(crate) fn to_pod(ctx: &TcContext) -> i32 {
    // SAFETY: reading the ifindex of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(port) = maps::port(ifindex) else {
        maps::count(ifindex, Reason::UnknownPort);
        return TC_ACT_UNSPEC;
    };
    let mut packet = Packet::empty();
    match parse(ctx, &mut packet) {
        false => maps::count(ifindex, Reason::ParseFailure),
        true => {
            // Learned in the destination's scope: only a source of the same VPC can use it.
            packet.key.scope = port.scope;
            // What OVS delivered, before a service reply is translated back to its VIP.
            let key = packet.key;
            let service_reply = lb::reverse(ctx, &mut packet);
            if packet.is_control() {
                if packet.ends_connection() && FLOWS.remove(&key).is_ok() {
                    maps::count(ifindex, Reason::Retired);
                }
                maps::count(ifindex, Reason::Control);
            } else if let Some(source) = maps::endpoint(&key.src, port.scope) {
                // Only flows between local pods of one VPC are fast-pathed: the source must be
                // one.
                let mut flags = 0;
                if packet.src_mac != source.mac {
                    // The source MAC is a router's: OVS routed the packet.
                    flags |= flow_flags::ROUTED;
                }
                if packet.ipv6 {
                    flags |= flow_flags::IPV6;
                }
                if service_reply {
                    flags |= flow_flags::SERVICE_REPLY;
                }
                learn(
                    ifindex,
                    &key,
                    FlowEntry {
                        dst_host_ifindex: port.host_ifindex,
                        flags,
                        src_mac: packet.src_mac,
                        dst_mac: packet.dst_mac,
                        generation: maps::generation(),
                        last_seen_ns: maps::now_ns(),
                        last_slow_ns: 0,
                    },
                );
            } else {
                // From another node's pod, perhaps: the delivery confirms the receive fast
                // path's entry, if the uplink recorded one.
                uplink::confirm(&key, &port, &packet, service_reply);
            }
        }
    }
    maps::count(ifindex, Reason::Delivered);
    // SAFETY: a helper call with plain arguments.
    unsafe { bpf_redirect_peer(port.host_ifindex, 0) as i32 }
}

/// Records what OVS did with this flow. Most delivered packets confirm an entry that is already
/// there: then only its timestamps (and the pending mark) change, in place, instead of a full
/// LRU-map insert.
#[inline(always)]
fn learn(ifindex: u32, key: &FlowKey, mut entry: FlowEntry) {
    entry.last_slow_ns = entry.last_seen_ns;
    if let Some(existing) = FLOWS.get_ptr_mut(key) {
        // SAFETY: the pointer comes from the lookup and stays valid while the program runs.
        let existing = unsafe { &mut *existing };
        if existing.generation == entry.generation
            && existing.dst_host_ifindex == entry.dst_host_ifindex
            && existing.flags & flow_flags::LEARNED == entry.flags
            && existing.src_mac == entry.src_mac
            && existing.dst_mac == entry.dst_mac
        {
            // A delivery confirms the entry: a pending re-judgement is answered.
            existing.flags = entry.flags;
            existing.last_seen_ns = entry.last_seen_ns;
            existing.last_slow_ns = entry.last_slow_ns;
            maps::count(ifindex, Reason::Learned);
            return;
        }
    }
    if FLOWS.insert(key, &entry, 0).is_ok() {
        maps::count(ifindex, Reason::Learned);
    } else {
        maps::count(ifindex, Reason::MapFull);
    }
}
