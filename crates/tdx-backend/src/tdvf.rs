//! TDVF images: the TDX metadata that tells a VMM which parts of the firmware image go where
//! in the TD, and the plan (and MRTD) that follows from it.
//!
//! Layout (TDVF design guide; QEMU `hw/i386/pc_sysfw_ovmf.c` and `hw/i386/tdvf.c`):
//!
//! - The OVMF GUIDed table ends 32 bytes before the end of the image: the footer GUID
//!   `96b582de-1fb2-45f7-baea-a366c55a082d` occupies `len-48..len-32`, preceded by a `u16` with
//!   the table's total length (including that footer's 18 bytes). Entries run backwards from
//!   there, each `data, u16 length (of the whole entry), GUID`.
//! - The entry `e47a6535-984a-4798-865e-4685a7bf8ec2` holds a `u32`: the TDX metadata's
//!   distance from the end of the image.
//! - The metadata: `"TDVF"`, `u32` length (16 + 32 per section), `u32` version (1), `u32`
//!   section count, then sections of `{u32 DataOffset, u32 RawDataSize, u64 MemoryAddress,
//!   u64 MemoryDataSize, u32 Type, u32 Attributes}`. Types: BFV 0, CFV 1, TD_HOB 2,
//!   TEMP_MEM 3, PERM_MEM 4, PAYLOAD 5, PAYLOAD_PARAM 6. Attributes: MR_EXTEND 1, PAGE_AUG 2.
//!
//! [`parse`] takes any bytes (it is fuzzed) and never panics or reads out of bounds.

use std::borrow::Cow;

#[cfg(feature = "kvm")]
use cc_populate::{Content, MemoryLayout, Plan, PlanBuilder, RegionSpec, Role};

#[cfg(feature = "kvm")]
use crate::TDX_CAPS;
use crate::{Error, PAGE_SIZE};

/// Builds the on-disk (mixed-endian) bytes of a GUID `a-b-c-d`.
pub const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// `96b582de-1fb2-45f7-baea-a366c55a082d`, the OVMF GUIDed table footer.
pub const OVMF_TABLE_FOOTER_GUID: [u8; 16] = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// `e47a6535-984a-4798-865e-4685a7bf8ec2`, the table entry holding the TDX metadata offset.
pub const TDX_METADATA_OFFSET_GUID: [u8; 16] = guid(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);
/// The metadata signature.
pub const TDVF_SIGNATURE: [u8; 4] = *b"TDVF";
/// The only metadata version defined.
pub const TDVF_VERSION: u32 = 1;
/// Section attribute: the section's pages are extended into MRTD.
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
/// Section attribute: the section's pages may be added after boot (TDH.MEM.PAGE.AUG, accepted
/// by the guest) instead of TDH.MEM.PAGE.ADD at build time.
pub const ATTR_PAGE_AUG: u32 = 1 << 1;

const FOOTER_FROM_END: usize = 48;
const GUID_LEN: usize = 16;
const ENTRY_TRAILER: usize = GUID_LEN + 2;
const HEADER_LEN: usize = 16;
const SECTION_LEN: usize = 32;

/// A TDVF section type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionType {
    /// Boot firmware volume (code), from the image.
    Bfv,
    /// Configuration firmware volume (variables), from the image.
    Cfv,
    /// The TD HOB, built by the VMM.
    TdHob,
    /// Temporary memory, zero.
    TempMem,
    /// Permanent memory (accepted by the guest).
    PermMem,
    /// A payload (kernel) the VMM loads.
    Payload,
    /// The payload's parameters.
    PayloadParam,
    /// Any other value.
    Other(u32),
}

impl SectionType {
    /// From the metadata's `Type` field.
    pub fn from_raw(t: u32) -> SectionType {
        match t {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            t => SectionType::Other(t),
        }
    }

