//! The selectors cats is judged against, run on the same dataplane so a comparison measures
//! the choice and nothing else: `catsd run --selector nearest-site` steers like anycast would.
//!
//! They see the same candidates as cats' selector (paths, measured latencies, reported
//! utilisation) but apply no constraint, no locality and no hysteresis: each is what its
//! name says, as the systems that use it do.

use std::{fmt, str::FromStr};

use super::select::{Candidate, Decision, WEIGHT_SCALE};

/// How a compile picks instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Selector {
    /// cats' selector (`select::decide`): constraints, locality, queueing model, hysteresis.
    #[default]
    Cats,
    /// Everything to the instance with the shortest round trip (anycast).
    NearestSite,
    /// Everything to the instance with the lowest reported utilisation (ties: the nearer).
    LeastLoaded,
    /// New flows spread evenly over every instance.
    Random,
    /// Everything to the first in ascending `latency_ms × 0.6 + compute_tops × 0.4` (round
    /// trip and declared TOPS), as this project's seed document proposed. It prefers the
    /// weakest compute and mixes units; kept as the reference it was written as.
    SeedFormula,
}

impl Selector {
    pub const ALL: [Selector; 5] = [
        Selector::Cats,
        Selector::NearestSite,
        Selector::LeastLoaded,
        Selector::Random,
        Selector::SeedFormula,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Selector::Cats => "cats",
            Selector::NearestSite => "nearest-site",
            Selector::LeastLoaded => "least-loaded",
            Selector::Random => "random",
            Selector::SeedFormula => "seed-formula",
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::ALL.into_iter().find(|sel| sel.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Selector::ALL.iter().map(|s| s.name()).collect();
            format!("unknown selector {s:?}; one of {}", names.join(", "))
        })
    }
}

/// The weights a baseline gives `candidates` (not for [`Selector::Cats`]).
pub fn decide(selector: Selector, candidates: &[Candidate]) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = candidates
        .iter()
        .map(|c| Decision {
            instance: c.instance.clone(),
            site: c.site.clone(),
            group: c.group,
            network_ms: 2.0 * c.path_one_way_ms,
            jitter_ms: c.jitter_ms,
            utilization: c.utilization,
            free_tops: c.tops * (1.0 - c.utilization.clamp(0.0, 1.0)),
            ..Default::default()
        })
        .collect();
    if decisions.is_empty() {
        return decisions;
    }
    let key = |i: usize| -> (f64, f64) {
        let (c, d) = (&candidates[i], &decisions[i]);
        match selector {
            Selector::NearestSite => (d.network_ms, 0.0),
            Selector::LeastLoaded => (c.utilization, d.network_ms),
            Selector::SeedFormula => (d.network_ms * 0.6 + c.tops * 0.4, 0.0),
            Selector::Cats | Selector::Random => (0.0, 0.0),
        }
    };
    if selector == Selector::Random {
        let share = WEIGHT_SCALE / decisions.len() as u32;
        for d in &mut decisions {
            d.weight = share.max(1);
        }
        return decisions;
    }
    let best = (0..decisions.len())
        .min_by(|&a, &b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })
        .expect("non-empty");
    for (i, d) in decisions.iter_mut().enumerate() {
        if i == best {
            d.weight = WEIGHT_SCALE;
        } else {
            d.excluded = Some(format!("{selector} picks {}", candidates[best].instance));
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::select::tests::c;

    fn winner(selector: Selector, cs: &[Candidate]) -> String {
        let ds = decide(selector, cs);
        let w: Vec<&Decision> = ds.iter().filter(|d| d.weight > 0).collect();
        assert_eq!(w.len(), 1, "{ds:?}");
        assert_eq!(w[0].weight, WEIGHT_SCALE);
        w[0].instance.clone()
    }

    #[test]
    fn each_baseline_does_what_its_name_says() {
        let cs =
            [c("near-busy", 3.0, 4.0, 0.9), c("mid", 5.0, 2.0, 0.1), c("far", 16.0, 100.0, 0.0)];
        assert_eq!(winner(Selector::NearestSite, &cs), "near-busy");
        assert_eq!(winner(Selector::LeastLoaded, &cs), "far");
        // 6 × 0.6 + 4 × 0.4 = 5.2; 10 × 0.6 + 2 × 0.4 = 6.8; 32 × 0.6 + 100 × 0.4 = 59.2
        assert_eq!(winner(Selector::SeedFormula, &cs), "near-busy");
        let random = decide(Selector::Random, &cs);
        assert!(random.iter().all(|d| d.weight == 333), "{random:?}");
    }

    #[test]
    fn names_round_trip() {
        for s in Selector::ALL {
            assert_eq!(s.name().parse::<Selector>(), Ok(s));
        }
        assert!("anycast".parse::<Selector>().unwrap_err().contains("nearest-site"));
    }
}
