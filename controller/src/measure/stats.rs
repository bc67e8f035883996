//! What the probes of one link end tell: a pure state machine, fed with "sent probe n at t",
//! "echo of probe n came back at t" and "it is now t", so it can be tested without a network.
//!
//! - Round-trip time: an EWMA with gain 1/8, as TCP's SRTT (RFC 6298).
//! - Jitter: RFC 3550's interarrival jitter, `J += (|D| - J) / 16`, where `D` is the difference
//!   between consecutive round trips (the sender's clock times both ends, so no clock offset).
//! - Loss: the share of lost probes among the last `window` whose fate is known. A probe is lost
//!   when no echo came within `timeout`; an echo arriving later is ignored.
//! - Staleness: no echo for `stale_after`, or fewer than [`WARMUP_SAMPLES`] echoes so far,
//!   makes the link stale. During the warm-up the estimate is the smallest round trip, and
//!   jitter and loss start counting only when it ends (the first echoes carry neighbour
//!   discovery).

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// EWMA gain of the round-trip time (TCP's SRTT alpha).
pub const RTT_GAIN: f64 = 1.0 / 8.0;
/// Gain of the jitter estimate (RFC 3550, section 6.4.1).
pub const JITTER_GAIN: f64 = 1.0 / 16.0;
/// The first echoes of a link include neighbour discovery and program attachment: until this
/// many came back, the estimate is their minimum and the link does not count as measured.
pub const WARMUP_SAMPLES: u64 = 5;

/// How one link end judges its probes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatsConfig {
    /// A probe without an echo after this long is lost.
    pub timeout: Duration,
    /// Loss is computed over this many of the most recent decided probes.
    pub window: usize,
    /// Without an echo for this long the link is stale.
    pub stale_after: Duration,
    /// Without an echo for this long while probes still go out, the link is down.
    pub down_after: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            timeout: Duration::from_secs(1),
            window: 20,
            stale_after: Duration::from_secs(3),
            down_after: Duration::from_secs(1),
        }
    }
}

/// The probe state of one end of one link.
#[derive(Clone, Debug)]
pub struct LinkStats {
    config: StatsConfig,
    /// Probes sent and not yet decided, by sequence number.
    pending: BTreeMap<u64, Instant>,
    /// Outcomes of the most recent decided probes, oldest first; `true` is lost.
    outcomes: VecDeque<bool>,
    srtt_ms: Option<f64>,
    last_rtt_ms: Option<f64>,
    jitter_ms: f64,
    samples: u64,
    last_echo: Option<Instant>,
}

/// A reading of [`LinkStats`] at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Smoothed round trip; `None` before the first echo.
    pub rtt_ms: Option<f64>,
    pub jitter_ms: f64,
    /// Lost share of the recent decided probes; 0 before any is decided.
    pub loss: f64,
    /// Echoes received so far.
    pub samples: u64,
    /// Time since the last echo; `None` before the first.
    pub age: Option<Duration>,
    pub stale: bool,
    /// Measured before, and silent for `down_after` although probes keep going out: the
    /// link (or the far end) is down. A prober that stopped sending makes a link stale, not
    /// down: silence then says nothing about the link.
    pub down: bool,
}

impl LinkStats {
    pub fn new(config: StatsConfig) -> Self {
        LinkStats {
            config,
            pending: BTreeMap::new(),
            outcomes: VecDeque::new(),
            srtt_ms: None,
            last_rtt_ms: None,
            jitter_ms: 0.0,
            samples: 0,
            last_echo: None,
        }
    }

    /// Probe `seq` went out at `at` (or was meant to: a probe the kernel refused to send is
    /// recorded too, and times out as lost).
    pub fn sent(&mut self, seq: u64, at: Instant) {
        self.expire(at);
        self.pending.insert(seq, at);
    }