    /// The name used in the TDVF design guide.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            SectionType::Bfv => "BFV",
            SectionType::Cfv => "CFV",
            SectionType::TdHob => "TD_HOB",
            SectionType::TempMem => "TEMP_MEM",
            SectionType::PermMem => "PERM_MEM",
            SectionType::Payload => "PAYLOAD",
            SectionType::PayloadParam => "PAYLOAD_PARAM",
            SectionType::Other(t) => return Cow::Owned(format!("type {t}")),
        })
    }
}

/// One TDVF metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// Offset of the section's bytes in the image.
    pub data_offset: u32,
    /// Bytes in the image.
    pub raw_data_size: u32,
    /// Guest-physical address.
    pub memory_address: u64,
    /// Bytes in the TD.
    pub memory_data_size: u64,
    /// Type.
    pub section_type: SectionType,
    /// Attributes ([`ATTR_MR_EXTEND`], [`ATTR_PAGE_AUG`]).
    pub attributes: u32,
}

impl Section {
    /// Whether the section is measured.
    pub fn mr_extend(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }
    /// Whether the section carries PAGE_AUG.
    pub fn page_aug(&self) -> bool {
        self.attributes & ATTR_PAGE_AUG != 0
    }
}

/// The parsed TDX metadata of a TDVF image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Image offset of the metadata header.
    pub offset: u64,
    /// Metadata version.
    pub version: u32,
    /// Sections, in metadata order (the order QEMU populates them in).
    pub sections: Vec<Section>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Finds the data of the OVMF GUIDed table entry `wanted` in `image`.
pub fn find_table_entry<'a>(image: &'a [u8], wanted: &[u8; 16]) -> Result<&'a [u8], Error> {
    let not = |reason: String| Error::NotTdvf { reason };
    let len = image.len();
    let footer = len
        .checked_sub(FOOTER_FROM_END)
        .filter(|f| *f >= 2)
        .ok_or_else(|| {
            not(format!(
                "image of {len} bytes is too small for an OVMF GUID table"
            ))
        })?;
    if image.get(footer..footer + GUID_LEN) != Some(&OVMF_TABLE_FOOTER_GUID[..]) {
        return Err(not(format!(
            "no OVMF table footer GUID at offset {footer:#x}"
        )));
    }
    let table_end = footer - 2;
    let total = u16_at(image, table_end).unwrap_or(0) as usize;
    let mut remaining = total
        .checked_sub(ENTRY_TRAILER)
        .filter(|t| *t <= table_end)
        .ok_or_else(|| Error::TdvfMetadata {
            offset: table_end as u64,
            reason: format!("OVMF table length {total} is out of range"),
        })?;
    let mut ptr = table_end;
    while remaining >= ENTRY_TRAILER {
        let entry_len = u16_at(image, ptr - ENTRY_TRAILER).unwrap_or(0) as usize;
        if entry_len < ENTRY_TRAILER || entry_len > remaining {
            return Err(Error::TdvfMetadata {
                offset: (ptr - ENTRY_TRAILER) as u64,
                reason: format!(
                    "OVMF table entry length {entry_len} is out of range (table has {remaining} bytes left)"
                ),
            });
        }
        let guid = &image[ptr - GUID_LEN..ptr];
        let data = &image[ptr - entry_len..ptr - ENTRY_TRAILER];
        if guid == wanted {
            return Ok(data);
        }
        ptr -= entry_len;
        remaining -= entry_len;
    }
    Err(not(
        "no TDX metadata offset GUID (e47a6535-984a-4798-865e-4685a7bf8ec2) in the OVMF table"
            .into(),
    ))
}

