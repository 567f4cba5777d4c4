//! What in-place populate saves (issue 23 item 5), measured, not asserted: bytes copied and peak
//! memory for a 1 GiB image, populated from a separate source and in place, in the same run,
//! printed as ratios (a plain `main`: `cargo bench -p cc-populate --bench in_place`).
//!
//! Both runs launch the same image through `cc_populate::Driver` into a guest_memfd stand-in
//! (`gmem::GuestMemfd::with_model`: a memfd, converted over gmem's per-guest_memfd path against
//! `gmem::testing::SeriesModel`, the model of series v8), with a backend that does what an SNP
//! or TDX kernel does with the pages:
//!
//! - **separate source**: the VMM loads the image into its own anonymous buffer, the driver
//!   converts each region and the "kernel" copies every chunk from the buffer into the private
//!   pages (`copy_from_user` / `TDH.MEM.PAGE.ADD` from a source page);
//! - **in place**: the VMM loads the image through the guest_memfd's shared view, the driver
//!   converts it and the "kernel" populates it where it lies (`uaddr` / `source_addr` 0): no
//!   copy.
//!
//! Bytes copied counts every byte written on the way (the load, then the populate's copies).
//! Peak memory is the largest sum, sampled after the load and after every populate call, of the
//! process's anonymous resident memory (`RssAnon`, `/proc/self/status`) and the guest_memfd's
//! allocated bytes (`fstat` blocks): what a host pays for the image while it is launched. The
//! firmware's own pass over the pages (encryption, measurement) is the same in both and not
//! modelled. Set `CCPOP_INPLACE_MIB` to change the image size (default 1024).

use std::borrow::Cow;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Instant;

use cc_populate::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, Driver, ErrorKind,
    InPlacePopulate, MemoryLayout, PlanBuilder, Populated, Role, RoleSet, SourceBuf, HUGE_2M,
    PAGE_SIZE,
};
use gmem::testing::SeriesModel;
use gmem::{GmemFlags, GmemSeries, GuestMemfd, MemoryState};

/// The image's byte at `i` (what "reading the image file" yields).
fn byte(i: u64) -> u8 {
    (i >> 12) as u8 ^ (i as u8).wrapping_mul(31)
}

/// `RssAnon` of this process, in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A platform populating through a guest_memfd stand-in: conversion before populate, 2 MiB
/// chunks, in-place populate from a zero source.
struct Kernel {
    gmem: GuestMemfd,
    /// The file, as the kernel reaches the private pages.
    file: File,
    /// Bytes written into guest memory by populate calls.
    copied: u64,
    /// The largest `RssAnon` + guest_memfd bytes seen.
    peak: u64,
}

impl Kernel {
    fn new(size: u64) -> Kernel {
        let gmem = GuestMemfd::with_model(
            size,
            GmemFlags::MMAP | GmemFlags::INIT_SHARED,
            GmemSeries::V8,
            Box::new(SeriesModel::new(GmemSeries::V8, size, true)),
        )
        .expect("guest_memfd stand-in");
        let file = File::from(gmem.as_fd().try_clone_to_owned().expect("dup"));
        Kernel {
            gmem,
            file,
            copied: 0,
            peak: 0,
        }
    }

    fn sample(&mut self) {
        let gmem_bytes = self.file.metadata().map_or(0, |m| m.blocks() * 512);
        self.peak = self.peak.max(rss_anon() + gmem_bytes);
    }
}

