//! Plan validation: every refusal, with the region it names.

use cc_populate::{
    BackendCaps, Content, ContentKind, Conversion, MemoryLayout, Memslot, PlanBuilder, PlanError,
    RegionSpec, Role, RoleSet, SourceBuf,
};

const MIB: u64 = 1 << 20;

fn caps() -> BackendCaps {
    BackendCaps {
        granule: 4096,
        max_chunk: 2 * MIB,
        hugepage_chunks: true,
        in_place: false,
        conversion: Conversion::BeforePopulate,
        roles: RoleSet::COMMON.with(Role::Cpuid).with(Role::Ripas),
    }
}

fn layout() -> MemoryLayout {
    MemoryLayout::new(&[
        Memslot {
            slot: 0,
            gpa: 0,
            size: 16 * MIB,
        },
        Memslot {
            slot: 1,
            gpa: 16 * MIB,
            size: 16 * MIB,
        },
        Memslot {
            slot: 7,
            gpa: 64 * MIB,
            size: 4 * MIB,
        },
    ])
    .unwrap()
}

fn build(b: PlanBuilder<'_>) -> Result<(), PlanError> {
    b.build(&caps(), &layout()).map(|_| ())
}

#[test]
fn accepts_a_good_plan_and_keeps_given_order() {
    let data = vec![1u8; 8192];
    let plan = PlanBuilder::new()
        .zero(64 * MIB, 4096)
        .source(0x1000, Role::Measured, &data)
        .zeros(20 * MIB, 4096, Role::Cpuid)
        .build(&caps(), &layout())
        .unwrap();
    let gpas: Vec<u64> = plan.regions().iter().map(|r| r.gpa()).collect();
    assert_eq!(gpas, vec![64 * MIB, 0x1000, 20 * MIB]);
    let sorted: Vec<usize> = plan.sorted().map(|(i, _)| i).collect();
    assert_eq!(sorted, vec![1, 2, 0]);
    assert_eq!(plan.regions()[1].memslot(), Some(0));
    assert_eq!(plan.regions()[2].memslot(), Some(1));
    assert_eq!(plan.regions()[0].memslot(), Some(7));
    assert_eq!(plan.total_bytes(), 4096 + 8192 + 4096);
}

#[test]
fn refuses_zero_length() {
    assert_eq!(
        build(PlanBuilder::new().zero(0x1000, 0)),
        Err(PlanError::ZeroLength {
            region: 0,
            gpa: 0x1000
        })
    );
}

#[test]
fn refuses_address_overflow() {
    let r = build(PlanBuilder::new().zero(0, 4096).zero(u64::MAX - 4095, 8192));
    assert_eq!(
        r,
        Err(PlanError::AddressOverflow {
            region: 1,
            gpa: u64::MAX - 4095,
            len: 8192
        })
    );
    // Ending exactly at 2^64 - 1 + 1 also overflows u64.
    let r = build(PlanBuilder::new().zero(u64::MAX - 4095, 4096));
    assert_eq!(
        r,
        Err(PlanError::AddressOverflow {
            region: 0,
            gpa: u64::MAX - 4095,
            len: 4096
        })
    );
}

#[test]
fn refuses_misalignment() {
    assert_eq!(
        build(PlanBuilder::new().zero(0x1800, 4096)),
        Err(PlanError::Misaligned {
            region: 0,
            gpa: 0x1800,
            len: 4096,
            granule: 4096
        })
    );
    assert_eq!(
        build(PlanBuilder::new().zero(0x1000, 100)),
        Err(PlanError::Misaligned {
            region: 0,
            gpa: 0x1000,
            len: 100,
            granule: 4096
        })
    );
}

