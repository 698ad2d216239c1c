//! One round of ICMP echo probes to a set of addresses, answered or not within a time-out.
//! A raw socket per address family (the controller runs with NET_RAW, as Kube-OVN's pings its
//! gateways); replies are matched on our identifier and sequence number, so other pings on
//! the host do not count.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// What one address did in a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Unanswered,
    /// The probe could not be sent (no raw socket, no route from this host): says nothing
    /// about the target.
    NotSent(String),
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(v4: bool, id: u16, seq: u16) -> Vec<u8> {
    let kind = if v4 { ECHO_REQUEST_V4 } else { ECHO_REQUEST_V6 };
    let mut packet = vec![kind, 0, 0, 0];
    packet.extend(id.to_be_bytes());
    packet.extend(seq.to_be_bytes());
    packet.extend(b"kovn-gw!");
    if v4 {
        // The kernel fills in ICMPv6 checksums on raw sockets, not ICMPv4 ones.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The (identifier, sequence) of an echo reply: IPv4 raw sockets deliver the IP header too.
fn echo_reply(v4: bool, packet: &[u8]) -> Option<(u16, u16)> {
    let icmp = if v4 {
        let header = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(header..)?
    } else {
        packet
    };
    let reply = if v4 { ECHO_REPLY_V4 } else { ECHO_REPLY_V6 };
    if *icmp.first()? != reply || icmp.len() < 8 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// Pings every address once and waits up to `timeout` for the replies. `round` goes into
/// the sequence numbers, so a late reply to an earlier round is not taken for this one.
/// Blocking: run it off the async workers.
pub fn ping_all(targets: &[IpAddr], round: u16, timeout: Duration) -> HashMap<IpAddr, Outcome> {
    let mut out: HashMap<IpAddr, Outcome> = HashMap::new();
    for v4 in [true, false] {
        let family: Vec<IpAddr> = targets
            .iter()
            .copied()
            .filter(|t| t.is_ipv4() == v4)
            .collect();
        if family.is_empty() {
            continue;
        }
        out.extend(ping_family(v4, &family, round, timeout));
    }
    out
}

fn ping_family(
    v4: bool,
    targets: &[IpAddr],
    round: u16,
    timeout: Duration,
) -> HashMap<IpAddr, Outcome> {
    let socket = if v4 {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
    } else {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            let why = format!("no raw ICMP socket: {e}");
            return targets
                .iter()
                .map(|t| (*t, Outcome::NotSent(why.clone())))
                .collect();
        }
    };
    let id = (std::process::id() & 0xffff) as u16;
    // The sequence number names the target: its index in this round, above the round's base.
    let base = round.wrapping_mul(targets.len().max(1) as u16);
    let mut out: HashMap<IpAddr, Outcome> = HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let seq = base.wrapping_add(i as u16);
        let to = SockAddr::from(SocketAddr::new(*target, 0));
        let outcome = match socket.send_to(&echo_request(v4, id, seq), &to) {
            Ok(_) => Outcome::Unanswered,
            Err(e) => Outcome::NotSent(e.to_string()),
        };
        out.insert(*target, outcome);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
    while out.values().any(|o| *o == Outcome::Unanswered) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            break;
        };
        // SAFETY: recv_from initialised the first `n` bytes.
        let packet: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let Some(source) = from.as_socket().map(|a| a.ip()) else {
            continue;
        };
        let Some((reply_id, seq)) = echo_reply(v4, &packet) else {
            continue;
        };
        let index = usize::from(seq.wrapping_sub(base));
        if reply_id == id && targets.get(index) == Some(&source) {
            out.insert(source, Outcome::Answered);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_carries_a_valid_checksum_and_its_reply_is_recognised() {
        let request = echo_request(true, 0x1234, 7);
        assert_eq!(
            checksum(&request),
            0,
            "a packet with its checksum sums to 0"
        );
        let mut reply = vec![0x45u8; 20];
        reply.extend(&request);
        reply[20] = ECHO_REPLY_V4;
        assert_eq!(echo_reply(true, &reply), Some((0x1234, 7)));
        reply[20] = ECHO_REQUEST_V4;
        assert_eq!(echo_reply(true, &reply), None, "a request is not a reply");
    }

    #[test]
    fn loopback_answers_and_an_unrouted_address_does_not() {
        // Raw sockets need NET_RAW: as root (CI), this is a real probe.
        if !sandbox::privileged("loopback_answers_and_an_unrouted_address_does_not") {
            return;
        }
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let out = ping_all(&[lo], 1, Duration::from_millis(500));
        assert_eq!(out[&lo], Outcome::Answered);
        // Nothing answers for TEST-NET-2 here: whether it is routed or not, no reply.
        let nowhere: IpAddr = "198.51.100.254".parse().unwrap();
        let out = ping_all(&[nowhere], 2, Duration::from_millis(200));
        assert_ne!(out[&nowhere], Outcome::Answered);
    }
}
