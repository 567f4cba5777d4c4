//! Measurement traces and where two of them part.
//!
//! A launch measurement is a chain: one wrong byte, flag or order and the final value differs,
//! and the value alone does not say where. A [`TraceStep`] is one measured step of a launch,
//! in order, with the running measurement after it and where the step came from; the steps come
//! from the platform crates' own measurement code (`sev_backend::LaunchDigest::traced`,
//! `tdx_backend::Mrtd::traced`, `cca_backend::RimDigest::traced`), so the last step's value is
//! the measurement. [`diff`] finds the first step where two traces differ and says whether the
//! rest is a shift (a step inserted or missing) or changed content.
//!
//! A trace is written as JSON lines ([`write_jsonl`], `ccpop measure ... --trace FILE`), one
//! object per step:
//!
//! ```text
//! {"step":0,"kind":"PAGE_INFO","page_type":"PAGE_TYPE_NORMAL","gpa":"0xffe00000","sha":"…","digest":"…","from":"plan region 0"}
//! ```
//!
//! ```
//! # #[cfg(feature = "snp")]
//! # fn main() -> Result<(), sev_backend::Error> {
//! use cc_image::trace::{diff, snp_steps, Sources};
//! use sev_backend::{LaunchDigest, PageType};
//!
//! let run = |byte: u8| -> Result<_, sev_backend::Error> {
//!     let mut ld = LaunchDigest::new().traced();
//!     ld.update_page(0x1000, PageType::Normal, Some(&[0x90u8; 4096]))?;
//!     ld.update_page(0x2000, PageType::Normal, Some(&[byte; 4096]))?;
//!     let sources = Sources::new().with(0x1000, 0x2000, "kernel");
//!     Ok(snp_steps(ld.records(), &sources))
//! };
//! let d = diff(&run(1)?, &run(2)?).expect("they differ");
//! assert_eq!(d.first_line(), "first difference: step 1, gpa 0x2000");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "snp"))] fn main() {}
//! ```

use std::fmt;
#[cfg(feature = "json")]
use std::io::{BufRead, Write};

#[cfg(feature = "json")]
use serde::{Deserialize, Serialize};

use crate::image::hex;

/// One measured step of a launch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "json", derive(Serialize, Deserialize))]
pub struct TraceStep {
    /// Its position in the launch, from 0.
    pub step: u64,
    /// What the platform recorded: `PAGE_INFO` (SNP), `PAGE.ADD` or `MR.EXTEND` (TDX),
    /// `REALM_CREATE`, `DATA`, `RIPAS` or `REC` (CCA).
    pub kind: String,
    /// SNP: the page type (`PAGE_TYPE_NORMAL`, ...).
    #[cfg_attr(
        feature = "json",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub page_type: Option<String>,
    /// The step's guest-physical address (hex).
    pub gpa: String,
    /// CCA `RIPAS`: the entry's end (hex).
    #[cfg_attr(
        feature = "json",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub top: Option<String>,
    /// The hash of what the step measured (hex): the SNP `CONTENTS` field, a TDX chunk's
    /// SHA-384, a CCA granule's or REC's content hash. Absent where nothing is hashed.
    #[cfg_attr(
        feature = "json",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sha: Option<String>,
    /// The running measurement after the step (hex).
    pub digest: String,
    /// Where it came from: the region's name, the VMSA or REC, the realm parameters.
    pub from: String,
    /// The input file the step's bytes came from, if one did.
    #[cfg_attr(
        feature = "json",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub file: Option<String>,
    /// The offset of the step's bytes in [`file`](Self::file) (hex).
    #[cfg_attr(
        feature = "json",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub offset: Option<String>,
}

/// Named guest-physical ranges a trace's steps are attributed to.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    ranges: Vec<SourceRange>,
    vmsa: Vec<String>,
}

#[derive(Clone, Debug)]
struct SourceRange {
    gpa: u64,
    len: u64,
    name: String,
    file: Option<(String, u64)>,
}

impl Sources {
    /// No ranges.
    pub fn new() -> Self {
        Sources::default()
    }

    /// Adds `[gpa, gpa + len)` named `name`. Ranges added first win where they overlap.
    pub fn with(mut self, gpa: u64, len: u64, name: impl Into<String>) -> Self {
        self.ranges.push(SourceRange {
            gpa,
            len,
            name: name.into(),
            file: None,
        });
        self
    }

