//! Service load balancing at the source (ClusterIP), before the packet reaches OVS.
//!
//! A packet from a pod to a VIP is pinned to a backend by the LB conntrack map (a new
//! connection picks one from the service's Maglev table, or its ClientIP affinity entry) and
//! destination-NATed to it; the normal fast path / OVS logic then carries it like any packet
//! to that backend. The reply is translated back (source = VIP) only when it is delivered into
//! the client, never before OVS: OVN's port security on the backend's port sees the backend's
//! own address.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::{Array as BtfArray, HashOfMaps},
    helpers::bpf_redirect_peer,
    macros::{btf_map, map},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::TcContext,
};
use datapath_common::{
    AffinityEntry, AffinityKey, BACKENDS_MAX_ENTRIES, FlowKey, LB_AFFINITY_MAX_ENTRIES,
    LB_CONNTRACK_MAX_ENTRIES, LbConnection, LbReverseNat, MAGLEV_MAX_ENTRIES, MAGLEV_TABLE_SIZE,
    MaglevTable, SERVICE_COUNTERS_MAX_ENTRIES, SERVICES_MAX_ENTRIES, ServiceBackend,
    ServiceCounterKey, ServiceEntry, ServiceEvent, ServiceKey, reverse_nat_flags, service_flags,
};

use crate::maps;
use crate::nat::{self, End};
use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Packet};

#[map(name = "KOVN_SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceEntry> =
    HashMap::with_max_entries(SERVICES_MAX_ENTRIES, 0);

#[map(name = "KOVN_BACKENDS")]
static BACKENDS: HashMap<u32, ServiceBackend> = HashMap::with_max_entries(BACKENDS_MAX_ENTRIES, 0);

#[btf_map(name = "KOVN_MAGLEV")]
static MAGLEV: HashOfMaps<u32, BtfArray<MaglevTable, 1>, { MAGLEV_MAX_ENTRIES as usize }> =
    HashOfMaps::new();

#[map(name = "KOVN_LB_CT")]
static CONNECTIONS: LruHashMap<FlowKey, LbConnection> =
    LruHashMap::with_max_entries(LB_CONNTRACK_MAX_ENTRIES, 0);

#[map(name = "KOVN_LB_REVNAT")]
static REVERSE_NAT: LruHashMap<FlowKey, LbReverseNat> =
    LruHashMap::with_max_entries(LB_CONNTRACK_MAX_ENTRIES, 0);

#[map(name = "KOVN_LB_AFFINITY")]
static AFFINITY: LruHashMap<AffinityKey, AffinityEntry> =
    LruHashMap::with_max_entries(LB_AFFINITY_MAX_ENTRIES, 0);

#[map(name = "KOVN_SERVICE_COUNTERS")]
static COUNTERS: PerCpuHashMap<ServiceCounterKey, u64> =
    PerCpuHashMap::with_max_entries(SERVICE_COUNTERS_MAX_ENTRIES, 0);

/// What [`balance`] and [`hairpin_reply`] return when the packet goes on through the normal
/// logic (not a TC verdict: those are -1..=7). Plain integers rather than an enum: the kernel
/// rejects the BTF rustc emits for enums with data, and BTF-defined maps need the BTF.
pub(crate) const CONTINUE: i32 = i32::MIN;
/// What [`balance`] returns for a VIP without ready backends: the caller rejects the packet
/// (its own call chain: the reject needs a stack frame of its own).
pub(crate) const NO_BACKEND: i32 = i32::MIN + 1;

