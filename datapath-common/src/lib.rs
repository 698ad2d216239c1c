//! The map ABI shared by the eBPF programs in `datapath-ebpf` and the agent.
//!
//! Everything here is `#[repr(C)]`, has no padding the kernel could leave uninitialised, and is
//! plain data: both sides read the same bytes. Map names are constants so the loader and the
//! programs cannot drift apart.
#![no_std]

/// Which TC hook of an interface a counter belongs to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub const fn from_u32(raw: u32) -> Option<Direction> {
        match raw {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }
}

/// Key of [`IF_COUNTERS_MAP`]: one interface, one hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfCounterKey {
    pub ifindex: u32,
    /// A [`Direction`] as `u32` (an enum is not a valid map key for every bit pattern).
    pub direction: u32,
}

/// Value of [`IF_COUNTERS_MAP`], per CPU: what the hook has seen since the entry was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub packets: u64,
    /// Bytes as the kernel counts `skb->len` at the hook (L2 header included).
    pub bytes: u64,
}

impl IfCounters {
    /// Sum of the per-CPU values of one key.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a IfCounters>) -> IfCounters {
        per_cpu
            .into_iter()
            .fold(IfCounters::default(), |acc, c| IfCounters {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
            })
    }
}

/// Per-CPU hash map `IfCounterKey -> IfCounters`.
pub const IF_COUNTERS_MAP: &str = "KOVN_IF_COUNTERS";
/// Interfaces (times two hooks) the counter map holds. A node with more pods than this loses
/// counters for the newest interfaces (counted in [`FAULTS_MAP`]), never traffic.
pub const IF_COUNTERS_MAX_ENTRIES: u32 = 16384;

/// Per-CPU array indexed by [`Fault`]: things the programs could not do.
pub const FAULTS_MAP: &str = "KOVN_FAULTS";

/// Why a program could not do its bookkeeping. Traffic is never dropped for these reasons.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The interface counter map is full; the packet was passed on uncounted.
    CounterMapFull = 0,
    /// The decision counter map is full; the decision was not counted (the packet was
    /// handled as decided).
    ReasonMapFull = 1,
}

impl Fault {
    pub const ALL: [Fault; 2] = [Fault::CounterMapFull, Fault::ReasonMapFull];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::CounterMapFull => "counter_map_full",
            Fault::ReasonMapFull => "reason_map_full",
        }
    }
}

/// The L4 protocols kovn names: the one place protocol numbers meet their names (maps carry
/// the IANA number; Kubernetes writes `TCP`, OVN `tcp`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
    Icmpv6 = 58,
    Sctp = 132,
}

impl L4Proto {
    pub const ALL: [L4Proto; 5] = [
        L4Proto::Icmp,
        L4Proto::Tcp,
        L4Proto::Udp,
        L4Proto::Icmpv6,
        L4Proto::Sctp,
    ];

    pub const fn number(self) -> u8 {
        self as u8
    }

    pub const fn from_number(n: u8) -> Option<L4Proto> {
        match n {
            1 => Some(L4Proto::Icmp),
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            58 => Some(L4Proto::Icmpv6),
            132 => Some(L4Proto::Sctp),
            _ => None,
        }
    }

    /// OVN's and Prometheus labels' spelling: `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            L4Proto::Icmp => "icmp",
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Icmpv6 => "icmpv6",
            L4Proto::Sctp => "sctp",
        }
    }

    /// Kubernetes' spelling in Service and EndpointSlice ports: `TCP`, `UDP`, `SCTP`.
    pub const fn kubernetes_name(self) -> &'static str {
        match self {
            L4Proto::Icmp => "ICMP",
            L4Proto::Tcp => "TCP",
            L4Proto::Udp => "UDP",
            L4Proto::Icmpv6 => "ICMPv6",
            L4Proto::Sctp => "SCTP",
        }
    }

    /// A Service port's protocol (`TCP`, `UDP`, `SCTP`); anything else is not a Service's.
    pub fn from_kubernetes(name: &str) -> Option<L4Proto> {
        [L4Proto::Tcp, L4Proto::Udp, L4Proto::Sctp]
            .into_iter()
            .find(|p| p.kubernetes_name() == name)
    }
}

