//! OVMF firmware images with SEV metadata, and the plan a QEMU-style VMM populates from them.
//!
//! The image format (QEMU `hw/i386/pc_sysfw_ovmf.c`, `target/i386/sev.c`; OVMF
//! `OvmfPkg/ResetVector`):
//! - The GUIDed table footer: the GUID `96b582de-1fb2-45f7-baea-a366c55a082d` 48 bytes before
//!   the end of the image (32 bytes of reset vector follow it), preceded by a `u16` total length
//!   of the table (including that length and the GUID). Before them, entries packed back to
//!   front, each `data, u16 length (of data + 18), GUID`.
//! - The SEV metadata entry, GUID `dc886566-984a-4798-a75e-5585a7bf67cc`, holds a `u32` offset
//!   from the END of the image to the metadata: `"ASEV"`, `u32` length, `u32` version, `u32`
//!   section count, then sections of `{u32 base, u32 length, u32 type}`.
//! - Section types: 1 `SNP_SEC_MEM`, 2 `SNP_SECRETS`, 3 `CPUID`, 4 `SVSM_CAA`,
//!   0x10 `SNP_KERNEL_HASHES`.
//!
//! GUIDs are stored in the EFI byte order (first three fields little-endian).
//! Every offset and length is checked; the parser never panics and never reads out of bounds.

use std::fmt;

#[cfg(feature = "kvm")]
use cc_populate::{Content, RegionSpec, Role};

#[cfg(feature = "measure")]
use crate::chain::{LaunchDigest, VmsaPage};
use crate::digest::PageType;
#[cfg(feature = "measure")]
use crate::digest::DIGEST_LEN;
use crate::vmsa::VmmType;
use crate::Error;

/// A GUID in its EFI (mixed-endian) byte order, as stored in firmware images.
pub type Guid = [u8; 16];

/// Parses `"aabbccdd-eeff-gghh-iijj-kkllmmnnoopp"` into the EFI byte order (a const helper for
/// the constants below; a malformed literal fails the build, since only constants call it).
pub(crate) const fn guid(s: &str) -> Guid {
    const fn hex(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("bad hex digit in GUID"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 36, "GUID literal must have 36 characters");
    // Positions of the 16 byte pairs in the text, in text order.
    const POS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut text = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        text[i] = hex(b[POS[i]]) << 4 | hex(b[POS[i] + 1]);
        i += 1;
    }
    [
        text[3], text[2], text[1], text[0], text[5], text[4], text[7], text[6], text[8], text[9],
        text[10], text[11], text[12], text[13], text[14], text[15],
    ]
}

/// The OVMF GUIDed table footer.
pub const OVMF_TABLE_FOOTER_GUID: Guid = guid("96b582de-1fb2-45f7-baea-a366c55a082d");
/// The entry holding the SEV metadata offset.
pub const SEV_METADATA_GUID: Guid = guid("dc886566-984a-4798-a75e-5585a7bf67cc");
/// The entry holding the SEV-ES AP reset address (`u32`, then its size).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// The SEV metadata signature.
pub const SEV_METADATA_SIGNATURE: [u8; 4] = *b"ASEV";
/// Where images are mapped: ending at 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;

/// One entry of the GUIDed table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuidEntry<'a> {
    /// Its GUID (EFI byte order).
    pub guid: Guid,
    /// Offset of its data from the start of the image.
    pub offset: usize,
    /// Its data.
    pub data: &'a [u8],
}

/// What an SEV metadata section is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// 1: memory the firmware pre-validates (SEC stacks, page tables...).
    SnpSecMem,
    /// 2: the secrets page.
    SnpSecrets,
    /// 3: the CPUID page.
    Cpuid,
    /// 4: the SVSM calling area.
    SvsmCaa,
    /// 0x10: the kernel hashes table for measured direct boot.
    SnpKernelHashes,
    /// Any other type.
    Unknown(u32),
}

