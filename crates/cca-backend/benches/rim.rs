//! RIM throughput: the RIM of 1 GiB of measured granules as a ratio to the fastest bare
//! single-stream hash of the same bytes measured in the same round (`cc_hash::bench`: sha2,
//! sha2-asm, ring, aws-lc-rs, system libcrypto), and to `openssl speed -evp sha256|sha512` run
//! in the same round.
//!
//! Limits (shared/spec/measurement-limits.md, "CCA RIM"): per 4 KiB page the content hash costs
//! 65 SHA-256 blocks (33 SHA-512) and the DATA descriptor chain 5 (3), so with one stream per
//! granule one thread can reach 64/70 = 0.91 (SHA-256) or 32/35 = 0.91 (SHA-512) of a bare
//! hash, and two cores 1.71 / 1.64. Multi-buffer content hashing (cc-hash: 16 granules per
//! AVX-512 register for SHA-256, 8 for SHA-512) is not bound by those; only the descriptor
//! chain stays one stream. Target: >= 1.5 on two cores for both.
//!
//! Run with `cargo bench -p cca-backend --features bench`. `CCA_BENCH_MIB` sets the size
//! (default 1024), `CCA_BENCH_REPS` the rounds (default 5).

use std::hint::black_box;

use cc_hash::bench::{fastest_bare, openssl_speed, time, Clock, Rounds};
use cc_hash::Algorithm;
use cca_backend::{HashAlgo, RealmParams, RimDigest};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mib = env("CCA_BENCH_MIB", 1024);
    let rounds = env("CCA_BENCH_REPS", 5);
    let len = mib << 20;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(131) ^ (i >> 12) as u8)
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for algo in [HashAlgo::Sha256, HashAlgo::Sha512] {
        let alg = match algo {
            HashAlgo::Sha256 => Algorithm::Sha256,
            HashAlgo::Sha512 => Algorithm::Sha512,
        };
        let realm = RealmParams::new(algo, 40);
        let rim = |t: usize| {
            let Ok(mut d) = RimDigest::new(&realm) else {
                return;
            };
            d.set_threads(t);
            black_box(d.data_range(0, &data, true)).expect("aligned");
            black_box(d.finish());
        };
        let n = algo.name();
        let one = format!("{n}: RIM, one thread (limit 0.91 one stream per page)");
        let all = format!(
            "{n}: RIM, {cores} threads (limit {} one stream per page)",
            if algo == HashAlgo::Sha256 {
                "1.71"
            } else {
                "1.64"
            }
        );
        let mut r = Rounds::new(&[&one, &all]);
        let mut winners = Vec::new();
        for _ in 0..rounds {
            let (who, bare) = fastest_bare(alg, &data);
            winners.push(who);
            let t1 = time(&mut || rim(1));
            let tn = time(&mut || rim(0));
            r.push(bare, openssl_speed(alg, Clock::Wall).ok(), &[t1, tn]);
        }
        winners.sort_unstable();
        winners.dedup();
        println!(
            "RIM {n} of {mib} MiB of measured granules ({rounds} rounds, wall time, medians; fastest bare: {}; hashing: {}):",
            winners.join(" / "),
            cc_hash::SINGLE_STREAM
        );
        r.print(len, Clock::Wall);
    }
}
