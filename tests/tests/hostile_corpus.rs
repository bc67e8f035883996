//! The hostile-packet corpus: every frame of `tests/corpus/{endpoint,headend}.pcap`, made by
//! scapy in `tests/corpus/generate.py`, runs once through its XDP program (BPF_PROG_TEST_RUN)
//! and must give the verdict and the counter `tests/corpus/expected.tsv` names for it.
//!
//! Each run starts from a counter snapshot: the expected counter (and the line's side
//! counters) must move by exactly one, every other drop and event counter must stay put. A
//! PASS must leave the frame as it came (the stack takes it unchanged), and no frame may end
//! in XDP_ABORTED. Loading the object (`Dataplane::load`) is the verifier check.
//!
//! Lines marked `# KNOWN:` are program bugs found by the corpus, stating the right outcome:
//! they are left out of the two corpus tests and run by `known_program_bugs`, which fails
//! until each is fixed (and then asks for the mark to go).

use std::{collections::HashSet, fmt, path::PathBuf};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{HashMap, MapData};
use cats_common::{
    counters::{DropReason, Event},
    flow::{FlowEntry, FlowKey},
    maps::{MAP_AFFINITY, PROG_ENDPOINT, PROG_HEADEND},
};
use cats_controller::{dataplane::Dataplane, netns};
use cats_tests::{
    endpoint_fixture, fixture, router,
    xdp::{self, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
};

/// MTU of `up0` in the endpoint's namespace: the corpus's jumbo frames need a jumbo link
/// (the generator's `JUMBO_MTU`).
const ENDPOINT_MTU: &str = "9000";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

// ---- pcap -------------------------------------------------------------------------------------

/// The frames of a classic pcap file (24-byte global header, 16-byte record headers), either
/// byte order, micro- or nanosecond timestamps. Only Ethernet captures are accepted.
fn read_pcap(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    ensure!(bytes.len() >= 24, "pcap shorter than its global header");
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => bail!("not a pcap file (magic {magic:#010x})"),
    };
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let raw: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if little { u32::from_le_bytes(raw) } else { u32::from_be_bytes(raw) }
    };
    let linktype = u32_at(bytes, 20);
    ensure!(linktype == 1, "pcap link type {linktype}, expected 1 (Ethernet)");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        ensure!(at + 16 <= bytes.len(), "record header {} cut short", frames.len());
        let incl = u32_at(bytes, at + 8) as usize;
        let orig = u32_at(bytes, at + 12) as usize;
        ensure!(incl == orig, "record {} captured {incl} of {orig} bytes", frames.len());
        let start = at + 16;
        ensure!(start + incl <= bytes.len(), "record {} cut short", frames.len());
        frames.push(bytes[start..start + incl].to_vec());
        at = start + incl;
    }
    Ok(frames)
}

// ---- expected.tsv -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    Drop(DropReason),
    Event(Event),
}

impl Counter {
    fn all() -> impl Iterator<Item = Counter> {
        DropReason::ALL
            .iter()
            .map(|d| Counter::Drop(*d))
            .chain(Event::ALL.iter().map(|e| Counter::Event(*e)))
    }

    fn parse(text: &str) -> Result<Counter> {
        Counter::all()
            .find(|c| c.to_string() == text)
            .with_context(|| format!("no counter {text:?} (drop:<reason> or event:<event>)"))
    }

    fn read(self, dp: &Dataplane) -> Result<u64> {
        match self {
            Counter::Drop(d) => dp.drops(d),
            Counter::Event(e) => dp.events(e),
        }
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Counter::Drop(d) => write!(f, "drop:{}", d.label()),
            Counter::Event(e) => write!(f, "event:{}", e.label()),
        }
    }
}

fn verdict_name(action: u32) -> String {
    match action {
        XDP_ABORTED => "ABORTED".into(),
        XDP_DROP => "DROP".into(),
        XDP_PASS => "PASS".into(),
        XDP_TX => "TX".into(),
        XDP_REDIRECT => "REDIRECT".into(),
        other => format!("action {other}"),
    }
}

fn parse_verdict(text: &str) -> Result<u32> {
    Ok(match text {
        "DROP" => XDP_DROP,
        "PASS" => XDP_PASS,
        "TX" => XDP_TX,
        "REDIRECT" => XDP_REDIRECT,
        _ => bail!("verdict {text:?} is none of DROP, PASS, REDIRECT, TX"),
    })
}

/// One packet of the corpus and what it must do.
#[derive(Clone, Debug)]
struct Case {
    program: String,
    index: usize,
    name: String,
    verdict: u32,
    counter: Counter,
    side: Vec<Counter>,
    /// The `# KNOWN:` explanation: a program bug, the line says the right outcome.
    known: Option<String>,
    frame: Vec<u8>,
}

