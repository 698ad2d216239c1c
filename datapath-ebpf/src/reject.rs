//! "Nobody serves this port": the packet a pod sent to a VIP without ready backends is turned,
//! in place, into the ICMP (or ICMPv6) port unreachable kube-proxy's REJECT rule would send
//! back.

use aya_ebpf::{helpers::bpf_csum_diff, helpers::bpf_skb_change_tail, programs::TcContext};

use crate::parse::{IPPROTO_TCP, Packet};

const ETH_HLEN: usize = 14;
/// The quoted original: its IPv4 header (options are not supported) and 8 bytes of L4.
const QUOTE_LEN: usize = 20 + 8;
/// Ethernet + IPv4 + ICMP header + quote.
const REPLY_LEN: u32 = (ETH_HLEN + 20 + 8 + QUOTE_LEN) as u32;
const IPV6_HLEN: usize = 40;
/// The quoted original for ICMPv6: its IPv6 header (no extension headers) and 8 bytes of L4.
const QUOTE6_LEN: usize = IPV6_HLEN + 8;
/// ICMPv6 header and quote: the IPv6 payload of the reply.
const ICMP6_LEN: usize = 8 + QUOTE6_LEN;
const NEXTHDR_ICMPV6: u8 = 58;
const TCP_HLEN: usize = 20;
const TCP_FIN_FLAG: u8 = 0x01;
const TCP_SYN_FLAG: u8 = 0x02;
const TCP_RST_FLAG: u8 = 0x04;
const TCP_ACK_FLAG: u8 = 0x10;

struct RejectError;

/// Rewrites the packet into an ICMP destination unreachable (port unreachable) from the VIP to
/// the client, ready to be delivered back into the client. IPv4 without options and IPv6
/// without extension headers; anything else is an error (false) and the caller drops the
/// packet.
#[inline(always)]
pub(crate) fn port_unreachable(ctx: &TcContext, packet: &Packet) -> bool {
    if packet.ipv6 && packet.key.proto == IPPROTO_TCP {
        // A TCP client is told with a reset: Linux takes an ICMPv6 error that arrives while
        // connect() still holds the socket (it does when the answer comes this fast) as a
        // soft error, and would only give up on the retransmitted SYN, a second later.
        tcp_reset_v6(ctx, packet)
    } else if packet.ipv6 {
        port_unreachable_v6(ctx, packet)
    } else {
        port_unreachable_v4(ctx, packet)
    }
}

/// Its own BPF-to-BPF call: its buffers need their own stack frame.
#[inline(never)]
fn port_unreachable_v4(ctx: &TcContext, packet: &Packet) -> bool {
    build_port_unreachable(ctx, packet).is_ok()
}

/// Its own BPF-to-BPF call, like the IPv4 one.
#[inline(never)]
fn port_unreachable_v6(ctx: &TcContext, packet: &Packet) -> bool {
    build_port_unreachable_v6(ctx, packet).is_ok()
}

/// Its own BPF-to-BPF call, like the others.
#[inline(never)]
fn tcp_reset_v6(ctx: &TcContext, packet: &Packet) -> bool {
    build_tcp_reset_v6(ctx, packet).is_ok()
}

/// A TCP reset from the VIP to the client, acknowledging what the client sent (RFC 9293,
/// 3.10.7.1: a segment to a closed port).
#[inline(always)]
fn build_tcp_reset_v6(ctx: &TcContext, packet: &Packet) -> Result<(), RejectError> {
    if !packet.ipv6 || packet.l3 != ETH_HLEN || packet.l4 != ETH_HLEN + IPV6_HLEN {
        return Err(RejectError);
    }
    let original: [u8; IPV6_HLEN + TCP_HLEN] = ctx.load(ETH_HLEN).map_err(|_| RejectError)?;
    let tcp = &original[IPV6_HLEN..];
    let payload = u16::from_be_bytes([original[4], original[5]]) as u32;
    let header = ((tcp[12] >> 4) as u32) * 4;
    let flags = tcp[13];
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    // What the reset acknowledges: the data, and the SYN and FIN that count as one byte each.
    let acked = seq
        .wrapping_add(payload.saturating_sub(header))
        .wrapping_add((flags & TCP_SYN_FLAG != 0) as u32)
        .wrapping_add((flags & TCP_FIN_FLAG != 0) as u32);

    // Pseudo-header and TCP header in one buffer, summed at once.
    let mut sum = [0u8; IPV6_HLEN + TCP_HLEN];
    sum[..16].copy_from_slice(&original[24..40]); // from the VIP
    sum[16..32].copy_from_slice(&original[8..24]); // to the client
    sum[32..36].copy_from_slice(&(TCP_HLEN as u32).to_be_bytes());
    sum[39] = IPPROTO_TCP;
    sum[40..42].copy_from_slice(&tcp[2..4]);
    sum[42..44].copy_from_slice(&tcp[0..2]);
    // With ACK set in what it answers, the reset takes its sequence number from that ACK.
    let reset_seq = if flags & TCP_ACK_FLAG != 0 { ack } else { 0 };
    sum[44..48].copy_from_slice(&reset_seq.to_be_bytes());
    sum[48..52].copy_from_slice(&acked.to_be_bytes());
    sum[52] = 0x50; // 20-byte header
    sum[53] = TCP_RST_FLAG | TCP_ACK_FLAG;
    let csum = fold(checksum(&mut sum)?);
    sum[56..58].copy_from_slice(&csum.to_ne_bytes());
    store_v6_reply(ctx, packet, &sum, IPPROTO_TCP)
}

