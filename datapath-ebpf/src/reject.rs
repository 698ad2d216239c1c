//! "Nobody serves this port": the packet a pod sent to a VIP without ready backends is turned,
//! in place, into the ICMP port unreachable kube-proxy's REJECT rule would send back.

use aya_ebpf::{helpers::bpf_csum_diff, helpers::bpf_skb_change_tail, programs::TcContext};

use crate::parse::Packet;

const ETH_HLEN: usize = 14;
/// The quoted original: its IPv4 header (options are not supported) and 8 bytes of L4.
const QUOTE_LEN: usize = 20 + 8;
/// Ethernet + IPv4 + ICMP header + quote.
const REPLY_LEN: u32 = (ETH_HLEN + 20 + 8 + QUOTE_LEN) as u32;

struct RejectError;

/// Rewrites the packet into an ICMP destination unreachable (port unreachable) from the VIP to
/// the client, ready to be delivered back into the client. IPv4 without options only; anything
/// else is an error (false) and the caller drops the packet. Its own BPF-to-BPF call: its
/// buffers need their own stack frame.
#[inline(never)]
pub(crate) fn port_unreachable(ctx: &TcContext, packet: &Packet) -> bool {
    build_port_unreachable(ctx, packet).is_ok()
}

#[inline(always)]
fn build_port_unreachable(ctx: &TcContext, packet: &Packet) -> Result<(), RejectError> {
    if packet.ipv6 || packet.l3 != ETH_HLEN || packet.l4 != ETH_HLEN + 20 {
        return Err(RejectError);
    }
    let quote: [u8; QUOTE_LEN] = ctx.load(ETH_HLEN).map_err(|_| RejectError)?;
    // SAFETY: the context is the skb the kernel handed us; growing or trimming its tail is
    // what the helper is for.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, REPLY_LEN, 0) } != 0 {
        return Err(RejectError);
    }
    // Ethernet: back to where it came from.
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&packet.src_mac);
    macs[6..].copy_from_slice(&packet.dst_mac);
    ctx.store(0, &macs, 0).map_err(|_| RejectError)?;

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
