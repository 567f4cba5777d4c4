//! The TDVF parser and planner on images built here byte by byte, and MRTD of those images
//! derived by hand (records built field by field, hashed with `sha2`).

use cc_populate::{Content, Driver, MemoryLayout, Role};
use tdx_backend::tdvf::{self, PageAugPolicy, PlanOptions, SectionType};
use tdx_backend::testing::TdxModel;
use tdx_backend::{Error, TdxBackend};

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

const LEN: usize = 0x10000;
const META: usize = 0x8000;
/// 96b582de-1fb2-45f7-baea-a366c55a082d, on disk.
const FOOTER: [u8; 16] = [
    0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d,
];
/// e47a6535-984a-4798-865e-4685a7bf8ec2, on disk.
const TDX_META: [u8; 16] = [
    0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2,
];
/// Some other table entry (dc886566-984a-4798-a75e-5585a7bf67cc), on disk.
const OTHER: [u8; 16] = [
    0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc,
];

#[derive(Clone, Copy)]
struct Sec {
    off: u32,
    raw: u32,
    gpa: u64,
    size: u64,
    ty: u32,
    attr: u32,
}

fn default_sections() -> Vec<Sec> {
    vec![
        Sec {
            off: 0,
            raw: 0x4000,
            gpa: 0xffff_c000,
            size: 0x4000,
            ty: 0,
            attr: 1,
        },
        Sec {
            off: 0x4000,
            raw: 0x1000,
            gpa: 0xffff_b000,
            size: 0x1000,
            ty: 1,
            attr: 0,
        },
        Sec {
            off: 0,
            raw: 0,
            gpa: 0x80_9000,
            size: 0x1000,
            ty: 2,
            attr: 0,
        },
        Sec {
            off: 0,
            raw: 0,
            gpa: 0x80_0000,
            size: 0x2000,
            ty: 3,
            attr: 2,
        },
        Sec {
            off: 0,
            raw: 0,
            gpa: 0x81_0000,
            size: 0x1000,
            ty: 3,
            attr: 0,
        },
    ]
}

fn put(img: &mut [u8], at: usize, b: &[u8]) {
    img[at..at + b.len()].copy_from_slice(b);
}

fn image(sections: &[Sec]) -> Vec<u8> {
    let mut img = vec![0u8; LEN];
    for (i, b) in img[..0x5000].iter_mut().enumerate() {
        *b = (i * 13 % 251) as u8;
    }
    // Metadata: "TDVF", length, version 1, count, sections.
    put(&mut img, META, b"TDVF");
    put(
        &mut img,
        META + 4,
        &(16 + 32 * sections.len() as u32).to_le_bytes(),
    );
    put(&mut img, META + 8, &1u32.to_le_bytes());
    put(&mut img, META + 12, &(sections.len() as u32).to_le_bytes());
    for (i, s) in sections.iter().enumerate() {
        let at = META + 16 + 32 * i;
        put(&mut img, at, &s.off.to_le_bytes());
        put(&mut img, at + 4, &s.raw.to_le_bytes());
        put(&mut img, at + 8, &s.gpa.to_le_bytes());
        put(&mut img, at + 16, &s.size.to_le_bytes());
        put(&mut img, at + 24, &s.ty.to_le_bytes());
        put(&mut img, at + 28, &s.attr.to_le_bytes());
    }
    // The last 32 bytes: the reset vector area.
    img[LEN - 32..].fill(0xcc);
    // GUID table, backwards from the footer at LEN-48.
    put(&mut img, LEN - 48, &FOOTER);
    put(&mut img, LEN - 50, &62u16.to_le_bytes()); // 18 (footer) + 22 + 22
                                                   // Entry nearest the end: some other GUID with 4 bytes of data.
    put(&mut img, LEN - 66, &OTHER);
    put(&mut img, LEN - 68, &22u16.to_le_bytes());
    put(&mut img, LEN - 72, &0xdead_beefu32.to_le_bytes());
    // Then the TDX metadata offset entry: distance of the metadata from the end.
    put(&mut img, LEN - 88, &TDX_META);
    put(&mut img, LEN - 90, &22u16.to_le_bytes());
    put(&mut img, LEN - 94, &((LEN - META) as u32).to_le_bytes());
    img
}