/// Balances a packet a pod sent to a VIP: [`CONTINUE`] when the packet goes on (to its
/// backend, rewritten, or untouched when it is not for a service), a TC verdict when it is
/// finished here. A BPF-to-BPF call rather than inlined: its stack frame is its own, so the
/// callers stay under the 512-byte stack limit.
#[inline(never)]
pub(crate) fn balance(ctx: &TcContext, packet: &mut Packet, host_ifindex: u32) -> i32 {
    if packet.key.proto != IPPROTO_TCP && packet.key.proto != IPPROTO_UDP || maps::service_lb_off()
    {
        return CONTINUE;
    }
    let service_key = ServiceKey {
        scope: packet.key.scope,
        vip: packet.key.dst,
        port: packet.key.dport,
        proto: packet.key.proto,
        _pad: 0,
    };
    // SAFETY: a plain-data value copied out at once.
    let Some(service) = (unsafe { SERVICES.get(&service_key).copied() }) else {
        return CONTINUE;
    };
    if service.backend_count == 0 {
        count(service.id, ServiceEvent::NoBackend);
        // As kube-proxy does: the client learns at once that nobody serves the port.
        return NO_BACKEND;
    }
    count(service.id, ServiceEvent::Hit);
    let now = maps::now_ns();
    let mut pick = Pick {
        backend: ServiceBackend::default(),
        source_port: packet.key.sport,
    };
    if !connection_backend(&packet.key, now, &mut pick) {
        if !new_connection(&packet.key, &service, now, &mut pick.backend) {
            // A table not (yet) written for a service with backends: let OVN's load
            // balancer serve the VIP.
            return CONTINUE;
        }
        pick.source_port = free_source_port(&packet.key, &service_key, &pick.backend);
    }
    let hairpin = pick.backend.ip == packet.key.src;
    // Before the rewrites, while the key is still the client's (no copy of it on the stack).
    record_reverse_nat(&service_key, &packet.key, &pick, service.id);
    if hairpin {
        count(service.id, ServiceEvent::Hairpin);
        // The pod would drop a packet from its own address: it comes from the VIP instead.
        if !nat::rewrite(ctx, packet, End::Source, &service_key.vip, pick.source_port) {
            return CONTINUE;
        }
    } else if pick.source_port != packet.key.sport
        && !nat::rewrite_port(ctx, packet, End::Source, pick.source_port)
    {
        return CONTINUE;
    }
    if !nat::rewrite(
        ctx,
        packet,
        End::Destination,
        &pick.backend.ip,
        pick.backend.port,
    ) {
        return CONTINUE;
    }
    if hairpin {
        // Straight back into the pod: a pod may always reach itself.
        // SAFETY: a helper call with plain arguments.
        return unsafe { bpf_redirect_peer(host_ifindex, 0) as i32 };
    }
    CONTINUE
}

/// Records how the backend's replies are translated back (source = the VIP; for a hairpin
/// also destination = the pod). Its own call, to keep [`balance`]'s frame small.
#[inline(never)]
fn record_reverse_nat(
    service_key: &ServiceKey,
    client_key: &FlowKey,
    pick: &Pick,
    service_id: u32,
) {
    let (backend, source_port) = (&pick.backend, pick.source_port);
    let hairpin = backend.ip == client_key.src;
    let reply = FlowKey {
        scope: client_key.scope,
        src: backend.ip,
        dst: if hairpin {
            service_key.vip
        } else {
            client_key.src
        },
        sport: backend.port,
        dport: source_port,
        proto: client_key.proto,
        _pad: [0; 3],
    };
    let reverse = LbReverseNat {
        vip: service_key.vip,
        port: service_key.port,
        client_port: client_key.sport,
        flags: if hairpin {
            reverse_nat_flags::HAIRPIN
        } else {
            0
        },
    };
    // SAFETY: a plain-data value copied out at once.
    let known = unsafe { REVERSE_NAT.get(&reply).copied() };
    if known != Some(reverse) && REVERSE_NAT.insert(&reply, &reverse, 0).is_err() {
        count(service_id, ServiceEvent::ConntrackFull);
    }
}

