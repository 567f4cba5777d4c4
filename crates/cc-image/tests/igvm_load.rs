//! IGVM loading: what becomes the plan, what is refused (naming the header), the named
//! policies, and the boundary around the `igvm` parser's panics.

mod common;

use cc_image::{
    load_igvm, load_igvm_with, Error, IgvmPolicy, Origin, Platform, VmsaGpa, VmsaPlacement,
};
use cc_populate::Role;
use common::*;
use igvm::hv_defs::Vtl;
use igvm::registers::X86Register;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER_INSERT,
    IGVM_VHS_SUPPORTED_PLATFORM,
};

const N: IgvmPageDataType = IgvmPageDataType::NORMAL;

fn flags() -> IgvmPageDataFlags {
    IgvmPageDataFlags::new()
}

fn data(seed: u8) -> Vec<u8> {
    vec![seed; 4096]
}

#[test]
fn pages_become_regions_in_directive_order() {
    let u = flags().with_unmeasured(true);
    let bytes = serialize(vec![
        page(0x10_0000, BOTH, flags(), N, data(1)),
        page(0x10_1000, BOTH, flags(), N, data(2)),
        page(0x10_2000, TDX, flags(), N, data(3)),
        page(0x5000, BOTH, flags(), N, Vec::new()),
        page(0x6000, BOTH, u, N, data(4)),
        page(0x7000, SNP, flags(), IgvmPageDataType::SECRETS, Vec::new()),
        page(
            0x8000,
            SNP,
            flags(),
            IgvmPageDataType::CPUID_DATA,
            vec![9; 100],
        ),
        page(0x9000, BOTH, flags().with_shared(true), N, data(5)),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 8192,
            parameter_area_index: 0,
            initial_data: vec![7; 10],
        },
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x20_0000,
            compatibility_mask: BOTH,
            parameter_area_index: 0,
        }),
        vmsa(0xffff_ffff_f000, 0, 0x1234),
    ]);
    let snp = load_igvm(&bytes, Platform::Snp).unwrap();
    assert_eq!(snp.snp_policy(), Some(0x30000));
    let got: Vec<(u64, u64, Role, bool)> = snp
        .regions()
        .iter()
        .map(|r| (r.gpa(), r.size(), r.role(), r.data().is_some()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0x10_0000, 0x2000, Role::Measured, true),
            (0x5000, 0x1000, Role::Measured, false),
            (0x6000, 0x1000, Role::Unmeasured, true),
            (0x7000, 0x1000, Role::Secrets, false),
            (0x8000, 0x1000, Role::Cpuid, true),
            (0x20_0000, 0x2000, Role::Unmeasured, true),
        ]
    );
    assert_eq!(
        snp.regions()[0].origin(),
        &Origin::IgvmPages {
            headers: vec![0, 1]
        }
    );
    assert_eq!(
        snp.regions()[0].to_string(),
        "[0x100000..+0x2000) measured source (IGVM directives 0..=1)"
    );
    let cpuid = snp.regions()[4].data().unwrap();
    assert_eq!(&cpuid[..100], &[9; 100][..]);
    assert!(cpuid[100..].iter().all(|b| *b == 0));
    assert_eq!(snp.shared_pages().len(), 1);
    assert_eq!(snp.shared_pages()[0].gpa, 0x9000);
    assert_eq!(snp.vmsas().len(), 1);
    assert_eq!(snp.vmsas()[0].page[..8], 0u64.to_le_bytes());

    let tdx = load_igvm(&bytes, Platform::Tdx).unwrap();
    let got: Vec<(u64, u64, Role)> = tdx
        .regions()
        .iter()
        .map(|r| (r.gpa(), r.size(), r.role()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0x10_0000, 0x3000, Role::Measured),
            (0x5000, 0x1000, Role::Measured),
            (0x6000, 0x1000, Role::Unmeasured),
            (0x20_0000, 0x2000, Role::Unmeasured),
        ]
    );
    assert!(tdx.vmsas().is_empty());
    assert_eq!(tdx.measure().unwrap(), reference(&bytes, TDX));
}