    /// Adds `[gpa, gpa + len)` named `name`, whose bytes are `file`'s from `offset` on.
    pub fn with_file(
        mut self,
        gpa: u64,
        len: u64,
        name: impl Into<String>,
        file: impl Into<String>,
        offset: u64,
    ) -> Self {
        self.ranges.push(SourceRange {
            gpa,
            len,
            name: name.into(),
            file: Some((file.into(), offset)),
        });
        self
    }

    /// Names the SNP VMSA records, in order (the k-th VMSA record gets the k-th name; the
    /// others are `VMSA k`).
    pub fn with_vmsa_names(mut self, names: Vec<String>) -> Self {
        self.vmsa = names;
        self
    }

    #[cfg_attr(not(feature = "snp"), allow(dead_code))]
    fn vmsa_name(&self, k: usize) -> String {
        self.vmsa
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("VMSA {k}"))
    }

    /// (name, file, offset) of `gpa`.
    fn resolve(&self, gpa: u64) -> (String, Option<String>, Option<String>) {
        match self
            .ranges
            .iter()
            .find(|r| gpa >= r.gpa && gpa - r.gpa < r.len)
        {
            Some(r) => match &r.file {
                Some((f, off)) => (
                    r.name.clone(),
                    Some(f.clone()),
                    Some(format!("{:#x}", off.saturating_add(gpa - r.gpa))),
                ),
                None => (r.name.clone(), None, None),
            },
            None => ("outside every named range".to_string(), None, None),
        }
    }

    #[cfg_attr(
        not(any(feature = "snp", feature = "tdx", feature = "cca")),
        allow(dead_code)
    )]
    fn step(&self, n: usize, kind: &str, gpa: u64, digest: &[u8]) -> TraceStep {
        let (from, file, offset) = self.resolve(gpa);
        TraceStep {
            step: n as u64,
            kind: kind.to_string(),
            page_type: None,
            gpa: format!("{gpa:#x}"),
            top: None,
            sha: None,
            digest: hex(digest),
            from,
            file,
            offset,
        }
    }
}

/// The steps of an SNP launch digest's records ([`sev_backend::LaunchDigest::records`]).
#[cfg(feature = "snp")]
pub fn snp_steps(records: &[sev_backend::PageRecord], sources: &Sources) -> Vec<TraceStep> {
    let mut vmsas = 0;
    records
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let mut s = sources.step(n, "PAGE_INFO", r.gpa, &r.digest);
            s.page_type = Some(r.page_type.name().to_string());
            if r.page_type.measures_contents() {
                s.sha = Some(hex(&r.contents));
            }
            if r.page_type == sev_backend::PageType::Vmsa {
                s.from = sources.vmsa_name(vmsas);
                (s.file, s.offset) = (None, None);
                vmsas += 1;
            }
            s
        })
        .collect()
}

/// The steps of a TDX MRTD's records ([`tdx_backend::Mrtd::records`]).
#[cfg(feature = "tdx")]
pub fn tdx_steps(records: &[tdx_backend::MrtdRecord], sources: &Sources) -> Vec<TraceStep> {
    records
        .iter()
        .enumerate()
        .map(|(n, r)| match r.step {
            tdx_backend::MrtdStep::PageAdd => {
                let mut s = sources.step(n, "PAGE.ADD", r.gpa, &r.mrtd);
                (s.file, s.offset) = (None, None);
                s
            }
            tdx_backend::MrtdStep::MrExtend { chunk } => {
                let mut s = sources.step(n, "MR.EXTEND", r.gpa, &r.mrtd);
                s.sha = Some(hex(&chunk));
                s
            }
        })
        .collect()
}