impl SectionKind {
    /// The kind of type number `t`.
    pub fn from_type(t: u32) -> SectionKind {
        match t {
            1 => SectionKind::SnpSecMem,
            2 => SectionKind::SnpSecrets,
            3 => SectionKind::Cpuid,
            4 => SectionKind::SvsmCaa,
            0x10 => SectionKind::SnpKernelHashes,
            t => SectionKind::Unknown(t),
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionKind::SnpSecMem => f.write_str("SNP_SEC_MEM"),
            SectionKind::SnpSecrets => f.write_str("SNP_SECRETS"),
            SectionKind::Cpuid => f.write_str("CPUID"),
            SectionKind::SvsmCaa => f.write_str("SVSM_CAA"),
            SectionKind::SnpKernelHashes => f.write_str("SNP_KERNEL_HASHES"),
            SectionKind::Unknown(t) => write!(f, "unknown type {t:#x}"),
        }
    }
}

/// One SEV metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical base.
    pub base: u32,
    /// Length in bytes.
    pub len: u32,
    /// Kind.
    pub kind: SectionKind,
}

/// The SEV metadata of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SevMetadata {
    /// Offset of the metadata from the start of the image.
    pub offset: usize,
    /// Its version field.
    pub version: u32,
    /// Its sections, in the image's order.
    pub sections: Vec<SevSection>,
}

/// What [`parse_ovmf`] found in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvmfImage<'a> {
    /// The whole image.
    pub image: &'a [u8],
    /// The GUIDed table's entries, from the end of the table backwards (the order QEMU searches).
    pub entries: Vec<GuidEntry<'a>>,
    /// The SEV metadata, if the image has it.
    pub sev_metadata: Option<SevMetadata>,
}

impl<'a> OvmfImage<'a> {
    /// The data of the first entry with `guid`.
    pub fn entry(&self, guid: &Guid) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find(|e| &e.guid == guid)
            .map(|e| e.data)
    }

    /// The first `u32` of the entry with `guid`, if it has one.
    pub fn entry_u32(&self, guid: &Guid) -> Option<u32> {
        self.entry(guid)
            .filter(|d| d.len() >= 4)
            .map(|d| le32(d, 0))
    }

    /// Where the APs start (QEMU `sev_es_find_reset_vector`): the first `u32` of the
    /// `SEV_ES_RESET_BLOCK_GUID` entry; `None` without one, or with an address of 0 (which
    /// QEMU treats as none).
    pub fn sev_es_reset_eip(&self) -> Option<u32> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID).filter(|&a| a != 0)
    }
}

fn read<'a>(
    image: &'a [u8],
    what: &'static str,
    offset: usize,
    len: usize,
) -> Result<&'a [u8], Error> {
    offset
        .checked_add(len)
        .and_then(|end| image.get(offset..end))
        .ok_or(Error::ImageBounds {
            what,
            offset: offset as u64,
            len: len as u64,
            size: image.len() as u64,
        })
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    for (i, x) in a.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(a)
}

/// Parses an OVMF image's GUIDed table and SEV metadata. An image without the table footer is
/// refused ([`Error::ImageFormat`]); one with the table but no SEV metadata entry parses with
/// `sev_metadata: None`. Never panics, on any bytes.
pub fn parse_ovmf(image: &[u8]) -> Result<OvmfImage<'_>, Error> {
    let size = image.len();
    let footer_at = size.checked_sub(48).ok_or(Error::ImageBounds {
        what: "GUIDed table footer",
        offset: 0,
        len: 48,
        size: size as u64,
    })?;
    if read(image, "GUIDed table footer", footer_at, 16)? != OVMF_TABLE_FOOTER_GUID {
        return Err(Error::ImageFormat {
            what: "GUIDed table footer",
            offset: footer_at as u64,
            reason: "no OVMF table footer GUID 96b582de-1fb2-45f7-baea-a366c55a082d".into(),
        });
    }
    let len_at = footer_at.checked_sub(2).ok_or(Error::ImageBounds {
        what: "GUIDed table length",
        offset: 0,
        len: 2,
        size: size as u64,
    })?;
    let total = le16(read(image, "GUIDed table length", len_at, 2)?) as usize;
    let body = total.checked_sub(18).ok_or(Error::ImageFormat {
        what: "GUIDed table length",
        offset: len_at as u64,
        reason: format!("total length {total} is shorter than its own length and GUID (18)"),
    })?;
    let start = len_at.checked_sub(body).ok_or(Error::ImageBounds {
        what: "GUIDed table",
        offset: 0,
        len: body as u64,
        size: size as u64,
    })?;
    let mut entries = Vec::new();
    let mut end = len_at; // one past the current entry
    while end > start {
        if end - start < 18 {
            return Err(Error::ImageFormat {
                what: "GUIDed table entry",
                offset: start as u64,
                reason: format!("{} bytes left, an entry has at least 18", end - start),
            });
        }
        let g = read(image, "GUIDed table entry GUID", end - 16, 16)?;
        let len = le16(read(image, "GUIDed table entry length", end - 18, 2)?) as usize;
        if len < 18 || len > end - start {
            return Err(Error::ImageFormat {
                what: "GUIDed table entry",
                offset: (end - 18) as u64,
                reason: format!(
                    "length {len} is below 18 or runs past the table start at {start:#x}"
                ),
            });
        }
        let offset = end - len;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(g);
        entries.push(GuidEntry {
            guid,
            offset,
            data: read(image, "GUIDed table entry data", offset, len - 18)?,
        });
        end = offset;
    }
    let mut out = OvmfImage {
        image,
        entries,
        sev_metadata: None,
    };
    if let Some(e) = out.entries.iter().find(|e| e.guid == SEV_METADATA_GUID) {
        if e.data.len() < 4 {
            return Err(Error::ImageFormat {
                what: "SEV metadata offset entry",
                offset: e.offset as u64,
                reason: format!("{} bytes of data, the offset needs 4", e.data.len()),
            });
        }
        let from_end = le32(e.data, 0) as usize;
        out.sev_metadata = Some(parse_metadata(image, from_end)?);
    }
    Ok(out)
}

