//! Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016; weighted as in Katran).
//!
//! Each instance walks its own permutation of the table's slots and claims the next free slot
//! of it in turn, as often as its weight says. The result spreads flows in proportion to the
//! weights, and a weight change moves only about the share of flows that changes hands: the
//! property that lets cats re-weight without reshuffling everyone's new flows.

use cats_common::maps::NO_INSTANCE;

/// One instance in a table: its stable identity (the permutation follows it, not its slot)
/// and its weight.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    pub identity: &'a str,
    pub slot: u32,
    pub weight: u32,
}

/// FNV-1a, 64 bits: a stable hash of the identity (std's hasher is randomly seeded).
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Builds a table of `size` slots (a prime) holding instance slots, or [`NO_INSTANCE`]
/// everywhere when no entry has weight.
pub fn build(entries: &[Entry<'_>], size: u32) -> Vec<u32> {
    let mut table = vec![NO_INSTANCE; size as usize];
    let live: Vec<&Entry<'_>> = entries.iter().filter(|e| e.weight > 0).collect();
    let Some(max_weight) = live.iter().map(|e| e.weight).max() else {
        return table;
    };
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|e| {
            let offset = fnv1a(e.identity.as_bytes(), 0x0ff5e7) % m;
            let skip = fnv1a(e.identity.as_bytes(), 0x5c1b) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u32;
    loop {
        for (i, entry) in live.iter().enumerate() {
            credit[i] += u64::from(entry.weight);
            while credit[i] >= u64::from(max_weight) {
                credit[i] -= u64::from(max_weight);
                let (offset, skip) = perms[i];
                // Walk this instance's permutation to its next unclaimed slot.
                let mut pos = (offset + next[i] * skip) % m;
                while table[pos as usize] != NO_INSTANCE {
                    next[i] += 1;
                    pos = (offset + next[i] * skip) % m;
                }
                table[pos as usize] = entry.slot;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    return table;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 4099;

    fn share(table: &[u32], slot: u32) -> f64 {
        table.iter().filter(|s| **s == slot).count() as f64 / table.len() as f64
    }

    #[test]
    fn shares_follow_weights() {
        let entries = [
            Entry { identity: "edge1-a", slot: 0, weight: 100 },
            Entry { identity: "edge2-a", slot: 1, weight: 300 },
        ];
        let t = build(&entries, M);
        assert!((share(&t, 0) - 0.25).abs() < 0.01, "{}", share(&t, 0));
        assert!((share(&t, 1) - 0.75).abs() < 0.01, "{}", share(&t, 1));
    }

    #[test]
    fn zero_weight_gets_nothing_and_empty_is_no_instance() {
        let entries = [
            Entry { identity: "a", slot: 0, weight: 0 },
            Entry { identity: "b", slot: 1, weight: 5 },
        ];
        assert!(build(&entries, M).iter().all(|s| *s == 1));
        assert!(build(&entries[..1], M).iter().all(|s| *s == NO_INSTANCE));
    }

    #[test]
    fn removing_one_instance_moves_little_else() {
        let three = [
            Entry { identity: "a", slot: 0, weight: 1 },
            Entry { identity: "b", slot: 1, weight: 1 },
            Entry { identity: "c", slot: 2, weight: 1 },
        ];
        let before = build(&three, M);
        let after = build(&three[..2], M);
        // Slots that did not belong to `c` should mostly stay where they were.
        let kept = before.iter().zip(&after).filter(|(b, a)| **b != 2 && b == a).count();
        let not_c = before.iter().filter(|b| **b != 2).count();
        assert!(kept as f64 / not_c as f64 > 0.9, "kept {kept} of {not_c}");
    }

    #[test]
    fn deterministic() {
        let e = [
            Entry { identity: "x", slot: 3, weight: 2 },
            Entry { identity: "y", slot: 4, weight: 1 },
        ];
        assert_eq!(build(&e, M), build(&e, M));
    }
}
