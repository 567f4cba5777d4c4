//! Benchmarks of the populate engine (a plain `main`, run with `cargo bench -p cc-populate`).
//!
//! 1. Copy-populating 1 GiB into guest_memfd through the plain backend and the driver, as a ratio
//!    to a single-threaded memcpy of the same bytes into fresh anonymous memory in the same run
//!    (target >= 0.9). Needs /dev/kvm.
//! 2. Validating and chunking plans of 10^4 .. 10^6 regions (target: 10^6 well under 1 s), with
//!    time per region x log2(n) to show n log n scaling.
//! 3. Calls for a 2 MiB-aligned 64 MiB region with a backend taking 2 MiB chunks (target <= 32).
//!
//! Set `CCPOP_BENCH_GIB` to change the size of (1) (default 1).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cc_populate::plain::PlainBackend;
use cc_populate::testing::LedgerBackend;
use cc_populate::{Backend, Driver, MemoryLayout, PlanBuilder, Role, SourceBuf};
use gmem::{GmemFlags, GuestMemfd};

fn best<F: FnMut() -> Duration>(reps: usize, mut f: F) -> Duration {
    (0..reps).map(|_| f()).min().unwrap_or_default()
}

fn memcpy_fresh(src: &[u8]) -> Duration {
    let mut dst = SourceBuf::new(src.len()).expect("anonymous memory");
    let t = Instant::now();
    dst.as_mut_slice().copy_from_slice(src);
    let d = t.elapsed();
    black_box(dst.as_slice()[src.len() / 2]);
    d
}

fn populate_once(vm: &kvm_ioctls::VmFd, src: &SourceBuf, threads: usize) -> (Duration, u64) {
    let size = src.len() as u64;
    let gmem = GuestMemfd::create(vm, size, GmemFlags::MMAP | GmemFlags::INIT_SHARED)
        .expect("guest_memfd");
    let mut backend = PlainBackend::new().with_threads(threads);
    backend.add_memslot(0, 0, &gmem, 0, size).expect("view");
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, src.as_slice())
        .build(&backend.caps(), &backend.layout().expect("layout"))
        .expect("plan");
    let t = Instant::now();
    let report = Driver::new(&mut backend).run(&plan).expect("populate");
    let d = t.elapsed();
    assert!(report.is_complete());
    (d, report.calls())
}

/// The VMM writes the image into the shared view itself (one copy, with the same prefaulting),
/// then populate has nothing left to copy.
fn in_place_once(vm: &kvm_ioctls::VmFd, src: &SourceBuf) -> (Duration, u64) {
    let size = src.len() as u64;
    let gmem = GuestMemfd::create(vm, size, GmemFlags::MMAP | GmemFlags::INIT_SHARED)
        .expect("guest_memfd");
    let t = Instant::now();
    {
        let view = gmem.map_shared(0, size).expect("view");
        view.populate_write(0, size).expect("prefault");
        view.write_at(0, src.as_slice()).expect("write");
    }
    let mut backend = PlainBackend::new();
    backend.add_memslot(0, 0, &gmem, 0, size).expect("view");
    let plan = PlanBuilder::new()
        .in_place(0, size, Role::Measured)
        .build(&backend.caps(), &backend.layout().expect("layout"))
        .expect("plan");
    let report = Driver::new(&mut backend).run(&plan).expect("populate");
    (t.elapsed(), report.calls())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn populate_bench() {
    let gib: u64 = std::env::var("CCPOP_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let size = gib << 30;
    if size == 0 {
        println!("populate: skipped (CCPOP_BENCH_GIB=0)");
        return;
    }
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        println!("populate: skipped (no /dev/kvm)");
        return;
    };
    let vm = kvm.create_vm().expect("create VM");
    let mut src = SourceBuf::new(size as usize).expect("source");
    for (i, b) in src.as_mut_slice().chunks_mut(4096).enumerate() {
        b.fill(i as u8);
    }
    // One discarded round first: the first gigabyte a process takes from this (nested) machine
    // is several times slower to fault in than later ones, for memcpy and populate alike.
    let _ = populate_once(&vm, &src, 2);
    let _ = memcpy_fresh(src.as_slice());
    // Rounds alternate the reference and every variant, so drift hits them alike; each ratio is
    // to the memcpy of its own round.
    let names = [
        "copy-populate, 1 thread",
        "copy-populate, 2 threads",
        "write in place + populate",
    ];
    let mut ratios = vec![Vec::new(); names.len()];
    let mut times = vec![Vec::new(); names.len() + 1];
    let mut calls = [0u64; 3];
    for _ in 0..5 {
        let reference = memcpy_fresh(src.as_slice());
        times[0].push(reference.as_secs_f64());
        let runs = [
            populate_once(&vm, &src, 1),
            populate_once(&vm, &src, 2),
            in_place_once(&vm, &src),
        ];
        for (k, (d, c)) in runs.into_iter().enumerate() {
            ratios[k].push(reference.as_secs_f64() / d.as_secs_f64());
            times[k + 1].push(d.as_secs_f64());
            calls[k] = c;
        }
    }
    println!(
        "| {gib} GiB into guest_memfd | ratio to memcpy (median of 5 rounds; higher is better) | median time (memcpy {:.0} ms) | calls |\n|---|---|---|---|",
        median(times[0].clone()) * 1e3
    );
    for (k, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.2} | {:.0} ms | {} |",
            median(ratios[k].clone()),
            median(times[k + 1].clone()) * 1e3,
            calls[k]
        );
    }
}

fn validate_bench() {
    println!(
        "\n| regions | validate + chunk | per region | per region / log2(n) |\n|---|---|---|---|"
    );
    let caps = LedgerBackend::new(2 << 20).caps;
    for n in [10_000u64, 100_000, 1_000_000] {
        // Regions given in a scrambled (but deterministic) order, so the sort has work to do.
        let d = best(3, || {
            let mut b = PlanBuilder::with_capacity(n as usize);
            for i in 0..n {
                let k = (i * 7919) % n;
                b.push(cc_populate::RegionSpec {
                    gpa: k * 0x4000,
                    len: 0x2000,
                    role: Role::Unmeasured,
                    content: cc_populate::Content::InPlace,
                });
            }
            let t = Instant::now();
            let plan = b
                .build(&caps, &MemoryLayout::unbounded())
                .expect("valid plan");
            let chunks = plan.chunk_count();
            let d = t.elapsed();
            assert_eq!(chunks, n);
            d
        });
        let per = d.as_secs_f64() / n as f64;
        println!(
            "| {n} | {:.1} ms | {:.0} ns | {:.1} ns |",
            d.as_secs_f64() * 1e3,
            per * 1e9,
            per * 1e9 / (n as f64).log2()
        );
    }
}

fn calls_bench() {
    let mut b = LedgerBackend::new(2 << 20);
    let plan = PlanBuilder::new()
        .in_place(1 << 30, 64 << 20, Role::Measured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .expect("plan");
    let report = Driver::new(&mut b).run(&plan).expect("run");
    println!(
        "\n| 2 MiB-aligned 64 MiB region, 2 MiB chunks | {} calls (target <= 32) |",
        report.calls()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    populate_bench();
    validate_bench();
    calls_bench();
}
