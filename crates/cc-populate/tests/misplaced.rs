//! The guest check catches data that the populate path put in the wrong place, on this machine's
//! real KVM.
//!
//! A plan is populated through the driver with [`Misplacing`], a backend that wraps the plain
//! backend and misplaces the bytes of one chunk or region (the bug a populate engine can have),
//! while reporting success. Then the check guest checksums every region and every unpopulated gap
//! of the memslot, and the test asserts that exactly the regions the fault touched mismatch, by
//! name. The old linear checksum's blind spots are injected the same way; for those the test also
//! shows that the old function would have passed the bad memory.

use cc_populate::plain::{PlainBackend, ZeroMode};
use cc_populate::{
    Backend, BackendCaps, ChunkRequest, ChunkSource, Driver, PlanBuilder, Populated, Role,
};
use gmem::testing::Need;
use gmem::{GmemFlags, GuestMemfd, SharedView};
use guest_check::{checksum, CheckGuest, CheckRange};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The memslot: guest_memfd bound at GPA 0.
const MEM: u64 = 16 * MIB;
/// What every byte holds before populating.
const JUNK: u8 = 0xee;
/// Chunks of at most this size, so regions take several calls.
const MAX_CHUNK: u64 = 256 * KIB;

/// Rewrites one populate call: `None` populates normally; `Some(writes)` writes each
/// `(gpa, bytes)` through the shared view instead, and the call still reports success.
type Rewrite = Box<dyn Fn(&ChunkRequest<'_>, &[u8]) -> Option<Writes>>;
/// Where to write what: `(gpa, bytes)` pairs.
type Writes = Vec<(u64, Vec<u8>)>;

/// The plain backend with a bug: one rewrite of where (or what) a chunk's bytes land.
struct Misplacing<'g> {
    inner: PlainBackend<'g>,
    view: SharedView<'g>,
    rewrite: Rewrite,
}

impl Backend for Misplacing<'_> {
    fn caps(&self) -> BackendCaps {
        self.inner.caps()
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let ChunkSource::Bytes(src) = chunk.source else {
            return self.inner.populate(chunk);
        };
        match (self.rewrite)(chunk, src) {
            None => self.inner.populate(chunk),
            Some(writes) => {
                for (gpa, bytes) in writes {
                    self.view.write_at(gpa, &bytes).expect("inside the memslot");
                }
                Populated::all(chunk.len)
            }
        }
    }
}