/// Parses the TDX metadata of a TDVF image, with the sanity checks QEMU applies (version 1, at
/// least two sections, the header length matching the section count, page-aligned addresses
/// and sizes, firmware volumes with image bytes and HOB/temporary memory without) plus bounds
/// checks on everything. Never panics.
pub fn parse(image: &[u8]) -> Result<Metadata, Error> {
    let data = find_table_entry(image, &TDX_METADATA_OFFSET_GUID)?;
    let from_end = u32_at(data, 0).ok_or_else(|| Error::NotTdvf {
        reason: format!(
            "TDX metadata offset entry has {} bytes, needs 4",
            data.len()
        ),
    })? as usize;
    let meta_err = |offset: usize, reason: String| Error::TdvfMetadata {
        offset: offset as u64,
        reason,
    };
    let offset = image
        .len()
        .checked_sub(from_end)
        .filter(|o| o.checked_add(HEADER_LEN).is_some_and(|e| e <= image.len()))
        .ok_or_else(|| {
            meta_err(
                0,
                format!(
                    "metadata offset {from_end:#x} from the end does not fit in the {:#x}-byte image",
                    image.len()
                ),
            )
        })?;
    if image.get(offset..offset + 4) != Some(&TDVF_SIGNATURE[..]) {
        return Err(meta_err(offset, "no \"TDVF\" signature".into()));
    }
    let length = u32_at(image, offset + 4).unwrap_or(0) as usize;
    let version = u32_at(image, offset + 8).unwrap_or(0);
    let count = u32_at(image, offset + 12).unwrap_or(0) as usize;
    if version != TDVF_VERSION {
        return Err(meta_err(
            offset,
            format!("version {version}, only 1 is defined"),
        ));
    }
    if count < 2 {
        return Err(meta_err(
            offset,
            format!("{count} section(s); QEMU requires at least 2"),
        ));
    }
    let expect = count
        .checked_mul(SECTION_LEN)
        .and_then(|n| n.checked_add(HEADER_LEN));
    if expect != Some(length) {
        return Err(meta_err(
            offset,
            format!("length {length:#x} does not match {count} sections"),
        ));
    }
    if offset.checked_add(length).is_none_or(|e| e > image.len()) {
        return Err(meta_err(
            offset,
            format!("length {length:#x} runs past the end of the image"),
        ));
    }
    let mut sections = Vec::with_capacity(count);
    for index in 0..count {
        let at = offset + HEADER_LEN + index * SECTION_LEN;
        let s = Section {
            data_offset: u32_at(image, at).unwrap_or(0),
            raw_data_size: u32_at(image, at + 4).unwrap_or(0),
            memory_address: u64_at(image, at + 8).unwrap_or(0),
            memory_data_size: u64_at(image, at + 16).unwrap_or(0),
            section_type: SectionType::from_raw(u32_at(image, at + 24).unwrap_or(0)),
            attributes: u32_at(image, at + 28).unwrap_or(0),
        };
        check_section(image, index, &s)?;
        sections.push(s);
    }
    Ok(Metadata {
        offset: offset as u64,
        version,
        sections,
    })
}

fn section_err(index: usize, s: &Section, reason: String) -> Error {
    Error::TdvfSection {
        index,
        kind: s.section_type.name().into_owned(),
        gpa: s.memory_address,
        size: s.memory_data_size,
        reason,
    }
}

fn check_section(image: &[u8], index: usize, s: &Section) -> Result<(), Error> {
    let err = |reason: String| Err(section_err(index, s, reason));
    let (raw, off) = (u64::from(s.raw_data_size), u64::from(s.data_offset));
    if off + raw > image.len() as u64 {
        return err(format!(
            "image bytes [{off:#x}..+{raw:#x}) run past the {:#x}-byte image",
            image.len()
        ));
    }
    if s.memory_data_size < raw {
        return err(format!("RawDataSize {raw:#x} exceeds MemoryDataSize"));
    }
    if !s.memory_address.is_multiple_of(PAGE_SIZE) || !s.memory_data_size.is_multiple_of(PAGE_SIZE)
    {
        return err("address or size not 4 KiB aligned".into());
    }
    if s.memory_data_size == 0 {
        return err("empty section".into());
    }
    if s.memory_address.checked_add(s.memory_data_size).is_none() {
        return err("ends past the top of the address space".into());
    }
    match s.section_type {
        SectionType::Bfv | SectionType::Cfv if raw == 0 => {
            err("a firmware volume without image bytes".into())
        }
        SectionType::TdHob | SectionType::TempMem if raw != 0 => {
            err(format!("has {raw:#x} image bytes; it must have none"))
        }
        _ => Ok(()),
    }
}