/// The name of protocol number `n` for display (`?` for one kovn does not name).
pub fn proto_name(n: u8) -> &'static str {
    L4Proto::from_number(n).map_or("?", L4Proto::as_str)
}

/// An IP address in a map key or value: IPv4 as `::ffff:a.b.c.d` (IPv4-mapped IPv6), so one
/// key type serves both families.
pub type IpBytes = [u8; 16];

/// Maps an IPv4 address to its [`IpBytes`] form.
pub const fn ipv4_mapped(v4: [u8; 4]) -> IpBytes {
    // Built as one integer, not as bytes over zeroes: the eBPF side would zero the array
    // with a byte-by-byte `memset` loop on every packet.
    ((0xffff_u128 << 32) | u32::from_be_bytes(v4) as u128).to_be_bytes()
}

/// An address space on this node: the VPC whose pods hold the addresses. Two VPCs may use
/// the same CIDR, so every key that holds a pod address holds its scope too: a packet from a
/// pod is looked up in that pod's scope, a learned flow is recorded in the destination pod's
/// scope, and the two can only meet within one VPC. Numbers are the agent's, per node
/// ([`vpc_scope`], or [`PER_POD_SCOPE`] when that must not be shared).
pub type Scope = u32;

/// The scope of the VPC named `vpc` as far as a hash can make it: FNV-1a of the name, below
/// [`PER_POD_SCOPE`]. The agent checks that no two VPCs with pods on the node share one (and
/// moves one of them when they would).
pub const fn vpc_scope(vpc: &str) -> Scope {
    let bytes = vpc.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash & !PER_POD_SCOPE
}

/// Set in a scope that belongs to one pod alone (`PER_POD_SCOPE | host ifindex`): a pod whose
/// VPC is not known (a record of an older agent) shares nothing with any other pod, so OVS
/// judges all its traffic.
pub const PER_POD_SCOPE: Scope = 0x8000_0000;

/// One direction of a connection: what the fast path looks up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The [`Scope`] both addresses are in.
    pub scope: Scope,
    pub src: IpBytes,
    pub dst: IpBytes,
    /// TCP/UDP ports; for ICMP echo, the identifier in `sport` and 0 in `dport`.
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number (6, 17, 1, 58).
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What OVS did to packets of one [`FlowKey`], learned when it delivered one to a local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// Host-side veth of the destination pod: `bpf_redirect_peer` delivers into its peer.
    pub dst_host_ifindex: u32,
    /// [`flow_flags`].
    pub flags: u32,
    /// Ethernet source and destination as OVS delivered them.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The policy generation the entry was learned in; an older one is a miss.
    pub generation: u64,
    /// Last time (bpf_ktime_get_ns) a packet used or refreshed the entry.
    pub last_seen_ns: u64,
    /// Last time OVS delivered a packet of the flow, or, while
    /// [`flow_flags::REFRESH_PENDING`] is set, when the fast path sent one through OVS to be
    /// re-judged (every `refresh_ns`). Only a delivery confirms the entry: one unconfirmed
    /// for the grace ([`DatapathConfig::refresh_grace_ns`]) is retired.
    pub last_slow_ns: u64,
}

/// Bits of [`FlowEntry::flags`].
pub mod flow_flags {
    /// OVS routed the packet (a logical router hop): decrement TTL / hop limit.
    pub const ROUTED: u32 = 1;
    /// IPv6 (otherwise IPv4).
    pub const IPV6: u32 = 2;
    /// A Service's reply (backend to client): the fast path applies the reverse NAT from
    /// [`super::LB_REVERSE_NAT_MAP`] before delivering it.
    pub const SERVICE_REPLY: u32 = 4;
    /// A packet of the flow was sent through OVS to be re-judged and OVS has not delivered
    /// one since: the entry serves until the grace ends, then goes.
    pub const REFRESH_PENDING: u32 = 8;
    /// What OVS's forwarding decided (the rest is the fast path's own bookkeeping).
    pub const LEARNED: u32 = ROUTED | IPV6 | SERVICE_REPLY;
}