#[test]
fn parameter_areas_can_be_filled_by_the_vmm_without_changing_the_digest() {
    let bytes = serialize(vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 4096,
            parameter_area_index: 3,
            initial_data: Vec::new(),
        },
        IgvmDirectiveHeader::MemoryMap(igvm_defs::IGVM_VHS_PARAMETER {
            parameter_area_index: 3,
            byte_offset: 16,
        }),
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x4000,
            compatibility_mask: BOTH,
            parameter_area_index: 3,
        }),
    ]);
    for platform in [Platform::Snp, Platform::Tdx] {
        let mut img = load_igvm(&bytes, platform).unwrap();
        let before = img.measure().unwrap();
        let uses = img.parameter_uses().to_vec();
        assert_eq!(uses.len(), 1);
        assert_eq!(
            (uses[0].kind, uses[0].area, uses[0].byte_offset),
            ("MemoryMap", 3, 16)
        );
        img.parameter_area_mut(3).unwrap()[16..20].copy_from_slice(b"e820");
        assert_eq!(&img.regions()[1].data().unwrap()[16..20], b"e820");
        assert_eq!(img.measure().unwrap(), before);
        assert!(matches!(
            img.parameter_area_mut(4),
            Err(Error::NoParameterArea(4))
        ));
    }
}

#[test]
fn vmsa_policies() {
    // VP contexts out of vCPU order and in the middle of the file, at a file-chosen address.
    let dirs = vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        vmsa(0x3000, 1, 0xaaaa),
        page(0x2000, BOTH, flags(), N, data(2)),
        vmsa(0x4000, 0, 0xbbbb),
    ];
    let bytes = serialize(dirs);
    let kvm = load_igvm(&bytes, Platform::Snp).unwrap();
    let v: Vec<(u64, u64, Option<u16>, usize)> = kvm
        .vmsas()
        .iter()
        .map(|v| (v.gpa, v.given_gpa, v.vp_index, v.regions_before()))
        .collect();
    // KVM: boot vCPU first, all after the pages, at INITIAL_VMSA_GPA.
    assert_eq!(
        v,
        vec![
            (0xffff_ffff_f000, 0x4000, Some(0), 2),
            (0xffff_ffff_f000, 0x3000, Some(1), 2)
        ]
    );
    let reference_policy = load_igvm_with(&bytes, Platform::Snp, IgvmPolicy::REFERENCE).unwrap();
    let v: Vec<(u64, usize)> = reference_policy
        .vmsas()
        .iter()
        .map(|v| (v.gpa, v.regions_before()))
        .collect();
    assert_eq!(v, vec![(0x3000, 1), (0x4000, 2)]);
    assert_eq!(reference_policy.measure().unwrap(), reference(&bytes, SNP));
    // The four combinations give four different digests: each policy matters.
    let mut digests = Vec::new();
    for vmsa_placement in [VmsaPlacement::KvmLast, VmsaPlacement::FileOrder] {
        for vmsa_gpa in [VmsaGpa::Kvm, VmsaGpa::File] {
            let p = IgvmPolicy {
                vmsa_placement,
                vmsa_gpa,
                ..IgvmPolicy::default()
            };
            digests.push(
                load_igvm_with(&bytes, Platform::Snp, p)
                    .unwrap()
                    .measure()
                    .unwrap(),
            );
        }
    }
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 4);
    assert_ne!(kvm.measure().unwrap(), reference(&bytes, SNP));
    // A VMM with a third vCPU adds the VMSA KVM builds for it, measured last.
    let mut three = load_igvm(&bytes, Platform::Snp).unwrap();
    let ap = Box::new([0x42u8; 4096]);
    three
        .push_vmsa(cc_image::DEFAULT_VMSA_GPA, ap.clone())
        .unwrap();
    let mut ld = sev_backend::LaunchDigest::from_digest(kvm.measure().unwrap().try_into().unwrap());
    ld.update_vmsa(cc_image::DEFAULT_VMSA_GPA, &ap[..]).unwrap();
    assert_eq!(three.measure().unwrap(), ld.digest().to_vec());
    assert_eq!(
        three.push_vmsa(0x123, ap.clone()).unwrap_err().to_string(),
        "cannot add a VMSA page at 0x123 to a snp image (SEV-SNP only, 4 KiB aligned)"
    );
    let mut tdx = load_igvm(&bytes, Platform::Tdx).unwrap();
    assert_eq!(
        tdx.push_vmsa(0x1000, ap).unwrap_err().to_string(),
        "cannot add a VMSA page at 0x1000 to a tdx image (SEV-SNP only, 4 KiB aligned)"
    );
    // TDX has no VMSA: the policies do not matter there.
    assert_eq!(
        load_igvm(&bytes, Platform::Tdx).unwrap().measure().unwrap(),
        reference(&bytes, TDX)
    );
}

