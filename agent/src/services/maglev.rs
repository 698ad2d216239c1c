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
///
/// The paper's loop: backends take turns, each walking its own permutation of the slots to
/// the next empty one. With E slots left a walk takes about M / E probes; from [`TAIL`] empty
/// slots on, each turn instead computes where every empty slot lies on the backend's walk
/// and takes the nearest, which gives the same table for less.
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
    let n = permutations.len();
    let mut turn = 0usize;
    let mut empty = table.len();
    while empty > TAIL {
        let skip = permutations[turn].1;
        let mut slot = next[turn];
        while table[slot as usize] != EMPTY {
            slot += skip;
            if slot >= m {
                slot -= m;
            }
        }
        table[slot as usize] = turn as u32;
        slot += skip;
        if slot >= m {
            slot -= m;
        }
        next[turn] = slot;
        empty -= 1;
        turn += 1;
        if turn == n {
            turn = 0;
        }
    }
    // Steps from slot c to slot e on a walk of stride `skip`: (e − c) · skip⁻¹ mod M.
    let inverses: Vec<u64> = permutations
        .iter()
        .map(|(_, skip)| inverse_mod(*skip, m))
        .collect();
    let mut empties: Vec<u64> = (0..m).filter(|s| table[*s as usize] == EMPTY).collect();
    while !empties.is_empty() {
        let (c, inverse) = (next[turn], inverses[turn]);
        let nearest = (0..empties.len())
            .min_by_key(|k| (empties[*k] + m - c) % m * inverse % m)
            .unwrap_or(0);
        let slot = empties.swap_remove(nearest);
        table[slot as usize] = turn as u32;
        next[turn] = (slot + permutations[turn].1) % m;
        turn += 1;
        if turn == n {
            turn = 0;
        }
    }
}

/// Where [`populate`] stops probing: measured best for M = 16381 and 10 backends (about 15 %
/// faster than probing to the last slot).
const TAIL: usize = 64;

/// a⁻¹ mod m, for a coprime with m (m prime, 0 < a < m).
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut old_r, mut r) = (a as i64, m as i64);
    let (mut old_s, mut s) = (1i64, 0i64);
    while r != 0 {
        let q = old_r / r;
        (old_r, r) = (r, old_r - q * r);
        (old_s, s) = (s, old_s - q * s);
    }
    old_s.rem_euclid(m as i64) as u64
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

    /// The paper's loop as written, probing to the very last slot.
    fn reference(backends: &[String], m: usize) -> Vec<u32> {
        let mm = m as u64;
        let perms: Vec<(u64, u64)> = backends
            .iter()
            .map(|b| {
                (
                    fnv1a(OFFSET_SEED, b.as_bytes()) % mm,
                    fnv1a(SKIP_SEED, b.as_bytes()) % (mm - 1) + 1,
                )
            })
            .collect();
        let mut next = vec![0u64; backends.len()];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        loop {
            for (i, (offset, skip)) in perms.iter().enumerate() {
                let mut c = (offset + next[i] * skip) % mm;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % mm;
                }
                table[c as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }

    #[test]
    fn the_fast_tail_gives_the_papers_table() {
        for (n, m) in [(1, 251), (3, 251), (10, 16381), (7, 16381), (100, 16381)] {
            let backends = names(n);
            let mut fast = vec![0; m];
            populate(&backends, &mut fast);
            assert_eq!(fast, reference(&backends, m), "{n} backends, M = {m}");
        }
    }

    #[test]
    fn modular_inverses() {
        for a in [1u64, 2, 3, 1000, 16380] {
            assert_eq!(a * inverse_mod(a, 16381) % 16381, 1, "{a}");
        }
    }
}