/// A local pod port: both host-side interfaces and the pod's MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodPort {
    /// The pod's veth, host end (fast path and hand-off program on its ingress).
    pub host_ifindex: u32,
    /// The outer end of the pod's OVS port pair (delivery program on its ingress).
    pub ovs_peer_ifindex: u32,
    /// The address [`Scope`] of the pod's VPC.
    pub scope: Scope,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The pod's primary address (checked without a map lookup on every packet).
    pub ip: IpBytes,
}

/// Key of [`ENDPOINTS_MAP`]: a local pod address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ip: IpBytes,
    pub scope: Scope,
}

/// Runtime settings of the programs (one element of [`CONFIG_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Idle time after which a TCP entry is a miss.
    pub tcp_timeout_ns: u64,
    /// Idle time after which a UDP or ICMP entry is a miss.
    pub udp_timeout_ns: u64,
    /// How often a fast-pathed flow sends one packet through OVS to be re-judged (and to keep
    /// OVS conntrack alive). With the grace after it ([`Self::refresh_grace_ns`]), the
    /// longest a revoked flow keeps the fast path once OVS stopped delivering it.
    pub refresh_ns: u64,
    /// 0 disables the fast path (every packet goes to OVS; learning goes on).
    pub fast_path_enabled: u32,
    /// Non-zero switches the eBPF service balancer off: packets to VIPs go to OVS untouched and
    /// OVN's load balancers serve them (0 is "on", so a zeroed map balances).
    pub service_lb_off: u32,
}

/// 100 ms: a revocation by any NB writer ends the fast path of a flow within 150 ms of
/// OVS enforcing it.
pub const DEFAULT_REFRESH_NS: u64 = 100_000_000;

impl DatapathConfig {
    /// How long a re-judged packet may take through OVS before its entry goes: half the
    /// refresh interval (derived, so that the map's ABI stays as pinned maps hold it).
    pub const fn refresh_grace_ns(&self) -> u64 {
        self.refresh_ns / 2
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            tcp_timeout_ns: 300_000_000_000,
            udp_timeout_ns: 30_000_000_000,
            refresh_ns: DEFAULT_REFRESH_NS,
            fast_path_enabled: 1,
            service_lb_off: 0,
        }
    }
}

/// LRU hash `FlowKey -> FlowEntry`.
pub const FLOWS_MAP: &str = "KOVN_FLOWS";
pub const FLOWS_MAX_ENTRIES: u32 = 262_144;
/// Hash `ifindex -> PodPort`, keyed by both of a pod's host-side interfaces.
pub const PORTS_MAP: &str = "KOVN_PORTS";
pub const PORTS_MAX_ENTRIES: u32 = 8192;
/// Hash `EndpointKey -> PodPort`: local pods by address.
pub const ENDPOINTS_MAP: &str = "KOVN_ENDPOINTS";
pub const ENDPOINTS_MAX_ENTRIES: u32 = 8192;
/// Array of one u64: the current policy generation.
pub const GENERATION_MAP: &str = "KOVN_GENERATION";
/// Array of one [`DatapathConfig`].
pub const CONFIG_MAP: &str = "KOVN_CONFIG";
/// Per-CPU hash `ReasonKey -> u64`: what the programs decided, per interface.
pub const REASONS_MAP: &str = "KOVN_REASONS";
pub const REASONS_MAX_ENTRIES: u32 = 65_536;