#[test]
fn refuses_source_of_wrong_length() {
    let data = vec![0u8; 5000];
    let spec = RegionSpec {
        gpa: 0,
        len: 8192,
        role: Role::Measured,
        content: Content::Bytes(data[..].into()),
    };
    assert_eq!(
        build(PlanBuilder::new().region(spec)),
        Err(PlanError::SourceLength {
            region: 0,
            gpa: 0,
            len: 8192,
            actual: 5000
        })
    );
    let buf = SourceBuf::new(4096).unwrap();
    let spec = RegionSpec {
        gpa: 0,
        len: 8192,
        role: Role::Unmeasured,
        content: Content::Buffer(buf),
    };
    assert_eq!(
        build(PlanBuilder::new().region(spec)),
        Err(PlanError::SourceLength {
            region: 0,
            gpa: 0,
            len: 8192,
            actual: 4096
        })
    );
}

#[test]
fn refuses_content_on_zero_and_ripas() {
    let data = vec![0u8; 4096];
    assert_eq!(
        build(PlanBuilder::new().source(0, Role::Zero, &data)),
        Err(PlanError::ContentNotAllowed {
            region: 0,
            gpa: 0,
            len: 4096,
            role: Role::Zero,
            content: ContentKind::Source
        })
    );
    assert_eq!(
        build(PlanBuilder::new().in_place(0, 4096, Role::Ripas)),
        Err(PlanError::ContentNotAllowed {
            region: 0,
            gpa: 0,
            len: 4096,
            role: Role::Ripas,
            content: ContentKind::InPlace
        })
    );
}

#[test]
fn refuses_unsupported_role() {
    assert_eq!(
        build(PlanBuilder::new().zeros(0, 4096, Role::Secrets)),
        Err(PlanError::RoleUnsupported {
            region: 0,
            gpa: 0,
            len: 4096,
            role: Role::Secrets
        })
    );
}

#[test]
fn refuses_in_place_where_unsupported() {
    assert_eq!(
        build(PlanBuilder::new().in_place(0, 4096, Role::Measured)),
        Err(PlanError::InPlaceUnsupported {
            region: 0,
            gpa: 0,
            len: 4096
        })
    );
    let mut c = caps();
    c.in_place = true;
    assert!(PlanBuilder::new()
        .in_place(0, 4096, Role::Measured)
        .build(&c, &layout())
        .is_ok());
}

#[test]
fn refuses_regions_outside_or_across_memslots() {
    assert_eq!(
        build(PlanBuilder::new().zero(32 * MIB, 4096)),
        Err(PlanError::OutsideMemslots {
            region: 0,
            gpa: 32 * MIB,
            len: 4096
        })
    );
    assert_eq!(
        build(PlanBuilder::new().zero(15 * MIB, 2 * MIB)),
        Err(PlanError::CrossesMemslot {
            region: 0,
            gpa: 15 * MIB,
            len: 2 * MIB,
            slot: 0
        })
    );
    // Slot 1 ends at 32 MiB with a hole after it.
    assert_eq!(
        build(PlanBuilder::new().zero(31 * MIB, 2 * MIB)),
        Err(PlanError::CrossesMemslot {
            region: 0,
            gpa: 31 * MIB,
            len: 2 * MIB,
            slot: 1
        })
    );
    // Unbounded layouts check nothing of the kind.
    assert!(PlanBuilder::new()
        .zero(1 << 40, 4096)
        .build(&caps(), &MemoryLayout::unbounded())
        .is_ok());
}

#[test]
fn refuses_overlaps_naming_both_regions() {
    let r = build(
        PlanBuilder::new()
            .zero(0x3000, 0x2000)
            .zero(0x8000, 0x1000)
            .zero(0x1000, 0x3000),
    );
    assert_eq!(
        r,
        Err(PlanError::Overlap {
            region: 2,
            gpa: 0x1000,
            len: 0x3000,
            other: 0,
            other_gpa: 0x3000,
            other_len: 0x2000
        })
    );
    // Same start.
    let r = build(PlanBuilder::new().zero(0x1000, 0x1000).zero(0x1000, 0x1000));
    assert!(matches!(
        r,
        Err(PlanError::Overlap {
            region: 1,
            other: 0,
            ..
        })
    ));
    // Adjacent is fine.
    assert!(build(PlanBuilder::new().zero(0x1000, 0x1000).zero(0x2000, 0x1000)).is_ok());
}

