//! A COCONUT-SVSM launch as `sev-snp-measure --mode snp:svsm` describes it (QEMU with the
//! COCONUT patches): the OVMF image ending at 4 GiB, the OVMF variable store below it
//! (`--vars-size` bytes, not measured), the SVSM image ending where the variable store
//! begins; both images measured as `NORMAL` pages, then the SVSM image's SEV metadata sections
//! under QEMU's policy; every vCPU starts in the SVSM at the address its GUIDed table's
//! `SVSM_INFO_GUID` entry gives, relative to the image's base.

use crate::ovmf::{
    guid, image_region, parse_ovmf, section_regions, Guid, PlannedRegion, SectionPolicy, FOUR_GIB,
};
use crate::Error;

/// The SVSM image's entry giving its entry point (a `u32` offset from the image's base).
pub const SVSM_INFO_GUID: Guid = guid("a789a612-0597-4c4b-a49f-cbb1fe9d1ddd");

/// What an SVSM launch populates, and where its vCPUs start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvsmPlan<'a> {
    /// The OVMF image, the SVSM image, then the SVSM image's metadata sections.
    pub regions: Vec<PlannedRegion<'a>>,
    /// The vCPUs' entry point (guest-physical).
    pub entry: u32,
}

/// Plans an SVSM launch of `svsm` under `ovmf` with a `vars_size`-byte variable store between
/// them. Refuses images that are empty, not multiples of 4 KiB or do not fit below 4 GiB, a
/// variable store that is not a multiple of 4 KiB, and an SVSM image without its
/// `SVSM_INFO_GUID` entry.
pub fn plan_svsm<'a>(
    ovmf: &'a [u8],
    svsm: &'a [u8],
    vars_size: u64,
) -> Result<SvsmPlan<'a>, Error> {
    let fw = image_region(ovmf, FOUR_GIB, "firmware image")?;
    if !vars_size.is_multiple_of(4096) || vars_size > fw.gpa {
        return Err(Error::ImageFormat {
            what: "OVMF variable store",
            offset: 0,
            reason: format!(
                "size {vars_size:#x} is not a multiple of 4 KiB fitting below the firmware at {:#x}",
                fw.gpa
            ),
        });
    }
    let image = image_region(svsm, fw.gpa - vars_size, "SVSM image")?;
    let parsed = parse_ovmf(svsm)?;
    let offset = parsed
        .entry_u32(&SVSM_INFO_GUID)
        .ok_or(Error::ImageFormat {
            what: "SVSM image",
            offset: 0,
            reason: "no SVSM information entry (a789a612-0597-4c4b-a49f-cbb1fe9d1ddd) in its \
                     GUIDed table"
                .into(),
        })?;
    let entry = u32::try_from(image.gpa + u64::from(offset))
        .ok()
        .filter(|&e| u64::from(e) < image.gpa + image.len)
        .ok_or(Error::ImageFormat {
            what: "SVSM image",
            offset: 0,
            reason: format!(
                "entry offset {offset:#x} lies outside the {:#x}-byte image",
                image.len
            ),
        })?;
    let mut regions = vec![fw, image];
    if let Some(meta) = &parsed.sev_metadata {
        regions.extend(section_regions(meta, SectionPolicy::QEMU, None)?);
    }
    Ok(SvsmPlan { regions, entry })
}