/// Why a packet went where it went. Every packet the datapath sees is counted under one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Redirected straight into the destination pod.
    FastHit = 0,
    /// No entry: handed to OVS.
    Miss = 1,
    /// Handed to OVS (every slow-path packet, whatever the reason).
    HandoffToOvs = 2,
    /// An entry was written from a packet OVS delivered.
    Learned = 3,
    /// An entry of an older policy generation: handed to OVS.
    Invalidated = 4,
    /// An idle entry: handed to OVS.
    Expired = 5,
    /// Not parsed (unknown protocol, fragment, truncated): handed to OVS or delivered as is.
    ParseFailure = 6,
    /// The flow map was full: the entry was not written (the packet was still delivered).
    MapFull = 7,
    /// TCP SYN/FIN/RST or an ICMP error: always through OVS.
    Control = 8,
    /// Delivered into a local pod after OVS.
    Delivered = 9,
    /// A periodic refresh packet sent through OVS.
    Refresh = 10,
    /// FIN/RST retired the entry.
    Retired = 11,
    /// A packet on an interface kovn does not know: passed on untouched.
    UnknownPort = 12,
    /// OVS did not deliver the flow's re-judged packet within the grace: the entry was retired
    /// and the packet handed to OVS (its verdict may have changed).
    RefreshUnconfirmed = 13,
    /// A packet from a pod with a source address or MAC not its own: handed to OVS (whose
    /// port security drops it) without touching the flow or Service maps.
    ForeignSource = 14,
    /// A packet OVS encapsulated for another node, of a local pod's flow: how OVS
    /// encapsulated it was recorded ([`TUNNEL_FLOWS_MAP`]); the packet went on untouched.
    TunnelLearned = 15,
    /// A packet OVS encapsulated for another node that taught nothing (a control packet, an
    /// inner frame not parsed, a source that is no local pod of the default VPC): it went
    /// on untouched.
    TunnelNotLearned = 16,
    /// Encapsulated by the fast path as OVS did, and sent out of the tunnel NIC.
    TunnelFastHit = 17,
    /// The kernel refused to make room for the outer headers (or to write them): handed to
    /// OVS unchanged.
    TunnelEncapFailed = 18,
    /// A tunnel packet from another node delivered into a local pod by the fast path: its
    /// flow was delivered by OVS with the same outer source and tunnel header.
    TunnelRxFastHit = 19,
    /// A tunnel packet from another node handed to OVS (through the split uplink) with its
    /// outer headers recorded: OVS delivering it confirms the flow for the receive fast path.
    TunnelRxPending = 20,
    /// A packet on a split uplink with nowhere to go (its pair is not registered): passed
    /// to the node's stack, counted.
    UplinkUnpaired = 21,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::FastHit,
        Reason::Miss,
        Reason::HandoffToOvs,
        Reason::Learned,
        Reason::Invalidated,
        Reason::Expired,
        Reason::ParseFailure,
        Reason::MapFull,
        Reason::Control,
        Reason::Delivered,
        Reason::Refresh,
        Reason::Retired,
        Reason::UnknownPort,
        Reason::RefreshUnconfirmed,
        Reason::ForeignSource,
        Reason::TunnelLearned,
        Reason::TunnelNotLearned,
        Reason::TunnelFastHit,
        Reason::TunnelEncapFailed,
        Reason::TunnelRxFastHit,
        Reason::TunnelRxPending,
        Reason::UplinkUnpaired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::FastHit => "fast_hit",
            Reason::Miss => "miss",
            Reason::HandoffToOvs => "handoff_to_ovs",
            Reason::Learned => "learned",
            Reason::Invalidated => "invalidated",
            Reason::Expired => "expired",
            Reason::ParseFailure => "parse_failure",
            Reason::MapFull => "map_full",
            Reason::Control => "control",
            Reason::Delivered => "delivered",
            Reason::Refresh => "refresh",
            Reason::Retired => "retired",
            Reason::UnknownPort => "unknown_port",
            Reason::RefreshUnconfirmed => "refresh_unconfirmed",
            Reason::ForeignSource => "foreign_source",
            Reason::TunnelLearned => "tunnel_learned",
            Reason::TunnelNotLearned => "tunnel_not_learned",
            Reason::TunnelFastHit => "tunnel_fast_hit",
            Reason::TunnelEncapFailed => "tunnel_encap_failed",
            Reason::TunnelRxFastHit => "tunnel_rx_fast_hit",
            Reason::TunnelRxPending => "tunnel_rx_pending",
            Reason::UplinkUnpaired => "uplink_unpaired",
        }
    }

    pub const fn from_u32(raw: u32) -> Option<Reason> {
        if (raw as usize) < Self::ALL.len() {
            Some(Self::ALL[raw as usize])
        } else {
            None
        }
    }
}

/// Key of [`REASONS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReasonKey {
    pub ifindex: u32,
    pub reason: u32,
}