fn page_add(h: &mut Sha384, gpa: u64) {
    let mut r = [0u8; 128];
    r[..12].copy_from_slice(b"MEM.PAGE.ADD");
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    h.update(r);
}

fn extend_page(h: &mut Sha384, gpa: u64, page: &[u8]) {
    for c in 0..16 {
        let mut r = [0u8; 128];
        r[..9].copy_from_slice(b"MR.EXTEND");
        r[16..24].copy_from_slice(&(gpa + c as u64 * 256).to_le_bytes());
        h.update(r);
        h.update(&page[c * 256..c * 256 + 256]);
    }
}

/// The records of the default image's BFV (4 measured pages) and CFV (1 unmeasured page).
fn hand_firmware(h: &mut Sha384, img: &[u8]) {
    for p in 0..4u64 {
        let gpa = 0xffff_c000 + p * 4096;
        page_add(h, gpa);
        extend_page(
            h,
            gpa,
            &img[(p * 4096) as usize..(p * 4096 + 4096) as usize],
        );
    }
    page_add(h, 0xffff_b000);
}

fn hand_mrtd(img: &[u8], with_aug: bool) -> [u8; 48] {
    let mut h = Sha384::new();
    hand_firmware(&mut h, img);
    page_add(&mut h, 0x80_9000);
    if with_aug {
        page_add(&mut h, 0x80_0000);
        page_add(&mut h, 0x80_1000);
    }
    page_add(&mut h, 0x81_0000);
    h.finalize()
}

#[test]
fn parses_the_metadata() {
    let img = image(&default_sections());
    let m = tdvf::parse(&img).unwrap();
    assert_eq!(m.offset, META as u64);
    assert_eq!(m.version, 1);
    assert_eq!(m.sections.len(), 5);
    let s = &m.sections[0];
    assert_eq!(
        (
            s.data_offset,
            s.raw_data_size,
            s.memory_address,
            s.memory_data_size
        ),
        (0, 0x4000, 0xffff_c000, 0x4000)
    );
    assert_eq!(s.section_type, SectionType::Bfv);
    assert!(s.mr_extend() && !s.page_aug());
    assert_eq!(m.sections[1].section_type, SectionType::Cfv);
    assert_eq!(m.sections[2].section_type, SectionType::TdHob);
    assert_eq!(m.sections[3].section_type, SectionType::TempMem);
    assert!(m.sections[3].page_aug());
    assert_eq!(
        tdvf::find_table_entry(&img, &OTHER).unwrap(),
        &0xdead_beefu32.to_le_bytes()
    );
}

#[test]
fn plans_roles_and_contents() {
    let img = image(&default_sections());
    let regions = tdvf::plan_regions(&img, &PlanOptions::default()).unwrap();
    let roles: Vec<_> = regions
        .iter()
        .map(|r| (r.spec.gpa, r.spec.len, r.spec.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            (0xffff_c000, 0x4000, Role::Measured),
            (0xffff_b000, 0x1000, Role::Unmeasured),
            (0x80_9000, 0x1000, Role::Zero),
            (0x80_0000, 0x2000, Role::Zero),
            (0x81_0000, 0x1000, Role::Zero),
        ]
    );
    let Content::Bytes(b) = &regions[0].spec.content else {
        panic!()
    };
    assert_eq!(&b[..], &img[..0x4000]);
    let Content::Bytes(b) = &regions[1].spec.content else {
        panic!()
    };
    assert_eq!(&b[..], &img[0x4000..0x5000]);

    let hob = [0x42u8; 100];
    let opts = PlanOptions {
        td_hob: Some(&hob),
        ..PlanOptions::default()
    };
    let regions = tdvf::plan_regions(&img, &opts).unwrap();
    assert_eq!(regions[2].spec.role, Role::Unmeasured);
    let Content::Bytes(b) = &regions[2].spec.content else {
        panic!()
    };
    assert_eq!(b.len(), 0x1000);
    assert!(b[..100].iter().all(|x| *x == 0x42) && b[100..].iter().all(|x| *x == 0));

    let leave = PlanOptions {
        page_aug: PageAugPolicy::LeaveForGuest,
        ..PlanOptions::default()
    };
    let regions = tdvf::plan_regions(&img, &leave).unwrap();
    assert_eq!(
        regions.iter().map(|r| r.section).collect::<Vec<_>>(),
        vec![0, 1, 2, 4]
    );
}