/// The steps of a CCA RIM's records ([`cca_backend::RimDigest::records`]).
#[cfg(feature = "cca")]
pub fn cca_steps(records: &[cca_backend::RimRecord], sources: &Sources) -> Vec<TraceStep> {
    let mut recs = 0;
    records
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let rim = r.rim.as_bytes();
            // Content hashes are zero-padded to 64 bytes: keep the algorithm's length.
            let short = |m: &[u8; 64]| hex(&m[..rim.len()]);
            match r.step {
                cca_backend::RimStep::RealmCreate => {
                    let mut s = sources.step(n, "REALM_CREATE", 0, rim);
                    // The RIM starts as the hash of the measured realm parameters.
                    s.sha = Some(hex(rim));
                    (s.from, s.file, s.offset) = ("realm parameters".into(), None, None);
                    s
                }
                cca_backend::RimStep::Data { content } => {
                    let mut s = sources.step(n, "DATA", r.ipa, rim);
                    s.sha = content.as_ref().map(short);
                    if content.is_none() {
                        (s.file, s.offset) = (None, None);
                    }
                    s
                }
                cca_backend::RimStep::Ripas { top } => {
                    let mut s = sources.step(n, "RIPAS", r.ipa, rim);
                    s.top = Some(format!("{top:#x}"));
                    (s.file, s.offset) = (None, None);
                    s
                }
                cca_backend::RimStep::Rec { content } => {
                    let mut s = sources.step(n, "REC", 0, rim);
                    s.sha = Some(short(&content));
                    (s.from, s.file, s.offset) = (format!("runnable REC {recs}"), None, None);
                    recs += 1;
                    s
                }
            }
        })
        .collect()
}

/// Writes `steps` as JSON lines.
#[cfg(feature = "json")]
pub fn write_jsonl(steps: &[TraceStep], mut w: impl Write) -> std::io::Result<()> {
    for s in steps {
        serde_json::to_writer(&mut w, s)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// A trace that could not be read.
#[cfg(feature = "json")]
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a step.
    #[error("line {line}: not a trace step: {reason}")]
    Line {
        /// The line number, from 1.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Reads a trace written by [`write_jsonl`] (blank lines are skipped).
#[cfg(feature = "json")]
pub fn read_jsonl(r: impl BufRead) -> Result<Vec<TraceStep>, ReadError> {
    let mut steps = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let s: TraceStep = serde_json::from_str(&line).map_err(|e| ReadError::Line {
            line: i + 1,
            reason: e.to_string(),
        })?;
        steps.push(s);
    }
    Ok(steps)
}

/// How the steps after the first difference relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Every later step is the same but for the running value: only the first differing
    /// step's content (or flag) differs.
    SameSteps,
    /// The later steps are the same as the other side's shifted by `by` steps: `a` has
    /// extra steps (`by` > 0) or is missing some (`by` < 0) at the first difference.
    Shift {
        /// How many steps `a` has more than `b` at the first difference.
        by: i64,
    },
    /// Later steps differ in what they measure too.
    Changed,
}

/// Where two traces part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceDiff {
    /// The first step whose measured input or running value differs, or where one trace
    /// ends.
    pub step: u64,
    /// That step on each side (`None`: the trace ended).
    pub a: Option<TraceStep>,
    /// That step on the other side.
    pub b: Option<TraceStep>,
    /// How many later steps (after `step`, up to the longer trace's end) differ, running
    /// value aside.
    pub later_differing: u64,
    /// What the rest is.
    pub rest: Rest,
}

/// What a step measures, without its position and running value.
fn what(
    s: &TraceStep,
) -> (
    &str,
    &Option<String>,
    &str,
    &Option<String>,
    &Option<String>,
) {
    (&s.kind, &s.page_type, &s.gpa, &s.top, &s.sha)
}

/// The first difference between `a` and `b`, `None` when they are the same launch (the same
/// steps and final values).
pub fn diff(a: &[TraceStep], b: &[TraceStep]) -> Option<TraceDiff> {
    // The running values are a chain: the first step whose value differs is the first whose
    // input differs (whether or not the trace shows that input, as for a zero page's flags).
    let n = a
        .iter()
        .zip(b)
        .position(|(x, y)| x.digest != y.digest || what(x) != what(y))
        .unwrap_or(a.len().min(b.len()));
    if n == a.len() && n == b.len() {
        return None;
    }
    let (ra, rb) = (&a[n..], &b[n..]);
    let later_differing = (1..ra.len().max(rb.len()))
        .filter(|&k| match (ra.get(k), rb.get(k)) {
            (Some(x), Some(y)) => what(x) != what(y),
            _ => true,
        })
        .count() as u64;
    let rest = if later_differing == 0 {
        Rest::SameSteps
    } else {
        shift(ra, rb).map_or(Rest::Changed, |by| Rest::Shift { by })
    };
    Some(TraceDiff {
        step: n as u64,
        a: a.get(n).cloned(),
        b: b.get(n).cloned(),
        later_differing,
        rest,
    })
}

