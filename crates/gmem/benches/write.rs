//! `SharedView::write_at` speed, as a ratio to a plain `memcpy` into prefaulted anonymous memory
//! measured in the same run. `cargo bench -p gmem --bench write`. Needs /dev/kvm.

use std::hint::black_box;
use std::time::{Duration, Instant};

use gmem::{GmemFlags, GuestMemfd};

const SIZE: usize = 64 << 20;
const ROUNDS: usize = 5;

fn best(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let host = gmem::testing::Host::get();
    if let Some(why) = host.lacks(&gmem::testing::Need::SharedGuestMemfd) {
        eprintln!("bench write: SKIPPED: needs guest_memfd with MMAP|INIT_SHARED: {why}");
        return;
    }
    let (_kvm, vm) = gmem::testing::default_vm();
    let flags = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
    let src: Vec<u8> = (0..SIZE).map(|i| (i * 31) as u8).collect();
    let mut dst = vec![1u8; SIZE]; // prefaulted
    let memcpy = best(|| {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });

    let g = GuestMemfd::create(&vm, SIZE as u64, flags).expect("create");
    g.allocate(0, SIZE as u64).expect("allocate");
    let view = g.map_shared(0, SIZE as u64).expect("map");
    view.populate_write(0, SIZE as u64).expect("populate");
    let write_at = best(|| view.write_at(0, black_box(&src)).expect("write"));

    let mut back = vec![0u8; SIZE];
    let read_at = best(|| view.read_at(0, black_box(&mut back)).expect("read"));
    assert!(back == src);

    let gib_s = |d: Duration| SIZE as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
    println!("memcpy (reference): {:.2} GiB/s", gib_s(memcpy));
    println!(
        "write_at:           {:.2} GiB/s, ratio to memcpy {:.2}",
        gib_s(write_at),
        memcpy.as_secs_f64() / write_at.as_secs_f64()
    );
    println!(
        "read_at:            {:.2} GiB/s, ratio to memcpy {:.2}",
        gib_s(read_at),
        memcpy.as_secs_f64() / read_at.as_secs_f64()
    );
}