/// The backend an existing connection is pinned to, if it is still live and still a backend.
#[inline(always)]
fn connection_backend(key: &FlowKey, now: u64, out: &mut Pick) -> bool {
    match pinned_backend(key, now, &mut out.source_port) {
        Some(backend) => {
            out.backend = backend;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn pinned_backend(key: &FlowKey, now: u64, source_port: &mut u16) -> Option<ServiceBackend> {
    let entry = CONNECTIONS.get_ptr_mut(key)?;
    // SAFETY: the pointer comes from the lookup and stays valid while the program runs.
    let entry = unsafe { &mut *entry };
    if now.saturating_sub(entry.last_seen_ns) > idle_timeout(key.proto) {
        return None;
    }
    // A removed backend's connections end here: the next packet is balanced anew.
    // SAFETY: a plain-data value copied out at once.
    let backend = unsafe { BACKENDS.get(&entry.backend_id).copied() }?;
    entry.last_seen_ns = now;
    *source_port = entry.source_port;
    Some(backend)
}

/// Picks a backend for a new connection (ClientIP affinity first, then Maglev) and pins it.
/// Its own call: only a connection's first packet needs its stack. False when the service's
/// table is not there (yet).
#[inline(never)]
fn new_connection(
    key: &FlowKey,
    service: &ServiceEntry,
    now: u64,
    out: &mut ServiceBackend,
) -> bool {
    match pick_backend(key, service, now) {
        Some(backend) => {
            *out = backend;
            true
        }
        None => false,
    }
}

/// The backend a connection goes to, and the source port it uses there.
struct Pick {
    backend: ServiceBackend,
    source_port: u16,
}

/// Tries for a free source port when the client's clashes.
const SOURCE_PORT_TRIES: u32 = 8;

/// The source port for a new connection to `backend`: the client's own, unless a connection
/// to another VIP already has the same tuple after DNAT (one client port may reach two VIPs
/// at once, or again while OVS still holds the first connection; two VIPs may share a
/// backend). Then its replies could not be told apart, and OVS 3.1's userspace conntrack
/// aborts on the clash; so, as nf_nat does, another port in the ephemeral range is taken,
/// and the connection's LB conntrack entry remembers it. Its own call: only a connection's
/// first packet needs its stack.
#[inline(never)]
fn free_source_port(key: &FlowKey, service_key: &ServiceKey, backend: &ServiceBackend) -> u16 {
    let port = find_source_port(key, service_key, backend);
    if port != key.sport
        && let Some(entry) = CONNECTIONS.get_ptr_mut(key)
    {
        // SAFETY: the pointer comes from the lookup and stays valid while the program runs.
        unsafe { (*entry).source_port = port };
    }
    port
}

#[inline(always)]
fn find_source_port(key: &FlowKey, service_key: &ServiceKey, backend: &ServiceBackend) -> u16 {
    let mut reply = FlowKey {
        scope: key.scope,
        src: backend.ip,
        dst: key.src,
        sport: backend.port,
        dport: key.sport,
        proto: key.proto,
        _pad: [0; 3],
    };
    let hash = flow_hash(&key.dst, key.sport, key.proto);
    let mut candidate = key.sport;
    for i in 0..SOURCE_PORT_TRIES {
        // SAFETY: a plain-data value copied out at once.
        match unsafe { REVERSE_NAT.get(&reply).copied() } {
            Some(r) if r.vip != service_key.vip || r.port != service_key.port => {}
            _ => return candidate,
        }
        candidate = (32768 + (hash.wrapping_add(i.wrapping_mul(7919)) % 28232)) as u16;
        reply.dport = candidate;
    }
    // Every try clashed: keep the client's port (its replies may be mistranslated).
    key.sport
}

#[inline(always)]
fn pick_backend(key: &FlowKey, service: &ServiceEntry, now: u64) -> Option<ServiceBackend> {
    let affinity = service.flags & service_flags::AFFINITY != 0;
    let affinity_key = AffinityKey {
        client: key.src,
        service_id: service.id,
    };
    let mut chosen = None;
    if affinity {
        // SAFETY: a plain-data value copied out at once.
        if let Some(entry) = unsafe { AFFINITY.get(&affinity_key).copied() } {
            let timeout = u64::from(service.affinity_timeout_s) * 1_000_000_000;
            if now.saturating_sub(entry.last_seen_ns) <= timeout {
                // SAFETY: as above.
                if let Some(backend) = unsafe { BACKENDS.get(&entry.backend_id).copied() } {
                    chosen = Some((entry.backend_id, backend));
                }
            }
        }
    }
    let (backend_id, backend) = match chosen {
        Some(c) => c,
        None => {
            // With affinity every connection of a client hashes alike.
            let hash = if affinity {
                flow_hash(&key.src, 0, 0)
            } else {
                flow_hash(&key.src, key.sport, key.proto)
            };
            // black_box: LLVM knows the remainder is in bounds and drops the check below, but
            // the verifier does not know it and needs the comparison.
            let slot = core::hint::black_box((hash % MAGLEV_TABLE_SIZE as u32) as usize);
            // SAFETY: the outer map is only updated by swapping whole inner maps.
            let table = unsafe { MAGLEV.get_value(&service.id, &0) }?;
            let backend_id = *table.backends.get(slot)?;
            // SAFETY: a plain-data value copied out at once.
            let backend = unsafe { BACKENDS.get(&backend_id).copied() }?;
            (backend_id, backend)
        }
    };
    count(service.id, ServiceEvent::NewConnection);
    if affinity {
        let entry = AffinityEntry {
            backend_id,
            _pad: 0,
            last_seen_ns: now,
        };
        let _ = AFFINITY.insert(&affinity_key, &entry, 0);
    }
    let connection = LbConnection {
        backend_id,
        service_id: service.id,
        last_seen_ns: now,
        source_port: key.sport,
        _pad: [0; 3],
    };
    if CONNECTIONS.insert(key, &connection, 0).is_err() {
        // Balanced anyway; the next packet may pick another backend only if the table
        // changes meanwhile.
        count(service.id, ServiceEvent::ConntrackFull);
    }
    Some(backend)
}

/// Translates a service reply delivered into the client back to the VIP. Returns whether the
/// packet was a service reply (and was translated).
#[inline(never)]
pub(crate) fn reverse(ctx: &TcContext, packet: &mut Packet) -> bool {
    // SAFETY: a plain-data value copied out at once.
    match unsafe { REVERSE_NAT.get(&packet.key).copied() } {
        Some(translation) => translate_reply(ctx, packet, &translation),
        None => false,
    }
}

/// A hairpinned reply (a pod answering itself through its Service) never goes through OVS:
/// translate it and deliver it straight back. Returns the verdict if it was one, [`CONTINUE`]
/// otherwise.
#[inline(never)]
pub(crate) fn hairpin_reply(ctx: &TcContext, packet: &mut Packet, host_ifindex: u32) -> i32 {
    // SAFETY: a plain-data value copied out at once.
    let Some(translation) = (unsafe { REVERSE_NAT.get(&packet.key).copied() }) else {
        return CONTINUE;
    };
    if translation.flags & reverse_nat_flags::HAIRPIN == 0
        || !translate_reply(ctx, packet, &translation)
    {
        return CONTINUE;
    }
    // SAFETY: a helper call with plain arguments.
    unsafe { bpf_redirect_peer(host_ifindex, 0) as i32 }
}

#[inline(always)]
fn translate_reply(ctx: &TcContext, packet: &mut Packet, translation: &LbReverseNat) -> bool {
    if translation.flags & reverse_nat_flags::HAIRPIN == 0
        && translation.client_port != packet.key.dport
        // A connection given another source port: the client gets its own back.
        && !nat::rewrite_port(ctx, packet, End::Destination, translation.client_port)
    {
        return false;
    }
    if translation.flags & reverse_nat_flags::HAIRPIN != 0 {
        let client = packet.key.src;
        if !nat::rewrite(
            ctx,
            packet,
            End::Destination,
            &client,
            translation.client_port,
        ) {
            return false;
        }
    }
    nat::rewrite(ctx, packet, End::Source, &translation.vip, translation.port)
}

#[inline(always)]
fn idle_timeout(proto: u8) -> u64 {
    maps::idle_timeout_ns(proto == IPPROTO_TCP)
}

/// A flow hash that is the same on every node (Maglev's slot choice must not depend on
/// where the client runs): a multiply-xorshift mix of the client address, port and protocol.
#[inline(always)]
fn flow_hash(ip: &[u8; 16], port: u16, proto: u8) -> u32 {
    let hi = u64::from_le_bytes([ip[0], ip[1], ip[2], ip[3], ip[4], ip[5], ip[6], ip[7]]);
    let lo = u64::from_le_bytes([ip[8], ip[9], ip[10], ip[11], ip[12], ip[13], ip[14], ip[15]]);
    let mut h = hi ^ lo.rotate_left(29) ^ (u64::from(port) << 8 | u64::from(proto));
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// Its own call: inlined at each of its uses, its key and value would each take stack slots
/// in the balancer's frames.
#[inline(never)]
fn count(service_id: u32, event: ServiceEvent) {
    let key = ServiceCounterKey {
        service_id,
        event: event as u32,
    };
    if let Some(slot) = COUNTERS.get_ptr_mut(&key) {
        // SAFETY: a per-CPU value of a live map entry, touched only by this CPU.
        unsafe { *slot = (*slot).wrapping_add(1) };
    } else {
        // Losing a count when the map is full is acceptable; the packet is unaffected.
        let _ = COUNTERS.insert(&key, &1, u64::from(BPF_NOEXIST));
    }
}
