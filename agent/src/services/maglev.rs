//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size M in
//! which every backend owns about M / N slots, and which changes in about 1/N of its slots when
//! one backend comes or goes. Every node computes the same table from the same backends (the
//! hashes have fixed seeds and the backends are sorted), so a client is balanced alike
//! wherever it runs.

use datapath_common::MAGLEV_TABLE_SIZE;

/// Fixed seeds: the same permutation on every node and across restarts.
const OFFSET_SEED: u64 = 0x6b6f_766e_2d6f_6666; // "kovn-off"
const SKIP_SEED: u64 = 0x6b6f_766e_2d73_6b70; // "kovn-skp"

/// FNV-1a (64 bit) started from `seed`: stable across builds and platforms, unlike std's
/// hasher.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for similar inputs (addresses differing in one byte).
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// Fills `table` (length M, prime) with indexes into `backends`, which must be sorted and
/// non-empty. Each backend is named by a stable string (its address and port).
pub fn populate(backends: &[impl AsRef<[u8]>], table: &mut [u32]) {
    let m = table.len() as u64;
    assert!(!backends.is_empty(), "a Maglev table needs a backend");
    let permutations: Vec<(u64, u64)> = backends
        .iter()
        .map(|name| {
            let name = name.as_ref();
            let offset = fnv1a(OFFSET_SEED, name) % m;
            let skip = fnv1a(SKIP_SEED, name) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    // next[i]: the position in backend i's permutation to try next, as the slot it names.
    let mut next: Vec<u64> = permutations.iter().map(|(offset, _)| *offset).collect();
    const EMPTY: u32 = u32::MAX;
    table.fill(EMPTY);
    let mut filled = 0usize;
    'fill: loop {
        for (i, (_, skip)) in permutations.iter().enumerate() {
            let mut slot = next[i];
            while table[slot as usize] != EMPTY {
                slot += skip;
                if slot >= m {
                    slot -= m;
                }
            }
            table[slot as usize] = i as u32;
            slot += skip;
            if slot >= m {
                slot -= m;
            }
            next[i] = slot;
            filled += 1;
            if filled == table.len() {
                break 'fill;
            }
        }
    }
}

/// A table of the datapath's size for `backends`.
pub fn table(backends: &[impl AsRef<[u8]>]) -> Vec<u32> {
    let mut table = vec![0u32; MAGLEV_TABLE_SIZE];
    populate(backends, &mut table);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.16.{}.{}:8080", i / 250, i % 250 + 2))
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for b in table {
            counts[*b as usize] += 1;
        }
        counts
    }

    #[test]
    fn every_backend_owns_an_even_share() {
        for n in [1, 3, 10, 100] {
            let t = table(&names(n));
            let even = MAGLEV_TABLE_SIZE as f64 / n as f64;
            for (i, c) in shares(&t, n).into_iter().enumerate() {
                let deviation = (c as f64 - even).abs() / even;
                // The paper: within a few percent of even for M >> N.
                assert!(
                    deviation < 0.06,
                    "backend {i} of {n}: {c} slots, even is {even:.0}"
                );
            }
        }
    }

    #[test]
    fn removing_one_backend_moves_only_its_slots_and_few_others() {
        let before_names = names(10);
        let before = table(&before_names);
        let mut after_names = before_names.clone();
        after_names.remove(3);
        let after = table(&after_names);
        let mut moved_from_survivors = 0;
        for (b, a) in before.iter().zip(&after) {
            let old = &before_names[*b as usize];
            let new = &after_names[*a as usize];
            if *b != 3 && old != new {
                moved_from_survivors += 1;
            }
        }
        // Slots of surviving backends that changed owner: a small fraction of the table.
        let fraction = moved_from_survivors as f64 / MAGLEV_TABLE_SIZE as f64;
        assert!(
            fraction < 0.03,
            "{fraction:.3} of the table moved between survivors"
        );
        assert!(
            !after
                .iter()
                .any(|a| after_names[*a as usize] == before_names[3])
        );
    }

    #[test]
    fn the_table_is_the_same_wherever_it_is_computed() {
        // Fixed seeds, fixed hash: every node and every agent version computes this table for
        // these backends. A change here rebalances clients differently per node during an
        // upgrade; change it knowingly.
        let t = table(&names(3));
        assert_eq!(&t[..12], &PINNED_PREFIX);
    }

    const PINNED_PREFIX: [u32; 12] = [1, 2, 1, 0, 1, 1, 0, 1, 0, 1, 2, 2];
}