/// ICMPv6 destination unreachable, code 4 (port unreachable), from the VIP to the client.
#[inline(always)]
fn build_port_unreachable_v6(ctx: &TcContext, packet: &Packet) -> Result<(), RejectError> {
    if !packet.ipv6 || packet.l3 != ETH_HLEN || packet.l4 != ETH_HLEN + IPV6_HLEN {
        return Err(RejectError);
    }
    // The checksum covers a pseudo-header (source, destination, length, next header) and the
    // ICMPv6 message; both are laid out in one buffer and summed at once.
    let mut sum = [0u8; IPV6_HLEN + ICMP6_LEN];
    let quote: [u8; QUOTE6_LEN] = ctx.load(ETH_HLEN).map_err(|_| RejectError)?;
    sum[..16].copy_from_slice(&quote[24..40]); // from the VIP
    sum[16..32].copy_from_slice(&quote[8..24]); // to the client
    sum[32..36].copy_from_slice(&(ICMP6_LEN as u32).to_be_bytes());
    sum[39] = NEXTHDR_ICMPV6;
    sum[40] = 1; // destination unreachable
    sum[41] = 4; // port unreachable
    sum[48..].copy_from_slice(&quote);
    let csum = fold(checksum(&mut sum)?);
    sum[42..44].copy_from_slice(&csum.to_ne_bytes());
    store_v6_reply(ctx, packet, &sum, NEXTHDR_ICMPV6)
}

/// Writes an IPv6 reply from `sum`, the checksummed buffer: a pseudo-header (source,
/// destination, length, next header) followed by the message. The pseudo-header has the IPv6
/// header's length, so the whole buffer is stored where the IPv6 header starts and the header
/// is then written over its pseudo-header.
#[inline(always)]
fn store_v6_reply<const N: usize>(
    ctx: &TcContext,
    packet: &Packet,
    sum: &[u8; N],
    next_header: u8,
) -> Result<(), RejectError> {
    turn_around(ctx, packet, (ETH_HLEN + N) as u32)?;
    ctx.store(ETH_HLEN, sum, 0).map_err(|_| RejectError)?;
    let mut ip = [0u8; IPV6_HLEN];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((N - IPV6_HLEN) as u16).to_be_bytes());
    ip[6] = next_header;
    ip[7] = 64;
    ip[8..40].copy_from_slice(&sum[..32]);
    ctx.store(ETH_HLEN, &ip, 0).map_err(|_| RejectError)
}

/// Trims (or grows) the packet to `len` bytes and turns its Ethernet header around: the reply
/// goes back to where the packet came from.
#[inline(always)]
fn turn_around(ctx: &TcContext, packet: &Packet, len: u32) -> Result<(), RejectError> {
    // SAFETY: the context is the skb the kernel handed us; growing or trimming its tail is
    // what the helper is for.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, len, 0) } != 0 {
        return Err(RejectError);
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&packet.src_mac);
    macs[6..].copy_from_slice(&packet.dst_mac);
    ctx.store(0, &macs, 0).map_err(|_| RejectError)
}

#[inline(always)]
fn build_port_unreachable(ctx: &TcContext, packet: &Packet) -> Result<(), RejectError> {
    if packet.ipv6 || packet.l3 != ETH_HLEN || packet.l4 != ETH_HLEN + 20 {
        return Err(RejectError);
    }
    let quote: [u8; QUOTE_LEN] = ctx.load(ETH_HLEN).map_err(|_| RejectError)?;
    turn_around(ctx, packet, REPLY_LEN)?;

    // ICMP header (type 3 code 3, checksum, unused) followed by the quote, checksummed whole.
    let mut icmp = [0u8; 8 + QUOTE_LEN];
    icmp[0] = 3;
    icmp[1] = 3;
    icmp[8..].copy_from_slice(&quote);
    let icmp_csum = fold(checksum(&mut icmp)?);
    icmp[2..4].copy_from_slice(&icmp_csum.to_ne_bytes());

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    let total = (20 + 8 + QUOTE_LEN) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&quote[16..20]); // from the VIP
    ip[16..20].copy_from_slice(&quote[12..16]); // to the client
    let ip_csum = fold(checksum(&mut ip)?);
    ip[10..12].copy_from_slice(&ip_csum.to_ne_bytes());

    ctx.store(ETH_HLEN, &ip, 0).map_err(|_| RejectError)?;
    ctx.store(ETH_HLEN + 20, &icmp, 0).map_err(|_| RejectError)
}

/// The one's-complement sum of `bytes` (a multiple of 4 long), not yet folded.
#[inline(always)]
fn checksum<const N: usize>(bytes: &mut [u8; N]) -> Result<u64, RejectError> {
    // SAFETY: `bytes` is an N-byte buffer on this program's stack.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            bytes.as_mut_ptr().cast(),
            N as u32,
            0,
        )
    };
    if sum < 0 {
        return Err(RejectError);
    }
    Ok(sum as u64)
}

/// Folds a 32-bit one's-complement sum into the 16-bit checksum field value.
#[inline(always)]
fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    // The sum is of the bytes as the CPU reads them; stored back the same way (to_ne_bytes),
    // the field holds the checksum in network order.
    !(s as u16)
}