/// What to do with sections carrying [`ATTR_PAGE_AUG`]. Tools disagree, and MRTD differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PageAugPolicy {
    /// Add them at build time like every other section (TDH.MEM.PAGE.ADD, so they appear in
    /// MRTD), as QEMU does: it calls `KVM_TDX_INIT_MEM_REGION` for every section. The default.
    #[default]
    AddLikeQemu,
    /// Leave them out of the plan: the guest accepts that memory later (TDH.MEM.PAGE.AUG), so
    /// it is not in MRTD, as some measurement tools compute.
    LeaveForGuest,
}

#[cfg(feature = "kvm")]
/// Options for planning a TDVF image.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions<'h> {
    /// The PAGE_AUG policy.
    pub page_aug: PageAugPolicy,
    /// The TD HOB the VMM built for the TD_HOB section (zero-padded to the section's size);
    /// `None` plans the section as zeros (MRTD is the same unless the section is measured).
    pub td_hob: Option<&'h [u8]>,
}

#[cfg(feature = "kvm")]
/// A region planned from a TDVF section.
#[derive(Debug)]
pub struct PlannedRegion<'a> {
    /// The section's index in the metadata.
    pub section: usize,
    /// The section.
    pub info: Section,
    /// The region, ready for a [`PlanBuilder`].
    pub spec: RegionSpec<'a>,
}

#[cfg(feature = "kvm")]
fn padded<'a>(bytes: &'a [u8], len: u64) -> Cow<'a, [u8]> {
    if bytes.len() as u64 == len {
        Cow::Borrowed(bytes)
    } else {
        let mut v = vec![0u8; len as usize];
        let n = bytes.len().min(v.len());
        v[..n].copy_from_slice(&bytes[..n]);
        Cow::Owned(v)
    }
}

