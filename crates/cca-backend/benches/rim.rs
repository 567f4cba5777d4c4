//! RIM throughput: the RIM of 1 GiB of measured granules as a ratio to a bare hash of the same
//! bytes (one thread, one stream over all of them), measured in the same run.
//!
//! Limits (shared/spec/measurement-limits.md, "CCA RIM"): per 4 KiB page the content hash costs
//! 65 SHA-256 blocks (33 SHA-512) and the DATA descriptor chain 5 (3), so one thread can reach
//! 64/70 = 0.91 (SHA-256) or 32/35 = 0.91 (SHA-512) of a bare hash, and two cores 1.71 / 1.64.
//!
//! Run with `cargo bench -p cca-backend`. `CCA_BENCH_MIB` sets the size (default 1024).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cca_backend::{HashAlgo, RealmParams, RimDigest};
use sha2::Digest;

const PAGE: usize = 4096;

fn best(reps: usize, mut f: impl FnMut()) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mib: usize = std::env::var("CCA_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let len = mib << 20;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(131) ^ (i >> 12) as u8)
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("RIM of {mib} MiB of measured granules, {threads} cores; ratio = bare time / time");
    println!("{:<44} {:>10} {:>8}", "what", "ms", "ratio");
    let reps: usize = std::env::var("CCA_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for algo in [HashAlgo::Sha256, HashAlgo::Sha512] {
        let ring_alg = match algo {
            HashAlgo::Sha256 => &ring::digest::SHA256,
            HashAlgo::Sha512 => &ring::digest::SHA512,
        };
        let realm = RealmParams::new(algo, 40);
        let rim = |t: usize| {
            let mut d = RimDigest::new(&realm).unwrap();
            d.set_threads(t);
            d.data_range(0, &data, true).unwrap();
            black_box(d.finish());
        };
        let n = algo.name();
        let cases: Vec<(String, Box<dyn Fn()>)> = vec![
            (
                format!("{n}: bare hash, sha2 0.10, one stream"),
                Box::new(|| match algo {
                    HashAlgo::Sha256 => drop(black_box(sha2::Sha256::digest(&data))),
                    HashAlgo::Sha512 => drop(black_box(sha2::Sha512::digest(&data))),
                }),
            ),
            (
                format!("{n}: bare hash, ring 0.17, one stream"),
                Box::new(|| {
                    black_box(ring::digest::digest(ring_alg, &data));
                }),
            ),
            (
                format!("{n}: per-page hashes, sha2, one thread"),
                Box::new(|| {
                    for p in data.chunks_exact(PAGE) {
                        black_box(cca_backend::hash(algo, p));
                    }
                }),
            ),
            (
                format!("{n}: per-page hashes, ring, one thread"),
                Box::new(|| {
                    for p in data.chunks_exact(PAGE) {
                        black_box(ring::digest::digest(ring_alg, p));
                    }
                }),
            ),
            (
                format!("{n}: RIM (cca-backend), one thread"),
                Box::new(|| rim(1)),
            ),
            (
                format!("{n}: RIM (cca-backend), {threads} threads"),
                Box::new(|| rim(0)),
            ),
        ];
        // Interleaved repetitions, best of each: the machine is shared.
        let mut times = vec![Duration::MAX; cases.len()];
        for _ in 0..reps {
            for (i, (_, f)) in cases.iter().enumerate() {
                times[i] = times[i].min(best(1, f));
            }
        }
        let bare = times[0].min(times[1]);
        for ((what, _), t) in cases.iter().zip(&times) {
            println!(
                "{:<44} {:>10.1} {:>8.3}",
                what,
                t.as_secs_f64() * 1e3,
                bare.as_secs_f64() / t.as_secs_f64()
            );
        }
    }
}