    /// The echo of probe `seq` came back at `at`, with round trip `rtt` (measured from the
    /// timestamp the probe carried). Returns whether it counted: echoes of unknown, repeated
    /// or timed-out probes do not.
    pub fn echoed(&mut self, seq: u64, rtt: Duration, at: Instant) -> bool {
        self.expire(at);
        if self.pending.remove(&seq).is_none() {
            return false;
        }
        self.decide(false);
        let r = rtt.as_secs_f64() * 1e3;
        // Jitter and loss start when the warm-up ends, like the estimate: the first echoes'
        // neighbour discovery is neither variation nor loss of the link.
        if self.samples + 1 == WARMUP_SAMPLES {
            self.outcomes.clear();
            self.outcomes.push_back(false);
        }
        if let Some(prev) = self.last_rtt_ms.filter(|_| self.samples >= WARMUP_SAMPLES) {
            self.jitter_ms += ((r - prev).abs() - self.jitter_ms) * JITTER_GAIN;
        }
        self.srtt_ms = Some(match self.srtt_ms {
            Some(s) if self.samples < WARMUP_SAMPLES => s.min(r),
            Some(s) => s + (r - s) * RTT_GAIN,
            None => r,
        });
        self.last_rtt_ms = Some(r);
        self.samples += 1;
        self.last_echo = Some(at);
        true
    }