#[cfg(feature = "kvm")]
/// The regions a VMM populates for `image`, in metadata order:
///
/// | section | role | content |
/// |---|---|---|
/// | BFV, CFV | `Measured` if MR_EXTEND, else `Unmeasured` | image bytes from `DataOffset` (as QEMU: `MemoryDataSize` bytes from there; refused if they run past the image) |
/// | TD_HOB | `Measured` if MR_EXTEND, else `Unmeasured` with the HOB or `Zero` without | [`PlanOptions::td_hob`] (its pages, then a zero region for the rest of the section) or zeros |
/// | TEMP_MEM | `Measured` (zeros) if MR_EXTEND, else `Zero` | zeros |
/// | PAGE_AUG sections | per [`PageAugPolicy`] | |
/// | PERM_MEM, PAYLOAD, PAYLOAD_PARAM, others | refused (QEMU refuses them too), except PAGE_AUG ones left to the guest | |
pub fn plan_regions<'a>(
    image: &'a [u8],
    options: &PlanOptions<'a>,
) -> Result<Vec<PlannedRegion<'a>>, Error> {
    let meta = parse(image)?;
    let mut out = Vec::with_capacity(meta.sections.len());
    for (index, s) in meta.sections.iter().enumerate() {
        let (gpa, len) = (s.memory_address, s.memory_data_size);
        if s.page_aug() && options.page_aug == PageAugPolicy::LeaveForGuest {
            if s.mr_extend() {
                return Err(section_err(
                    index,
                    s,
                    "PAGE_AUG with MR_EXTEND: a measured section cannot be left to the guest"
                        .into(),
                ));
            }
            continue;
        }
        let measured = s.mr_extend();
        let (role, content) = match s.section_type {
            SectionType::Bfv | SectionType::Cfv => {
                // As QEMU: MemoryDataSize bytes of the image from DataOffset (also when
                // RawDataSize is smaller); refused where that runs past the image.
                let start = u64::from(s.data_offset);
                let Some(bytes) = start
                    .checked_add(len)
                    .filter(|end| *end <= image.len() as u64)
                    .and_then(|end| image.get(start as usize..end as usize))
                else {
                    return Err(section_err(
                        index,
                        s,
                        format!(
                            "MemoryDataSize bytes from DataOffset {start:#x} run past the {:#x}-byte image",
                            image.len()
                        ),
                    ));
                };
                let role = if measured {
                    Role::Measured
                } else {
                    Role::Unmeasured
                };
                (role, Content::Bytes(Cow::Borrowed(bytes)))
            }
            SectionType::TdHob => match options.td_hob {
                Some(hob) if hob.len() as u64 > len => {
                    return Err(section_err(
                        index,
                        s,
                        format!(
                            "the TD HOB given has {:#x} bytes, more than the section",
                            hob.len()
                        ),
                    ))
                }
                Some(hob) => {
                    let role = if measured {
                        Role::Measured
                    } else {
                        Role::Unmeasured
                    };
                    // The HOB's pages (zero-padded to a page), then zeros for the rest: the
                    // same PAGE.ADD/MR.EXTEND records as one zero-padded region, without
                    // allocating a section-sized buffer.
                    let head = (hob.len() as u64).div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
                    out.push(PlannedRegion {
                        section: index,
                        info: *s,
                        spec: RegionSpec {
                            gpa,
                            len: head,
                            role,
                            content: Content::Bytes(padded(hob, head)),
                        },
                    });
                    if head == len {
                        continue;
                    }
                    out.push(PlannedRegion {
                        section: index,
                        info: *s,
                        spec: RegionSpec {
                            gpa: gpa + head,
                            len: len - head,
                            role,
                            content: Content::Zero,
                        },
                    });
                    continue;
                }
                None if measured => (Role::Measured, Content::Zero),
                None => (Role::Zero, Content::Zero),
            },
            SectionType::TempMem if measured => (Role::Measured, Content::Zero),
            SectionType::TempMem => (Role::Zero, Content::Zero),
            t => {
                return Err(section_err(
                    index,
                    s,
                    format!(
                        "{} sections are not supported (QEMU refuses them too){}",
                        t.name(),
                        if s.page_aug() {
                            "; PageAugPolicy::LeaveForGuest would leave it to the guest"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        };
        out.push(PlannedRegion {
            section: index,
            info: *s,
            spec: RegionSpec {
                gpa,
                len,
                role,
                content,
            },
        });
    }
    Ok(out)
}

#[cfg(feature = "kvm")]
/// [`plan_regions`], built into a [`Plan`] for the TDX backend ([`TDX_CAPS`]) and `layout`.
pub fn build_plan<'a>(
    image: &'a [u8],
    options: &PlanOptions<'a>,
    layout: &MemoryLayout,
) -> Result<Plan<'a>, Error> {
    let regions = plan_regions(image, options)?;
    let mut b = PlanBuilder::with_capacity(regions.len());
    for r in regions {
        b.push(r.spec);
    }
    Ok(b.build(&TDX_CAPS, layout)?)
}

#[cfg(all(feature = "kvm", feature = "measure"))]
/// The MRTD of a TD launched from `image` by this crate's backend (as QEMU populates it, under
/// the chosen [`PageAugPolicy`]).
pub fn measure(image: &[u8], options: &PlanOptions<'_>) -> Result<[u8; 48], Error> {
    let plan = build_plan(image, options, &MemoryLayout::unbounded())?;
    crate::measure_plan(&plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_mixed_endian() {
        assert_eq!(
            TDX_METADATA_OFFSET_GUID,
            [
                0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf,
                0x8e, 0xc2
            ]
        );
        assert_eq!(
            OVMF_TABLE_FOOTER_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn small_inputs_are_refused_not_panicking() {
        for n in 0..200 {
            let v = vec![0xffu8; n];
            // No footer GUID, so no GUIDed table: the image is not a TDVF at all.
            assert!(
                matches!(parse(&v), Err(Error::NotTdvf { .. })),
                "{n} bytes: {:?}",
                parse(&v)
            );
        }
    }
}
