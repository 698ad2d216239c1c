//! Header parsing: Ethernet (one optional VLAN tag), IPv4, IPv6 (a bounded chain of extension
//! headers), TCP, UDP, ICMP, ICMPv6 → a [`FlowKey`] and what the programs need to decide.
//! Every read goes through `bpf_skb_load_bytes` (`TcContext::load`), so bounds are checked
//! in one place and non-linear packets parse like linear ones. Anything unexpected is an
//! error, and the caller sends the packet to OVS.

use aya_ebpf::programs::TcContext;
use datapath_common::{FlowKey, IpBytes};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers walked before giving up (and sending the packet to OVS).
const MAX_IPV6_EXTENSIONS: usize = 4;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// Why a packet could not be parsed (all of them mean: let OVS handle it).
#[derive(Clone, Copy)]
pub(crate) enum ParseError {
    Truncated,
    Unsupported,
    Fragment,
}

/// A parsed packet.
pub(crate) struct Packet {
    pub key: FlowKey,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP/ICMP header.
    pub l4: usize,
    pub ipv6: bool,
    pub tcp_flags: u8,
    /// ICMP errors, neighbour discovery and other ICMP that must go through OVS.
    pub icmp_control: bool,
}

impl Packet {
    /// A packet of nothing, to parse into.
    #[inline(always)]
    pub fn empty() -> Packet {
        Packet {
            key: FlowKey::default(),
            src_mac: [0; 6],
            dst_mac: [0; 6],
            l3: 0,
            l4: 0,
            ipv6: false,
            tcp_flags: 0,
            icmp_control: false,
        }
    }

    /// SYN, FIN, RST and ICMP control messages always go through OVS.
    #[inline(always)]
    pub fn is_control(&self) -> bool {
        self.icmp_control || self.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0
    }

    /// FIN and RST end a connection: its entry is retired.
    #[inline(always)]
    pub fn ends_connection(&self) -> bool {
        self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, ParseError> {
    ctx.load::<T>(offset).map_err(|_| ParseError::Truncated)
}

#[inline(always)]
fn load_u16_be(ctx: &TcContext, offset: usize) -> Result<u16, ParseError> {
    Ok(u16::from_be(load::<u16>(ctx, offset)?))
}

/// Parses the packet into `packet`, which must be [`Packet::empty`] (only the fields the
/// headers set are written: zeroing it here again would cost another `memset`, which the BPF
/// backend emits as a byte-by-byte loop); false if it cannot be parsed (the caller lets OVS
/// handle it). A BPF-to-BPF call: its load buffers stay off the callers' stack frames, which the
/// service balancer's call chain needs (512 bytes for the whole chain). No Rust enum in the
/// signature: the kernel rejects the BTF rustc emits for enums with data.
#[inline(always)]
pub(crate) fn parse(ctx: &TcContext, packet: &mut Packet) -> bool {
    parse_at(ctx, 0, packet)
}

/// [`parse`] of the frame that starts `base` bytes into the packet (an encapsulated one's
/// inner frame); the offsets in `packet` count from the packet's start.
#[inline(never)]
pub(crate) fn parse_at(ctx: &TcContext, base: usize, packet: &mut Packet) -> bool {
    parse_into(ctx, base, packet).is_ok()
}

/// Fills `packet` in place (a Packet built here and copied out costs two of them on the stack).
#[inline(always)]
fn parse_into(ctx: &TcContext, base: usize, packet: &mut Packet) -> Result<(), ParseError> {
    packet.dst_mac = load(ctx, base)?;
    packet.src_mac = load(ctx, base + 6)?;
    let mut ethertype = load_u16_be(ctx, base + 12)?;
    let mut l3 = base + ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        ethertype = load_u16_be(ctx, base + ETH_HLEN + 2)?;
        l3 += VLAN_HLEN;
    }
    packet.l3 = l3;
    let (proto, l4) = match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l3, &mut packet.key)?,
        ETH_P_IPV6 => {
            packet.ipv6 = true;
            parse_ipv6(ctx, l3, &mut packet.key)?
        }
        _ => return Err(ParseError::Unsupported),
    };
    packet.key.proto = proto;
    packet.l4 = l4;
    match proto {
        IPPROTO_TCP => {
            // Ports and flags in one load: bytes 0..14 of the TCP header.
            let tcp: [u8; 14] = load(ctx, l4)?;
            packet.key.sport = u16::from_be_bytes([tcp[0], tcp[1]]);
            packet.key.dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            packet.tcp_flags = tcp[13];
        }
        IPPROTO_UDP => {
            let ports: [u8; 4] = load(ctx, l4)?;
            packet.key.sport = u16::from_be_bytes([ports[0], ports[1]]);
            packet.key.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp_type: u8 = load(ctx, l4)?;
            let echo = if proto == IPPROTO_ICMP {
                icmp_type == 0 || icmp_type == 8
            } else {
                icmp_type == 128 || icmp_type == 129
            };
            if echo {
                // Requests and replies of one echo session share the identifier.
                packet.key.sport = load_u16_be(ctx, l4 + 4)?;
            } else {
                packet.icmp_control = true;
            }
        }
        _ => return Err(ParseError::Unsupported),
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, l3: usize, key: &mut FlowKey) -> Result<(u8, usize), ParseError> {
    // The fixed header in one load.
    let h: [u8; 20] = load(ctx, l3)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(ParseError::Unsupported);
    }
    // More-fragments flag or a fragment offset: OVS reassembles, we do not.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(ParseError::Fragment);
    }
    key.src = datapath_common::ipv4_mapped([h[12], h[13], h[14], h[15]]);
    key.dst = datapath_common::ipv4_mapped([h[16], h[17], h[18], h[19]]);
    Ok((h[9], l3 + ihl))
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, l3: usize, key: &mut FlowKey) -> Result<(u8, usize), ParseError> {
    let src: IpBytes = load(ctx, l3 + 8)?;
    let dst: IpBytes = load(ctx, l3 + 24)?;
    key.src = src;
    key.dst = dst;
    let mut next: u8 = load(ctx, l3 + 6)?;
    let mut offset = l3 + 40;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units beyond 8.
            0 | 43 | 60 => {
                let header: [u8; 2] = load(ctx, offset)?;
                next = header[0];
                offset += (usize::from(header[1]) + 1) * 8;
            }
            44 => return Err(ParseError::Fragment),
            _ => return Ok((next, offset)),
        }
    }
    Err(ParseError::Unsupported)
}