#[test]
fn mrtd_of_the_image_matches_the_hand_derivation_under_each_policy() {
    let img = image(&default_sections());
    let qemu = tdvf::measure(&img, &PlanOptions::default()).unwrap();
    assert_eq!(qemu, hand_mrtd(&img, true));
    let leave = PlanOptions {
        page_aug: PageAugPolicy::LeaveForGuest,
        ..PlanOptions::default()
    };
    let left = tdvf::measure(&img, &leave).unwrap();
    assert_eq!(left, hand_mrtd(&img, false));
    assert_ne!(qemu, left);
    // The HOB's content is not measured (the section has no MR_EXTEND).
    let hob = [7u8; 64];
    let with_hob = PlanOptions {
        td_hob: Some(&hob),
        ..PlanOptions::default()
    };
    assert_eq!(tdvf::measure(&img, &with_hob).unwrap(), qemu);
}

#[test]
fn populating_the_planned_image_gives_the_offline_mrtd() {
    let img = image(&default_sections());
    let plan = tdvf::build_plan(&img, &PlanOptions::default(), &MemoryLayout::unbounded()).unwrap();
    let mut td = TdxBackend::new(TdxModel::new());
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    td.enable_split_irqchip(24).unwrap();
    td.create_vcpu(0).unwrap();
    td.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    td.init_vcpu(0, 0x80_9000).unwrap();
    let report = Driver::new(&mut td).run(&plan).unwrap();
    assert!(report.is_complete());
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(hand_mrtd(&img, true)));
}