// ---- Tunnels (a local pod's flows to other nodes, as OVS encapsulated them) --------------------

/// UDP port of Geneve (OVN's default encapsulation).
pub const GENEVE_PORT: u16 = 6081;
/// UDP port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// Bytes of an encapsulated packet kept per flow: the outer Ethernet, IPv4, UDP and tunnel
/// headers (Geneve with up to 16 bytes of options) and the inner Ethernet header.
pub const TUNNEL_HEADER_MAX: usize = 80;

/// LRU hash `FlowKey -> TunnelEntry`: how OVS encapsulated a local pod's flow to another node,
/// learned at the egress of the NIC the tunnel leaves through. The key is the inner flow, in
/// the source pod's scope.
pub const TUNNEL_FLOWS_MAP: &str = "KOVN_TUNNEL_FLOWS";
pub const TUNNEL_FLOWS_MAX_ENTRIES: u32 = 65_536;
/// Array of one [`Scope`]: the default VPC's, the scope whose cross-node flows are learned
/// (an encapsulated packet says which logical datapath it belongs to, not which VPC scope of
/// this node; a source address is only taken as a local pod's within this one).
pub const DEFAULT_SCOPE_MAP: &str = "KOVN_DEFAULT_SCOPE";

/// What OVS emitted for one [`FlowKey`] leaving for another node.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelEntry {
    /// The NIC the encapsulated packet left through.
    pub egress_ifindex: u32,
    /// Where the inner Ethernet header starts in `header` (the outer headers' length).
    pub inner_offset: u32,
    /// The policy generation the entry was learned in.
    pub generation: u64,
    pub last_seen_ns: u64,
    /// When OVS last emitted a packet of the flow (learned or confirmed), or a re-judged
    /// packet was last sent to it.
    pub last_slow_ns: u64,
    /// [`flow_flags`]: `REFRESH_PENDING` while a re-judged packet waits for OVS.
    pub flags: u32,
    pub _pad: u32,
    /// The packet's first [`TUNNEL_HEADER_MAX`] bytes: outer headers, then the inner frame.
    pub header: [u8; TUNNEL_HEADER_MAX],
}

/// LRU hash `FlowKey -> TunnelRxEntry`: a flow from another node's pod to a local pod of the
/// default VPC, as it arrives on the node's uplink (outer source, tunnel header) and as OVS
/// delivered it (the pod's port, the MACs). The key is the inner flow in the default VPC's
/// scope.
pub const TUNNEL_RX_MAP: &str = "KOVN_TUNNEL_RX";
pub const TUNNEL_RX_MAX_ENTRIES: u32 = 65_536;
/// Bytes of the tunnel header (after outer UDP) an arriving packet must repeat: Geneve's base
/// header and OVN's 8-byte option (VNI = logical datapath, the option = logical in and out
/// ports), or VXLAN's header and the start of the inner frame.
pub const TUNNEL_RX_HEADER: usize = 16;

/// One flow arriving from another node ([`TUNNEL_RX_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelRxEntry {
    /// The local pod's host veth (0 until OVS delivered the flow).
    pub dst_host_ifindex: u32,
    /// [`rx_flags`], and [`flow_flags::REFRESH_PENDING`].
    pub flags: u32,
    /// The policy generation the entry was recorded (pending) or confirmed in.
    pub generation: u64,
    pub last_seen_ns: u64,
    /// When the uplink last handed one of the flow's packets to OVS.
    pub last_slow_ns: u64,
    /// The outer IPv4 source (another node's tunnel endpoint), network order.
    pub outer_src: [u8; 4],
    /// Where the inner Ethernet header starts (the outer headers' length).
    pub inner_offset: u32,
    /// The [`TUNNEL_RX_HEADER`] bytes after the outer UDP header.
    pub tunnel: [u8; TUNNEL_RX_HEADER],
    /// The MACs OVS delivered the flow with (inner source, the pod's).
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub _pad: u32,
}

/// [`TunnelRxEntry::flags`].
pub mod rx_flags {
    /// OVS delivered a packet of the flow that arrived with the recorded outer headers, in
    /// the entry's generation: the fast path may deliver the flow's later packets.
    pub const CONFIRMED: u32 = 1;
}

