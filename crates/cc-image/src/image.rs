//! The loaded launch: owned regions, SNP VMSA pages and CCA realm parameters, as one plan.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use cc_populate::{
    BackendCaps, Content, ContentKind, MemoryLayout, Plan, PlanBuilder, RegionSpec, Role,
};
#[cfg(feature = "cca")]
use cca_backend::{MeasureOptions, RealmParams, RecParams, RmmVersion};
#[cfg(feature = "snp")]
use sev_backend::{LaunchDigest, PageType, VmsaPage};

use crate::Error;

/// Where SNP VMSA pages are measured by default: the address KVM gives every VMSA it
/// launches (`INITIAL_VMSA_GPA` in the kernel's SEV code).
pub const DEFAULT_VMSA_GPA: u64 = 0xffff_ffff_f000;

/// The platform a launch image is for.
///
/// ```
/// use cc_image::Platform;
/// let p: Platform = "snp".parse()?;
/// assert_eq!(p, Platform::Snp);
/// assert_eq!(p.to_string(), "snp");
/// assert!("sev".parse::<Platform>().is_err());
/// # Ok::<(), cc_image::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// A plain (non-confidential) guest_memfd VM: populated, never measured.
    Plain,
    /// AMD SEV-SNP: the launch digest (48 bytes).
    Snp,
    /// Intel TDX: MRTD (48 bytes).
    Tdx,
    /// Arm CCA: the Realm Initial Measurement (32 or 64 bytes).
    Cca,
}

impl Platform {
    /// Every platform.
    pub const ALL: [Platform; 4] = [Platform::Plain, Platform::Snp, Platform::Tdx, Platform::Cca];

    /// The name used in plan files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Plain => "plain",
            Platform::Snp => "snp",
            Platform::Tdx => "tdx",
            Platform::Cca => "cca",
        }
    }

    /// Whether this build supports the platform (its cargo feature, `snp`, `tdx` or `cca`,
    /// is on; `plain` always is).
    ///
    /// ```
    /// assert!(cc_image::Platform::Plain.is_built());
    /// assert_eq!(cc_image::Platform::Tdx.is_built(), cfg!(feature = "tdx"));
    /// ```
    pub fn is_built(self) -> bool {
        match self {
            Platform::Plain => true,
            Platform::Snp => cfg!(feature = "snp"),
            Platform::Tdx => cfg!(feature = "tdx"),
            Platform::Cca => cfg!(feature = "cca"),
        }
    }

    /// What the platform's backend declares, for validating a plan without a VM (with
    /// [`MemoryLayout::unbounded`]): the plain backend's, `sev_backend::verifier_caps()`,
    /// `tdx_backend::TDX_CAPS`, `cca_backend::CCA_CAPS`. [`Error::NotBuilt`] for a platform
    /// whose feature is off.
    pub fn try_caps(self) -> Result<BackendCaps, Error> {
        match self {
            Platform::Plain => Ok(plain_caps()),
            #[cfg(feature = "snp")]
            Platform::Snp => Ok(sev_backend::verifier_caps()),
            #[cfg(feature = "tdx")]
            Platform::Tdx => Ok(tdx_backend::TDX_CAPS),
            #[cfg(feature = "cca")]
            Platform::Cca => Ok(cca_backend::CCA_CAPS),
            #[allow(unreachable_patterns)]
            p => Err(Error::NotBuilt(p)),
        }
    }

    /// [`try_caps`](Self::try_caps) of a build with every platform (features `snp`, `tdx`
    /// and `cca`, the default), where it cannot fail.
    #[cfg(all(feature = "snp", feature = "tdx", feature = "cca"))]
    pub fn caps(self) -> BackendCaps {
        match self {
            Platform::Plain => plain_caps(),
            Platform::Snp => sev_backend::verifier_caps(),
            Platform::Tdx => tdx_backend::TDX_CAPS,
            Platform::Cca => cca_backend::CCA_CAPS,
        }
    }
}