/// Parses expected.tsv and attaches each line's frame from its program's pcap.
fn load_corpus() -> Result<Vec<Case>> {
    let dir = corpus_dir();
    let hint = "run /usr/bin/python3 tests/corpus/generate.py";
    let tsv = std::fs::read_to_string(dir.join("expected.tsv"))
        .with_context(|| format!("reading expected.tsv ({hint})"))?;
    let mut frames = std::collections::HashMap::new();
    for program in ["endpoint", "headend"] {
        let path = dir.join(format!("{program}.pcap"));
        let bytes =
            std::fs::read(&path).with_context(|| format!("reading {} ({hint})", path.display()))?;
        frames.insert(program, read_pcap(&bytes).with_context(|| path.display().to_string())?);
    }
    let mut cases = Vec::new();
    let mut names = HashSet::new();
    for (n, line) in tsv.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (fields, comment) = match line.split_once("\t#") {
            Some((fields, comment)) => (fields, Some(comment.trim())),
            None => (line, None),
        };
        let what = || format!("expected.tsv line {}", n + 1);
        let f: Vec<&str> = fields.split('\t').collect();
        ensure!(f.len() == 6, "{}: {} fields, expected 6", what(), f.len());
        let program = f[0];
        let list = frames.get(program).with_context(|| format!("{}: program {program}", what()))?;
        let index: usize = f[1].parse().with_context(what)?;
        let expected_index = cases.iter().filter(|c: &&Case| c.program == program).count();
        ensure!(index == expected_index, "{}: index {index}, expected {expected_index}", what());
        let frame = list
            .get(index)
            .with_context(|| format!("{}: {program}.pcap has no frame {index}", what()))?
            .clone();
        ensure!(names.insert((program, f[2])), "{}: duplicate name {}", what(), f[2]);
        let side = match f[5] {
            "-" => Vec::new(),
            list => {
                list.split(',').map(Counter::parse).collect::<Result<_>>().with_context(what)?
            }
        };
        let known = match comment {
            Some(c) if c.starts_with("KNOWN:") => Some(c["KNOWN:".len()..].trim().to_string()),
            Some(c) if c.starts_with("NOTE:") => None,
            Some(c) => bail!("{}: comment {c:?} is neither KNOWN: nor NOTE:", what()),
            None => None,
        };
        cases.push(Case {
            program: program.to_string(),
            index,
            name: f[2].to_string(),
            verdict: parse_verdict(f[3]).with_context(what)?,
            counter: Counter::parse(f[4]).with_context(what)?,
            side,
            known,
            frame,
        });
    }
    for (program, list) in &frames {
        let lines = cases.iter().filter(|c| c.program == *program).count();
        ensure!(
            lines == list.len(),
            "{program}.pcap has {} frames, expected.tsv {lines}",
            list.len()
        );
    }
    Ok(cases)
}

// ---- Running ----------------------------------------------------------------------------------

/// What one run did.
struct Observed {
    action: u32,
    /// Counters that moved, and by how much.
    moved: Vec<(Counter, i128)>,
    /// For a PASS: whether the frame came out as it went in.
    unchanged: bool,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", verdict_name(self.action))?;
        if self.moved.is_empty() {
            write!(f, " (no counter moved)")?;
        }
        for (c, d) in &self.moved {
            if *d == 1 { write!(f, " {c}")? } else { write!(f, " {c} ({d:+})")? }
        }
        if self.action == XDP_PASS && !self.unchanged {
            write!(f, " [frame changed]")?;
        }
        Ok(())
    }
}

fn expected_text(case: &Case) -> String {
    let mut s = format!("{} {}", verdict_name(case.verdict), case.counter);
    for c in &case.side {
        s += &format!(" {c}");
    }
    s
}

fn snapshot(dp: &Dataplane) -> Result<Vec<u64>> {
    Counter::all().map(|c| c.read(dp)).collect()
}

/// Empties the headend's flow pins, so every steered packet starts a flow (affinity_miss)
/// whatever ran before it.
fn clear_affinity(dp: &mut Dataplane) -> Result<()> {
    let map = dp.ebpf_mut().map_mut(MAP_AFFINITY).context("no affinity map")?;
    let mut pins: HashMap<&mut MapData, FlowKey, FlowEntry> = HashMap::try_from(map)?;
    let keys: Vec<FlowKey> = pins.keys().collect::<Result<_, _>>()?;
    for key in keys {
        pins.remove(&key)?;
    }
    Ok(())
}

fn run_one(dp: &mut Dataplane, program: &str, frame: &[u8]) -> Result<Observed> {
    if program == PROG_HEADEND {
        clear_affinity(dp)?;
    }
    let before = snapshot(dp)?;
    let out = xdp::run(dp, program, frame)?;
    let after = snapshot(dp)?;
    let moved = Counter::all()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(c, (b, a))| (c, i128::from(*a) - i128::from(*b)))
        .collect();
    Ok(Observed { action: out.action, moved, unchanged: out.frame == frame })
}

/// Whether `seen` is what `case` expects: the verdict, exactly the expected counters moved by
/// one each, and a PASS (other than an encapsulated one) leaving the frame alone.
fn matches(case: &Case, seen: &Observed) -> bool {
    let mut want: Vec<(Counter, i128)> = vec![(case.counter, 1)];
    want.extend(case.side.iter().map(|c| (*c, 1)));
    let same_counters =
        want.len() == seen.moved.len() && want.iter().all(|w| seen.moved.contains(w));
    let encapsulated = case.counter == Counter::Event(Event::EncapToStack);
    seen.action == case.verdict
        && same_counters
        && (seen.action != XDP_PASS || encapsulated || seen.unchanged)
}

