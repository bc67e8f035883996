//! One probed path's state, BFD-like (RFC 5880's detection time, without the handshake:
//! the far end only echoes): down when nothing came back for `multiplier` intervals, up
//! again after `multiplier` echoes without such a silence between them, so a flapping path
//! does not keep moving flows.

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Session {
    interval: Duration,
    multiplier: u32,
    up: bool,
    /// The last echo, or when probing began (a new path starts up: its flows were fine a
    /// moment ago, and marking everything down at start would move them for nothing).
    last_echo: Instant,
    /// Echoes while down, without a silence of the detection time between them.
    echoes_while_down: u32,
    pub next_seq: u64,
    /// Round trip of the last echo.
    pub rtt: Option<Duration>,
    /// When `up` last changed.
    pub since: Instant,
    /// When probing began, and whether an echo ever came: a path that has not answered yet
    /// gets a longer first detection time (a node's first seconds are busy loading and
    /// verifying programs, which can hold echoes up; BFD too declares nothing before Up).
    started: Instant,
    answered: bool,
}

/// The first detection time of a path that never answered: this many detection times, and
/// at least [`FIRST_DETECTION_MIN`] (a fresh neighbour entry whose first solicitation goes
/// unanswered holds packets for its 1 s retransmit).
const FIRST_DETECTIONS: u32 = 3;
const FIRST_DETECTION_MIN: Duration = Duration::from_secs(2);

/// What a change of state was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameUp,
}

impl Session {
    pub fn new(interval: Duration, multiplier: u32, now: Instant) -> Self {
        Session {
            interval,
            multiplier: multiplier.max(1),
            up: true,
            last_echo: now,
            echoes_while_down: 0,
            next_seq: 0,
            rtt: None,
            since: now,
            started: now,
            answered: false,
        }
    }

    /// A path already known to be down (a restarted agent reads what the last one found,
    /// so a dead instance does not look healthy for a detection time).
    pub fn new_down(interval: Duration, multiplier: u32, now: Instant) -> Self {
        Session { up: false, ..Session::new(interval, multiplier, now) }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Detection time: no echo for this long means down.
    pub fn detection(&self) -> Duration {
        self.interval * self.multiplier
    }

    /// An echo of a probe sent at `sent` came back at `now`.
    pub fn echo(&mut self, sent: Instant, now: Instant) -> Option<Transition> {
        // An echo from before the last silence is stale news.
        let gap = now.duration_since(self.last_echo);
        self.last_echo = now;
        self.answered = true;
        self.rtt = Some(now.duration_since(sent));
        if self.up {
            return None;
        }
        // Only a silence as long as the detection time breaks a run: at short intervals the
        // echoes' own jitter is a good part of an interval.
        if gap > self.detection() {
            self.echoes_while_down = 0;
        }
        self.echoes_while_down += 1;
        if self.echoes_while_down >= self.multiplier {
            self.up = true;
            self.since = now;
            return Some(Transition::CameUp);
        }
        None
    }

    /// Time passes: down once the detection time went by without an echo.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        let first = (self.detection() * FIRST_DETECTIONS).max(FIRST_DETECTION_MIN);
        let silent_too_long = if self.answered {
            now.duration_since(self.last_echo) > self.detection()
        } else {
            now.duration_since(self.started) > first
        };
        if self.up && silent_too_long {
            self.up = false;
            self.echoes_while_down = 0;
            self.since = now;
            return Some(Transition::WentDown);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn down_after_the_detection_time_without_echoes_and_not_before() {
        let t0 = Instant::now();
        let mut s = Session::new(100 * MS, 3, t0);
        assert_eq!(s.echo(t0, t0 + 5 * MS), None);
        let t1 = t0 + 5 * MS;
        assert_eq!(s.tick(t1 + 300 * MS), None, "exactly the detection time is not yet down");
        assert_eq!(s.tick(t1 + 301 * MS), Some(Transition::WentDown));
        assert!(!s.is_up());
        assert_eq!(s.tick(t1 + 500 * MS), None, "a transition is reported once");
    }

    #[test]
    fn a_path_that_never_answered_gets_a_longer_first_detection() {
        let t0 = Instant::now();
        let mut s = Session::new(100 * MS, 3, t0);
        assert_eq!(s.tick(t0 + 1999 * MS), None, "3 x 300 ms, at least 2 s");
        assert_eq!(s.tick(t0 + 2001 * MS), Some(Transition::WentDown));
    }

    #[test]
    fn echoes_keep_a_path_up() {
        let t0 = Instant::now();
        let mut s = Session::new(100 * MS, 3, t0);
        for k in 1..20 {
            let at = t0 + k * 100 * MS;
            assert_eq!(s.echo(at - 5 * MS, at), None);
            assert_eq!(s.tick(at + 50 * MS), None);
        }
        assert_eq!(s.rtt, Some(5 * MS));
    }

    #[test]
    fn up_again_only_after_multiplier_echoes_in_a_row() {
        let t0 = Instant::now();
        let mut s = Session::new(100 * MS, 3, t0);
        s.echo(t0, t0);
        s.tick(t0 + 400 * MS);
        assert!(!s.is_up());
        assert_eq!(s.echo(t0, t0 + 500 * MS), None);
        assert_eq!(s.echo(t0, t0 + 600 * MS), None);
        // A silence restarts the count.
        assert_eq!(s.echo(t0, t0 + 1000 * MS), None);
        assert_eq!(s.echo(t0, t0 + 1100 * MS), None);
        assert_eq!(s.echo(t0, t0 + 1200 * MS), Some(Transition::CameUp));
        assert!(s.is_up());
        assert_eq!(s.since, t0 + 1200 * MS);
    }
}