/// The smallest shift (up to 64 steps either way) under which the rest of `a` and `b` agree
/// to the end.
fn shift(a: &[TraceStep], b: &[TraceStep]) -> Option<i64> {
    let agrees = |x: &[TraceStep], y: &[TraceStep]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| what(p) == what(q))
    };
    (1..=64usize).find_map(|k| {
        if k <= a.len() && agrees(&a[k..], b) {
            Some(k as i64)
        } else if k <= b.len() && agrees(a, &b[k..]) {
            Some(-(k as i64))
        } else {
            None
        }
    })
}

impl TraceDiff {
    /// `first difference: step N, gpa 0x...` (the gpa of side `a`, else `b`).
    pub fn first_line(&self) -> String {
        let gpa = self
            .a
            .as_ref()
            .or(self.b.as_ref())
            .map_or("none", |s| s.gpa.as_str());
        format!("first difference: step {}, gpa {gpa}", self.step)
    }
}

fn side(f: &mut fmt::Formatter<'_>, label: &str, s: &Option<TraceStep>) -> fmt::Result {
    match s {
        None => writeln!(f, "  {label}: (trace ended)"),
        Some(s) => {
            write!(f, "  {label}: {}", s.kind)?;
            if let Some(t) = &s.page_type {
                write!(f, " {t}")?;
            }
            write!(f, " gpa {}", s.gpa)?;
            if let Some(t) = &s.top {
                write!(f, "..{t}")?;
            }
            if let Some(h) = &s.sha {
                write!(f, " sha {h}")?;
            }
            write!(f, ", from {}", s.from)?;
            if let (Some(file), Some(off)) = (&s.file, &s.offset) {
                write!(f, " ({file} at offset {off})")?;
            }
            writeln!(f)
        }
    }
}

impl fmt::Display for TraceDiff {
    /// The first line, what differs in that step, each side, and what the rest is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.first_line())?;
        if let (Some(a), Some(b)) = (&self.a, &self.b) {
            let mut differs = Vec::new();
            if a.kind != b.kind {
                differs.push("kind");
            }
            if a.page_type != b.page_type {
                differs.push("page type");
            }
            if a.gpa != b.gpa {
                differs.push("address");
            }
            if a.top != b.top {
                differs.push("end");
            }
            if a.sha != b.sha {
                differs.push("contents");
            }
            if differs.is_empty() {
                differs.push("an input the trace does not show (the running value differs)");
            }
            writeln!(f, "  differs in: {}", differs.join(", "))?;
        }
        side(f, "a", &self.a)?;
        side(f, "b", &self.b)?;
        match self.rest {
            Rest::SameSteps => write!(
                f,
                "  later steps: the same ({} differ); only this step's measured input changed",
                self.later_differing
            ),
            Rest::Shift { by } if by > 0 => write!(
                f,
                "  later steps: {} differ; the rest is a shift: a has {by} extra step(s) here",
                self.later_differing
            ),
            Rest::Shift { by } => write!(
                f,
                "  later steps: {} differ; the rest is a shift: a is missing {} step(s) here",
                self.later_differing, -by
            ),
            Rest::Changed => write!(
                f,
                "  later steps: {} differ; the rest is changed content, not a shift",
                self.later_differing
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step measuring `sha` at `gpa`; the running value is a made-up chain of the inputs,
    /// written here (not the platforms' hashes): it only has to differ once an input differs.
    fn chain(inputs: &[(u64, &str)]) -> Vec<TraceStep> {
        let mut acc = String::new();
        inputs
            .iter()
            .enumerate()
            .map(|(n, (gpa, sha))| {
                acc = format!("{acc}|{gpa:x}:{sha}");
                TraceStep {
                    step: n as u64,
                    kind: "DATA".into(),
                    page_type: None,
                    gpa: format!("{gpa:#x}"),
                    top: None,
                    sha: Some(sha.to_string()),
                    digest: acc.clone(),
                    from: format!("region at {gpa:#x}"),
                    file: None,
                    offset: None,
                }
            })
            .collect()
    }

    #[test]
    fn equal_traces_have_no_difference() {
        let a = chain(&[(0x1000, "aa"), (0x2000, "bb")]);
        assert_eq!(diff(&a, &a.clone()), None);
        assert_eq!(diff(&[], &[]), None);
    }

    #[test]
    fn one_changed_input_leaves_the_later_steps_the_same() {
        let a = chain(&[(0x1000, "aa"), (0x2000, "bb"), (0x3000, "cc")]);
        let b = chain(&[(0x1000, "aa"), (0x2000, "XX"), (0x3000, "cc")]);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.first_line(), "first difference: step 1, gpa 0x2000");
        assert_eq!((d.later_differing, d.rest), (0, Rest::SameSteps));
        let text = d.to_string();
        assert!(text.contains("differs in: contents\n"), "{text}");
        assert!(
            text.contains("a: DATA gpa 0x2000 sha bb, from region at 0x2000"),
            "{text}"
        );
        assert!(
            text.ends_with("only this step's measured input changed"),
            "{text}"
        );
    }

    #[test]
    fn an_inserted_or_missing_step_is_a_shift() {
        let a = chain(&[
            (0x1000, "aa"),
            (0x2000, "bb"),
            (0x3000, "cc"),
            (0x4000, "dd"),
        ]);
        let b = chain(&[(0x1000, "aa"), (0x3000, "cc"), (0x4000, "dd")]);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.step, 1);
        assert_eq!(d.rest, Rest::Shift { by: 1 });
        assert!(d.to_string().contains("a has 1 extra step(s) here"), "{d}");
        let d = diff(&b, &a).unwrap();
        assert_eq!(d.rest, Rest::Shift { by: -1 });
        assert!(d.to_string().contains("a is missing 1 step(s) here"), "{d}");
        // A step missing at the end: one side ended.
        let d = diff(&a[..3], &a).unwrap();
        assert_eq!((d.step, d.a.is_none()), (3, true));
        assert!(d.to_string().contains("a: (trace ended)"), "{d}");
    }