/// Hash `ifindex -> ifindex` of the split uplink (OVS's userspace datapath reads a NIC with
/// AF_PACKET taps, which run before TC: a NIC the receive fast path serves leaves OVS, and a
/// veth pair takes its place). For the NIC: the pair's end whose egress OVS reads from (where
/// slow-path packets go). For that end: the NIC (where OVS's packets leave). A NIC OVS does not
/// read (the kernel's tunnels) maps to 0: slow-path packets go up the node's stack.
pub const UPLINKS_MAP: &str = "KOVN_UPLINKS";
pub const UPLINKS_MAX_ENTRIES: u32 = 64;

/// Array of one u32: non-zero lets `kovn_from_pod` replay learned encapsulations (the
/// cross-node fast path); zero (the default, until it is measured and on by default) only
/// learns them.
pub const CROSS_NODE_MAP: &str = "KOVN_CROSS_NODE";
/// The mark of a packet the fast path encapsulated itself: the tunnel observer does not take
/// it for OVS's (only OVS's own packets confirm an entry). Outside the probe proxy's
/// `0x6b760000/0xffff0000`.
pub const REPLAY_MARK: u32 = 0x6b77_0001;

// ---- Services (ClusterIP load balancing) -------------------------------------------------------

/// Key of [`SERVICES_MAP`]: a Service's virtual IP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The scope of the VPC whose pods reach the Service at this VIP.
    pub scope: Scope,
    pub vip: IpBytes,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub _pad: u8,
}

/// Value of [`SERVICES_MAP`]: how to pick a backend for a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Key of the service's Maglev table in [`MAGLEV_MAP`] and of its counters.
    pub id: u32,
    /// Ready backends; 0 means "no endpoints": the client gets an ICMP port unreachable.
    pub backend_count: u32,
    /// [`service_flags`].
    pub flags: u32,
    /// sessionAffinity ClientIP: how long a client stays on its backend (seconds).
    pub affinity_timeout_s: u32,
}

/// Bits of [`ServiceEntry::flags`].
pub mod service_flags {
    /// sessionAffinity: ClientIP.
    pub const AFFINITY: u32 = 1;
}

/// Value of [`BACKENDS_MAP`] (key: backend id, u32): where a chosen backend is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceBackend {
    pub ip: IpBytes,
    pub port: u16,
    pub _pad: u16,
    /// The service the backend belongs to: a restarted agent regroups backends by it and keeps
    /// their ids, which the LB conntrack entries of established connections hold.
    pub service_id: u32,
}

/// Prime size of every service's Maglev lookup table (Maglev's M; Cilium's default too). With
/// M ≥ 100 × backends, a backend change moves about 1/backends of the table and no more.
pub const MAGLEV_TABLE_SIZE: usize = 16381;

/// A service's Maglev lookup table: slot → backend id. The only value of the one-element
/// inner array of [`MAGLEV_MAP`]: the agent builds a new table in a new inner map and swaps
/// the outer entry, so a packet sees the old table or the new one, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    pub backends: [u32; MAGLEV_TABLE_SIZE],
}

/// Value of [`LB_CONNTRACK_MAP`] (key: the client's [`FlowKey`] to the VIP): the backend a
/// connection is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbConnection {
    pub backend_id: u32,
    pub service_id: u32,
    pub last_seen_ns: u64,
    /// The source port towards the backend: the client's, unless that would make the
    /// connection's tuple after DNAT one another VIP's connection already has (then a free
    /// one, as nf_nat picks; replies get the client's port back).
    pub source_port: u16,
    pub _pad: [u16; 3],
}

/// Value of [`LB_REVERSE_NAT_MAP`] (key: the backend's reply [`FlowKey`]): what the reply's
/// source is rewritten to before the client sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbReverseNat {
    pub vip: IpBytes,
    pub port: u16,
    /// The client port (hairpin: the destination is rewritten back to it).
    pub client_port: u16,
    /// [`reverse_nat_flags`].
    pub flags: u32,
}