#[test]
fn ripas_regions_may_contain_later_data_regions_only() {
    let data = vec![0u8; 4096];
    // Contained and listed after: fine.
    assert!(build(
        PlanBuilder::new()
            .zeros(0, 4 * MIB, Role::Ripas)
            .source(0x1000, Role::Measured, &data)
            .zero(4 * MIB - 4096, 4096)
    )
    .is_ok());
    // Listed before the ripas region.
    assert_eq!(
        build(
            PlanBuilder::new()
                .source(0x1000, Role::Measured, &data)
                .zeros(0, 4 * MIB, Role::Ripas)
        ),
        Err(PlanError::RipasAfterData {
            region: 0,
            gpa: 0x1000,
            len: 4096,
            ripas: 1
        })
    );
    // Sticking out of it.
    assert_eq!(
        build(
            PlanBuilder::new()
                .zeros(0x1000, 0x2000, Role::Ripas)
                .zero(0x2000, 0x2000)
        ),
        Err(PlanError::Overlap {
            region: 1,
            gpa: 0x2000,
            len: 0x2000,
            other: 0,
            other_gpa: 0x1000,
            other_len: 0x2000
        })
    );
    // Starting before it.
    assert!(matches!(
        build(
            PlanBuilder::new()
                .zeros(0x2000, 0x2000, Role::Ripas)
                .zero(0x1000, 0x2000)
        ),
        Err(PlanError::Overlap {
            region: 1,
            other: 0,
            ..
        })
    ));
    // Two ripas regions may not overlap each other.
    assert!(matches!(
        build(
            PlanBuilder::new()
                .zeros(0, 0x3000, Role::Ripas)
                .zeros(0x2000, 0x2000, Role::Ripas)
        ),
        Err(PlanError::Overlap {
            region: 1,
            other: 0,
            ..
        })
    ));
}

#[test]
fn refuses_bad_layouts_and_caps() {
    assert_eq!(
        MemoryLayout::new(&[
            Memslot {
                slot: 0,
                gpa: 0,
                size: 2 * MIB
            },
            Memslot {
                slot: 1,
                gpa: MIB,
                size: MIB
            }
        ]),
        Err(PlanError::MemslotOverlap {
            first: Memslot {
                slot: 0,
                gpa: 0,
                size: 2 * MIB
            },
            second: Memslot {
                slot: 1,
                gpa: MIB,
                size: MIB
            }
        })
    );
    assert!(matches!(
        MemoryLayout::new(&[Memslot {
            slot: 3,
            gpa: 0,
            size: 0
        }]),
        Err(PlanError::BadMemslot { slot: 3, .. })
    ));
    assert!(matches!(
        MemoryLayout::new(&[Memslot {
            slot: 3,
            gpa: u64::MAX,
            size: 2
        }]),
        Err(PlanError::BadMemslot { slot: 3, .. })
    ));
    let mut c = caps();
    c.max_chunk = 0;
    assert!(matches!(
        PlanBuilder::new().build(&c, &layout()),
        Err(PlanError::BadCaps(_))
    ));
}

#[test]
fn error_messages_name_the_range() {
    let e = build(PlanBuilder::new().zero(15 * MIB, 2 * MIB)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "region 0 [0xf00000..+0x200000) crosses the end of memslot 0"
    );
    let e = build(PlanBuilder::new().zeros(0, 4096, Role::Secrets)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "region 0 [0x0..+0x1000): role secrets is not supported by this platform"
    );
}

#[test]
fn slot_lookup() {
    let l = layout();
    assert_eq!(l.slot_at(0).map(|s| s.slot), Some(0));
    assert_eq!(l.slot_at(16 * MIB - 1).map(|s| s.slot), Some(0));
    assert_eq!(l.slot_at(16 * MIB).map(|s| s.slot), Some(1));
    assert_eq!(l.slot_at(40 * MIB), None);
    assert_eq!(l.slot_at(u64::MAX), None);
    assert_eq!(MemoryLayout::unbounded().slot_at(0), None);
}
