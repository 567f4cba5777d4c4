// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers the workspace's benches share (feature `bench-utils`): every single-stream SHA-2
//! implementation this crate chose among, `openssl speed` run from the bench, and the rounds
//! bookkeeping (medians of per-round ratios). Not for production builds.
//!
//! ```no_run
//! use cc_hash::bench::{fastest_bare, openssl_speed, Clock, Rounds};
//! use cc_hash::Algorithm;
//!
//! let data = vec![0u8; 64 << 20];
//! let mut rounds = Rounds::new(&["my measurement"]);
//! for _ in 0..5 {
//!     let (_, bare) = fastest_bare(Algorithm::Sha384, &data);
//!     let t = std::time::Instant::now();
//!     // ... the measurement over `data` ...
//!     rounds.push(bare, openssl_speed(Algorithm::Sha384, Clock::Wall).ok(), &[t.elapsed()]);
//! }
//! rounds.print(data.len(), Clock::Wall);
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Algorithm;

/// One single-stream implementation: a name and its one-shot hash.
#[derive(Clone, Copy)]
pub struct Candidate {
    /// Crate and version, as printed.
    pub name: &'static str,
    /// The one-shot hash (digest bytes).
    pub hash: fn(&[u8]) -> Vec<u8>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn sha2_crate(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    match alg {
        Algorithm::Sha256 => sha2::Sha256::digest(m).to_vec(),
        Algorithm::Sha384 => sha2::Sha384::digest(m).to_vec(),
        Algorithm::Sha512 => sha2::Sha512::digest(m).to_vec(),
    }
}

/// `sha2-asm`'s kernels (what `sha2`'s `asm` feature links) driven directly: on x86_64 `sha2`
/// 0.10 prefers its SHA-NI / AVX2 intrinsics whenever the CPU has them and uses the assembly
/// only as the fallback, so enabling the feature changes nothing on this project's machines;
/// this measures the assembly itself. Padding per FIPS 180-4 5.1.
fn sha2_asm(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => {
            let mut st = crate::consts::IV256;
            let full = m.len() / 64 * 64;
            let (blocks, []) = m[..full].as_chunks::<64>() else {
                unreachable!("a whole number of blocks")
            };
            sha2_asm::compress256(&mut st, blocks);
            let mut pad = [[0u8; 64]; 2];
            let tail = &m[full..];
            let n = if tail.len() < 56 { 1 } else { 2 };
            let flat = pad.as_flattened_mut();
            flat[..tail.len()].copy_from_slice(tail);
            flat[tail.len()] = 0x80;
            flat[n * 64 - 8..n * 64].copy_from_slice(&(m.len() as u64 * 8).to_be_bytes());
            sha2_asm::compress256(&mut st, &pad[..n]);
            st.iter().flat_map(|w| w.to_be_bytes()).collect()
        }
        Algorithm::Sha384 | Algorithm::Sha512 => {
            let mut st = if alg == Algorithm::Sha384 {
                crate::consts::IV384
            } else {
                crate::consts::IV512
            };
            let full = m.len() / 128 * 128;
            let (blocks, []) = m[..full].as_chunks::<128>() else {
                unreachable!("a whole number of blocks")
            };
            sha2_asm::compress512(&mut st, blocks);
            let mut pad = [[0u8; 128]; 2];
            let tail = &m[full..];
            let n = if tail.len() < 112 { 1 } else { 2 };
            let flat = pad.as_flattened_mut();
            flat[..tail.len()].copy_from_slice(tail);
            flat[tail.len()] = 0x80;
            flat[n * 128 - 16..n * 128].copy_from_slice(&(m.len() as u128 * 8).to_be_bytes());
            sha2_asm::compress512(&mut st, &pad[..n]);
            let mut o: Vec<u8> = st.iter().flat_map(|w| w.to_be_bytes()).collect();
            o.truncate(alg.digest_len());
            o
        }
    }
}

fn ring_crate(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    let a = match alg {
        Algorithm::Sha256 => &ring::digest::SHA256,
        Algorithm::Sha384 => &ring::digest::SHA384,
        Algorithm::Sha512 => &ring::digest::SHA512,
    };
    ring::digest::digest(a, m).as_ref().to_vec()
}

fn aws_lc(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    let a = match alg {
        Algorithm::Sha256 => &aws_lc_rs::digest::SHA256,
        Algorithm::Sha384 => &aws_lc_rs::digest::SHA384,
        Algorithm::Sha512 => &aws_lc_rs::digest::SHA512,
    };
    aws_lc_rs::digest::digest(a, m).as_ref().to_vec()
}