/// Runs `cases` (all of one program) in a namespace set up for that program; returns each
/// case with what it did.
fn run_program(program: &str, cases: Vec<Case>) -> Result<Vec<(Case, Observed)>> {
    if cases.is_empty() {
        return Ok(Vec::new());
    }
    let prog: &'static str = match program {
        "endpoint" => PROG_ENDPOINT,
        "headend" => PROG_HEADEND,
        other => bail!("no program {other}"),
    };
    let r = match program {
        "endpoint" => {
            let r = endpoint_fixture::router()?;
            r.ns.ip(&["link", "set", "up0", "mtu", ENDPOINT_MTU])?;
            r
        }
        _ => router::router()?,
    };
    let endpoint = program == "endpoint";
    let program = program.to_string();
    netns::run_in(&r.ns.path(), move || {
        // The verifier has passed every program once this returns.
        let mut dp = if endpoint {
            endpoint_fixture::load(&endpoint_fixture::state(false, false, &[]))?
        } else {
            let mut dp = Dataplane::load(None)?;
            dp.apply_headend(&fixture::headend("cams", 1, 0))?;
            dp
        };
        let mut results = Vec::new();
        for case in cases {
            let seen = run_one(&mut dp, prog, &case.frame)
                .with_context(|| format!("running {} #{} {}", program, case.index, case.name))?;
            results.push((case, seen));
        }
        Ok(results)
    })
}

fn describe(case: &Case, seen: &Observed) -> String {
    format!(
        "{} #{} {}: expected {}, got {}",
        case.program,
        case.index,
        case.name,
        expected_text(case),
        seen
    )
}

/// Runs the program's non-KNOWN lines; fails listing every mismatch.
fn check_program(program: &str) {
    let cases: Vec<Case> = load_corpus()
        .expect("loading the corpus")
        .into_iter()
        .filter(|c| c.program == program && c.known.is_none())
        .collect();
    assert!(!cases.is_empty(), "no {program} packets in the corpus");
    let results = run_program(program, cases).expect("running the corpus");
    let aborted: Vec<String> = results
        .iter()
        .filter(|(_, s)| s.action == XDP_ABORTED)
        .map(|(c, s)| describe(c, s))
        .collect();
    let failed: Vec<String> =
        results.iter().filter(|(c, s)| !matches(c, s)).map(|(c, s)| describe(c, s)).collect();
    eprintln!("{program}: {} packets checked, {} failed", results.len(), failed.len());
    assert!(aborted.is_empty(), "XDP_ABORTED:\n  {}", aborted.join("\n  "));
    assert!(
        failed.is_empty(),
        "{} of {} {program} packets disagree with expected.tsv:\n  {}",
        failed.len(),
        results.len(),
        failed.join("\n  ")
    );
}

#[test]
fn corpus_files_agree() {
    let cases = load_corpus().expect("loading the corpus");
    for program in ["endpoint", "headend"] {
        assert!(cases.iter().any(|c| c.program == program), "no {program} packets");
    }
    for c in &cases {
        assert!(c.frame.len() >= 14, "{}: shorter than Ethernet", c.name);
    }
}

#[test]
fn endpoint_corpus() {
    check_program("endpoint");
}

#[test]
fn headend_corpus() {
    check_program("headend");
}

/// The `# KNOWN:` lines: program bugs the corpus found. Fails while any is still there, and
/// when one is fixed, so that its mark goes too.
#[test]
fn known_program_bugs() {
    let known: Vec<Case> = load_corpus()
        .expect("loading the corpus")
        .into_iter()
        .filter(|c| c.known.is_some())
        .collect();
    let mut still = Vec::new();
    let mut fixed = Vec::new();
    for program in ["endpoint", "headend"] {
        let cases: Vec<Case> = known.iter().filter(|c| c.program == program).cloned().collect();
        for (case, seen) in run_program(program, cases).expect("running the corpus") {
            assert_ne!(seen.action, XDP_ABORTED, "XDP_ABORTED: {}", describe(&case, &seen));
            if matches(&case, &seen) {
                fixed.push(format!("{} #{} {}", case.program, case.index, case.name));
            } else {
                still.push(format!(
                    "{}\n      KNOWN: {}",
                    describe(&case, &seen),
                    case.known.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    let mut report = String::new();
    if !still.is_empty() {
        report += &format!(
            "{} known program bug(s) (expected.tsv '# KNOWN:' lines) still present:\n  {}\n",
            still.len(),
            still.join("\n  ")
        );
    }
    if !fixed.is_empty() {
        report += &format!(
            "now behaving as expected: drop the '# KNOWN:' mark in tests/corpus/generate.py \
             and regenerate:\n  {}\n",
            fixed.join("\n  ")
        );
    }
    assert!(report.is_empty(), "{report}");
}