fn parse_metadata(image: &[u8], from_end: usize) -> Result<SevMetadata, Error> {
    let size = image.len();
    let at = size.checked_sub(from_end).ok_or(Error::ImageBounds {
        what: "SEV metadata",
        offset: 0,
        len: from_end as u64,
        size: size as u64,
    })?;
    let hdr = read(image, "SEV metadata header", at, 16)?;
    if hdr[..4] != SEV_METADATA_SIGNATURE {
        return Err(Error::ImageFormat {
            what: "SEV metadata header",
            offset: at as u64,
            reason: format!("signature {:02x?} is not \"ASEV\"", &hdr[..4]),
        });
    }
    let len = le32(hdr, 4) as usize;
    let version = le32(hdr, 8);
    let count = le32(hdr, 12) as usize;
    let need = count.checked_mul(12).and_then(|n| n.checked_add(16));
    if need.is_none_or(|n| n > len) {
        return Err(Error::ImageFormat {
            what: "SEV metadata header",
            offset: at as u64,
            reason: format!("length {len} cannot hold {count} sections"),
        });
    }
    let body = read(image, "SEV metadata", at, len)?;
    let sections = (0..count)
        .map(|i| {
            let o = 16 + 12 * i;
            SevSection {
                base: le32(body, o),
                len: le32(body, o + 4),
                kind: SectionKind::from_type(le32(body, o + 8)),
            }
        })
        .collect();
    Ok(SevMetadata {
        offset: at,
        version,
        sections,
    })
}

/// How SEV metadata sections become page types (plan roles): VMMs disagree, and the launch digest depends on
/// it, so a verifier picks the policy of the VMM it reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionPolicy {
    /// A short name for messages.
    pub name: &'static str,
    /// Page type of `SNP_SEC_MEM` sections.
    pub sec_mem: PageType,
    /// Page type of `SVSM_CAA` sections.
    pub svsm_caa: PageType,
    /// Page type of `SNP_KERNEL_HASHES` sections (when no hashes table is given).
    pub kernel_hashes: PageType,
    /// Page type of sections of unknown type.
    pub unknown: PageType,
    /// Populate the CPUID sections after all the others (EC2) rather than in the image's
    /// order.
    pub cpuid_last: bool,
}

impl SectionPolicy {
    /// QEMU's mapping (`snp_populate_metadata_pages`): secrets and CPUID by type, everything
    /// else `ZERO` (kernel hashes too, unless measured direct boot supplies the table).
    pub const QEMU: SectionPolicy = SectionPolicy {
        name: "qemu",
        sec_mem: PageType::Zero,
        svsm_caa: PageType::Zero,
        kernel_hashes: PageType::Zero,
        unknown: PageType::Zero,
        cpuid_last: false,
    };

    /// EC2's (as `sev-snp-measure --vmm-type ec2` records it): QEMU's roles, with the CPUID
    /// sections populated after every other section.
    pub const EC2: SectionPolicy = SectionPolicy {
        name: "ec2",
        cpuid_last: true,
        ..SectionPolicy::QEMU
    };