    #[test]
    fn swapped_regions_are_changed_content_not_a_shift() {
        let a = chain(&[
            (0x1000, "aa"),
            (0x2000, "bb"),
            (0x3000, "cc"),
            (0x4000, "dd"),
        ]);
        let b = chain(&[
            (0x1000, "aa"),
            (0x3000, "cc"),
            (0x2000, "bb"),
            (0x4000, "dd"),
        ]);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.first_line(), "first difference: step 1, gpa 0x2000");
        assert_eq!((d.later_differing, d.rest), (1, Rest::Changed));
        assert!(
            d.to_string().contains("differs in: address, contents"),
            "{d}"
        );
    }

    #[test]
    fn a_different_start_shows_in_the_running_value() {
        // The same inputs from another starting value (SNP's --snp-ovmf-hash, say).
        let a = chain(&[(0x1000, "aa")]);
        let mut b = a.clone();
        b[0].digest = "other".into();
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.step, 0);
        assert!(
            d.to_string().contains("an input the trace does not show"),
            "{d}"
        );
    }

    #[cfg(feature = "json")]
    #[test]
    fn jsonl_round_trips_and_names_a_bad_line() {
        let a = chain(&[(0x1000, "aa"), (0xffff_f000, "bb")]);
        let mut out = Vec::new();
        write_jsonl(&a, &mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        // Optional fields are left out, not written as null.
        assert!(!text.contains("null"), "{text}");
        assert_eq!(text.lines().count(), 2);
        assert_eq!(read_jsonl(&out[..]).unwrap(), a);
        let bad = format!("{}\n\n{{\"step\": 1}}\n", text.lines().next().unwrap());
        match read_jsonl(bad.as_bytes()) {
            Err(ReadError::Line { line, reason }) => {
                assert_eq!(line, 3);
                assert!(reason.contains("missing field"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn steps_are_named_by_the_range_holding_them() {
        let s = Sources::new()
            .with_file(0x1000, 0x2000, "kernel", "vmlinuz", 0x200)
            .with(0x1000, 0x8000, "RAM");
        assert_eq!(
            s.resolve(0x2000),
            (
                "kernel".to_string(),
                Some("vmlinuz".to_string()),
                Some("0x1200".to_string())
            )
        );
        assert_eq!(s.resolve(0x3000), ("RAM".to_string(), None, None));
        assert_eq!(s.resolve(0x9000).0, "outside every named range");
        assert_eq!(s.vmsa_name(0), "VMSA 0");
    }
}
