//! `ccpop demo`: populate a generated guest image into guest_memfd on this machine's KVM, then
//! have a vCPU checksum every populated byte.
//!
//! The guest memory is one guest_memfd (`MMAP | INIT_SHARED`) bound as two memslots: "low"
//! memory at GPA 0 and "high" memory at 4 GiB, like a VM with a PCI hole. The image is seven
//! regions, given in an order that is not GPA order:
//!
//! | # | name | kind | role | content | where |
//! |---|---|---|---|---|---|
//! | 0 | firmware | code | measured | borrowed bytes | the last 2 MiB of low memory (one 2 MiB call) |
//! | 1 | kernel | code | measured | `SourceBuf`, released as it lands | 2 MiB.. (starts 2 MiB-aligned, ends mid-page-run) |
//! | 2 | initrd | data | measured | written in place through the shared view | 4 GiB.., a multiple of 2 MiB |
//! | 3 | boot tables | data | unmeasured | borrowed bytes | 0x1000 + 60 KiB |
//! | 4 | bss | zero | zero | zero | after the kernel up to the firmware |
//! | 5 | config | data | unmeasured | `SourceBuf` | after the initrd |
//! | 6 | free memory | zero | zero | zero | the rest of high memory |
//!
//! Everything is filled with junk (`0xee`) first, so zero regions are checked for real; page 0 is
//! never populated and is checked to still hold the junk.

use std::time::Instant;

use cc_populate::plain::{PlainBackend, ZeroMode};
use cc_populate::{Backend, Content, Driver, PlanBuilder, RegionSpec, Role, SourceBuf};
use gmem::{GmemFlags, GuestMemfd};
use guest_check::{checksum, CheckGuest, CheckRange};

use crate::error::Error;
use crate::progress::ProgressBar;
use crate::summary::{self, PlanSummary};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// High memory starts here.
const HIGH_GPA: u64 = 4 << 30;
/// The check guest's scratch area (free of our memslots for every allowed size).
const SCRATCH_GPA: u64 = 3 << 30;
/// The junk everything holds before populating.
const JUNK: u8 = 0xee;
/// The smallest image the issue asks for.
pub const MIN_SIZE_MIB: u64 = 64;
/// The smallest image the layout allows (for quick tests).
pub const MIN_TEST_SIZE_MIB: u64 = 16;
/// The largest image: keeps low memory below the scratch area.
pub const MAX_SIZE_MIB: u64 = 4096;

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Image size in MiB (the populated bytes are at least this).
    pub size_mib: u64,
    /// Flip one byte after populating (proves the mismatch path).
    pub corrupt: bool,
    /// The KVM device (`/dev/kvm`; another path lets a test show the missing-KVM message).
    pub kvm_device: std::path::PathBuf,
}

/// How a region's bytes are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Borrowed bytes.
    Borrowed,
    /// A `SourceBuf` the plan owns (released after populating).
    Buffer,
    /// Written through the shared view before populating.
    InPlace,
    /// Zeros.
    Zero,
}

/// One region of the generated image.
#[derive(Debug, Clone)]
pub struct DemoRegion {
    /// Name for people.
    pub name: &'static str,
    /// `code`, `data` or `zero`.
    pub kind: &'static str,
    /// First guest-physical address.
    pub gpa: u64,
    /// Length.
    pub len: u64,
    /// Role in the plan.
    pub role: Role,
    delivery: Delivery,
    seed: u64,
}

/// The guest memory layout and the image's regions for an image of `size_mib` MiB.
#[derive(Debug, Clone)]
pub struct DemoLayout {
    /// Low memory: GPA 0 up to this.
    pub low_len: u64,
    /// High memory: `HIGH_GPA` up to `HIGH_GPA + high_len`.
    pub high_len: u64,
    /// The regions, in populate order.
    pub regions: Vec<DemoRegion>,
}