/// Bits of [`LbReverseNat::flags`].
pub mod reverse_nat_flags {
    /// A pod reaching itself through its own Service: the request was source-NATed to the
    /// VIP and delivered straight back; the reply's destination is the pod again.
    pub const HAIRPIN: u32 = 1;
}

/// Key of [`LB_AFFINITY_MAP`]: one client of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub client: IpBytes,
    pub service_id: u32,
}

/// Value of [`LB_AFFINITY_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityEntry {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_seen_ns: u64,
}

/// Key of [`SERVICE_COUNTERS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceCounterKey {
    pub service_id: u32,
    /// A [`ServiceEvent`] as u32.
    pub event: u32,
}

/// What happened to a packet addressed to a VIP; counted per service.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceEvent {
    /// A packet was translated to a backend (new or existing connection).
    Hit = 0,
    /// A new connection was balanced (Maglev or affinity).
    NewConnection = 1,
    /// No ready backend: the client got an ICMP port unreachable.
    NoBackend = 2,
    /// The LB conntrack map was full: the connection was balanced but not pinned.
    ConntrackFull = 3,
    /// A pod reached itself through the service.
    Hairpin = 4,
}

impl ServiceEvent {
    pub const ALL: [ServiceEvent; 5] = [
        ServiceEvent::Hit,
        ServiceEvent::NewConnection,
        ServiceEvent::NoBackend,
        ServiceEvent::ConntrackFull,
        ServiceEvent::Hairpin,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceEvent::Hit => "hit",
            ServiceEvent::NewConnection => "new_connection",
            ServiceEvent::NoBackend => "no_backend",
            ServiceEvent::ConntrackFull => "conntrack_full",
            ServiceEvent::Hairpin => "hairpin",
        }
    }

    pub const fn from_u32(raw: u32) -> Option<ServiceEvent> {
        if (raw as usize) < Self::ALL.len() {
            Some(Self::ALL[raw as usize])
        } else {
            None
        }
    }
}

/// Hash `ServiceKey -> ServiceEntry`.
pub const SERVICES_MAP: &str = "KOVN_SERVICES";
pub const SERVICES_MAX_ENTRIES: u32 = 65_536;
/// Hash `u32 backend id -> ServiceBackend`.
pub const BACKENDS_MAP: &str = "KOVN_BACKENDS";
pub const BACKENDS_MAX_ENTRIES: u32 = 262_144;
/// Hash of maps `u32 service id -> Array<MaglevTable, 1>`.
pub const MAGLEV_MAP: &str = "KOVN_MAGLEV";
pub const MAGLEV_MAX_ENTRIES: u32 = 65_536;
/// LRU hash `FlowKey (client -> VIP) -> LbConnection`.
pub const LB_CONNTRACK_MAP: &str = "KOVN_LB_CT";
/// LRU hash `FlowKey (backend -> client) -> LbReverseNat`.
pub const LB_REVERSE_NAT_MAP: &str = "KOVN_LB_REVNAT";
pub const LB_CONNTRACK_MAX_ENTRIES: u32 = 262_144;
/// LRU hash `AffinityKey -> AffinityEntry`.
pub const LB_AFFINITY_MAP: &str = "KOVN_LB_AFFINITY";
pub const LB_AFFINITY_MAX_ENTRIES: u32 = 65_536;
/// Per-CPU hash `ServiceCounterKey -> u64`.
pub const SERVICE_COUNTERS_MAP: &str = "KOVN_SERVICE_COUNTERS";
pub const SERVICE_COUNTERS_MAX_ENTRIES: u32 = 65_536;

