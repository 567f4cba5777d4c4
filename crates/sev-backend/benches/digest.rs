//! Launch-digest throughput as a ratio to the fastest bare single-stream SHA-384 of the same
//! bytes measured in the same round (`cc_hash::bench`: sha2, sha2-asm, ring, aws-lc-rs, system
//! libcrypto), and to `openssl speed -evp sha384` run in the same round.
//!
//! Limit (../../shared/spec/measurement-limits.md, "SNP launch digest"): per 4 KiB page the
//! content hash is 33 SHA-384 blocks (independent per page) and the PAGE_INFO chain 2 blocks
//! (serial): one stream per core gives one thread 32/35 = 0.91 of a bare hash and two cores
//! 32/(33/2+2) = 1.73. Multi-buffer content hashing (cc-hash, 8 pages per AVX-512 register) is
//! not bound by those: only the 2-block chain stays one stream. Target: >= 1.5 on two cores.
//!
//! Run: `cargo bench -p sev-backend --features bench`. `SEV_BENCH_ROUNDS` sets the rounds
//! (default 5).

use std::hint::black_box;

use cc_hash::bench::{fastest_bare, openssl_speed, time, Clock, Rounds};
use cc_hash::Algorithm;
use sev_backend::{LaunchDigest, PageType};

fn run(name: &str, size: usize, rounds: usize) {
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let gpa = (1u64 << 32) - size as u64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let digest = |threads: usize| {
        let mut ld = LaunchDigest::new().with_threads(threads);
        ld.update_pages(gpa, PageType::Normal, Some(&data), size as u64)
            .expect("aligned");
        black_box(ld.digest());
    };
    let one = "launch digest, 1 thread (limit 0.91 one stream per page)".to_string();
    let all = format!("launch digest, {cores} threads (limit 1.73 one stream per page)");
    let mut r = Rounds::new(&[&one, &all]);
    let mut winners = Vec::new();
    for _ in 0..rounds {
        let (who, bare) = fastest_bare(Algorithm::Sha384, &data);
        winners.push(who);
        let t1 = time(&mut || digest(1));
        let tn = time(&mut || digest(cores));
        r.push(
            bare,
            openssl_speed(Algorithm::Sha384, Clock::Wall).ok(),
            &[t1, tn],
        );
    }
    winners.sort_unstable();
    winners.dedup();
    println!(
        "{name} ({} MiB, {rounds} rounds, wall time, medians; fastest bare: {}; hashing: {}):",
        size >> 20,
        winners.join(" / "),
        cc_hash::SINGLE_STREAM
    );
    r.print(size, Clock::Wall);
}

fn main() {
    let rounds = std::env::var("SEV_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    run("4 MiB firmware image", 4 << 20, rounds * 2);
    run("1 GiB of measured pages", 1 << 30, rounds);
}
