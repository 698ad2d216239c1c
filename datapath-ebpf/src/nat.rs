//! Address and port rewriting with incremental checksum updates, for the service load
//! balancer. The TC checksum helpers update the L4 checksum correctly whether the packet
//! carries a full checksum or a partial one (a pod with tx checksum offload on), so no packet
//! is ever re-checksummed by hand here.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use datapath_common::IpBytes;

use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Packet};

/// Which end of the packet to rewrite.
#[derive(Clone, Copy)]
pub(crate) enum End {
    Source,
    Destination,
}

/// Rewrite failed (the packet could not be written); the caller hands it on untouched.
struct RewriteError;

/// Offset of the L4 checksum field, and the flags its updates need.
#[inline(always)]
fn l4_checksum(packet: &Packet) -> Result<(usize, u64), RewriteError> {
    match packet.key.proto {
        IPPROTO_TCP => Ok((packet.l4 + 16, 0)),
        // A UDP checksum of 0 means "none" (IPv4) and must stay 0.
        IPPROTO_UDP => Ok((packet.l4 + 6, u64::from(BPF_F_MARK_MANGLED_0))),
        _ => Err(RewriteError),
    }
}

/// Rewrites one end's address and port, fixing the IPv4 header checksum and the TCP/UDP
/// checksum (whose pseudo-header covers the addresses), and the parsed key to match; false if
/// the packet could not be written. A BPF-to-BPF call: inlined at each use it would multiply
/// its buffers on the callers' stack. (Its signature has no Rust enum: the kernel rejects the
/// BTF rustc emits for enums with data, and BTF-defined maps need the BTF loaded.)
#[inline(never)]
pub(crate) fn rewrite(
    ctx: &TcContext,
    packet: &mut Packet,
    end: End,
    ip: &IpBytes,
    port: u16,
) -> bool {
    rewrite_checked(ctx, packet, end, ip, port).is_ok()
}

/// Rewrites only the port at `end`, keeping the address.
#[inline(never)]
pub(crate) fn rewrite_port(ctx: &TcContext, packet: &mut Packet, end: End, port: u16) -> bool {
    let ip = match end {
        End::Source => packet.key.src,
        End::Destination => packet.key.dst,
    };
    rewrite_checked(ctx, packet, end, &ip, port).is_ok()
}

#[inline(always)]
fn rewrite_checked(
    ctx: &TcContext,
    packet: &mut Packet,
    end: End,
    ip: &IpBytes,
    port: u16,
) -> Result<(), RewriteError> {
    let (csum_off, csum_flags) = l4_checksum(packet)?;
    let (ip_off_v4, ip_off_v6, port_off) = match end {
        End::Source => (packet.l3 + 12, packet.l3 + 8, packet.l4),
        End::Destination => (packet.l3 + 16, packet.l3 + 24, packet.l4 + 2),
    };
    let old_ip = match end {
        End::Source => packet.key.src,
        End::Destination => packet.key.dst,
    };
    if old_ip != *ip {
        if packet.ipv6 {
            let mut old = old_ip;
            let mut new = *ip;
            // SAFETY: both buffers are 16 bytes on this program's stack.
            let diff = unsafe {
                bpf_csum_diff(old.as_mut_ptr().cast(), 16, new.as_mut_ptr().cast(), 16, 0)
            };
            if diff < 0 {
                return Err(RewriteError);
            }
            ctx.l4_csum_replace(
                csum_off,
                0,
                diff as u64,
                u64::from(BPF_F_PSEUDO_HDR) | csum_flags,
            )
            .map_err(|_| RewriteError)?;
            ctx.store(ip_off_v6, ip, 0).map_err(|_| RewriteError)?;
        } else {
            let old = u32::from_ne_bytes([old_ip[12], old_ip[13], old_ip[14], old_ip[15]]);
            let new = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
            ctx.l3_csum_replace(packet.l3 + 10, u64::from(old), u64::from(new), 4)
                .map_err(|_| RewriteError)?;
            ctx.l4_csum_replace(
                csum_off,
                u64::from(old),
                u64::from(new),
                u64::from(BPF_F_PSEUDO_HDR) | csum_flags | 4,
            )
            .map_err(|_| RewriteError)?;
            ctx.store(ip_off_v4, &new, 0).map_err(|_| RewriteError)?;
        }
    }
    let old_port = match end {
        End::Source => packet.key.sport,
        End::Destination => packet.key.dport,
    };
    if old_port != port {
        let (old, new) = (old_port.to_be(), port.to_be());
        ctx.l4_csum_replace(csum_off, u64::from(old), u64::from(new), csum_flags | 2)
            .map_err(|_| RewriteError)?;
        ctx.store(port_off, &new, 0).map_err(|_| RewriteError)?;
    }
    match end {
        End::Source => {
            packet.key.src = *ip;
            packet.key.sport = port;
        }
        End::Destination => {
            packet.key.dst = *ip;
            packet.key.dport = port;
        }
    }
    Ok(())
}