/// The plan's regions: (name, GPA, content). `None` content is a zero region.
struct Image {
    regions: Vec<(&'static str, u64, Vec<u8>)>,
}

/// `len` bytes with no period: word `i` is `mix(seed << 40 | i)`.
fn pattern(len: u64, seed: u64) -> Vec<u8> {
    (0..len / 8)
        .flat_map(|i| guest_check::mix(seed << 40 | i).to_le_bytes())
        .collect()
}

/// Two different 4 KiB pages whose 512 words have the same sum (so the old checksum, over a
/// range holding both, cannot tell them swapped).
fn equal_sum_pages() -> Vec<u8> {
    let mut words: Vec<u64> = pattern(8 * KIB, 77)
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let sum = |ws: &[u64]| ws.iter().fold(0u64, |s, w| s.wrapping_add(*w));
    let diff = sum(&words[..512]).wrapping_sub(sum(&words[512..]));
    words[1023] = words[1023].wrapping_add(diff);
    assert_eq!(sum(&words[..512]), sum(&words[512..]));
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

impl Image {
    fn new() -> Image {
        Image {
            regions: vec![
                ("firmware", 2 * MIB, pattern(2 * MIB, 1)),
                ("kernel", 6 * MIB, pattern(MIB + 12 * KIB, 2)),
                ("initrd", 8 * MIB, pattern(MIB, 3)),
                ("cmdline", 10 * MIB, pattern(MIB, 4)),
                ("bss", 12 * MIB, vec![0; MIB as usize]),
                ("tables", 0x10000, equal_sum_pages()),
            ],
        }
    }

    /// Index of the region called `name`.
    fn index(&self, name: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r.0 == name)
            .expect("a region of the image")
    }

    /// (GPA, length) of region `name`.
    fn span(&self, name: &str) -> (u64, u64) {
        let r = &self.regions[self.index(name)];
        (r.1, r.2.len() as u64)
    }

    /// What the guest should see: every region, then every gap of the memslot holding junk;
    /// each with its name and content.
    fn expected(&self) -> Vec<(String, u64, Vec<u8>)> {
        let mut out: Vec<(String, u64, Vec<u8>)> = self
            .regions
            .iter()
            .map(|(n, g, d)| (n.to_string(), *g, d.clone()))
            .collect();
        let mut spans: Vec<(u64, u64)> = self
            .regions
            .iter()
            .map(|(_, g, d)| (*g, *g + d.len() as u64))
            .collect();
        spans.sort_unstable();
        let mut at = 0;
        for (start, end) in spans.into_iter().chain([(MEM, MEM)]) {
            if start > at {
                let name = format!("unpopulated [{at:#x}, {start:#x})");
                out.push((name, at, vec![JUNK; (start - at) as usize]));
            }
            at = at.max(end);
        }
        out
    }
}

/// Populates the image with `rewrite` on real KVM, runs the check guest over every region and
/// gap, and returns the names that mismatched, and the memory as the host reads it back.
fn populate_and_check(rewrite: Rewrite) -> (Vec<String>, Vec<u8>) {
    let (_kvm, vm) = gmem::testing::default_vm();
    let gmem = GuestMemfd::create(&vm, MEM, GmemFlags::MMAP | GmemFlags::INIT_SHARED)
        .expect("guest_memfd");
    gmem.map_shared(0, MEM)
        .and_then(|v| v.write_at(0, &vec![JUNK; MEM as usize]))
        .expect("junk");
    let image = Image::new();

    let mut inner = PlainBackend::new()
        .with_zero_mode(ZeroMode::Punch)
        .with_max_chunk(MAX_CHUNK);
    inner.add_memslot(0, 0, &gmem, 0, MEM).expect("memslot");
    let layout = inner.layout().expect("layout");
    let mut backend = Misplacing {
        inner,
        view: gmem.map_shared(0, MEM).expect("view"),
        rewrite,
    };
    let mut builder = PlanBuilder::new();
    for (_, gpa, data) in &image.regions {
        builder = if data.iter().all(|b| *b == 0) {
            builder.zero(*gpa, data.len() as u64)
        } else {
            builder.source(*gpa, Role::Measured, data)
        };
    }
    let plan = builder.build(&backend.caps(), &layout).expect("plan");
    let report = Driver::new(&mut backend).run(&plan).expect("run");
    assert!(report.is_complete(), "{report}");
    drop(backend);

    let _slot = gmem.bind(0, 0, 0, MEM).expect("bind");
    let expected = image.expected();
    let ranges: Vec<CheckRange> = expected
        .iter()
        .map(|(_, g, d)| CheckRange::new(*g, d.len() as u64))
        .collect();
    let mut guest = CheckGuest::new(&vm, 1, 1 << 30).expect("check guest");
    let sums = guest.run(&ranges).expect("guest run");
    let mismatched = expected
        .iter()
        .zip(&sums)
        .filter(|((_, gpa, data), got)| checksum(*gpa, data).expect("words") != **got)
        .map(|((name, _, _), _)| name.clone())
        .collect();
    let mut memory = vec![0u8; MEM as usize];
    gmem.map_shared(0, MEM)
        .and_then(|v| v.read_at(0, &mut memory))
        .expect("read back");
    (mismatched, memory)
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// The checksum this crate used before (`a += w; b += a; a ^ rol(b, 32)`, from `a = 1`).
fn old_linear(bytes: &[u8]) -> u64 {
    let (mut a, mut b) = (1u64, 0u64);
    for w in words(bytes) {
        a = a.wrapping_add(w);
        b = b.wrapping_add(a);
    }
    a ^ b.rotate_left(32)
}

/// Rewrites the chunks of region `name` with `f(chunk, src) -> writes`.
fn in_region(name: &'static str, f: fn(&ChunkRequest<'_>, &[u8]) -> Writes) -> Rewrite {
    let index = Image::new().index(name);
    Box::new(move |chunk, src| (chunk.region == index).then(|| f(chunk, src)))
}

fn nothing_misplaced_nothing_mismatches() {
    let (bad, _) = populate_and_check(Box::new(|_, _| None));
    assert_eq!(bad, Vec::<String>::new());
}

fn a_chunk_populated_at_a_wrong_offset() {
    // The kernel's last chunk (12 KiB past its last full 256 KiB) lands one page later: the page
    // it should have filled keeps junk, and its last page runs into the gap after the kernel.
    let (gpa, len) = Image::new().span("kernel");
    let end = gpa + len;
    let rewrite: Rewrite = Box::new(move |chunk, src| {
        (chunk.gpa + chunk.len == end).then(|| vec![(chunk.gpa + 4 * KIB, src.to_vec())])
    });
    let (bad, _) = populate_and_check(rewrite);
    assert_eq!(bad, ["kernel", "unpopulated [0x703000, 0x800000)"]);
}

fn two_pages_swapped() {
    // Pages 1 and 2 of the firmware's first chunk trade places.
    let rewrite = in_region("firmware", |chunk, src| {
        if chunk.gpa != 2 * MIB {
            return vec![(chunk.gpa, src.to_vec())];
        }
        let mut bytes = src.to_vec();
        let (p1, p2) = (4096usize, 8192usize);
        bytes[p1..p2].copy_from_slice(&src[p2..p2 + 4096]);
        bytes[p2..p2 + 4096].copy_from_slice(&src[p1..p2]);
        vec![(chunk.gpa, bytes)]
    });
    let (bad, _) = populate_and_check(rewrite);
    assert_eq!(bad, ["firmware"]);
}

fn two_regions_swapped() {
    // initrd and cmdline have the same length: each lands where the other belongs.
    let image = Image::new();
    let (initrd, cmdline) = (image.index("initrd"), image.index("cmdline"));
    let (ig, _) = image.span("initrd");
    let (cg, _) = image.span("cmdline");
    let rewrite: Rewrite = Box::new(move |chunk, src| {
        let to = if chunk.region == initrd {
            cg + (chunk.gpa - ig)
        } else if chunk.region == cmdline {
            ig + (chunk.gpa - cg)
        } else {
            return None;
        };
        Some(vec![(to, src.to_vec())])
    });
    let (bad, _) = populate_and_check(rewrite);
    assert_eq!(bad, ["initrd", "cmdline"]);
}

fn a_region_shifted_by_8_bytes() {
    // Every chunk of the initrd lands 8 bytes late; its last 8 bytes run into the gap after it.
    let rewrite = in_region("initrd", |chunk, src| vec![(chunk.gpa + 8, src.to_vec())]);
    let (bad, _) = populate_and_check(rewrite);
    assert_eq!(bad, ["initrd", "unpopulated [0x900000, 0xa00000)"]);
}

/// Populates with `rewrite` (a change confined to region `name`) and asserts that the guest
/// reports exactly that region, while the old checksum of the memory equals the old checksum of
/// the intended bytes.
fn caught_although_the_old_sum_is_blind(name: &str, rewrite: Rewrite) {
    let (bad, memory) = populate_and_check(rewrite);
    assert_eq!(bad, [name]);
    let image = Image::new();
    let want = &image.regions[image.index(name)].2;
    let (gpa, len) = image.span(name);
    let got = &memory[gpa as usize..(gpa + len) as usize];
    assert_ne!(got, &want[..]);
    assert_eq!(
        old_linear(got),
        old_linear(want),
        "the old checksum passes it"
    );
}

fn old_blind_spot_equal_sum_pages_swapped() {
    // The two pages of "tables" have equal word sums; they land swapped.
    let rewrite = in_region("tables", |chunk, src| {
        let mut bytes = src[4096..].to_vec();
        bytes.extend_from_slice(&src[..4096]);
        vec![(chunk.gpa, bytes)]
    });
    caught_although_the_old_sum_is_blind("tables", rewrite);
}

fn old_blind_spot_bit_63_in_two_words_an_even_distance_apart() {
    let rewrite = in_region("cmdline", |chunk, src| {
        let mut bytes = src.to_vec();
        if chunk.gpa == 10 * MIB {
            bytes[7] ^= 0x80; // bit 63 of word 0
            bytes[8 * 6 + 7] ^= 0x80; // bit 63 of word 6
        }
        vec![(chunk.gpa, bytes)]
    });
    caught_although_the_old_sum_is_blind("cmdline", rewrite);
}

fn old_blind_spot_plus_d_minus_2d_plus_d() {
    let rewrite = in_region("firmware", |chunk, src| {
        let mut w = words(src);
        if chunk.gpa == 2 * MIB {
            let d = 0x0123_4567_89ab_cdefu64;
            w[100] = w[100].wrapping_add(d);
            w[101] = w[101].wrapping_sub(d.wrapping_mul(2));
            w[102] = w[102].wrapping_add(d);
        }
        vec![(chunk.gpa, w.iter().flat_map(|x| x.to_le_bytes()).collect())]
    });
    caught_although_the_old_sum_is_blind("firmware", rewrite);
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(nothing_misplaced_nothing_mismatches, Need::SharedGuestMemfd),
        gmem::kvm_test!(a_chunk_populated_at_a_wrong_offset, Need::SharedGuestMemfd),
        gmem::kvm_test!(two_pages_swapped, Need::SharedGuestMemfd),
        gmem::kvm_test!(two_regions_swapped, Need::SharedGuestMemfd),
        gmem::kvm_test!(a_region_shifted_by_8_bytes, Need::SharedGuestMemfd),
        gmem::kvm_test!(
            old_blind_spot_equal_sum_pages_swapped,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            old_blind_spot_bit_63_in_two_words_an_even_distance_apart,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            old_blind_spot_plus_d_minus_2d_plus_d,
            Need::SharedGuestMemfd
        ),
    ])
}
