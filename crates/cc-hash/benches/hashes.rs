// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! SHA-256 / SHA-384 / SHA-512 throughput of every candidate implementation, in rounds:
//! one stream over the whole buffer (1 GiB by default), one one-shot hash per 4 KiB page, one
//! per 112-byte record (one record per page of the buffer: its MiB/s is pages' bytes per
//! second, comparable with the other rows as the chain's cost per page), and
//! this crate's multi-buffer page hashing, each round also running `openssl speed -evp <alg>`.
//! Everything is one thread, timed in thread CPU time (as `openssl speed` times itself), so that
//! other load on a shared machine does not count. Ratios are to the fastest single stream of
//! the same round.
//!
//! Run: `cargo bench -p cc-hash --features bench-utils`. `CC_HASH_BENCH_MIB` sets the size,
//! `CC_HASH_BENCH_ROUNDS` the rounds (default 5).

use std::hint::black_box;
use std::time::Duration;

use cc_hash::bench::{candidates, openssl_speed, time_cpu, Clock, Rounds};
use cc_hash::{Algorithm, PAGE_SIZE};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `cc_hash::*_many` over the pages of `data`, on the calling thread.
fn many(alg: Algorithm, data: &[u8]) {
    let n = data.len() / PAGE_SIZE;
    let r = match alg {
        Algorithm::Sha256 => cc_hash::sha256_many(data, PAGE_SIZE, &mut vec![[0; 32]; n]),
        Algorithm::Sha384 => cc_hash::sha384_many(data, PAGE_SIZE, &mut vec![[0; 48]; n]),
        Algorithm::Sha512 => cc_hash::sha512_many(data, PAGE_SIZE, &mut vec![[0; 64]; n]),
    };
    black_box(r).expect("whole pages");
}

fn main() {
    let mib = env("CC_HASH_BENCH_MIB", 1024);
    let rounds = env("CC_HASH_BENCH_ROUNDS", 5);
    let len = mib << 20;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    println!(
        "{mib} MiB, {rounds} rounds, one thread, thread CPU time; medians of per-round figures; single stream: {}",
        cc_hash::SINGLE_STREAM
    );
    for alg in [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512] {
        let cands = candidates(alg);
        let mut names: Vec<String> = Vec::new();
        for c in &cands {
            names.push(format!("one stream, {}", c.name));
        }
        for c in &cands {
            names.push(format!("per 4 KiB page, {}", c.name));
        }
        for c in &cands {
            names.push(format!("per 112-byte record (SNP PAGE_INFO), {}", c.name));
        }
        names.push(format!(
            "per page, cc-hash multi-buffer, {} lanes",
            alg.lanes()
        ));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut r = Rounds::new(&refs);
        for _ in 0..rounds {
            let mut t: Vec<Duration> = Vec::new();
            for c in &cands {
                t.push(time_cpu(&mut || {
                    drop(black_box((c.hash)(black_box(&data))))
                }));
            }
            for c in &cands {
                t.push(time_cpu(&mut || {
                    for p in data.chunks_exact(PAGE_SIZE) {
                        black_box((c.hash)(p));
                    }
                }));
            }
            // Short records: as many 112-byte messages as the buffer holds pages, so that the
            // row's MiB/s counts the same bytes (the records' own bytes are 112/4096 of them).
            let records = &data[..data.len() / PAGE_SIZE * 112];
            for c in &cands {
                t.push(time_cpu(&mut || {
                    for m in records.chunks_exact(112) {
                        black_box((c.hash)(m));
                    }
                }));
            }
            t.push(time_cpu(&mut || many(alg, &data)));
            let bare = t[..cands.len()]
                .iter()
                .min()
                .copied()
                .unwrap_or(Duration::MAX);
            r.push(bare, openssl_speed(alg, Clock::Cpu).ok(), &t);
        }
        println!("{alg:?}:");
        r.print(len, Clock::Cpu);
    }
}
