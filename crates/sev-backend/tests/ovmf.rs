//! The OVMF parser and planner: synthetic images built from the format's description, malformed
//! images, and Debian's `ovmf` package image (`/usr/share/ovmf/OVMF.fd`) cross-checked against a
//! deliberately simple second implementation written here from the specs. Without that image its
//! test is reported ignored with a `SKIPPED [file:...]` line (gmem::testing's harness).

mod needs;

use cc_populate::{MemoryLayout, PlanBuilder, Role};
use gmem::testing;
use needs::{DEBIAN_OVMF, OVMF};
use sev_backend::{
    measure, measure_ovmf, parse_ovmf, plan_ovmf, verifier_caps, Error, MeasureOptions,
    SectionKind, SectionPolicy, VmsaPage,
};

/// The EFI byte order of a GUID written as text.
fn efi_guid(s: &str) -> [u8; 16] {
    let h: Vec<u8> = s
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect();
    [
        h[3], h[2], h[1], h[0], h[5], h[4], h[7], h[6], h[8], h[9], h[10], h[11], h[12], h[13],
        h[14], h[15],
    ]
}

const FOOTER: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const SEV_META: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";

/// An image of `pages` pages with a GUIDed table (one extra entry plus the SEV metadata
/// entry) and SEV metadata of `sections` placed `meta_from_end` bytes before the end.
fn image(pages: usize, sections: &[(u32, u32, u32)], meta_from_end: usize) -> Vec<u8> {
    let size = pages * 4096;
    let mut img = vec![0xffu8; size];
    // Metadata: "ASEV", len, version 1, count, sections.
    let mut meta = b"ASEV".to_vec();
    meta.extend_from_slice(&((16 + 12 * sections.len()) as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (b, l, t) in sections {
        meta.extend_from_slice(&b.to_le_bytes());
        meta.extend_from_slice(&l.to_le_bytes());
        meta.extend_from_slice(&t.to_le_bytes());
    }
    let at = size - meta_from_end;
    img[at..at + meta.len()].copy_from_slice(&meta);
    // Table, back to front: [other entry][sev entry][u16 total][footer guid][32 bytes].
    let mut table = Vec::new();
    table.extend_from_slice(&[1, 2, 3, 4]);
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&efi_guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e"));
    table.extend_from_slice(&(meta_from_end as u32).to_le_bytes());
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&efi_guid(SEV_META));
    let total = (table.len() + 18) as u16;
    table.extend_from_slice(&total.to_le_bytes());
    table.extend_from_slice(&efi_guid(FOOTER));
    let start = size - 32 - table.len();
    img[start..size - 32].copy_from_slice(&table);
    img
}

fn synthetic_image_plans_in_order() {
    let img = image(
        4,
        &[
            (0x80_0000, 0x9000, 1),
            (0x80_d000, 0x1000, 2),
            (0x80_e000, 0x1000, 3),
            (0x81_0000, 0x1000, 4),
            (0x82_0000, 0x1000, 0x10),
        ],
        0x800,
    );
    let parsed = parse_ovmf(&img).unwrap();
    assert_eq!(parsed.entries.len(), 2);
    assert_eq!(parsed.entries[0].guid, efi_guid(SEV_META));
    assert_eq!(
        parsed.entry(&efi_guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e")),
        Some(&[1u8, 2, 3, 4][..])
    );
    let meta = parsed.sev_metadata.unwrap();
    assert_eq!(meta.offset, 4 * 4096 - 0x800);
    assert_eq!(meta.version, 1);
    let kinds: Vec<_> = meta.sections.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            SectionKind::SnpSecMem,
            SectionKind::SnpSecrets,
            SectionKind::Cpuid,
            SectionKind::SvsmCaa,
            SectionKind::SnpKernelHashes
        ]
    );

    let plan = plan_ovmf(&img, SectionPolicy::QEMU).unwrap();
    let got: Vec<(u64, u64, Role)> = plan.iter().map(|r| (r.gpa, r.len, r.role())).collect();
    assert_eq!(
        got,
        vec![
            ((1 << 32) - 4 * 4096, 4 * 4096, Role::Measured),
            (0x80_0000, 0x9000, Role::Zero),
            (0x80_d000, 0x1000, Role::Secrets),
            (0x80_e000, 0x1000, Role::Cpuid),
            (0x81_0000, 0x1000, Role::Zero),
            (0x82_0000, 0x1000, Role::Zero),
        ]
    );
    assert_eq!(plan[0].content, Some(&img[..]));
    let other = plan_ovmf(&img, SectionPolicy::UNMEASURED).unwrap();
    assert_eq!(other[1].role(), Role::Unmeasured);
    assert_eq!(other[4].role(), Role::Unmeasured);
    assert_eq!(other[2].role(), Role::Secrets);
}