impl DemoLayout {
    /// The layout for `size_mib` (checked by the caller to be in range).
    pub fn new(size_mib: u64) -> DemoLayout {
        let low_len = ((size_mib / 2) & !1) * MIB + 2 * MIB;
        let high_len = size_mib * MIB - (low_len - 4 * MIB);
        let kernel_len = low_len - 6 * MIB + 12 * KIB;
        let kernel_end = 2 * MIB + kernel_len;
        let firmware_gpa = low_len - 2 * MIB;
        let initrd_len = ((high_len / MIB / 2) & !1) * MIB;
        let config_len = MIB + 20 * KIB;
        let free_gpa = HIGH_GPA + initrd_len + config_len;
        let r = |name, kind, gpa, len, role, delivery, seed| DemoRegion {
            name,
            kind,
            gpa,
            len,
            role,
            delivery,
            seed,
        };
        let regions = vec![
            r(
                "firmware",
                "code",
                firmware_gpa,
                2 * MIB,
                Role::Measured,
                Delivery::Borrowed,
                1,
            ),
            r(
                "kernel",
                "code",
                2 * MIB,
                kernel_len,
                Role::Measured,
                Delivery::Buffer,
                2,
            ),
            r(
                "initrd",
                "data",
                HIGH_GPA,
                initrd_len,
                Role::Measured,
                Delivery::InPlace,
                3,
            ),
            r(
                "boot tables",
                "data",
                0x1000,
                60 * KIB,
                Role::Unmeasured,
                Delivery::Borrowed,
                4,
            ),
            r(
                "bss",
                "zero",
                kernel_end,
                firmware_gpa - kernel_end,
                Role::Zero,
                Delivery::Zero,
                0,
            ),
            r(
                "config",
                "data",
                HIGH_GPA + initrd_len,
                config_len,
                Role::Unmeasured,
                Delivery::Buffer,
                5,
            ),
            r(
                "free memory",
                "zero",
                free_gpa,
                HIGH_GPA + high_len - free_gpa,
                Role::Zero,
                Delivery::Zero,
                0,
            ),
        ];
        DemoLayout {
            low_len,
            high_len,
            regions,
        }
    }

    /// Offset in the guest_memfd of guest-physical `gpa` (low memory first, then high).
    fn file_offset(&self, gpa: u64) -> u64 {
        if gpa >= HIGH_GPA {
            self.low_len + (gpa - HIGH_GPA)
        } else {
            gpa
        }
    }
}

/// Fills `buf` with a position-dependent xorshift pattern from `seed`; the first bytes of a code
/// region say what it is, so a dump of guest memory is readable.
fn generate(buf: &mut [u8], seed: u64, name: &str) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    let tag = format!("ccpop demo: {name}\0");
    let n = tag.len().min(buf.len());
    buf[..n].copy_from_slice(&tag.as_bytes()[..n]);
}

fn generated(region: &DemoRegion) -> Vec<u8> {
    let mut v = vec![0u8; region.len as usize];
    generate(&mut v, region.seed, region.name);
    v
}

fn expected_checksum(gpa: u64, bytes: &[u8]) -> Result<u64, Error> {
    Ok(checksum(gpa, bytes)?)
}