fn section_err(sections: Vec<Sec>) -> (usize, String) {
    match tdvf::parse(&image(&sections)) {
        Err(Error::TdvfSection { index, reason, .. }) => (index, reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_sections_are_refused_by_index() {
    let mut s = default_sections();
    s[0].raw = 0x2_0000;
    let (i, r) = section_err(s);
    assert_eq!(i, 0);
    assert!(r.contains("run past"), "{r}");

    let mut s = default_sections();
    s[1].gpa += 1;
    assert_eq!(section_err(s).0, 1);

    let mut s = default_sections();
    s[4].raw = 0x1000;
    assert_eq!(section_err(s).0, 4);

    let mut s = default_sections();
    s[1].raw = 0;
    assert_eq!(section_err(s).0, 1);

    let mut s = default_sections();
    s[2].size = 0;
    assert_eq!(section_err(s).0, 2);

    let mut s = default_sections();
    s[3].gpa = !0xfff;
    assert_eq!(section_err(s).0, 3);

    // PERM_MEM: refused like QEMU, unless PAGE_AUG and left to the guest.
    let mut s = default_sections();
    s.push(Sec {
        off: 0,
        raw: 0,
        gpa: 0x100_0000,
        size: 0x10_0000,
        ty: 4,
        attr: 0,
    });
    let img = image(&s);
    let e = tdvf::plan_regions(&img, &PlanOptions::default()).unwrap_err();
    assert!(matches!(e, Error::TdvfSection { index: 5, .. }), "{e}");
    assert!(e.to_string().contains("PERM_MEM"), "{e}");
    let mut s = default_sections();
    s.push(Sec {
        off: 0,
        raw: 0,
        gpa: 0x100_0000,
        size: 0x10_0000,
        ty: 4,
        attr: 2,
    });
    let img = image(&s);
    let leave = PlanOptions {
        page_aug: PageAugPolicy::LeaveForGuest,
        ..PlanOptions::default()
    };
    assert_eq!(tdvf::plan_regions(&img, &leave).unwrap().len(), 4);
    assert_eq!(
        tdvf::plan_regions(&img, &PlanOptions::default())
            .unwrap_err()
            .to_string(),
        "TDVF section 5 (PERM_MEM, GPA 0x1000000, size 0x100000): PERM_MEM sections are not \
         supported (QEMU refuses them too); PageAugPolicy::LeaveForGuest would leave it to the guest"
    );

    // Overlapping sections are refused by plan validation.
    let mut s = default_sections();
    s[4].gpa = 0x80_1000;
    let e = tdvf::build_plan(
        &image(&s),
        &PlanOptions::default(),
        &MemoryLayout::unbounded(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Plan(_)), "{e}");
}

#[test]
fn malformed_tables_and_headers_are_refused() {
    let good = image(&default_sections());
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        tdvf::parse(&v)
    };
    assert!(matches!(
        with(&|v| v[LEN - 48] ^= 1),
        Err(Error::NotTdvf { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, LEN - 50, &0xffffu16.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, LEN - 50, &10u16.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, LEN - 68, &0u16.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| v[LEN - 88] ^= 1),
        Err(Error::NotTdvf { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, LEN - 94, &(LEN as u32 + 1).to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, LEN - 94, &8u32.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| v[META] = b'X'),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, META + 8, &2u32.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, META + 4, &100u32.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| {
            put(v, META + 4, &48u32.to_le_bytes());
            put(v, META + 12, &1u32.to_le_bytes());
        }),
        Err(Error::TdvfMetadata { .. })
    ));
    assert!(matches!(
        with(&|v| put(v, META + 12, &u32::MAX.to_le_bytes())),
        Err(Error::TdvfMetadata { .. })
    ));
}

#[test]
fn arbitrary_mutations_never_panic() {
    let good = image(&default_sections());
    let interesting: Vec<usize> = (META..META + 16 + 32 * 5).chain(LEN - 100..LEN).collect();
    for &at in &interesting {
        for v in [0u8, 0xff, 0x80, 0x01, good[at] ^ 0x10] {
            let mut img = good.clone();
            img[at] = v;
            let _ = tdvf::parse(&img);
            let _ = tdvf::plan_regions(&img, &PlanOptions::default());
        }
    }
    for n in 0..good.len().min(4096) {
        let _ = tdvf::parse(&good[good.len() - n..]);
        let _ = tdvf::parse(&good[..n]);
    }
    let mut x = 0x1234_5678u32;
    for len in [0usize, 1, 49, 50, 64, 100, 4096] {
        let v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        // Random bytes carry no footer GUID: refused as not a TDVF (not as bad metadata).
        assert!(
            matches!(tdvf::parse(&v), Err(Error::NotTdvf { .. })),
            "{len} bytes: {:?}",
            tdvf::parse(&v)
        );
    }
}

#[test]
fn a_hob_smaller_than_its_section_is_its_pages_then_zeros() {
    let mut s = default_sections();
    s[2].size = 0x3000;
    s[2].attr = 1; // a measured HOB section: its content counts
    let img = image(&s);
    let hob = vec![0x42u8; 5000];
    let opts = PlanOptions {
        td_hob: Some(&hob),
        ..PlanOptions::default()
    };
    let regions = tdvf::plan_regions(&img, &opts).unwrap();
    let hob_regions: Vec<_> = regions.iter().filter(|r| r.section == 2).collect();
    assert_eq!(hob_regions.len(), 2);
    assert_eq!(
        (hob_regions[0].spec.gpa, hob_regions[0].spec.len),
        (0x80_9000, 0x2000)
    );
    assert_eq!(
        (hob_regions[1].spec.gpa, hob_regions[1].spec.len),
        (0x80_b000, 0x1000)
    );
    assert!(matches!(hob_regions[1].spec.content, Content::Zero));
    assert!(hob_regions.iter().all(|r| r.spec.role == Role::Measured));

    // By hand: the HOB section is three measured pages of the HOB zero-padded to 0x3000.
    let mut padded = hob.clone();
    padded.resize(0x3000, 0);
    let mut h = Sha384::new();
    hand_firmware(&mut h, &img);
    for p in 0..3u64 {
        page_add(&mut h, 0x80_9000 + p * 4096);
        extend_page(
            &mut h,
            0x80_9000 + p * 4096,
            &padded[(p * 4096) as usize..][..4096],
        );
    }
    page_add(&mut h, 0x80_0000);
    page_add(&mut h, 0x80_1000);
    page_add(&mut h, 0x81_0000);
    assert_eq!(tdvf::measure(&img, &opts).unwrap(), h.finalize());
}