fn plain_caps() -> BackendCaps {
    <cc_populate::plain::PlainBackend<'_> as cc_populate::Backend>::caps(
        &cc_populate::plain::PlainBackend::new(),
    )
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Platform, Error> {
        Platform::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::UnknownPlatform(s.to_string()))
    }
}

/// Where a region of a [`LaunchImage`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Region `index` of a plan file.
    PlanFile {
        /// Its index in the file's `regions`.
        index: usize,
    },
    /// Consecutive IGVM page-data directives for consecutive pages, merged.
    IgvmPages {
        /// The directive header index of each page, in order.
        headers: Vec<usize>,
    },
    /// An IGVM parameter area inserted by a parameter-insert directive.
    IgvmParameterArea {
        /// The parameter area index.
        area: u32,
        /// The parameter-insert directive's header index.
        header: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::PlanFile { index } => write!(f, "plan region {index}"),
            Origin::IgvmPages { headers } => match (headers.first(), headers.last()) {
                (Some(a), Some(b)) if a == b => write!(f, "IGVM directive {a}"),
                (Some(a), Some(b)) => write!(f, "IGVM directives {a}..={b}"),
                _ => f.write_str("IGVM directives"),
            },
            Origin::IgvmParameterArea { area, header } => {
                write!(f, "IGVM parameter area {area} (directive {header})")
            }
        }
    }
}

/// One region of a [`LaunchImage`], with its content owned by the image.
#[derive(Clone, Debug)]
pub struct ImageRegion {
    pub(crate) gpa: u64,
    pub(crate) size: u64,
    pub(crate) role: Role,
    /// `None`: zeros.
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) origin: Origin,
}

impl ImageRegion {
    /// First guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The content bytes (`None`: zeros).
    pub fn data(&self) -> Option<&[u8]> {
        self.data.as_deref()
    }
    /// The kind of content the region is populated from.
    pub fn content_kind(&self) -> ContentKind {
        if self.data.is_some() {
            ContentKind::Source
        } else {
            ContentKind::Zero
        }
    }
    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    pub(crate) fn end(&self) -> Option<u64> {
        self.gpa.checked_add(self.size)
    }
}

impl fmt::Display for ImageRegion {
    /// `[gpa..+size) role content (origin)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#x}..+{:#x}) {} {} ({})",
            self.gpa,
            self.size,
            self.role,
            self.content_kind(),
            self.origin
        )
    }
}

/// An SEV-SNP VMSA page measured with the launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpVmsa {
    /// The address the page is measured at (by default the one KVM uses, see
    /// [`VmsaGpa`](crate::VmsaGpa)).
    pub gpa: u64,
    /// The address given in the input (plan file, or IGVM VP context header).
    pub given_gpa: u64,
    /// The vCPU it belongs to (IGVM files), `None` for plan files (order given).
    pub vp_index: Option<u16>,
    /// The IGVM directive header it came from.
    pub header: Option<usize>,
    /// The page.
    pub page: Box<[u8; 4096]>,
    /// Number of image regions measured before it.
    pub(crate) regions_before: usize,
}

impl SnpVmsa {
    /// How many of the image's regions are measured before this VMSA page.
    pub fn regions_before(&self) -> usize {
        self.regions_before
    }
}

/// A page an IGVM file marks shared: written by the VMM into shared memory, not populated
/// privately and not measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedPage {
    /// Its address.
    pub gpa: u64,
    /// Its bytes (4096, zero padded).
    pub data: Vec<u8>,
    /// The directive header index.
    pub header: usize,
}

/// A range an IGVM file requires the VMM to back with memory (not populated, not measured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequiredMemory {
    /// First address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The directive header index.
    pub header: usize,
}

/// A parameter an IGVM file asks the loader to write into a parameter area (a memory map, the
/// vCPU count, a command line, ...) before the area is populated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterUse {
    /// What to write (`MemoryMap`, `VpCount`, `CommandLine`, ...).
    pub kind: &'static str,
    /// The parameter area index.
    pub area: u32,
    /// Byte offset in the area.
    pub byte_offset: u32,
    /// The directive header index.
    pub header: usize,
}