    /// GCE's (as `sev-snp-measure --vmm-type gce` records it): `SNP_SEC_MEM` as `UNMEASURED`,
    /// everything else as QEMU does.
    pub const GCE: SectionPolicy = SectionPolicy {
        name: "gce",
        sec_mem: PageType::Unmeasured,
        ..SectionPolicy::QEMU
    };

    /// The mapping some other VMMs use (e.g. alioth, GCE): pre-validated memory as
    /// `UNMEASURED` instead of `ZERO`.
    pub const UNMEASURED: SectionPolicy = SectionPolicy {
        name: "unmeasured",
        sec_mem: PageType::Unmeasured,
        svsm_caa: PageType::Unmeasured,
        kernel_hashes: PageType::Unmeasured,
        unknown: PageType::Unmeasured,
        cpuid_last: false,
    };

    /// The role of a section of `kind` (its [`page_type`](Self::page_type)'s).
    #[cfg(feature = "kvm")]
    pub fn role(&self, kind: SectionKind) -> Role {
        // Every page type a policy gives has a role (none gives VMSA).
        self.page_type(kind).role().unwrap_or(Role::Zero)
    }

    /// The page type of a section of `kind`.
    pub fn page_type(&self, kind: SectionKind) -> PageType {
        match kind {
            SectionKind::SnpSecrets => PageType::Secrets,
            SectionKind::Cpuid => PageType::Cpuid,
            SectionKind::SnpSecMem => self.sec_mem,
            SectionKind::SvsmCaa => self.svsm_caa,
            SectionKind::SnpKernelHashes => self.kernel_hashes,
            SectionKind::Unknown(_) => self.unknown,
        }
    }

    /// Every named policy.
    pub const ALL: [SectionPolicy; 4] = [
        SectionPolicy::QEMU,
        SectionPolicy::EC2,
        SectionPolicy::GCE,
        SectionPolicy::UNMEASURED,
    ];

    /// The policy named `name` (`"qemu"`, `"ec2"`, `"gce"` or `"unmeasured"`).
    pub fn by_name(name: &str) -> Option<SectionPolicy> {
        SectionPolicy::ALL.into_iter().find(|p| p.name == name)
    }

    /// The policy of a VMM type.
    pub fn for_vmm(vmm: VmmType) -> SectionPolicy {
        match vmm {
            VmmType::Qemu => SectionPolicy::QEMU,
            VmmType::Ec2 => SectionPolicy::EC2,
            VmmType::Gce => SectionPolicy::GCE,
        }
    }
}

impl Default for SectionPolicy {
    fn default() -> Self {
        SectionPolicy::QEMU
    }
}

/// A region of a firmware plan: measured as it is ([`measure_regions`]), or handed to a
/// `cc_populate::PlanBuilder` (`to_spec`, feature `kvm`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRegion<'a> {
    /// Guest-physical address.
    pub gpa: u64,
    /// Length.
    pub len: u64,
    /// The page type it is populated as.
    pub page_type: PageType,
    /// Content bytes (`None`: zeros; for a CPUID section the VMM puts its table there).
    pub content: Option<&'a [u8]>,
    /// What it is (`"firmware image"`, or the section kind).
    pub what: String,
}

impl<'a> PlannedRegion<'a> {
    /// The plan role populated as its page type ([`PageType::role`]).
    #[cfg(feature = "kvm")]
    pub fn role(&self) -> Role {
        // plan_ovmf and plan_svsm never plan a VMSA page.
        self.page_type.role().unwrap_or(Role::Zero)
    }

    /// As a region for [`cc_populate::PlanBuilder::region`].
    #[cfg(feature = "kvm")]
    pub fn to_spec(&self) -> RegionSpec<'a> {
        RegionSpec {
            gpa: self.gpa,
            len: self.len,
            role: self.role(),
            content: match self.content {
                Some(b) => Content::Bytes(std::borrow::Cow::Borrowed(b)),
                None => Content::Zero,
            },
        }
    }
}