/// Names of the TC programs in the object, as the loader looks them up.
pub mod programs {
    /// Counts packets and bytes at a TC ingress hook.
    pub const COUNT_INGRESS: &str = "kovn_count_ingress";
    /// Counts packets and bytes at a TC egress hook.
    pub const COUNT_EGRESS: &str = "kovn_count_egress";
    /// On a pod's host veth (ingress): fast path or hand-off to OVS.
    pub const FROM_POD: &str = "kovn_from_pod";
    /// On the outer end of a pod's OVS port pair (ingress): learn, then deliver into the pod.
    pub const TO_POD: &str = "kovn_to_pod";
    /// On the NIC the node's tunnels leave through (egress): learn how OVS encapsulated a
    /// local pod's flow; changes nothing.
    pub const TUNNEL_EGRESS: &str = "kovn_tunnel_egress";
    /// On the node's uplink NIC (ingress): the receive fast path, else to OVS.
    pub const UPLINK_INGRESS: &str = "kovn_uplink_ingress";
    /// On the split uplink's pair (ingress): what OVS sends leaves through the NIC.
    pub const UPLINK_RETURN: &str = "kovn_uplink_return";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: this and every type below are `#[repr(C)]`, `Copy`, made only of integers and
    // byte arrays with explicit padding fields, so every bit pattern the kernel hands back is
    // a valid value.
    unsafe impl aya::Pod for super::IfCounterKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TunnelEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TunnelRxEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PodPort {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DatapathConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReasonKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceBackend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MaglevTable {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbConnection {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbReverseNat {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AffinityEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceCounterKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_is_the_standard_mapped_form() {
        extern crate std;
        for v4 in [
            [10, 16, 0, 2],
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [192, 0, 2, 1],
        ] {
            let standard = std::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets();
            assert_eq!(ipv4_mapped(v4), standard);
        }
    }

    #[test]
    fn protocol_numbers_and_names_round_trip() {
        for p in L4Proto::ALL {
            assert_eq!(L4Proto::from_number(p.number()), Some(p));
        }
        assert_eq!(L4Proto::from_kubernetes("TCP"), Some(L4Proto::Tcp));
        assert_eq!(
            L4Proto::from_kubernetes("ICMP"),
            None,
            "not a Service protocol"
        );
        assert_eq!(proto_name(17), "udp");
        assert_eq!(proto_name(47), "?");
    }

    #[test]
    fn abi_sizes_have_no_padding() {
        assert_eq!(core::mem::size_of::<IfCounterKey>(), 8);
        assert_eq!(core::mem::size_of::<IfCounters>(), 16);
    }

    #[test]
    fn map_abi_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 44);
        assert_eq!(core::mem::size_of::<FlowEntry>(), 48);
        assert_eq!(core::mem::size_of::<TunnelEntry>(), 120);
        assert_eq!(core::mem::size_of::<TunnelRxEntry>(), 72);
        assert_eq!(core::mem::size_of::<PodPort>(), 36);
        assert_eq!(core::mem::size_of::<EndpointKey>(), 20);
        assert_eq!(core::mem::size_of::<DatapathConfig>(), 32);
        assert_eq!(core::mem::size_of::<ReasonKey>(), 8);
        assert_eq!(core::mem::size_of::<ServiceKey>(), 24);
        assert_eq!(core::mem::size_of::<ServiceEntry>(), 16);
        assert_eq!(core::mem::size_of::<ServiceBackend>(), 24);
        assert_eq!(core::mem::size_of::<MaglevTable>(), MAGLEV_TABLE_SIZE * 4);
        assert_eq!(core::mem::size_of::<LbConnection>(), 24);
        assert_eq!(core::mem::size_of::<LbReverseNat>(), 24);
        assert_eq!(core::mem::size_of::<AffinityKey>(), 20);
        assert_eq!(core::mem::size_of::<AffinityEntry>(), 16);
        assert_eq!(core::mem::size_of::<ServiceCounterKey>(), 8);
    }

    #[test]
    fn reasons_round_trip() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_u32(99), None);
    }

    #[test]
    fn per_cpu_values_are_summed() {
        let per_cpu = [
            IfCounters {
                packets: 1,
                bytes: 100,
            },
            IfCounters {
                packets: 2,
                bytes: 50,
            },
        ];
        assert_eq!(
            IfCounters::sum(&per_cpu),
            IfCounters {
                packets: 3,
                bytes: 150
            }
        );
    }

    #[test]
    fn direction_round_trips() {
        for d in [Direction::Ingress, Direction::Egress] {
            assert_eq!(Direction::from_u32(d as u32), Some(d));
        }
        assert_eq!(Direction::from_u32(7), None);
    }
}