/// An SEV-SNP ID block and its authentication information, from an IGVM `SnpIdBlock`
/// directive, laid out as the SEV-SNP firmware ABI's `ID_BLOCK` and `ID_AUTH_INFO` structures
/// that `KVM_SEV_SNP_LAUNCH_FINISH` hands to `SNP_LAUNCH_FINISH` (`id_block_uaddr`,
/// `id_auth_uaddr`, `auth_key_en`).
///
/// `ID_BLOCK` (96 bytes): `LD` at 0x00 (48), `FAMILY_ID` 0x30 (16), `IMAGE_ID` 0x40 (16),
/// `VERSION` 0x50 (u32), `GUEST_SVN` 0x54 (u32), `POLICY` 0x58 (u64), little-endian. The
/// IGVM directive has no policy: `POLICY` is the file's SNP guest policy (its initialization
/// header, [`LaunchImage::snp_policy`]), which is the policy the launch must start with.
/// `VERSION` is the directive's `version` as written (the firmware accepts 1).
///
/// `ID_AUTH_INFO` (4096 bytes): `ID_KEY_ALGO` 0x000 (u32), `AUTH_KEY_ALGO` 0x004 (u32),
/// `ID_BLOCK_SIG` 0x040 (the directive's `id_key_signature`: R then S, 72 bytes each),
/// `ID_KEY` 0x240 (`id_public_key`: `CURVE` u32, then `QX` and `QY`, 72 bytes each; the
/// IGVM structure's reserved word after the curve is not part of it), `ID_KEY_SIG` 0x680
/// (`author_key_signature`), `AUTHOR_KEY` 0x880 (`author_public_key`); every other byte 0.
///
/// With `sev-backend`, `sev_backend::FinishParams { id_block: Some(&b.id_block), id_auth:
/// Some(&b.id_auth), auth_key: b.author_key_enabled, .. }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpIdBlock {
    /// The `ID_BLOCK` structure.
    pub id_block: [u8; SnpIdBlock::ID_BLOCK_LEN],
    /// The `ID_AUTH_INFO` structure.
    pub id_auth: Box<[u8; SnpIdBlock::ID_AUTH_LEN]>,
    /// Whether `ID_AUTH_INFO` carries an author key (`auth_key_en`; the directive's
    /// `author_key_enabled`, 0 or 1).
    pub author_key_enabled: bool,
    /// The directive header it came from.
    pub header: usize,
}

impl SnpIdBlock {
    /// The size of `ID_BLOCK`.
    pub const ID_BLOCK_LEN: usize = 96;
    /// The size of `ID_AUTH_INFO`.
    pub const ID_AUTH_LEN: usize = 4096;

    /// The launch digest the ID block's author signed (`LD`): the firmware refuses the launch
    /// unless it equals the digest of what was populated (compare with
    /// [`LaunchImage::measure`] under the policy the VMM launches with).
    pub fn ld(&self) -> [u8; 48] {
        let mut ld = [0u8; 48];
        ld.copy_from_slice(&self.id_block[..48]);
        ld
    }

    /// The `POLICY` field.
    pub fn policy(&self) -> u64 {
        let mut p = [0u8; 8];
        p.copy_from_slice(&self.id_block[0x58..0x60]);
        u64::from_le_bytes(p)
    }
}

/// An Arm CCA realm's parameters and RECs.
#[cfg(feature = "cca")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcaLaunch {
    /// The realm parameters (REALM_CREATE).
    pub realm: RealmParams,
    /// The RECs, in creation order.
    pub recs: Vec<RecParams>,
    /// The RMM version the plan file names (`"rmm"`), or `None` when it does not say (then
    /// [`LaunchImage::measure`] uses RMM 1.0, the meaning plan files had before the field).
    pub rmm: Option<RmmVersion>,
}