impl Backend for Kernel {
    fn caps(&self) -> BackendCaps {
        BackendCaps {
            granule: PAGE_SIZE,
            max_chunk: HUGE_2M,
            hugepage_chunks: true,
            in_place: true,
            conversion: Conversion::BeforePopulate,
            roles: RoleSet::COMMON,
        }
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Borrowed(role.name())
    }

    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        match self.gmem.convert(gpa, len, MemoryState::Private) {
            Ok(()) => Populated::all(len),
            Err(e) => Populated::failed(0, BackendError::new(ErrorKind::Failed, e.to_string())),
        }
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        match chunk.source {
            // The kernel copies the source page into the private page.
            ChunkSource::Bytes(b) => {
                if let Err(e) = self.file.write_all_at(b, chunk.gpa) {
                    return Populated::failed(
                        0,
                        BackendError::new(ErrorKind::Failed, e.to_string()),
                    );
                }
                self.copied += b.len() as u64;
            }
            // Populated where it lies: nothing copied.
            ChunkSource::InPlace | ChunkSource::Zero => {}
        }
        self.sample();
        Populated::all(chunk.len)
    }

    fn in_place_populate(&self) -> InPlacePopulate {
        InPlacePopulate::ZeroSource
    }
}

struct Outcome {
    copied: u64,
    peak: u64,
    seconds: f64,
}

fn separate(size: u64) -> Outcome {
    let t = Instant::now();
    let mut kernel = Kernel::new(size);
    let mut src = SourceBuf::new(size as usize).expect("anonymous memory");
    for (i, b) in src.as_mut_slice().iter_mut().enumerate() {
        *b = byte(i as u64);
    }
    let loaded = size;
    kernel.sample();
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, src.as_slice())
        .build(&kernel.caps(), &MemoryLayout::unbounded())
        .expect("plan");
    let report = Driver::new(&mut kernel).run(&plan).expect("populate");
    assert!(report.is_complete());
    drop(plan);
    drop(src);
    Outcome {
        copied: loaded + kernel.copied,
        peak: kernel.peak,
        seconds: t.elapsed().as_secs_f64(),
    }
}

fn in_place(size: u64) -> Outcome {
    let t = Instant::now();
    let mut kernel = Kernel::new(size);
    {
        // The VMM reads the image straight into the shared view, 2 MiB at a time.
        let view = kernel.gmem.map_shared(0, size).expect("shared view");
        let mut piece = vec![0u8; HUGE_2M as usize];
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(HUGE_2M);
            for (i, b) in piece[..n as usize].iter_mut().enumerate() {
                *b = byte(at + i as u64);
            }
            view.write_at(at, &piece[..n as usize]).expect("write");
            at += n;
        }
    }
    let loaded = size;
    kernel.sample();
    let plan = PlanBuilder::new()
        .in_place(0, size, Role::Measured)
        .build(&kernel.caps(), &MemoryLayout::unbounded())
        .expect("plan");
    let report = Driver::new(&mut kernel).run(&plan).expect("populate");
    assert!(report.is_complete());
    // Spot-check that the pages hold the image (what the firmware would measure).
    let mut page = vec![0u8; PAGE_SIZE as usize];
    kernel
        .file
        .read_exact_at(&mut page, size / 2)
        .expect("read");
    assert!(page
        .iter()
        .enumerate()
        .all(|(i, b)| *b == byte(size / 2 + i as u64)));
    Outcome {
        copied: loaded + kernel.copied,
        peak: kernel.peak,
        seconds: t.elapsed().as_secs_f64(),
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn main() {
    let size_mib: u64 = std::env::var("CCPOP_INPLACE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|m| *m > 0 && m % 2 == 0)
        .unwrap_or(1024);
    let size = size_mib << 20;
    println!("in-place populate against a separate source, {size_mib} MiB image, same run");
    // Separate first, then in place, then separate again: the baseline is the lower of the two.
    let a = separate(size);
    let b = in_place(size);
    let c = separate(size);
    let sep = if a.peak <= c.peak { a } else { c };
    for (name, o) in [("separate source", &sep), ("in place", &b)] {
        println!(
            "  {name:16} bytes copied {:8.0} MiB   peak memory {:8.0} MiB   ({:.2} s, not a target)",
            mib(o.copied),
            mib(o.peak),
            o.seconds
        );
    }
    println!(
        "  in place / separate: bytes copied {:.2}, peak memory {:.2}",
        b.copied as f64 / sep.copied as f64,
        b.peak as f64 / sep.peak as f64
    );
}