/// Through the low-level contexts (`SHA*_Init/Update/Final`): OpenSSL 3's one-shot `SHA384()`
/// etc. fetch the algorithm on every call, several times the cost of a short record's hash.
fn openssl_crate(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => {
            let mut h = openssl::sha::Sha256::new();
            h.update(m);
            h.finish().to_vec()
        }
        Algorithm::Sha384 => {
            let mut h = openssl::sha::Sha384::new();
            h.update(m);
            h.finish().to_vec()
        }
        Algorithm::Sha512 => {
            let mut h = openssl::sha::Sha512::new();
            h.update(m);
            h.finish().to_vec()
        }
    }
}

macro_rules! candidates {
    ($alg:expr) => {
        [
            Candidate {
                name: "sha2 0.10 (intrinsics)",
                hash: |m| sha2_crate($alg, m),
            },
            Candidate {
                name: "sha2-asm 0.6 kernels",
                hash: |m| sha2_asm($alg, m),
            },
            Candidate {
                name: "ring 0.17",
                hash: |m| ring_crate($alg, m),
            },
            Candidate {
                name: "aws-lc-rs 1",
                hash: |m| aws_lc($alg, m),
            },
            Candidate {
                name: "openssl 0.10 (system libcrypto)",
                hash: |m| openssl_crate($alg, m),
            },
        ]
    };
}

/// Every single-stream implementation compared for `alg`.
pub fn candidates(alg: Algorithm) -> [Candidate; 5] {
    match alg {
        Algorithm::Sha256 => candidates!(Algorithm::Sha256),
        Algorithm::Sha384 => candidates!(Algorithm::Sha384),
        Algorithm::Sha512 => candidates!(Algorithm::Sha512),
    }
}

/// Times every candidate once over `data` (one thread, one stream) and returns the fastest's
/// name and wall time.
pub fn fastest_bare(alg: Algorithm, data: &[u8]) -> (&'static str, Duration) {
    fastest_bare_by(alg, data, time)
}

/// [`fastest_bare`] in the calling thread's CPU time (for single-threaded comparisons on a
/// shared machine: time the thread spent descheduled is not counted).
pub fn fastest_bare_cpu(alg: Algorithm, data: &[u8]) -> (&'static str, Duration) {
    fastest_bare_by(alg, data, time_cpu)
}

fn fastest_bare_by(
    alg: Algorithm,
    data: &[u8],
    clock: fn(&mut dyn FnMut()) -> Duration,
) -> (&'static str, Duration) {
    candidates(alg)
        .iter()
        .map(|c| {
            let t = clock(&mut || drop(std::hint::black_box((c.hash)(data))));
            (c.name, t)
        })
        .min_by_key(|(_, t)| *t)
        .unwrap_or(("none", Duration::MAX))
}

/// Wall time of one call of `f`.
pub fn time(f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Thread CPU time of one call of `f` (which must not spawn the work it times elsewhere).
pub fn time_cpu(f: &mut dyn FnMut()) -> Duration {
    let t = thread_cpu();
    f();
    thread_cpu().saturating_sub(t)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec the call writes into;
    // CLOCK_THREAD_CPUTIME_ID exists on every Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Which clock a figure was timed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Elapsed time (`openssl speed -elapsed`): what a multi-threaded measurement must use.
    Wall,
    /// CPU time of the hashing thread (`openssl speed`'s default, user time): immune to time
    /// spent descheduled on a shared machine.
    Cpu,
}

/// The arguments of [`openssl_speed`]'s `openssl` run.
fn openssl_speed_args(alg: Algorithm, clock: Clock) -> Vec<&'static str> {
    let name = match alg {
        Algorithm::Sha256 => "sha256",
        Algorithm::Sha384 => "sha384",
        Algorithm::Sha512 => "sha512",
    };
    let mut args = vec!["speed", "-mr", "-seconds", "1", "-bytes", "16384"];
    if clock == Clock::Wall {
        args.push("-elapsed");
    }
    args.extend(["-evp", name]);
    args
}