/// Plans a QEMU-style launch of an OVMF image: the image mapped to end at 4 GiB as measured
/// pages, then its SEV metadata sections in the image's order with their roles under `policy`.
/// Refuses an image that is empty, not a multiple of 4 KiB, larger than 4 GiB or without SEV
/// metadata, and sections that are empty, unaligned or end past 4 GiB, naming them.
///
/// ```no_run
/// use cc_populate::{MemoryLayout, PlanBuilder};
/// use sev_backend::{plan_ovmf, verifier_caps, SectionPolicy};
///
/// let image = std::fs::read("/usr/share/ovmf/OVMF.fd")?;
/// let mut builder = PlanBuilder::new();
/// for r in plan_ovmf(&image, SectionPolicy::QEMU)? {
///     builder.push(r.to_spec());
/// }
/// let plan = builder.build(&verifier_caps(), &MemoryLayout::unbounded())?;
/// # let _ = plan;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plan_ovmf(image: &[u8], policy: SectionPolicy) -> Result<Vec<PlannedRegion<'_>>, Error> {
    plan_ovmf_with(image, policy, None)
}

/// [`plan_ovmf`] for a measured direct boot: `kernel_hashes` is the content of the image's
/// `SNP_KERNEL_HASHES` section ([`crate::kernel_hashes_section`]), populated as measured
/// pages instead of the policy's role. Refuses content whose length is not the section's.
pub fn plan_ovmf_with<'a>(
    image: &'a [u8],
    policy: SectionPolicy,
    kernel_hashes: Option<&'a [u8]>,
) -> Result<Vec<PlannedRegion<'a>>, Error> {
    let mut out = vec![image_region(image, FOUR_GIB, "firmware image")?];
    let parsed = parse_ovmf(image)?;
    let meta = parsed.sev_metadata.ok_or(Error::ImageFormat {
        what: "GUIDed table",
        offset: 0,
        reason: "no SEV metadata entry (dc886566-984a-4798-a75e-5585a7bf67cc): not an SEV-capable OVMF build".into(),
    })?;
    out.extend(section_regions(&meta, policy, kernel_hashes)?);
    Ok(out)
}

/// `image` as measured pages ending at `end`.
pub(crate) fn image_region<'a>(
    image: &'a [u8],
    end: u64,
    what: &'static str,
) -> Result<PlannedRegion<'a>, Error> {
    let size = image.len() as u64;
    if size == 0 || !size.is_multiple_of(4096) || size > end || !end.is_multiple_of(4096) {
        return Err(Error::ImageFormat {
            what,
            offset: 0,
            reason: format!(
                "size {size:#x} is not a non-zero multiple of 4 KiB fitting below {end:#x}"
            ),
        });
    }
    Ok(PlannedRegion {
        gpa: end - size,
        len: size,
        page_type: PageType::Normal,
        content: Some(image),
        what: what.into(),
    })
}

/// The regions of SEV metadata sections under `policy`, in the order it populates them.
pub(crate) fn section_regions<'a>(
    meta: &SevMetadata,
    policy: SectionPolicy,
    kernel_hashes: Option<&'a [u8]>,
) -> Result<Vec<PlannedRegion<'a>>, Error> {
    let mut out = Vec::with_capacity(meta.sections.len());
    let mut cpuid = Vec::new();
    for (index, s) in meta.sections.iter().enumerate() {
        let (gpa, len) = (u64::from(s.base), u64::from(s.len));
        let bad = |reason: &str| Error::BadSection {
            index,
            gpa,
            len,
            kind: s.kind.to_string(),
            reason: reason.into(),
        };
        if len == 0 {
            return Err(bad("empty"));
        }
        if gpa % 4096 != 0 || len % 4096 != 0 {
            return Err(bad("not aligned to 4 KiB"));
        }
        if gpa + len > FOUR_GIB {
            return Err(bad("ends past 4 GiB"));
        }
        let (page_type, content) = match (s.kind, kernel_hashes) {
            (SectionKind::SnpKernelHashes, Some(c)) => {
                if c.len() as u64 != len {
                    return Err(bad(&format!(
                        "the kernel hashes content has {:#x} bytes, not the section's",
                        c.len()
                    )));
                }
                (PageType::Normal, Some(c))
            }
            (kind, _) => (policy.page_type(kind), None),
        };
        let r = PlannedRegion {
            gpa,
            len,
            page_type,
            content,
            what: s.kind.to_string(),
        };
        if policy.cpuid_last && s.kind == SectionKind::Cpuid {
            cpuid.push(r);
        } else {
            out.push(r);
        }
    }
    out.extend(cpuid);
    Ok(out)
}