/// Runs the demo, printing to stdout. `Ok` only when the guest confirmed every region.
pub fn run(opts: &DemoOptions) -> Result<(), Error> {
    if !(MIN_TEST_SIZE_MIB..=MAX_SIZE_MIB).contains(&opts.size_mib) {
        return Err(Error::Usage(format!(
            "--size-mib {}: must be between {MIN_TEST_SIZE_MIB} and {MAX_SIZE_MIB} (the demo image is at least {MIN_SIZE_MIB} MiB by default)",
            opts.size_mib
        )));
    }
    let device = &opts.kvm_device;
    let no_kvm = |why: String| Error::NoKvm {
        device: device.display().to_string(),
        why,
    };
    let path = std::ffi::CString::new(device.as_os_str().as_encoded_bytes())
        .map_err(|_| no_kvm("the path contains a NUL byte".into()))?;
    let kvm = kvm_ioctls::Kvm::new_with_path(path).map_err(|e| no_kvm(e.to_string()))?;
    let vm = kvm.create_vm().map_err(|source| Error::Kvm {
        what: "KVM_CREATE_VM",
        source,
    })?;
    let layout = DemoLayout::new(opts.size_mib);
    if opts.size_mib < MIN_SIZE_MIB {
        println!(
            "note: a {} MiB image is below the {MIN_SIZE_MIB} MiB the demo is meant to show (test size)",
            opts.size_mib
        );
    }

    let file_len = layout.low_len + layout.high_len;
    let gmem = GuestMemfd::create(&vm, file_len, GmemFlags::MMAP | GmemFlags::INIT_SHARED)
        .map_err(|e| Error::gmem("creating the guest_memfd", e))?;
    println!(
        "guest memory: one guest_memfd of {}: low [0, {:#x}) as memslot 0, high [{:#x}, {:#x}) as memslot 1",
        summary::size(file_len),
        layout.low_len,
        HIGH_GPA,
        HIGH_GPA + layout.high_len
    );
    {
        let view = gmem
            .map_shared(0, file_len)
            .map_err(|e| Error::gmem("mapping the guest_memfd", e))?;
        view.write_at(0, &vec![JUNK; file_len as usize])
            .map_err(|e| Error::gmem("filling guest memory with junk", e))?;
    }

    // The image, and what each region must checksum to, from the generated bytes.
    let mut expected = Vec::with_capacity(layout.regions.len());
    let mut borrowed: Vec<Vec<u8>> = Vec::new();
    let mut buffers: Vec<SourceBuf> = Vec::new();
    for r in &layout.regions {
        match r.delivery {
            Delivery::Borrowed => {
                let bytes = generated(r);
                expected.push(expected_checksum(r.gpa, &bytes)?);
                borrowed.push(bytes);
            }
            Delivery::Buffer => {
                let mut buf = SourceBuf::new(r.len as usize).map_err(|e| Error::Io {
                    path: format!("source buffer for {}", r.name),
                    source: e,
                })?;
                generate(buf.as_mut_slice(), r.seed, r.name);
                expected.push(expected_checksum(r.gpa, buf.as_slice())?);
                buffers.push(buf);
            }
            Delivery::InPlace => {
                let bytes = generated(r);
                expected.push(expected_checksum(r.gpa, &bytes)?);
                let off = layout.file_offset(r.gpa);
                gmem.map_shared(off, r.len)
                    .and_then(|v| v.write_at(0, &bytes))
                    .map_err(|e| Error::gmem(format!("writing {} in place", r.name), e))?;
            }
            Delivery::Zero => expected.push(expected_checksum(r.gpa, &vec![0u8; r.len as usize])?),
        }
    }

    let mut backend = PlainBackend::new().with_zero_mode(ZeroMode::Punch);
    backend
        .add_memslot(0, 0, &gmem, 0, layout.low_len)
        .map_err(|e| Error::gmem("registering low memory", e))?;
    backend
        .add_memslot(1, HIGH_GPA, &gmem, layout.low_len, layout.high_len)
        .map_err(|e| Error::gmem("registering high memory", e))?;
    let mut builder = PlanBuilder::with_capacity(layout.regions.len());
    let (mut borrowed_it, mut buffers_it) = (borrowed.iter(), buffers.into_iter());
    for r in &layout.regions {
        let content = match r.delivery {
            Delivery::Borrowed => borrowed_it
                .next()
                .map(|b| Content::Bytes(b.as_slice().into())),
            Delivery::Buffer => buffers_it.next().map(Content::Buffer),
            Delivery::InPlace => Some(Content::InPlace),
            Delivery::Zero => Some(Content::Zero),
        }
        .ok_or_else(|| Error::Usage(format!("internal: no content for {}", r.name)))?;
        builder.push(RegionSpec {
            gpa: r.gpa,
            len: r.len,
            role: r.role,
            content,
        });
    }
    let mut plan = builder.build(&backend.caps(), &backend.layout()?)?;
    let names: Vec<String> = layout
        .regions
        .iter()
        .map(|r| format!("{} ({})", r.name, r.kind))
        .collect();
    print!("{}", PlanSummary::new("plain", &plan, &names).human());

    let mut bar = ProgressBar::new();
    let result = Driver::new(&mut backend)
        .with_observer(&mut bar)
        .run_releasing(&mut plan);
    bar.finish();
    let report = result.map_err(|e| Error::Run(e.to_string()))?;
    print!("{}", summary::report(&report));
    if !report.is_complete() {
        return Err(Error::Run(report.to_string()));
    }
    drop(backend);

    if opts.corrupt {
        // The kernel region, one byte in the middle: the guest must see it.
        let k = &layout.regions[1];
        let gpa = k.gpa + k.len / 2;
        let off = layout.file_offset(gpa);
        let view = gmem
            .map_shared(off & !4095, 4096)
            .map_err(|e| Error::gmem("mapping for --corrupt", e))?;
        let mut b = [0u8; 1];
        let at = off & 4095;
        view.read_at(at, &mut b)
            .and_then(|_| view.write_at(at, &[b[0] ^ 0x01]))
            .map_err(|e| Error::gmem("flipping a byte for --corrupt", e))?;
        println!("--corrupt: flipped one bit of the byte at GPA {gpa:#x} after populating");
    }
    let _low = gmem
        .bind(0, 0, 0, layout.low_len)
        .map_err(|e| Error::gmem("binding low memory to memslot 0", e))?;
    let _high = gmem
        .bind(1, HIGH_GPA, layout.low_len, layout.high_len)
        .map_err(|e| Error::gmem("binding high memory to memslot 1", e))?;
    let mut guest = CheckGuest::new(&vm, 2, SCRATCH_GPA)?;

    // Every region, plus page 0, which nothing populated and must still hold the junk.
    let mut ranges: Vec<CheckRange> = layout
        .regions
        .iter()
        .map(|r| CheckRange::new(r.gpa, r.len))
        .collect();
    ranges.push(CheckRange::new(0, 4096));
    expected.push(expected_checksum(0, &[JUNK; 4096])?);
    let started = Instant::now();
    let sums = guest.run(&ranges)?;
    let took = started.elapsed();
    let mut mismatches = Vec::new();
    for (i, ((range, want), got)) in ranges.iter().zip(&expected).zip(&sums).enumerate() {
        let name = layout.regions.get(i).map_or("untouched page 0", |r| r.name);
        let ok = want == got;
        println!(
            "  check {i}: [{:#018x}, +{:>10}) {:<16} guest {got:016x} expected {want:016x} {}",
            range.gpa,
            summary::size(range.len),
            name,
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            mismatches.push(format!(
                "{name} [{:#x}..+{:#x}): guest checksum {got:016x}, expected {want:016x}",
                range.gpa, range.len
            ));
        }
    }
    let checked: u64 = ranges.iter().map(|r| r.len).sum();
    println!(
        "guest check: a vCPU checksummed {} in {} ranges in {:.3} ms",
        summary::size(checked),
        ranges.len(),
        took.as_secs_f64() * 1000.0
    );
    if !mismatches.is_empty() {
        return Err(Error::Mismatch(mismatches.join("; ")));
    }
    println!("verified");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_size_with_aligned_spans() {
        for size in [MIN_TEST_SIZE_MIB, 17, MIN_SIZE_MIB, 65, 100, MAX_SIZE_MIB] {
            let l = DemoLayout::new(size);
            let total: u64 = l.regions.iter().map(|r| r.len).sum();
            assert!(total >= size * MIB, "{size}: {total}");
            assert!(l.low_len <= SCRATCH_GPA, "{size}");
            let mut spans: Vec<(u64, u64)> = l.regions.iter().map(|r| (r.gpa, r.len)).collect();
            // Given order is not GPA order.
            assert!(spans.windows(2).any(|w| w[0].0 > w[1].0));
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "{size}: overlap {w:?}");
            }
            for r in &l.regions {
                assert!(r.len > 0 && r.len % 4096 == 0 && r.gpa % 4096 == 0, "{r:?}");
                let in_low = r.gpa + r.len <= l.low_len;
                let in_high = r.gpa >= HIGH_GPA && r.gpa + r.len <= HIGH_GPA + l.high_len;
                assert!(in_low || in_high, "{size}: {r:?} outside memory");
            }
            // The firmware is one 2 MiB-aligned 2 MiB span, the initrd 2 MiB-aligned spans.
            assert_eq!(l.regions[0].gpa % (2 * MIB), 0);
            assert_eq!(l.regions[0].len, 2 * MIB);
            assert_eq!(l.regions[2].gpa % (2 * MIB), 0);
            assert_eq!(l.regions[2].len % (2 * MIB), 0);
            assert!(l.regions[2].len >= 4 * MIB);
        }
    }

    #[test]
    fn generated_bytes_are_tagged_and_seeded() {
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        generate(&mut a, 1, "x");
        generate(&mut b, 2, "x");
        assert!(a.starts_with(b"ccpop demo: x\0"));
        assert_ne!(a, b);
        let mut c = vec![0u8; 5];
        generate(&mut c, 1, "a long name");
        assert_eq!(&c, b"ccpop");
    }
}
