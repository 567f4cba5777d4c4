//! IGVM files for the tests, the bench and the examples (feature `model`), built with the
//! `igvm` crate: runs of pages of each kind an SEV-SNP launch takes, the file's guest policy,
//! and optionally an ID block.

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER_INSERT,
    IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY, IGVM_VHS_SNP_ID_BLOCK_SIGNATURE, IGVM_VHS_SUPPORTED_PLATFORM,
};

/// The compatibility mask of the files' one platform (SEV-SNP).
pub const SNP_MASK: u32 = 1;
/// The guest policy the files give: SMT allowed (bit 16), the must-be-one bit 17.
pub const GUEST_POLICY: u64 = 0x3_0000;

/// What the pages of a [`Run`] are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Measured pages with bytes (a whole page each).
    Data,
    /// Measured pages without bytes: the empty-page policy decides what they become.
    Empty,
    /// Unmeasured pages with bytes.
    Unmeasured,
    /// SEV-SNP secrets pages (the firmware fills them).
    Secrets,
    /// SEV-SNP CPUID pages (a few entries of bytes).
    Cpuid,
    /// A parameter area of the run's pages, inserted at the run's address.
    Parameters,
}

/// Consecutive pages of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First guest-physical address (page-aligned).
    pub gpa: u64,
    /// Pages.
    pub pages: u64,
    /// What they are.
    pub kind: Kind,
}

const fn run(gpa: u64, pages: u64, kind: Kind) -> Run {
    Run { gpa, pages, kind }
}

/// The worked integration's file, shaped like a firmware-plus-kernel image: 1059 pages (the
/// size of the Cloud Hypervisor import in issue 25), in file order (not address order), each
/// run apart from the others. Guest memory `[0, 16 MiB)` holds all of it.
pub const SAMPLE: [Run; 8] = [
    // Firmware code just below 16 MiB.
    run(0xf0_0000, 64, Kind::Data),
    // The kernel, [1 MiB, 4 MiB + 128 KiB): across three 2 MiB units.
    run(0x10_0000, 800, Kind::Data),
    // Its bss: empty pages, one page after it.
    run(0x42_1000, 150, Kind::Empty),
    run(0x80_0000, 1, Kind::Secrets),
    run(0x80_2000, 1, Kind::Cpuid),
    run(0x90_0000, 16, Kind::Unmeasured),
    run(0xa0_0000, 2, Kind::Parameters),
    run(0xb0_0000, 25, Kind::Empty),
];

/// A page's bytes: a pattern of its address and `seed`, so that misplaced bytes show.
pub fn page_bytes(gpa: u64, seed: u64) -> Vec<u8> {
    let mut x = gpa ^ seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn comp(tag: u8) -> [u8; 72] {
    std::array::from_fn(|i| tag ^ i as u8)
}

/// An SNP ID block directive (its signature and keys are patterns: the model's firmware does
/// not check them).
fn id_block() -> IgvmDirectiveHeader {
    let key = |t| {
        Box::new(IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: 2,
            reserved: 0,
            qx: comp(t),
            qy: comp(t + 1),
        })
    };
    let sig = |t| {
        Box::new(IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: comp(t),
            s_comp: comp(t + 1),
        })
    };
    IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: SNP_MASK,
        author_key_enabled: 0,
        reserved: [0; 3],
        ld: [0x4c; 48],
        family_id: [0xfa; 16],
        image_id: [0x1d; 16],
        version: 1,
        guest_svn: 1,
        id_key_algorithm: 1,
        author_key_algorithm: 0,
        id_key_signature: sig(0x10),
        id_public_key: key(0x20),
        author_key_signature: sig(0x30),
        author_public_key: key(0x40),
    }
}

/// The IGVM file of `runs` (page bytes from [`page_bytes`] with `seed`), with the guest policy
/// [`GUEST_POLICY`] and, if `with_id_block`, an ID block.
pub fn igvm_file(runs: &[Run], seed: u64, with_id_block: bool) -> Vec<u8> {
    let mut d = Vec::new();
    let page = |gpa, flags, data_type, data| IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: SNP_MASK,
        flags,
        data_type,
        data,
    };
    let normal = IgvmPageDataType::NORMAL;
    for (area, r) in (0u32..).zip(runs) {
        if r.kind == Kind::Parameters {
            d.push(IgvmDirectiveHeader::ParameterArea {
                number_of_bytes: r.pages * 4096,
                parameter_area_index: area,
                initial_data: Vec::new(),
            });
            d.push(IgvmDirectiveHeader::ParameterInsert(
                IGVM_VHS_PARAMETER_INSERT {
                    gpa: r.gpa,
                    compatibility_mask: SNP_MASK,
                    parameter_area_index: area,
                },
            ));
            continue;
        }
        for gpa in (r.gpa..r.gpa + r.pages * 4096).step_by(4096) {
            let flags = IgvmPageDataFlags::new();
            d.push(match r.kind {
                Kind::Data => page(gpa, flags, normal, page_bytes(gpa, seed)),
                Kind::Empty => page(gpa, flags, normal, Vec::new()),
                Kind::Unmeasured => page(
                    gpa,
                    flags.with_unmeasured(true),
                    normal,
                    page_bytes(gpa, seed),
                ),
                Kind::Secrets => page(gpa, flags, IgvmPageDataType::SECRETS, Vec::new()),
                Kind::Cpuid => page(
                    gpa,
                    flags,
                    IgvmPageDataType::CPUID_DATA,
                    page_bytes(gpa, seed)[..64 * 8].to_vec(),
                ),
                Kind::Parameters => unreachable!("handled above"),
            });
        }
    }
    if with_id_block {
        d.push(id_block());
    }
    let platforms = vec![IgvmPlatformHeader::SupportedPlatform(
        IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: SNP_MASK,
            highest_vtl: 0,
            platform_type: IgvmPlatformType::SEV_SNP,
            platform_version: igvm_defs::IGVM_SEV_SNP_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        },
    )];
    let inits = vec![IgvmInitializationHeader::GuestPolicy {
        policy: GUEST_POLICY,
        compatibility_mask: SNP_MASK,
    }];
    let file = IgvmFile::new(IgvmRevision::V1, platforms, inits, d).expect("a valid IGVM file");
    let mut out = Vec::new();
    file.serialize(&mut out).expect("the file serializes");
    out
}

/// [`SAMPLE`] with an ID block.
pub fn sample_file() -> Vec<u8> {
    igvm_file(&SAMPLE, 1, true)
}