/// The (GPA, size) of each region an image loaded into.
fn extents(img: &cc_image::LaunchImage) -> Vec<(u64, u64)> {
    img.regions().iter().map(|r| (r.gpa(), r.size())).collect()
}

fn refused(bytes: &[u8], platform: Platform) -> String {
    let e = load_igvm(bytes, platform)
        .expect_err("must be refused")
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

#[test]
fn refusals_name_the_header() {
    let two_mb = serialize(vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        page(
            0x20_0000,
            SNP,
            flags().with_is_2mb_page(true),
            N,
            Vec::new(),
        ),
    ]);
    assert_eq!(
        refused(&two_mb, Platform::Snp),
        "IGVM directive header 1 (PageData): 2 MiB page at 0x200000: not supported (give 4 KiB pages)"
    );
    // Not for TDX: that header is SNP's only.
    assert_eq!(
        extents(&load_igvm(&two_mb, Platform::Tdx).unwrap()),
        [(0x1000, 0x1000)]
    );

    let overlap = serialize(vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        page(0x2000, BOTH, flags(), N, data(2)),
        page(0x8000, BOTH, flags(), N, data(3)),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 8192,
            parameter_area_index: 0,
            initial_data: Vec::new(),
        },
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x1000,
            compatibility_mask: TDX,
            parameter_area_index: 0,
        }),
        page(0x8000, SNP, flags(), N, data(4)),
    ]);
    assert_eq!(
        refused(&overlap, Platform::Tdx),
        "IGVM directive header 4 (ParameterInsert): the page at 0x1000 is also populated by directive header 0"
    );
    assert_eq!(
        refused(&overlap, Platform::Snp),
        "IGVM directive header 5 (PageData): the page at 0x8000 is also populated by directive header 2"
    );

    // A native VP context for TDX: the igvm parser refuses it already (this crate would too:
    // KVM sets a TD's vCPU state itself).
    // SAFETY: IgvmNativeVpContextX64 derives zerocopy::FromZeros: all-zero bytes are valid.
    let ctx: Box<igvm_defs::IgvmNativeVpContextX64> = Box::new(unsafe { std::mem::zeroed() });
    let native = serialize(vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        IgvmDirectiveHeader::X64NativeVpContext {
            compatibility_mask: TDX,
            vp_index: 0,
            context: ctx,
        },
    ]);
    assert_eq!(
        refused(&native, Platform::Tdx),
        "IGVM file refused by the igvm parser: invalid binary directive header: invalid vp context platform type"
    );

    let big_area = serialize(vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 1 << 40,
            parameter_area_index: 0,
            initial_data: Vec::new(),
        },
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x10_0000,
            compatibility_mask: BOTH,
            parameter_area_index: 0,
        }),
    ]);
    assert!(refused(&big_area, Platform::Snp).starts_with(
        "IGVM directive header 2 (ParameterInsert): parameter area 0 has 0x10000000000 bytes"
    ));

    let top = serialize(vec![
        page(0x1000, BOTH, flags(), N, data(1)),
        page(0xffff_ffff_ffff_f000, BOTH, flags(), N, data(1)),
    ]);
    assert_eq!(
        refused(&top, Platform::Tdx),
        "IGVM directive header 1 (PageData): page at 0xfffffffffffff000 is not aligned or ends past 2^64"
    );

    assert_eq!(
        refused(&top, Platform::Cca),
        "IGVM files are loaded for platform snp or tdx, not cca"
    );
    assert_eq!(
        refused(&top, Platform::Plain),
        "IGVM files are loaded for platform snp or tdx, not plain"
    );
    assert!(refused(b"not an igvm file", Platform::Snp)
        .starts_with("IGVM file refused by the igvm parser: "));
    assert!(refused(&[], Platform::Tdx).starts_with("IGVM file refused by the igvm parser: "));

    // A file for SNP only has no TDX platform header.
    let snp_only = IgvmFile::new(
        IgvmRevision::V1,
        vec![platforms()[0].clone()],
        inits(),
        vec![page(0x1000, SNP, flags(), N, data(1))],
    )
    .unwrap();
    let mut b = Vec::new();
    snp_only.serialize(&mut b).unwrap();
    assert_eq!(
        refused(&b, Platform::Tdx),
        "IGVM file has no tdx platform header"
    );
    assert_eq!(
        extents(&load_igvm(&b, Platform::Snp).unwrap()),
        [(0x1000, 0x1000)]
    );
}

