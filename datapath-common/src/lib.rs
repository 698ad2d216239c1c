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
}

impl Fault {
    pub const ALL: [Fault; 1] = [Fault::CounterMapFull];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::CounterMapFull => "counter_map_full",
        }
    }
}

/// Names of the TC programs in the object, as the loader looks them up.
pub mod programs {
    /// Counts packets and bytes at a TC ingress hook.
    pub const COUNT_INGRESS: &str = "kovn_count_ingress";
    /// Counts packets and bytes at a TC egress hook.
    pub const COUNT_EGRESS: &str = "kovn_count_egress";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are `#[repr(C)]`, `Copy`, made only of integers and without padding, so
    // every bit pattern the kernel hands back is a valid value.
    unsafe impl aya::Pod for super::IfCounterKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_have_no_padding() {
        assert_eq!(core::mem::size_of::<IfCounterKey>(), 8);
        assert_eq!(core::mem::size_of::<IfCounters>(), 16);
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
