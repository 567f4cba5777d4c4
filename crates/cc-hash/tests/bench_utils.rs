// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The benches' helpers (`cc_hash::bench`, feature `bench-utils`): what they compute, never how
//! fast anything ran.
#![cfg(feature = "bench-utils")]

use std::time::Duration;

use cc_hash::bench::{
    candidates, fastest_bare, fastest_bare_cpu, median, openssl_speed, thread_cpu, time, time_cpu,
    Clock, Rounds,
};
use cc_hash::Algorithm;

#[test]
fn median_of_odd_even_and_no_figures() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(median(Vec::new()), 0.0);
}

#[test]
fn fastest_bare_names_a_candidate() {
    let data = vec![1u8; 64 << 10];
    for alg in [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512] {
        let names: Vec<&str> = candidates(alg).iter().map(|c| c.name).collect();
        let (who, _) = fastest_bare(alg, &data);
        assert!(names.contains(&who), "{who} not among {names:?}");
        let (who, _) = fastest_bare_cpu(alg, &data);
        assert!(names.contains(&who), "{who} not among {names:?}");
    }
}

#[test]
fn clocks_run_the_closure_once() {
    let mut calls = 0;
    let _ = time(&mut || calls += 1);
    let _ = time_cpu(&mut || calls += 1);
    assert_eq!(calls, 2);
    // Thread CPU time never goes backwards.
    let a = thread_cpu();
    let b = thread_cpu();
    assert!(b >= a);
}

#[test]
fn openssl_speed_reads_a_figure_where_openssl_runs() {
    let has_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let got = openssl_speed(Algorithm::Sha256, Clock::Cpu);
    if has_openssl {
        let mib = got.expect("openssl runs, so speed prints a +F line");
        assert!(mib > 0.0, "{mib}");
    } else {
        let e = got.unwrap_err();
        assert!(e.starts_with("no openssl: "), "{e}");
    }
}

#[test]
fn rounds_print_with_and_without_openssl_figures() {
    let mut r = Rounds::new(&["a", "b"]);
    let ms = Duration::from_millis;
    r.push(ms(10), Some(100.0), &[ms(20), ms(5)]);
    r.push(ms(12), Some(110.0), &[ms(24), ms(6)]);
    r.print(1 << 20, Clock::Wall);
    let s = r.summary(1 << 20);
    // a: 1 MiB in 20 and 24 ms = 50 and 41.67 MiB/s; half the bare speed in both rounds;
    // against openssl 50/100 and 41.67/110.
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
    assert!(close(s[0].0, (50.0 + 1000.0 / 24.0) / 2.0), "{s:?}");
    assert!(close(s[0].1, 0.5), "{s:?}");
    assert!(
        close(s[0].2.unwrap(), (0.5 + 1000.0 / 24.0 / 110.0) / 2.0),
        "{s:?}"
    );
    // b: twice the bare speed in both rounds.
    assert!(close(s[1].1, 2.0), "{s:?}");
    let mut r = Rounds::new(&["a"]);
    r.push(ms(10), None, &[ms(20)]);
    r.print(1 << 20, Clock::Cpu);
    assert_eq!(
        r.summary(1 << 20)[0].2,
        None,
        "no openssl column without its figures"
    );
}