/// CRC-32 (IEEE 802.3, reflected, as crc32fast computes), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Recomputes a version-1 file's checksum (fixed header with the checksum zeroed, then the
/// variable headers), so that edits reach the parser past its checksum test.
pub fn fix_checksum(b: &mut [u8]) {
    let (off, size) = (u32_at(b, 8) as usize, u32_at(b, 12) as usize);
    b[20..24].fill(0);
    let mut covered = b[..24].to_vec();
    covered.extend_from_slice(&b[off..off + size]);
    let c = crc32(&covered);
    b[20..24].copy_from_slice(&c.to_le_bytes());
}

/// Offset of the body of the first variable header of type `typ`.
fn find_header(b: &[u8], typ: u32) -> usize {
    let (mut at, end) = (
        u32_at(b, 8) as usize,
        (u32_at(b, 8) + u32_at(b, 12)) as usize,
    );
    while at < end {
        let (t, len) = (u32_at(b, at), u32_at(b, at + 4) as usize);
        if t == typ {
            return at + 8;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    panic!("no header of type {typ:#x}");
}

#[test]
fn a_panicking_igvm_parser_is_contained() {
    // A VBS VP context whose vp_index is not 0: the igvm parser asserts on it.
    let vbs = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: 4,
        highest_vtl: 0,
        platform_type: IgvmPlatformType::VSM_ISOLATION,
        platform_version: igvm_defs::IGVM_VSM_ISOLATION_PLATFORM_VERSION,
        shared_gpa_boundary: 0,
    });
    let mut p = platforms();
    p.push(vbs);
    let file = IgvmFile::new(
        IgvmRevision::V1,
        p,
        inits(),
        vec![
            page(0x1000, SNP | TDX | 4, flags(), N, data(1)),
            IgvmDirectiveHeader::X64VbsVpContext {
                vtl: Vtl::Vtl0,
                registers: vec![X86Register::Rip(0x1000)],
                compatibility_mask: 4,
            },
        ],
    )
    .unwrap();
    let mut b = Vec::new();
    file.serialize(&mut b).unwrap();
    let body = find_header(&b, igvm_defs::IgvmVariableHeaderType::IGVM_VHT_VP_CONTEXT.0);
    b[body + 16..body + 18].copy_from_slice(&1u16.to_le_bytes());
    fix_checksum(&mut b);
    // The parser itself panics on this file ...
    assert!(std::panic::catch_unwind(|| IgvmFile::new_from_binary(&b, None)).is_err());
    // ... and our boundary turns that into an error.
    for platform in [Platform::Snp, Platform::Tdx] {
        let e = load_igvm(&b, platform).unwrap_err();
        assert!(matches!(e, Error::IgvmPanic(_)), "{e}");
        assert!(e
            .to_string()
            .starts_with("IGVM file refused: the igvm parser panicked on it"));
    }
}

#[test]
fn mutated_files_never_panic() {
    // The igvm parser's own panics are contained (and printed by the default hook: silence
    // those from the igvm crate, keep any other).
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("igvm")) {
            default(info);
        }
    }));
    let mut rng = Rng(0x5eed);
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..800 {
        let mut b = serialize(random_file(
            &mut rng,
            &Options {
                vmsas_anywhere: true,
            },
        ));
        let (off, size) = (u32_at(&b, 8) as usize, u32_at(&b, 12) as usize);
        for _ in 0..1 + rng.below(6) {
            // Mostly inside the variable headers, where the structure is.
            let at = if rng.chance(80) {
                off + rng.below(size as u64) as usize
            } else {
                rng.below(b.len() as u64) as usize
            };
            b[at] = match rng.below(4) {
                0 => rng.next() as u8,
                1 => b[at] ^ (1 << rng.below(8)),
                2 => 0xff,
                _ => 0,
            };
        }
        if rng.chance(90) {
            fix_checksum(&mut b);
        }
        for platform in [Platform::Snp, Platform::Tdx] {
            for policy in [IgvmPolicy::KVM, IgvmPolicy::REFERENCE] {
                match load_igvm_with(&b, platform, policy) {
                    Ok(img) => {
                        loaded += 1;
                        let _ = img.measure();
                        let _ = img.plan(
                            &platform.try_caps().unwrap(),
                            &cc_populate::MemoryLayout::unbounded(),
                        );
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(!e.to_string().contains('\n'));
                    }
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    // Both outcomes are exercised.
    assert!(
        loaded > 100 && refused > 100,
        "{loaded} loaded, {refused} refused"
    );
}