/// Checks `regions` as one plan would for measuring: each non-empty, page-aligned, below 2^64,
/// its content (if any) exactly its length, and no two overlapping. The error names the region.
pub fn check_regions(regions: &[PlannedRegion<'_>]) -> Result<(), Error> {
    let bad = |i: usize, reason: String| Error::ImageFormat {
        what: "planned regions",
        offset: 0,
        reason: format!(
            "region {i} [{:#x}..+{:#x}) ({}): {reason}",
            regions[i].gpa, regions[i].len, regions[i].what
        ),
    };
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(regions.len());
    for (i, r) in regions.iter().enumerate() {
        if r.len == 0 || r.gpa % 4096 != 0 || r.len % 4096 != 0 {
            return Err(bad(i, "empty or not aligned to 4 KiB".into()));
        }
        let Some(end) = r.gpa.checked_add(r.len) else {
            return Err(bad(i, "wraps past 2^64".into()));
        };
        if let Some(c) = r.content {
            if c.len() as u64 != r.len {
                return Err(bad(i, format!("its content has {:#x} bytes", c.len())));
            }
        }
        spans.push((r.gpa, end, i));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            let (a, b) = (w[0].2.min(w[1].2), w[0].2.max(w[1].2));
            return Err(bad(b, format!("overlaps region {a}")));
        }
    }
    Ok(())
}

/// Adds `regions`, in order, to `ld` after [`check_regions`]: each region's pages as its page
/// type, content hashed where the type measures it.
#[cfg(feature = "measure")]
pub fn measure_regions(ld: &mut LaunchDigest, regions: &[PlannedRegion<'_>]) -> Result<(), Error> {
    check_regions(regions)?;
    for r in regions {
        let content = if r.page_type.measures_contents() {
            r.content
        } else {
            None
        };
        ld.update_pages(r.gpa, r.page_type, content, r.len)?;
    }
    Ok(())
}

/// The expected launch digest of a QEMU-style launch of an OVMF image: the image's pages ending
/// at 4 GiB, then (unless `firmware_only`) its SEV metadata sections under `policy`, then the
/// `vmsas` in the order given. What `ccpop measure snp --firmware` computes.
#[cfg(feature = "measure")]
pub fn measure_ovmf(
    image: &[u8],
    policy: SectionPolicy,
    vmsas: &[VmsaPage<'_>],
    firmware_only: bool,
) -> Result<[u8; DIGEST_LEN], Error> {
    let regions = plan_ovmf(image, policy)?;
    let take = if firmware_only { 1 } else { regions.len() };
    let mut ld = LaunchDigest::new();
    measure_regions(&mut ld, &regions[..take.min(regions.len())])?;
    for v in vmsas {
        ld.update_vmsa(v.gpa, v.page)?;
    }
    Ok(ld.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_byte_order() {
        // EFI order: 96b582de -> de 82 b5 96, 1fb2 -> b2 1f, 45f7 -> f7 45, rest as written.
        assert_eq!(
            OVMF_TABLE_FOOTER_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
        assert_eq!(SEV_METADATA_GUID[..4], [0x66, 0x65, 0x88, 0xdc]);
    }

    #[test]
    fn section_kinds_and_policies() {
        assert_eq!(SectionKind::from_type(1), SectionKind::SnpSecMem);
        assert_eq!(SectionKind::from_type(4), SectionKind::SvsmCaa);
        assert_eq!(SectionKind::from_type(0x10), SectionKind::SnpKernelHashes);
        assert_eq!(SectionKind::from_type(5), SectionKind::Unknown(5));
        let q = SectionPolicy::QEMU;
        assert_eq!(q.page_type(SectionKind::SnpSecMem), PageType::Zero);
        assert_eq!(q.page_type(SectionKind::SnpSecrets), PageType::Secrets);
        assert_eq!(q.page_type(SectionKind::Cpuid), PageType::Cpuid);
        assert_eq!(q.page_type(SectionKind::SvsmCaa), PageType::Zero);
        let u = SectionPolicy::UNMEASURED;
        assert_eq!(u.page_type(SectionKind::SnpSecMem), PageType::Unmeasured);
        assert_eq!(u.page_type(SectionKind::Cpuid), PageType::Cpuid);
        assert_eq!(SectionPolicy::by_name("unmeasured"), Some(u));
        assert_eq!(SectionPolicy::default(), q);
    }
}