fn malformed_images_are_refused_with_the_place() {
    let good = image(2, &[(0x80_0000, 0x1000, 1)], 0x400);
    // No footer.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 48] ^= 1;
    let e = parse_ovmf(&bad).unwrap_err();
    assert!(
        matches!(e, Error::ImageFormat { offset, .. } if offset == (n - 48) as u64),
        "{e}"
    );
    // Too short for a footer.
    assert!(matches!(
        parse_ovmf(&[0u8; 40]),
        Err(Error::ImageBounds { .. })
    ));
    // Table length beyond the image.
    let mut bad = good.clone();
    bad[n - 50..n - 48].copy_from_slice(&0xffffu16.to_le_bytes());
    assert_eq!(
        parse_ovmf(&bad[n - 4096..]).unwrap_err().to_string(),
        "firmware image: GUIDed table at offset 0x0 (+0xffed) lies outside the 0x1000-byte image"
    );
    // Metadata offset past the start.
    let mut bad = good.clone();
    let meta_entry = n - 50 - 22;
    bad[meta_entry..meta_entry + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
    assert!(matches!(
        parse_ovmf(&bad),
        Err(Error::ImageBounds {
            what: "SEV metadata",
            ..
        })
    ));
    // Wrong signature.
    let mut bad = good.clone();
    bad[n - 0x400] = b'X';
    assert!(matches!(
        parse_ovmf(&bad),
        Err(Error::ImageFormat {
            what: "SEV metadata header",
            ..
        })
    ));
    // A section count the length cannot hold.
    let mut bad = good.clone();
    bad[n - 0x400 + 12..n - 0x400 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(parse_ovmf(&bad).unwrap_err().to_string(), "firmware image: SEV metadata header at offset 0x1c00: length 28 cannot hold 4294967295 sections");
    // Unaligned or oversized sections are refused by the planner, naming them.
    let e = plan_ovmf(
        &image(2, &[(0x80_0800, 0x1000, 2)], 0x400),
        SectionPolicy::QEMU,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "SEV metadata section 0 [0x800800..+0x1000) (SNP_SECRETS): not aligned to 4 KiB"
    );
    assert_eq!(
        plan_ovmf(
            &image(2, &[(0xffff_f000, 0x2000, 1)], 0x400),
            SectionPolicy::QEMU
        )
        .unwrap_err()
        .to_string(),
        "SEV metadata section 0 [0xfffff000..+0x2000) (SNP_SEC_MEM): ends past 4 GiB"
    );
    assert_eq!(
        plan_ovmf(&image(2, &[(0x1000, 0, 1)], 0x400), SectionPolicy::QEMU)
            .unwrap_err()
            .to_string(),
        "SEV metadata section 0 [0x1000..+0x0) (SNP_SEC_MEM): empty"
    );
    // An image that is not whole pages.
    assert_eq!(plan_ovmf(&good[1..], SectionPolicy::QEMU).unwrap_err().to_string(), "firmware image: firmware image at offset 0x0: size 0x1fff is not a non-zero multiple of 4 KiB fitting below 0x100000000");
}

fn arbitrary_mutations_never_panic() {
    let good = image(2, &[(0x80_0000, 0x1000, 1), (0x80_1000, 0x1000, 3)], 0x400);
    let n = good.len();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = good.clone();
        // Mutate the last 1 KiB (table + metadata) and sometimes truncate from the front.
        for k in 0..(x % 4 + 1) {
            let pos = n - 1 - ((x >> (8 + 10 * k)) % 1024) as usize;
            m[pos] = (x >> (k * 8)) as u8;
        }
        let cut = if x.is_multiple_of(5) {
            ((x >> 40) % n as u64) as usize
        } else {
            0
        };
        let _ = parse_ovmf(&m[cut..]);
        let _ = plan_ovmf(&m[cut..], SectionPolicy::QEMU);
    }
}

// ---- Debian's OVMF image -------------------------------------------------------------------

/// A second, deliberately simple implementation from the specs: find the footer, walk the
/// table for the SEV metadata entry, read the sections, then hash page by page.
fn simple_digest(
    img: &[u8],
    sec_mem_type: u8,
    vmsa: Option<&[u8]>,
    firmware_only: bool,
) -> [u8; 48] {
    let n = img.len();
    assert_eq!(&img[n - 48..n - 32], &efi_guid(FOOTER));
    let total = u16::from_le_bytes([img[n - 50], img[n - 49]]) as usize;
    let table_start = n - 50 - (total - 18);
    let mut end = n - 50;
    let mut meta_off = None;
    while end > table_start {
        let len = u16::from_le_bytes([img[end - 18], img[end - 17]]) as usize;
        if img[end - 16..end] == efi_guid(SEV_META) {
            let d = &img[end - len..];
            meta_off = Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize);
        }
        end -= len;
    }
    let m = n - meta_off.expect("SEV metadata entry");
    assert_eq!(&img[m..m + 4], b"ASEV");
    let count = u32::from_le_bytes(img[m + 12..m + 16].try_into().unwrap()) as usize;
    let mut cur = [0u8; 48];
    let record = |cur: &mut [u8; 48], ty: u8, gpa: u64, page: Option<&[u8]>| {
        let contents: [u8; 48] = page.map_or([0; 48], sha384);
        let mut r = cur.to_vec();
        r.extend_from_slice(&contents);
        r.extend_from_slice(&[0x70, 0, ty, 0, 0, 0, 0, 0]);
        r.extend_from_slice(&gpa.to_le_bytes());
        *cur = sha384(&r);
    };
    let base = (1u64 << 32) - n as u64;
    for (k, page) in img.chunks(4096).enumerate() {
        record(&mut cur, 1, base + k as u64 * 4096, Some(page));
    }
    if firmware_only {
        return cur;
    }
    for i in 0..count {
        let s = m + 16 + 12 * i;
        let w = |o: usize| u32::from_le_bytes(img[s + o..s + o + 4].try_into().unwrap()) as u64;
        let (b, l, t) = (w(0), w(4), w(8));
        let ty = match t {
            2 => 5,
            3 => 6,
            _ => sec_mem_type,
        };
        for g in (b..b + l).step_by(4096) {
            record(&mut cur, ty, g, None);
        }
    }
    if let Some(v) = vmsa {
        record(&mut cur, 2, 0xffff_ffff_f000, Some(v));
    }
    cur
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ours(img: &[u8], policy: SectionPolicy, vmsa: &[VmsaPage<'_>], firmware_only: bool) -> [u8; 48] {
    let mut b = PlanBuilder::new();
    for r in plan_ovmf(img, policy)
        .unwrap()
        .iter()
        .take(if firmware_only { 1 } else { usize::MAX })
    {
        b.push(r.to_spec());
    }
    let plan = b
        .build(&verifier_caps(), &MemoryLayout::unbounded())
        .unwrap();
    measure(&plan, vmsa, &MeasureOptions::default()).unwrap()
}

fn debian_ovmf_digest() {
    let img = std::fs::read(DEBIAN_OVMF).unwrap();
    let meta = parse_ovmf(&img)
        .unwrap()
        .sev_metadata
        .expect("Debian's OVMF.fd has SEV metadata");
    assert_eq!(meta.sections.len(), 5);
    let vmsa: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();

    let fw_only = ours(&img, SectionPolicy::QEMU, &[], true);
    let qemu = ours(&img, SectionPolicy::QEMU, &[], false);
    let qemu_vmsa = ours(&img, SectionPolicy::QEMU, &[VmsaPage::kvm(&vmsa)], false);
    let unmeasured = ours(&img, SectionPolicy::UNMEASURED, &[], false);

    // The one-call form gives the same values.
    assert_eq!(
        measure_ovmf(&img, SectionPolicy::QEMU, &[], true).unwrap(),
        fw_only
    );
    assert_eq!(
        measure_ovmf(&img, SectionPolicy::QEMU, &[VmsaPage::kvm(&vmsa)], false).unwrap(),
        qemu_vmsa
    );

    // Cross-check with the simple implementation above.
    assert_eq!(hex(&fw_only), hex(&simple_digest(&img, 3, None, true)));
    assert_eq!(hex(&qemu), hex(&simple_digest(&img, 3, None, false)));
    assert_eq!(
        hex(&qemu_vmsa),
        hex(&simple_digest(&img, 3, Some(&vmsa), false))
    );
    assert_eq!(hex(&unmeasured), hex(&simple_digest(&img, 4, None, false)));

    // Regression values for ovmf 2022.11-6+deb12u2 (OVMF.fd, 2 MiB); also reproduced with a
    // third implementation in Python (hashlib) when they were recorded. A different package
    // version changes them.
    let known = [
        (fw_only, "ba2c811512ef868474f239a21f7d7057d65a20de87a003c4f116e4fb1573183bfbcd75c3e99b2f558575a5d0094f73c6"),
        (qemu, "1c4a6703fc7248581d08c597e73812dbccc1df1e8a415d47f8553237bb2edfedceb18860550cfac653d2530cbcee0548"),
        (qemu_vmsa, "36d2d4ec58fa137cb0f65788227112f40c36c215de40f87cd30d12b52e734403296baec4e74b7b70e3895de6856ff287"),
        (unmeasured, "a2d0ea6f781d1ce17c270360daba3b9bbd5e592cc5e90b8d7cb0bf747eddcda9c21b782db4d86f8da3dc27a384926f88"),
    ];
    let pinned_image = hex(&sha384(&img)[..8]);
    eprintln!("OVMF.fd sha384 prefix {pinned_image}");
    if pinned_image == DEBIAN_IMAGE_SHA384_PREFIX {
        for (got, want) in known {
            assert_eq!(hex(&got), want);
        }
    } else {
        eprintln!("note: {DEBIAN_OVMF} is not the image the regression values were recorded for");
    }
}

/// SHA-384 prefix of the ovmf 2022.11-6+deb12u2 OVMF.fd the regression values belong to.
const DEBIAN_IMAGE_SHA384_PREFIX: &str = "fa0dd56f4e3156e0";

/// SHA-384 through `sha2` (the crate measures with `cc-hash`: `ring` or libcrypto for one
/// stream, its own AVX-512 kernels for page contents).
fn sha384(data: &[u8]) -> [u8; 48] {
    <sha2::Sha384 as sha2::Digest>::digest(data).into()
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(synthetic_image_plans_in_order),
        gmem::kvm_test!(malformed_images_are_refused_with_the_place),
        gmem::kvm_test!(arbitrary_mutations_never_panic),
        gmem::kvm_test!(debian_ovmf_digest, OVMF),
    ])
}