    /// Counts every probe older than the timeout at `now` as lost.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.config.timeout;
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, sent)| now.saturating_duration_since(**sent) >= timeout)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in lost {
            self.pending.remove(&seq);
            self.decide(true);
        }
    }

    fn decide(&mut self, lost: bool) {
        self.outcomes.push_back(lost);
        while self.outcomes.len() > self.config.window.max(1) {
            self.outcomes.pop_front();
        }
    }

    /// The figures at `now` (probes past their timeout count as lost).
    pub fn snapshot(&mut self, now: Instant) -> Snapshot {
        self.expire(now);
        let lost = self.outcomes.iter().filter(|l| **l).count();
        let loss =
            if self.outcomes.is_empty() { 0.0 } else { lost as f64 / self.outcomes.len() as f64 };
        let age = self.last_echo.map(|t| now.saturating_duration_since(t));
        let probing = self.pending.values().any(|sent| self.last_echo.is_some_and(|e| *sent > e));
        Snapshot {
            rtt_ms: self.srtt_ms,
            jitter_ms: self.jitter_ms,
            loss,
            samples: self.samples,
            age,
            stale: self.samples < WARMUP_SAMPLES
                || age.is_none_or(|a| a >= self.config.stale_after),
            down: self.samples >= WARMUP_SAMPLES
                && probing
                && age.is_some_and(|a| a >= self.config.down_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends probe `seq` at `t0 + sent_ms` and echoes it `rtt_ms` later.
    fn probe(s: &mut LinkStats, t0: Instant, seq: u64, sent_ms: u64, rtt_ms: u64) -> bool {
        s.sent(seq, t0 + ms(sent_ms));
        s.echoed(seq, ms(rtt_ms), t0 + ms(sent_ms + rtt_ms))
    }

    #[test]
    fn rtt_is_an_ewma_with_gain_one_eighth() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(StatsConfig::default());
        // Warm-up: the minimum of the first echoes (the slow first one is left behind).
        assert!(probe(&mut s, t0, 0, 0, 50));
        assert_eq!(s.snapshot(t0 + ms(50)).rtt_ms, Some(50.0), "first sample taken as is");
        for seq in 1..WARMUP_SAMPLES {
            assert!(probe(&mut s, t0, seq, seq * 100, 10));
        }
        assert_eq!(s.snapshot(t0 + ms(500)).rtt_ms, Some(10.0));
        let next = WARMUP_SAMPLES;
        assert!(probe(&mut s, t0, next, next * 100, 18));
        // Then the EWMA: 10 + (18 - 10) / 8
        assert_eq!(s.snapshot(t0 + ms(next * 100 + 18)).rtt_ms, Some(11.0));
        for seq in next + 1..80 {
            probe(&mut s, t0, seq, seq * 100, 30);
        }
        let snap = s.snapshot(t0 + ms(8000));
        assert!((snap.rtt_ms.unwrap() - 30.0).abs() < 0.01, "{snap:?}");
        assert_eq!(snap.samples, 80);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(StatsConfig::default());
        // The warm-up's variation (a slow first echo) is not the link's jitter.
        probe(&mut s, t0, 0, 0, 60);
        for seq in 1..WARMUP_SAMPLES {
            probe(&mut s, t0, seq, seq * 100, 10);
        }
        assert_eq!(s.snapshot(t0 + ms(500)).jitter_ms, 0.0, "no variation counted yet");
        probe(&mut s, t0, 5, 500, 26);
        // |26 - 10| / 16
        assert_eq!(s.snapshot(t0 + ms(526)).jitter_ms, 1.0);
        probe(&mut s, t0, 6, 600, 26);
        // 1 + (0 - 1) / 16
        assert_eq!(s.snapshot(t0 + ms(626)).jitter_ms, 15.0 / 16.0);
        // Alternating 10/20 converges on a jitter of 10.
        for seq in 7..300 {
            probe(&mut s, t0, seq, seq * 100, if seq % 2 == 0 { 10 } else { 20 });
        }
        assert!((s.snapshot(t0 + ms(30_000)).jitter_ms - 10.0).abs() < 0.01);
    }

    #[test]
    fn loss_counts_timeouts_over_a_sliding_window() {
        let t0 = Instant::now();
        let config = StatsConfig { window: 10, ..Default::default() };
        let mut s = LinkStats::new(config);
        for seq in 0..10 {
            probe(&mut s, t0, seq, seq * 100, 5);
        }
        assert_eq!(s.snapshot(t0 + ms(1000)).loss, 0.0);
        // Only 6 outcomes since the warm-up: five more answered probes fill the window.
        for seq in 0..5 {
            probe(&mut s, t0, 200 + seq, 1000 + seq * 10, 5);
        }
        // Five probes go unanswered.
        for seq in 10..15 {
            s.sent(seq, t0 + ms(seq * 100));
        }
        // Sent at 1.0..1.4 s: none has timed out at 1.9 s, three have at 2.25 s.
        assert_eq!(s.snapshot(t0 + ms(1900)).loss, 0.0);
        assert_eq!(s.snapshot(t0 + ms(2250)).loss, 0.3);
        assert_eq!(s.snapshot(t0 + ms(2400)).loss, 0.5);
        // A late echo does not undo the loss.
        assert!(!s.echoed(12, ms(1300), t0 + ms(2500)));
        assert_eq!(s.snapshot(t0 + ms(2500)).loss, 0.5);
        // Nor does a duplicate echo count twice, or an unknown one at all.
        assert!(!s.echoed(3, ms(5), t0 + ms(2500)));
        assert!(!s.echoed(999, ms(5), t0 + ms(2500)));
        // Ten answered probes push the losses out of the window.
        for seq in 15..25 {
            probe(&mut s, t0, seq, 2500 + seq * 10, 5);
        }
        assert_eq!(s.snapshot(t0 + ms(3000)).loss, 0.0);
    }

    #[test]
    fn a_link_without_echoes_goes_stale_and_comes_back() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(StatsConfig::default());
        assert!(s.snapshot(t0).stale, "never echoed");
        s.sent(0, t0);
        assert!(s.snapshot(t0 + ms(500)).stale, "still never echoed");
        probe(&mut s, t0, 1, 100, 40);
        assert!(s.snapshot(t0 + ms(150)).stale, "one echo is not a measurement yet");
        for seq in 2..=WARMUP_SAMPLES {
            probe(&mut s, t0, seq, 100, 4);
        }
        let snap = s.snapshot(t0 + ms(2000));
        assert!(!snap.stale);
        assert_eq!(snap.rtt_ms, Some(4.0), "the slow first echo is not the estimate");
        assert_eq!(snap.age, Some(ms(1896)));
        let snap = s.snapshot(t0 + ms(104) + ms(3000));
        assert!(snap.stale, "3 s without an echo");
        assert_eq!(snap.rtt_ms, Some(4.0), "the last estimate stays readable");
        probe(&mut s, t0, 9, 3200, 4);
        assert!(!s.snapshot(t0 + ms(3300)).stale);
    }

    #[test]
    fn silence_while_probing_is_down_silence_without_probes_is_only_stale() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(StatsConfig::default());
        for k in 0..10 {
            probe(&mut s, t0, k, k * 100, 2);
        }
        assert!(!s.snapshot(t0 + ms(950)).down);
        // The link goes dark at 1 s; probes keep going out every 100 ms.
        for k in 10..22 {
            s.sent(k, t0 + ms(k * 100));
        }
        let snap = s.snapshot(t0 + ms(2150));
        assert!(snap.down && !snap.stale, "{snap:?}");
        // The prober stops: once its last probes time out, silence is just staleness.
        let snap = s.snapshot(t0 + ms(4000));
        assert!(!snap.down && snap.stale, "{snap:?}");
    }
}
