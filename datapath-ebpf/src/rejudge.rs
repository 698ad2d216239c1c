//! Whether a learned entry may carry a packet now: the checks every fast path makes, local or
//! across nodes, in one place. An entry of an older policy generation is a miss; an idle one
//! has expired; and every verdict is re-judged, whoever changed it: now and then a packet goes
//! through OVS (its conntrack stays alive too), and only OVS handling one of the flow's
//! packets again (a delivery on one node, an encapsulation seen leaving for another) clears
//! the pending mark. Unconfirmed past the grace, the entry goes: OVS judges every packet until
//! it forwards one again.

use datapath_common::{DatapathConfig, Reason, flow_flags};

/// None: the entry serves this packet. Some(reason): the packet goes to OVS, counted under
/// `reason`; with [`Reason::RefreshUnconfirmed`] the caller removes the entry.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stale(
    generation: u64,
    last_seen_ns: u64,
    last_slow_ns: &mut u64,
    flags: &mut u32,
    tcp: bool,
    now: u64,
    current_generation: u64,
    config: &DatapathConfig,
) -> Option<Reason> {
    if generation != current_generation {
        return Some(Reason::Invalidated);
    }
    let timeout = if tcp {
        config.tcp_timeout_ns
    } else {
        config.udp_timeout_ns
    };
    if now.saturating_sub(last_seen_ns) > timeout {
        return Some(Reason::Expired);
    }
    let since_slow = now.saturating_sub(*last_slow_ns);
    if *flags & flow_flags::REFRESH_PENDING != 0 {
        if since_slow > config.refresh_grace_ns() {
            return Some(Reason::RefreshUnconfirmed);
        }
    } else if since_slow > config.refresh_ns {
        *flags |= flow_flags::REFRESH_PENDING;
        *last_slow_ns = now;
        return Some(Reason::Refresh);
    }
    None
}