/// A launch image: the regions to populate (in populate and measurement order, their content
/// owned here), plus what the platform measures besides them (SNP VMSA pages, CCA realm
/// parameters and RECs). Made by [`load_plan_file`](crate::load_plan_file) or
/// [`load_igvm`](crate::load_igvm).
#[derive(Clone, Debug)]
pub struct LaunchImage {
    pub(crate) platform: Platform,
    pub(crate) regions: Vec<ImageRegion>,
    pub(crate) vmsas: Vec<SnpVmsa>,
    #[cfg(feature = "cca")]
    pub(crate) cca: Option<CcaLaunch>,
    pub(crate) snp_policy: Option<u64>,
    pub(crate) snp_id_block: Option<SnpIdBlock>,
    pub(crate) shared: Vec<SharedPage>,
    pub(crate) required: Vec<RequiredMemory>,
    pub(crate) parameters: Vec<ParameterUse>,
}

impl LaunchImage {
    #[cfg_attr(not(any(feature = "igvm", feature = "json")), allow(dead_code))]
    pub(crate) fn new(platform: Platform) -> Self {
        LaunchImage {
            platform,
            regions: Vec::new(),
            vmsas: Vec::new(),
            #[cfg(feature = "cca")]
            cca: None,
            snp_policy: None,
            snp_id_block: None,
            shared: Vec::new(),
            required: Vec::new(),
            parameters: Vec::new(),
        }
    }

    /// The platform the image is for.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The regions, in populate (and measurement) order.
    pub fn regions(&self) -> &[ImageRegion] {
        &self.regions
    }

    /// SEV-SNP VMSA pages, in measurement order.
    pub fn vmsas(&self) -> &[SnpVmsa] {
        &self.vmsas
    }

    /// Appends an SEV-SNP VMSA page, measured after everything else (at `gpa`, for KVM
    /// [`DEFAULT_VMSA_GPA`](crate::DEFAULT_VMSA_GPA)). KVM measures one VMSA page per vCPU it
    /// launches, so a VMM with more vCPUs than the file has VP contexts adds the pages KVM will
    /// build for the others (their contents are KVM's, from the vCPUs' register state).
    /// Refused for other platforms and unaligned addresses.
    pub fn push_vmsa(&mut self, gpa: u64, page: Box<[u8; 4096]>) -> Result<(), Error> {
        if self.platform != Platform::Snp || !gpa.is_multiple_of(4096) {
            return Err(Error::Vmsa {
                platform: self.platform,
                gpa,
            });
        }
        self.vmsas.push(SnpVmsa {
            gpa,
            given_gpa: gpa,
            vp_index: None,
            header: None,
            page,
            regions_before: self.regions.len(),
        });
        Ok(())
    }

    /// The Arm CCA realm parameters and RECs (CCA plan files).
    #[cfg(feature = "cca")]
    pub fn cca(&self) -> Option<&CcaLaunch> {
        self.cca.as_ref()
    }

    /// The SEV-SNP guest policy an IGVM file gives for the platform, if any.
    pub fn snp_policy(&self) -> Option<u64> {
        self.snp_policy
    }

    /// The SEV-SNP ID block an IGVM file gives for the platform, laid out for
    /// `KVM_SEV_SNP_LAUNCH_FINISH`, if any.
    pub fn snp_id_block(&self) -> Option<&SnpIdBlock> {
        self.snp_id_block.as_ref()
    }

    /// Pages an IGVM file marks shared (not in the plan).
    pub fn shared_pages(&self) -> &[SharedPage] {
        &self.shared
    }

    /// Ranges an IGVM file requires to be backed by memory (not in the plan).
    pub fn required_memory(&self) -> &[RequiredMemory] {
        &self.required
    }

    /// Parameters an IGVM file asks the loader to write into its parameter areas.
    pub fn parameter_uses(&self) -> &[ParameterUse] {
        &self.parameters
    }

    /// The bytes of inserted parameter area `area`, for the VMM to write its parameters into
    /// (see [`parameter_uses`](Self::parameter_uses)) before building the plan. Parameter
    /// areas are unmeasured, so this does not change the measurement.
    pub fn parameter_area_mut(&mut self, area: u32) -> Result<&mut [u8], Error> {
        let r = self
            .regions
            .iter_mut()
            .find(|r| matches!(r.origin, Origin::IgvmParameterArea { area: a, .. } if a == area))
            .ok_or(Error::NoParameterArea(area))?;
        let size = r.size as usize;
        Ok(r.data.get_or_insert_with(|| vec![0u8; size]).as_mut_slice())
    }