/// `openssl speed -evp <alg> -bytes 16384 -seconds 1 -mr` (with `-elapsed` for
/// [`Clock::Wall`]): one thread hashing 16 KiB buffers for a second, in MiB/s. `Err` says why
/// there is no figure (no `openssl` on the path, or output it could not read).
pub fn openssl_speed(alg: Algorithm, clock: Clock) -> Result<f64, String> {
    let out = Command::new("openssl")
        .args(openssl_speed_args(alg, clock))
        .output()
        .map_err(|e| format!("no openssl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `+F:<n>:<alg>:<bytes per second>` for each buffer size.
    text.lines()
        .filter_map(|l| l.strip_prefix("+F:"))
        .filter_map(|l| l.rsplit(':').next()?.parse::<f64>().ok())
        .next()
        .map(|bps| bps / (1u64 << 20) as f64)
        .ok_or_else(|| format!("openssl speed printed no +F line ({})", out.status))
}

/// The median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per-round times of named variants against the fastest bare hash and `openssl speed` of the
/// same round; prints medians of the per-round ratios (ratios within a round share the
/// machine's load of that moment).
#[derive(Debug)]
pub struct Rounds {
    names: Vec<String>,
    bare: Vec<Duration>,
    openssl: Vec<Option<f64>>,
    times: Vec<Vec<Duration>>,
}

impl Rounds {
    /// Bookkeeping for the variants `names`.
    pub fn new(names: &[&str]) -> Self {
        Rounds {
            names: names.iter().map(|s| s.to_string()).collect(),
            bare: Vec::new(),
            openssl: Vec::new(),
            times: Vec::new(),
        }
    }

    /// One round: the fastest bare single-stream time, `openssl speed`'s MiB/s (if any), and
    /// each variant's time, in the order of the names.
    pub fn push(&mut self, bare: Duration, openssl: Option<f64>, times: &[Duration]) {
        self.bare.push(bare);
        self.openssl.push(openssl);
        self.times.push(times.to_vec());
    }

    /// Medians of each variant's MiB/s, ratio to the bare hash and ratio to `openssl speed`
    /// over `bytes` of input, and how much the rounds spread; `clock` is the one every figure
    /// was timed with.
    pub fn print(&self, bytes: usize, clock: Clock) {
        let mib = |d: Duration| bytes as f64 / (1u64 << 20) as f64 / d.as_secs_f64();
        let bare: Vec<f64> = self.bare.iter().map(|d| mib(*d)).collect();
        let (lo, hi) = spread(&bare);
        let ssl: Vec<f64> = self.openssl.iter().flatten().copied().collect();
        println!(
            "  bare (fastest single stream each round): median {:8.1} MiB/s (rounds {lo:.1}..{hi:.1})",
            median(bare.clone())
        );
        if ssl.len() == self.openssl.len() && !ssl.is_empty() {
            let (lo, hi) = spread(&ssl);
            println!(
                "  openssl speed -evp (16 KiB, {}): median {:8.1} MiB/s (rounds {lo:.1}..{hi:.1})",
                match clock {
                    Clock::Wall => "-elapsed",
                    Clock::Cpu => "CPU time",
                },
                median(ssl.clone())
            );
        } else {
            println!(
                "  openssl speed: not measured (no `openssl` on the path); its column is skipped"
            );
        }
        println!(
            "  {:<52} {:>9} {:>9} {:>10}",
            "what", "MiB/s", "vs bare", "vs openssl"
        );
        for (name, (speed, rb, ro)) in self.names.iter().zip(self.summary(bytes)) {
            let ro = match ro {
                Some(r) => format!("{r:10.3}"),
                None => format!("{:>10}", "-"),
            };
            println!("  {name:<52} {speed:9.1} {rb:9.3} {ro}");
        }
    }

    /// Per variant, in the order of the names: median MiB/s over `bytes`, median ratio to the
    /// bare hash (bare time / variant time), and median ratio to `openssl speed` (variant MiB/s
    /// / openssl's; `None` unless every round has an openssl figure).
    pub fn summary(&self, bytes: usize) -> Vec<(f64, f64, Option<f64>)> {
        let mib = |d: &Duration| bytes as f64 / (1u64 << 20) as f64 / d.as_secs_f64();
        (0..self.names.len())
            .map(|i| {
                let t: Vec<Duration> = self
                    .times
                    .iter()
                    .filter_map(|r| r.get(i).copied())
                    .collect();
                let speed = median(t.iter().map(mib).collect());
                let rb = median(
                    t.iter()
                        .zip(&self.bare)
                        .map(|(t, b)| b.as_secs_f64() / t.as_secs_f64())
                        .collect(),
                );
                let ro: Vec<f64> = t
                    .iter()
                    .zip(&self.openssl)
                    .filter_map(|(t, o)| o.map(|o| mib(t) / o))
                    .collect();
                let ro = (ro.len() == t.len() && !ro.is_empty()).then(|| median(ro));
                (speed, rb, ro)
            })
            .collect()
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_speed_times_with_the_clock_asked_for() {
        // openssl-speed(1): `-elapsed` measures wall-clock time instead of user CPU time.
        // (The arguments were once built and then not passed: a Wall figure was CPU time.)
        assert_eq!(
            openssl_speed_args(Algorithm::Sha384, Clock::Wall),
            ["speed", "-mr", "-seconds", "1", "-bytes", "16384", "-elapsed", "-evp", "sha384"]
        );
        assert_eq!(
            openssl_speed_args(Algorithm::Sha256, Clock::Cpu),
            ["speed", "-mr", "-seconds", "1", "-bytes", "16384", "-evp", "sha256"]
        );
        assert_eq!(
            openssl_speed_args(Algorithm::Sha512, Clock::Cpu).last(),
            Some(&"sha512")
        );
    }
}
