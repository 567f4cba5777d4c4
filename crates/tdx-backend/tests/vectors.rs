//! MRTD against vectors derived by hand from the TDX module ABI specification: every record is
//! built field by field here and hashed with `sha2` (the crate itself uses `cc-hash`),
//! never through the crate's own record builder.

use cc_populate::{MemoryLayout, PlanBuilder, Role};
use tdx_backend::{measure_plan, measure_plan_with, ExtendOrder, MeasureOptions, Mrtd, TDX_CAPS};

/// SHA-384 from the `sha2` crate: the crate hashes with `cc-hash` (the system libcrypto or
/// `ring`), the hand derivations here with another implementation.
struct Sha384(sha2::Sha384);

impl Sha384 {
    fn new() -> Self {
        Sha384(sha2::Digest::new())
    }
    fn update(&mut self, b: impl AsRef<[u8]>) {
        sha2::Digest::update(&mut self.0, b.as_ref());
    }
    fn finalize(self) -> [u8; 48] {
        sha2::Digest::finalize(self.0).into()
    }
}

/// ASCII "MEM.PAGE.ADD".
const MEM_PAGE_ADD: [u8; 12] = [
    0x4d, 0x45, 0x4d, 0x2e, 0x50, 0x41, 0x47, 0x45, 0x2e, 0x41, 0x44, 0x44,
];
/// ASCII "MR.EXTEND".
const MR_EXTEND: [u8; 9] = [0x4d, 0x52, 0x2e, 0x45, 0x58, 0x54, 0x45, 0x4e, 0x44];

/// TDH.MEM.PAGE.ADD's 128-byte extension buffer: tag at 0..12, GPA (LE) at 16..24, zeros.
fn page_add_record(gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[0..12].copy_from_slice(&MEM_PAGE_ADD);
    for i in 0..8 {
        r[16 + i] = (gpa >> (8 * i)) as u8;
    }
    r
}

/// TDH.MR.EXTEND's first 128-byte buffer: tag at 0..9, GPA (LE) at 16..24, zeros.
fn extend_header(gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[0..9].copy_from_slice(&MR_EXTEND);
    for i in 0..8 {
        r[16 + i] = (gpa >> (8 * i)) as u8;
    }
    r
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn records_have_the_spec_layout() {
    let r = page_add_record(0xffff_f000);
    assert_eq!(&r[..12], b"MEM.PAGE.ADD");
    assert_eq!(r[16..24], [0x00, 0xf0, 0xff, 0xff, 0, 0, 0, 0]);
    assert!(r[12..16].iter().chain(&r[24..]).all(|b| *b == 0));
    let e = extend_header(0x1234_5678_9abc_d000);
    assert_eq!(&e[..9], b"MR.EXTEND");
    assert_eq!(e[16..24], [0x00, 0xd0, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12]);
}

#[test]
fn empty_td_is_sha384_of_nothing() {
    // FIPS 180-2 SHA-384("") - a constant, independent of any code here.
    assert_eq!(
        hex(&Mrtd::new().finish()),
        "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"
    );
}

#[test]
fn one_measured_and_one_unmeasured_page() {
    let measured_gpa = 0xffff_f000u64;
    let unmeasured_gpa = 0x1000u64;
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let other = vec![0xabu8; 4096];

    // By hand: PAGE.ADD, 16 x (MR.EXTEND header + 256 bytes), then PAGE.ADD of the other page.
    let mut h = Sha384::new();
    h.update(page_add_record(measured_gpa));
    for c in 0..16u64 {
        h.update(extend_header(measured_gpa + c * 256));
        h.update(&page[(c * 256) as usize..(c * 256 + 256) as usize]);
    }
    h.update(page_add_record(unmeasured_gpa));
    let expect: [u8; 48] = h.finalize();

    // Through a plan and the backend's role mapping.
    let plan = PlanBuilder::new()
        .source(measured_gpa, Role::Measured, &page)
        .source(unmeasured_gpa, Role::Unmeasured, &other)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_eq!(measure_plan(&plan).unwrap(), expect);

    // Through the incremental API, chunk by chunk.
    let mut m = Mrtd::new();
    m.page_add(measured_gpa);
    for c in 0..16usize {
        let chunk: &[u8; 256] = page[c * 256..c * 256 + 256].try_into().unwrap();
        m.extend(measured_gpa + (c * 256) as u64, chunk);
    }
    m.page_add(unmeasured_gpa);
    assert_eq!(m.pages_added(), 2);
    assert_eq!(m.chunks_extended(), 16);
    assert_eq!(m.finish(), expect);

    // The order is part of the measurement.
    let swapped = PlanBuilder::new()
        .source(unmeasured_gpa, Role::Unmeasured, &other)
        .source(measured_gpa, Role::Measured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_ne!(measure_plan(&swapped).unwrap(), expect);
}

#[test]
fn zero_pages_are_added_without_extend_and_measured_zeros_are_extended() {
    let mut h = Sha384::new();
    h.update(page_add_record(0x80_0000));
    h.update(page_add_record(0x80_1000));
    h.update(page_add_record(0x90_0000));
    for c in 0..16u64 {
        h.update(extend_header(0x90_0000 + c * 256));
        h.update([0u8; 256]);
    }
    let expect: [u8; 48] = h.finalize();
    let plan = PlanBuilder::new()
        .zero(0x80_0000, 0x2000)
        .zeros(0x90_0000, 0x1000, Role::Measured)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_eq!(measure_plan(&plan).unwrap(), expect);
}

#[test]
fn add_all_then_extend_order() {
    let data: Vec<u8> = (0..8192u32).map(|i| (i >> 4) as u8).collect();
    let gpa = 0x20_0000u64;
    let mut h = Sha384::new();
    h.update(page_add_record(gpa));
    h.update(page_add_record(gpa + 4096));
    for c in 0..32u64 {
        h.update(extend_header(gpa + c * 256));
        h.update(&data[(c * 256) as usize..(c * 256 + 256) as usize]);
    }
    let expect: [u8; 48] = h.finalize();
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &data)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let two_pass = MeasureOptions {
        order: ExtendOrder::AddAllThenExtend,
    };
    assert_eq!(measure_plan_with(&plan, &two_pass).unwrap(), expect);
    assert_ne!(measure_plan(&plan).unwrap(), expect);
}

#[test]
fn tdx_refuses_in_place_content_and_foreign_roles() {
    let e = PlanBuilder::new()
        .in_place(0x1000, 0x1000, Role::Measured)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap_err();
    assert!(
        matches!(e, cc_populate::PlanError::InPlaceUnsupported { .. }),
        "{e}"
    );
    let page = [0u8; 4096];
    let e = PlanBuilder::new()
        .source(0x1000, Role::Cpuid, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap_err();
    assert!(
        matches!(e, cc_populate::PlanError::RoleUnsupported { .. }),
        "{e}"
    );
}