    /// Replaces the bytes of whole pages of the image with `bytes`, before it is populated and
    /// measured: the VMM's CPUID table, a kernel-hashes page, a parameter area's parameters.
    /// [`plan`](Self::plan), [`measure`](Self::measure) and [`trace`](Self::trace) then use
    /// the new bytes (measured where the region's role measures contents: `measured` pages
    /// are, `unmeasured` pages, parameter areas and SEV-SNP CPUID pages are populated with
    /// them but not measured).
    ///
    /// `[gpa, gpa + bytes.len())` must be whole 4 KiB pages inside one region of the image
    /// (a page, a run of pages of one region, a whole or part of a parameter area). The
    /// region keeps its role, except an IGVM page without bytes loaded as a ZERO page
    /// ([`EmptyPages::ZeroPage`](crate::EmptyPages)): the pages replaced become measured
    /// pages with the new bytes (the region is split around them). Refused, naming the range
    /// and the reason ([`Error::Replace`]): no bytes, not whole pages, past 2^64, no region
    /// there, running past the region's end, and regions without content (the SNP secrets
    /// page, which the firmware fills; a plan file's `zero` regions; CCA `ripas` ranges).
    ///
    /// ```
    /// # #[cfg(all(feature = "json", feature = "snp"))]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("cc-image-replace-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// # let path = dir.join("snp.json");
    /// # std::fs::write(dir.join("fw.bin"), vec![0x90u8; 8192])?;
    /// # std::fs::write(&path, r#"{"version": 1, "platform": "snp", "regions": [
    /// #     {"gpa": "0xffffe000", "size": "0x2000", "role": "measured", "file": "fw.bin"}]}"#)?;
    /// let mut image = cc_image::load_plan_file(&path)?;
    /// let before = image.measure()?;
    /// image.replace_contents(0xffff_f000, &[0xcc; 4096])?; // the region's second page
    /// assert_ne!(image.measure()?, before);
    /// assert_eq!(image.regions()[0].data().unwrap()[4096], 0xcc);
    /// let e = image.replace_contents(0xffff_f000, &[0xcc; 100]).unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "cannot replace the contents of [0xfffff000..+0x64): not whole 4 KiB pages \
    ///      (the address and the length must be multiples of 0x1000)"
    /// );
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(all(feature = "json", feature = "snp")))] fn main() {}
    /// ```
    pub fn replace_contents(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        const PAGE: u64 = 4096;
        let len = bytes.len() as u64;
        let refuse = |reason: String| Error::Replace { gpa, len, reason };
        if len == 0 {
            return Err(refuse("no bytes given".into()));
        }
        if !gpa.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(refuse(format!(
                "not whole 4 KiB pages (the address and the length must be multiples of {PAGE:#x})"
            )));
        }
        let end = gpa
            .checked_add(len)
            .ok_or_else(|| refuse("the range ends past 2^64".into()))?;
        // A CCA `ripas` range may hold data regions: the data region is the one replaced.
        let holds = |r: &ImageRegion| r.gpa <= gpa && r.end().is_some_and(|e| gpa < e);
        let i = self
            .regions
            .iter()
            .position(|r| holds(r) && r.role != Role::Ripas)
            .or_else(|| self.regions.iter().position(holds))
            .ok_or_else(|| refuse(format!("no region of the image holds {gpa:#x}")))?;
        let r = &self.regions[i];
        let region = format!("region {i} [{:#x}..+{:#x}) ({})", r.gpa, r.size, r.origin);
        if r.end().is_none_or(|e| end > e) {
            return Err(refuse(format!("runs past the end of {region}")));
        }
        let from_igvm_page = matches!(r.origin, Origin::IgvmPages { .. });
        match r.role {
            Role::Measured | Role::Unmeasured | Role::Cpuid => {
                let (off, size) = ((gpa - r.gpa) as usize, r.size as usize);
                let r = &mut self.regions[i];
                let data = r.data.get_or_insert_with(|| vec![0u8; size]);
                // A region's bytes are its size (zero padded when loaded); kept so here.
                data.resize(size, 0);
                if let Some(dst) = data.get_mut(off..off + bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
                Ok(())
            }
            Role::Zero if from_igvm_page => {
                self.zero_pages_to_measured(i, gpa, bytes);
                Ok(())
            }
            Role::Zero => Err(refuse(format!(
                "{region} is a zero region: it carries no content (give it as measured)"
            ))),
            Role::Secrets => Err(refuse(format!(
                "{region} is the SEV-SNP secrets page: the firmware fills it"
            ))),
            Role::Ripas => Err(refuse(format!(
                "{region} is a RIPAS-only range: it carries no content"
            ))),
            other => Err(refuse(format!(
                "{region} has role {other}, whose content this crate does not replace"
            ))),
        }
    }

    /// Splits region `i` (IGVM ZERO pages) so that `[gpa, gpa + bytes.len())`, inside it, is
    /// a measured region holding `bytes`; the pages before and after stay ZERO pages.
    fn zero_pages_to_measured(&mut self, i: usize, gpa: u64, bytes: &[u8]) {
        let r = &self.regions[i];
        let (start, end, len) = (r.gpa, r.gpa + r.size, bytes.len() as u64);
        let headers = match &r.origin {
            Origin::IgvmPages { headers } => headers.clone(),
            _ => Vec::new(),
        };
        let piece = |from: u64, to: u64, role, data| {
            let pages = |at: u64| ((at - start) / 4096) as usize;
            ImageRegion {
                gpa: from,
                size: to - from,
                role,
                data,
                origin: Origin::IgvmPages {
                    headers: headers
                        .get(pages(from)..pages(to))
                        .map(<[usize]>::to_vec)
                        .unwrap_or_default(),
                },
            }
        };
        let mut pieces = Vec::with_capacity(3);
        if gpa > start {
            pieces.push(piece(start, gpa, Role::Zero, None));
        }
        pieces.push(piece(gpa, gpa + len, Role::Measured, Some(bytes.to_vec())));
        if gpa + len < end {
            pieces.push(piece(gpa + len, end, Role::Zero, None));
        }
        let added = pieces.len() - 1;
        self.regions.splice(i..=i, pieces);
        // VMSA pages placed after region `i` stay after all of its pieces.
        for v in &mut self.vmsas {
            if v.regions_before > i {
                v.regions_before += added;
            }
        }
    }

    /// The plan of the image's regions, in their order, validated against `caps` and `layout`
    /// (the VMM's backend and memslots; a verifier passes [`Platform::caps`] and
    /// [`MemoryLayout::unbounded`]). The plan borrows the image's page data.
    pub fn plan(&self, caps: &BackendCaps, layout: &MemoryLayout) -> Result<Plan<'_>, Error> {
        let mut b = PlanBuilder::with_capacity(self.regions.len());
        for r in &self.regions {
            let content = match (&r.data, r.role.carries_content()) {
                (Some(d), true) => Content::Bytes(Cow::Borrowed(d.as_slice())),
                _ => Content::Zero,
            };
            b.push(RegionSpec {
                gpa: r.gpa,
                len: r.size,
                role: r.role,
                content,
            });
        }
        Ok(b.build(caps, layout)?)
    }

    /// The launch measurement a KVM launch of this image through this workspace's backend
    /// produces (under the policies the image was loaded with): the SNP launch digest (48
    /// bytes), TDX MRTD (48), or the CCA RIM (32 for SHA-256 realms, 64 for SHA-512). Each is
    /// computed by the platform's backend crate from [`plan`](Self::plan).
    pub fn measure(&self) -> Result<Vec<u8>, Error> {
        // (CCA measures through `measure_cca`, which makes its own plan.)
        #[cfg_attr(not(any(feature = "snp", feature = "tdx")), allow(unused_variables))]
        let plan = self.plan(&self.platform.try_caps()?, &MemoryLayout::unbounded())?;
        match self.platform {
            Platform::Plain => Err(Error::NoMeasurement(Platform::Plain)),
            #[cfg(feature = "tdx")]
            Platform::Tdx => Ok(tdx_backend::measure_plan(&plan)?.to_vec()),
            #[cfg(feature = "cca")]
            Platform::Cca => {
                let rmm = self
                    .cca
                    .as_ref()
                    .ok_or(Error::NoMeasurement(Platform::Cca))?
                    .rmm
                    .unwrap_or_default();
                self.measure_cca(&MeasureOptions {
                    rmm,
                    ..MeasureOptions::default()
                })
            }
            #[cfg(feature = "snp")]
            Platform::Snp => self.measure_snp(&plan),
            #[allow(unreachable_patterns)]
            p => Err(Error::NotBuilt(p)),
        }
    }

    /// The CCA RIM under explicit options: the RMM version and launch order (for a verifier
    /// that knows which series and RMM launched the realm; [`measure`](Self::measure) uses
    /// the file's `"rmm"`, else RMM 1.0, in the plan's order). The caller decides between the
    /// file's [`CcaLaunch::rmm`] and its own. Refused for other platforms.
    #[cfg(feature = "cca")]
    pub fn measure_cca(&self, opts: &MeasureOptions<'_>) -> Result<Vec<u8>, Error> {
        let cca = self.cca.as_ref().ok_or(Error::NotCca(self.platform))?;
        let plan = self.plan(&self.platform.try_caps()?, &MemoryLayout::unbounded())?;
        Ok(cca_backend::measure_with_options(&plan, &cca.realm, &cca.recs, opts)?.to_vec())
    }

    /// The measurement's steps, in order, each with the running value after it and the
    /// region it came from ([`crate::trace`]): the last step's value is
    /// [`measure`](Self::measure)'s (and [`measure_cca`](Self::measure_cca)'s with `opts`
    /// for CCA; `None` takes the options `measure` uses).
    ///
    /// ```
    /// # #[cfg(all(feature = "json", feature = "tdx"))]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("cc-image-trace-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// # let path = dir.join("tdx.json");
    /// # std::fs::write(dir.join("fw.bin"), vec![0xf4u8; 4096])?;
    /// # std::fs::write(&path, r#"{"version": 1, "platform": "tdx", "regions": [
    /// #     {"gpa": "0xfffff000", "size": "0x1000", "role": "measured", "file": "fw.bin"}]}"#)?;
    /// let image = cc_image::load_plan_file(&path)?;
    /// let steps = image.trace(None)?;
    /// assert_eq!(steps.len(), 1 + 16); // PAGE.ADD, then 16 MR.EXTEND
    /// assert_eq!(steps[16].digest, cc_image::hex(&image.measure()?));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(all(feature = "json", feature = "tdx")))] fn main() {}
    /// ```
    pub fn trace(
        &self,
        cca: Option<&CcaOptions<'_>>,
    ) -> Result<Vec<crate::trace::TraceStep>, Error> {
        use crate::trace;
        #[cfg_attr(
            not(any(feature = "snp", feature = "tdx", feature = "cca")),
            allow(unused_variables)
        )]
        let plan = self.plan(&self.platform.try_caps()?, &MemoryLayout::unbounded())?;
        let mut sources = trace::Sources::new();
        for (i, r) in self.regions.iter().enumerate() {
            sources = sources.with(r.gpa, r.size, format!("region {i}: {}", r.origin));
        }
        #[cfg(not(feature = "cca"))]
        let _ = cca;
        match self.platform {
            Platform::Plain => Err(Error::NoMeasurement(Platform::Plain)),
            #[cfg(feature = "tdx")]
            Platform::Tdx => {
                let mut m = tdx_backend::Mrtd::new().traced();
                tdx_backend::measure_plan_into(&mut m, &plan, &Default::default())?;
                Ok(trace::tdx_steps(m.records(), &sources))
            }
            #[cfg(feature = "cca")]
            Platform::Cca => {
                let launch = self
                    .cca
                    .as_ref()
                    .ok_or(Error::NoMeasurement(Platform::Cca))?;
                let default = MeasureOptions {
                    rmm: launch.rmm.unwrap_or_default(),
                    ..MeasureOptions::default()
                };
                let opts = cca.unwrap_or(&default);
                let (_, records) =
                    cca_backend::measure_traced(&plan, &launch.realm, &launch.recs, opts)?;
                Ok(trace::cca_steps(&records, &sources))
            }
            #[cfg(feature = "snp")]
            Platform::Snp => {
                let names = self
                    .vmsas
                    .iter()
                    .enumerate()
                    .map(|(k, v)| match v.vp_index {
                        Some(vp) => format!("VMSA of vCPU {vp}"),
                        None => format!("VMSA {k}"),
                    })
                    .collect();
                let ld = self.snp_digest(&plan, LaunchDigest::new().traced())?;
                Ok(trace::snp_steps(
                    ld.records(),
                    &sources.with_vmsa_names(names),
                ))
            }
            #[allow(unreachable_patterns)]
            p => Err(Error::NotBuilt(p)),
        }
    }

    #[cfg(feature = "snp")]
    fn measure_snp(&self, plan: &Plan<'_>) -> Result<Vec<u8>, Error> {
        let n = self.regions.len();
        if self.vmsas.iter().all(|v| v.regions_before >= n) {
            // VMSAs after every region: exactly the backend's own plan measurement.
            let pages: Vec<VmsaPage<'_>> = self
                .vmsas
                .iter()
                .map(|v| VmsaPage {
                    gpa: v.gpa,
                    page: &v.page[..],
                })
                .collect();
            let d = sev_backend::measure(plan, &pages, &sev_backend::MeasureOptions::default())?;
            return Ok(d.to_vec());
        }
        // VMSAs where the file places them: the backend's records, driven region by region.
        Ok(self
            .snp_digest(plan, LaunchDigest::new())?
            .digest()
            .to_vec())
    }

    /// `ld` after the plan's records, with the VMSAs where the file places them.
    #[cfg(feature = "snp")]
    fn snp_digest(&self, plan: &Plan<'_>, mut ld: LaunchDigest) -> Result<LaunchDigest, Error> {
        let mut vmsas = self.vmsas.iter().peekable();
        for (i, r) in plan.regions().iter().enumerate() {
            while let Some(v) = vmsas.next_if(|v| v.regions_before <= i) {
                ld.update_vmsa(v.gpa, &v.page[..])?;
            }
            let ty = PageType::for_role(r.role()).ok_or(sev_backend::Error::Content {
                region: i,
                gpa: r.gpa(),
                len: r.len(),
                reason: format!("role {} has no SNP page type", r.role()),
            })?;
            let data = if ty.measures_contents() {
                r.source()
            } else {
                None
            };
            ld.update_pages(r.gpa(), ty, data, r.len())?;
        }
        for v in vmsas {
            ld.update_vmsa(v.gpa, &v.page[..])?;
        }
        Ok(ld)
    }
}

/// The options of a CCA measurement ([`LaunchImage::trace`]): `cca_backend::MeasureOptions`
/// with feature `cca`; without it, a type with no values (pass `None`).
#[cfg(feature = "cca")]
pub type CcaOptions<'a> = MeasureOptions<'a>;

/// The options of a CCA measurement ([`LaunchImage::trace`]): `cca_backend::MeasureOptions`
/// with feature `cca`; without it, a type with no values (pass `None`).
#[cfg(not(feature = "cca"))]
#[derive(Debug)]
pub struct CcaOptions<'a> {
    #[allow(dead_code)]
    never: std::convert::Infallible,
    _life: std::marker::PhantomData<&'a ()>,
}

/// Lower-case hex of `bytes` (how the CLI prints a digest).
///
/// ```
/// assert_eq!(cc_image::hex(&[0x0a, 0xff]), "0aff");
/// ```
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
