//! The plan: guest-physical regions with their content and role, validated once.

use std::borrow::Cow;
use std::fmt;

use crate::backend::{BackendCaps, ChunkSource};
use crate::driver::{next_id, RunBook};
use crate::{GuestSource, Role, SourceBuf};

/// Where a region's bytes come from.
pub enum Content<'a> {
    /// Bytes in a buffer the caller owns or lends; exactly the region's length.
    Bytes(Cow<'a, [u8]>),
    /// Bytes in a [`SourceBuf`] the plan owns, which the driver can release chunk by chunk once
    /// populated ([`DriverOptions::release_sources`](crate::DriverOptions::release_sources)).
    Buffer(SourceBuf),
    /// Already written in place, in the shared view of guest_memfd at the region's address; the
    /// platform populates it where it is (needs [`BackendCaps::in_place`]).
    InPlace,
    /// Zeros. The only content `Zero` and `Ripas` regions may have.
    Zero,
    /// The bytes in the VMM's own guest memory (a vm-memory `GuestMemoryBackend`) at a
    /// guest-physical address, read chunk by chunk as they are populated ([`GuestSource`]).
    Guest(GuestSource<'a>),
}

impl Content<'_> {
    /// The content's kind, for messages and reports.
    pub fn kind(&self) -> ContentKind {
        match self {
            Content::Bytes(_) | Content::Buffer(_) | Content::Guest(_) => ContentKind::Source,
            Content::InPlace => ContentKind::InPlace,
            Content::Zero => ContentKind::Zero,
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Content::Bytes(b) => Some(b),
            Content::Buffer(b) => Some(b.as_slice()),
            Content::InPlace | Content::Zero | Content::Guest(_) => None,
        }
    }
}

impl fmt::Debug for Content<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Content::Buffer(b) => write!(f, "Buffer({} bytes)", b.len()),
            Content::InPlace => f.write_str("InPlace"),
            Content::Zero => f.write_str("Zero"),
            Content::Guest(g) => write!(f, "{g:?}"),
        }
    }
}

/// The kind of a region's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ContentKind {
    /// From a source buffer.
    Source,
    /// Written in place.
    InPlace,
    /// Zeros.
    Zero,
}

impl fmt::Display for ContentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContentKind::Source => "source",
            ContentKind::InPlace => "in-place",
            ContentKind::Zero => "zero",
        })
    }
}

/// A memslot: a guest-physical range backed by one guest_memfd binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Memslot {
    /// KVM slot id.
    pub slot: u32,
    /// First guest-physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The VM's memslots, checked not to overlap. Plans validated against a layout keep every
/// region inside one memslot, so no chunk crosses two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Sorted by address; `None` = unbounded (no memslot checks).
    slots: Option<Vec<Memslot>>,
}

impl MemoryLayout {
    /// A layout of these memslots. Refuses empty or overflowing slots and overlapping slots,
    /// naming them.
    pub fn new(slots: &[Memslot]) -> Result<MemoryLayout, PlanError> {
        let mut sorted = slots.to_vec();
        sorted.sort_by_key(|s| s.gpa);
        for s in &sorted {
            if s.size == 0 || s.gpa.checked_add(s.size).is_none() {
                return Err(PlanError::BadMemslot {
                    slot: s.slot,
                    gpa: s.gpa,
                    size: s.size,
                });
            }
        }
        for w in sorted.windows(2) {
            if w[0].gpa + w[0].size > w[1].gpa {
                return Err(PlanError::MemslotOverlap {
                    first: w[0],
                    second: w[1],
                });
            }
        }
        Ok(MemoryLayout {
            slots: Some(sorted),
        })
    }

    /// No memslot constraint: for plans that are only measured (a verifier), never populated.
    pub fn unbounded() -> MemoryLayout {
        MemoryLayout { slots: None }
    }

    /// The memslots, sorted by address (`None` when unbounded).
    pub fn slots(&self) -> Option<&[Memslot]> {
        self.slots.as_deref()
    }

    /// The slot containing `gpa`, if any.
    pub fn slot_at(&self, gpa: u64) -> Option<&Memslot> {
        let slots = self.slots.as_ref()?;
        let i = slots.partition_point(|s| s.gpa <= gpa);
        let s = slots.get(i.checked_sub(1)?)?;
        (gpa - s.gpa < s.size).then_some(s)
    }
}

/// A region as given to the [`PlanBuilder`].
#[derive(Debug)]
pub struct RegionSpec<'a> {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Its role.
    pub role: Role,
    /// Its content.
    pub content: Content<'a>,
}

/// A validated region of a [`Plan`].
#[derive(Debug)]
pub struct Region<'a> {
    gpa: u64,
    len: u64,
    role: Role,
    content: Content<'a>,
    slot: Option<u32>,
    released: u64,
}

impl<'a> Region<'a> {
    /// First guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the region is empty (never true for a validated region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.gpa + self.len
    }
    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The content.
    pub fn content(&self) -> &Content<'a> {
        &self.content
    }
    /// The memslot holding the region (`None` in an unbounded layout).
    pub fn memslot(&self) -> Option<u32> {
        self.slot
    }
    /// Bytes of the source already released (from the start of the region).
    pub fn released(&self) -> u64 {
        self.released
    }
    /// The content bytes, if the region has a source (all of them, released or not: released
    /// bytes read as zeros).
    pub fn source(&self) -> Option<&[u8]> {
        self.content.bytes()
    }
}

/// Reads content that was written in place into guest memory, so that an offline measurement
/// can hash [`Content::InPlace`] regions (e.g. from the shared view of guest_memfd, or from the
/// image the VMM wrote there).
pub trait InPlaceReader {
    /// Fills `buf` with the guest-physical bytes at `gpa..gpa+buf.len()`.
    fn read_in_place(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String>;
}

/// Any `Fn(gpa, buf)` closure is a reader.
impl<F: Fn(u64, &mut [u8]) -> Result<(), String>> InPlaceReader for F {
    fn read_in_place(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
        self(gpa, buf)
    }
}

/// A region's bytes, for measuring it.
#[derive(Debug)]
pub enum RegionBytes<'p> {
    /// The region's content (borrowed from its source, or read from in-place memory).
    Bytes(Cow<'p, [u8]>),
    /// All zeros ([`Content::Zero`]).
    Zeros,
}

/// Why a region's bytes could not be had for measuring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// No such region.
    #[error("no region {0} in the plan")]
    NoRegion(usize),
    /// An in-place region and no reader for it.
    #[error("region {region} [{gpa:#x}..+{len:#x}) is written in place and no reader was given to measure it")]
    NoReader {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The reader failed.
    #[error("region {region} [{gpa:#x}..+{len:#x}): reading in-place content failed: {reason}")]
    ReadFailed {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The reader's reason.
        reason: String,
    },
    /// The source was released by a run with `release_sources`.
    #[error("region {region} [{gpa:#x}..+{len:#x}): its source was released after populating")]
    Released {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
}

/// Why a plan (or a memory layout) was refused. Every variant names the region by its index in
/// the given order and its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The backend's declaration is itself invalid.
    #[error("backend capabilities are invalid: {0}")]
    BadCaps(String),
    /// A memslot with no size or an end past 2^64.
    #[error("memslot {slot} at {gpa:#x} with size {size:#x} is empty or overflows")]
    BadMemslot {
        /// Slot id.
        slot: u32,
        /// Its address.
        gpa: u64,
        /// Its size.
        size: u64,
    },
    /// Two memslots overlap.
    #[error("memslot {} [{:#x}..{:#x}) overlaps memslot {} [{:#x}..{:#x})", first.slot, first.gpa, first.gpa + first.size, second.slot, second.gpa, second.gpa + second.size)]
    MemslotOverlap {
        /// The lower slot.
        first: Memslot,
        /// The slot that overlaps it.
        second: Memslot,
    },
    /// More regions than the plan can index.
    #[error("too many regions ({0})")]
    TooManyRegions(usize),
    /// A region of length zero.
    #[error("region {region} at {gpa:#x} has length zero")]
    ZeroLength {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
    },
    /// `gpa + len` overflows.
    #[error(
        "region {region} at {gpa:#x} with length {len:#x} ends past the top of the address space"
    )]
    AddressOverflow {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// Address or length not a multiple of the backend's granule.
    #[error(
        "region {region} [{gpa:#x}..+{len:#x}) is not aligned to the {granule:#x}-byte granule"
    )]
    Misaligned {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The backend's granule.
        granule: u64,
    },
    /// A source whose length is not the region's.
    #[error("region {region} [{gpa:#x}..+{len:#x}): source has {actual:#x} bytes, the region needs exactly {len:#x}")]
    SourceLength {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The source's length.
        actual: u64,
    },
    /// Content on a role that has none (`zero`, `ripas`).
    #[error(
        "region {region} [{gpa:#x}..+{len:#x}): a {role} region cannot carry {content} content"
    )]
    ContentNotAllowed {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Its role.
        role: Role,
        /// The content it was given.
        content: ContentKind,
    },
    /// A role the backend does not support.
    #[error(
        "region {region} [{gpa:#x}..+{len:#x}): role {role} is not supported by this platform"
    )]
    RoleUnsupported {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The role.
        role: Role,
    },
    /// In-place content on a backend that cannot populate in place.
    #[error("region {region} [{gpa:#x}..+{len:#x}): in-place content, but this platform cannot populate in place (give a source)")]
    InPlaceUnsupported {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// A region no memslot contains.
    #[error("region {region} [{gpa:#x}..+{len:#x}) lies outside every memslot")]
    OutsideMemslots {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// A region that starts in one memslot and ends in or past another.
    #[error("region {region} [{gpa:#x}..+{len:#x}) crosses the end of memslot {slot}")]
    CrossesMemslot {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The slot it starts in.
        slot: u32,
    },
    /// Two regions overlap (a `ripas` region may only wholly contain data regions).
    #[error("region {region} [{gpa:#x}..+{len:#x}) overlaps region {other} [{other_gpa:#x}..+{other_len:#x})")]
    Overlap {
        /// The later region's index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The earlier region's index.
        other: usize,
        /// Its address.
        other_gpa: u64,
        /// Its length.
        other_len: u64,
    },
    /// A data region inside a `ripas` region listed after it (RIPAS initialisation needs
    /// entries with no data yet, so the `ripas` region must come first).
    #[error("region {region} [{gpa:#x}..+{len:#x}) lies in ripas region {ripas}, which must be listed before it")]
    RipasAfterData {
        /// The data region's index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The ripas region's index.
        ripas: usize,
    },
}

/// Builds a [`Plan`]: add regions in the order they are to be populated (and measured), then
/// [`build`](PlanBuilder::build) validates them all at once.
///
/// ```
/// use cc_populate::{BackendCaps, Conversion, MemoryLayout, Memslot, PlanBuilder, Role, RoleSet};
///
/// let caps = BackendCaps {
///     granule: 4096,
///     max_chunk: 2 << 20,
///     hugepage_chunks: true,
///     in_place: true,
///     conversion: Conversion::NotNeeded,
///     roles: RoleSet::COMMON,
/// };
/// let layout = MemoryLayout::new(&[Memslot { slot: 0, gpa: 0, size: 16 << 20 }])?;
/// let firmware = vec![0x90u8; 8192];
/// let plan = PlanBuilder::new()
///     .source(0x10_0000, Role::Measured, &firmware)
///     .in_place(0x20_0000, 2 << 20, Role::Unmeasured)
///     .zero(0x40_0000, 4096)
///     .build(&caps, &layout)?;
/// assert_eq!(plan.regions().len(), 3);
/// assert_eq!(plan.total_bytes(), 8192 + (2 << 20) + 4096);
///
/// // Overlaps are refused, naming both regions.
/// let err = PlanBuilder::new()
///     .zero(0x1000, 0x2000)
///     .zero(0x2000, 0x1000)
///     .build(&caps, &layout)
///     .unwrap_err();
/// assert_eq!(err.to_string(), "region 1 [0x2000..+0x1000) overlaps region 0 [0x1000..+0x2000)");
/// # Ok::<(), cc_populate::PlanError>(())
/// ```
#[derive(Debug, Default)]
pub struct PlanBuilder<'a> {
    regions: Vec<RegionSpec<'a>>,
}

impl<'a> PlanBuilder<'a> {
    /// An empty builder.
    pub fn new() -> Self {
        PlanBuilder {
            regions: Vec::new(),
        }
    }

    /// An empty builder with room for `n` regions.
    pub fn with_capacity(n: usize) -> Self {
        PlanBuilder {
            regions: Vec::with_capacity(n),
        }
    }

    /// Adds any region.
    pub fn region(mut self, spec: RegionSpec<'a>) -> Self {
        self.regions.push(spec);
        self
    }

    /// Adds any region (by reference, for loops).
    pub fn push(&mut self, spec: RegionSpec<'a>) -> &mut Self {
        self.regions.push(spec);
        self
    }

    /// Adds a region populated from borrowed `bytes` (its length is the region's).
    pub fn source(self, gpa: u64, role: Role, bytes: &'a [u8]) -> Self {
        let len = bytes.len() as u64;
        self.region(RegionSpec {
            gpa,
            len,
            role,
            content: Content::Bytes(Cow::Borrowed(bytes)),
        })
    }

    /// Adds a region populated from a [`SourceBuf`] the plan takes over.
    pub fn buffer(self, gpa: u64, role: Role, buf: SourceBuf) -> Self {
        let len = buf.len() as u64;
        self.region(RegionSpec {
            gpa,
            len,
            role,
            content: Content::Buffer(buf),
        })
    }

    /// Adds a region whose content is already written in place.
    pub fn in_place(self, gpa: u64, len: u64, role: Role) -> Self {
        self.region(RegionSpec {
            gpa,
            len,
            role,
            content: Content::InPlace,
        })
    }

    /// Adds a region of `len` bytes whose content is read from the VMM's own guest memory
    /// ([`GuestSource`]) as it is populated.
    pub fn guest(self, gpa: u64, len: u64, role: Role, source: GuestSource<'a>) -> Self {
        self.region(RegionSpec {
            gpa,
            len,
            role,
            content: Content::Guest(source),
        })
    }

    /// Adds a `Zero` region.
    pub fn zero(self, gpa: u64, len: u64) -> Self {
        self.region(RegionSpec {
            gpa,
            len,
            role: Role::Zero,
            content: Content::Zero,
        })
    }

    /// Adds a region of `role` whose content is zeros.
    pub fn zeros(self, gpa: u64, len: u64, role: Role) -> Self {
        self.region(RegionSpec {
            gpa,
            len,
            role,
            content: Content::Zero,
        })
    }

    /// Number of regions added so far.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region was added.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Validates every region against the backend's capabilities and the memory layout, and
    /// returns the immutable plan, keeping the given order. The first problem found is returned.
    pub fn build(self, caps: &BackendCaps, layout: &MemoryLayout) -> Result<Plan<'a>, PlanError> {
        Plan::validate(self.regions, caps, layout)
    }
}

/// A validated plan: regions in their given (populate and measurement) order, none overlapping
/// (but for `ripas` regions wholly containing later data regions), each aligned to the backend's
/// granule and inside one memslot.
#[derive(Debug)]
pub struct Plan<'a> {
    regions: Vec<Region<'a>>,
    /// Region indices sorted by address (ties: ripas first).
    sorted: Vec<u32>,
    caps: BackendCaps,
    layout: MemoryLayout,
    total: u64,
    /// Unique in the process: the reports of its runs carry it.
    id: u64,
    /// Its runs, so that only the newest report of a stopped run is resumed, once.
    runs: RunBook,
}

fn check_one(
    i: usize,
    r: &RegionSpec<'_>,
    caps: &BackendCaps,
    layout: &MemoryLayout,
) -> Result<Option<u32>, PlanError> {
    let (gpa, len) = (r.gpa, r.len);
    if len == 0 {
        return Err(PlanError::ZeroLength { region: i, gpa });
    }
    if gpa.checked_add(len).is_none() {
        return Err(PlanError::AddressOverflow {
            region: i,
            gpa,
            len,
        });
    }
    if gpa % caps.granule != 0 || len % caps.granule != 0 {
        return Err(PlanError::Misaligned {
            region: i,
            gpa,
            len,
            granule: caps.granule,
        });
    }
    if !caps.roles.contains(r.role) {
        return Err(PlanError::RoleUnsupported {
            region: i,
            gpa,
            len,
            role: r.role,
        });
    }
    let kind = r.content.kind();
    if !r.role.carries_content() && kind != ContentKind::Zero {
        return Err(PlanError::ContentNotAllowed {
            region: i,
            gpa,
            len,
            role: r.role,
            content: kind,
        });
    }
    if let Some(b) = r.content.bytes() {
        if b.len() as u64 != len {
            return Err(PlanError::SourceLength {
                region: i,
                gpa,
                len,
                actual: b.len() as u64,
            });
        }
    }
    if kind == ContentKind::InPlace && !caps.in_place {
        return Err(PlanError::InPlaceUnsupported {
            region: i,
            gpa,
            len,
        });
    }
    if layout.slots.is_none() {
        return Ok(None);
    }
    match layout.slot_at(gpa) {
        None => Err(PlanError::OutsideMemslots {
            region: i,
            gpa,
            len,
        }),
        Some(s) if len > s.size - (gpa - s.gpa) => Err(PlanError::CrossesMemslot {
            region: i,
            gpa,
            len,
            slot: s.slot,
        }),
        Some(s) => Ok(Some(s.slot)),
    }
}

impl<'a> Plan<'a> {
    fn validate(
        specs: Vec<RegionSpec<'a>>,
        caps: &BackendCaps,
        layout: &MemoryLayout,
    ) -> Result<Plan<'a>, PlanError> {
        caps.check().map_err(PlanError::BadCaps)?;
        if specs.len() > u32::MAX as usize {
            return Err(PlanError::TooManyRegions(specs.len()));
        }
        let mut regions = Vec::with_capacity(specs.len());
        let mut total = 0u64;
        for (i, spec) in specs.into_iter().enumerate() {
            let slot = check_one(i, &spec, caps, layout)?;
            total = total.saturating_add(spec.len);
            regions.push(Region {
                gpa: spec.gpa,
                len: spec.len,
                role: spec.role,
                content: spec.content,
                slot,
                released: 0,
            });
        }
        let sorted = check_overlaps(&regions)?;
        Ok(Plan {
            regions,
            sorted,
            caps: caps.clone(),
            layout: layout.clone(),
            total,
            id: next_id(),
            runs: RunBook::default(),
        })
    }

    /// The plan's identity, unique in the process; reports of its runs carry it
    /// ([`RunId::plan`](crate::RunId::plan)).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn runs(&self) -> &RunBook {
        &self.runs
    }

    /// The regions, in the given order.
    pub fn regions(&self) -> &[Region<'a>] {
        &self.regions
    }

    /// The regions sorted by address (ripas regions before the data regions they contain).
    pub fn sorted(&self) -> impl Iterator<Item = (usize, &Region<'a>)> + '_ {
        self.sorted
            .iter()
            .map(move |i| (*i as usize, &self.regions[*i as usize]))
    }

    /// The capabilities the plan was validated against.
    pub fn caps(&self) -> &BackendCaps {
        &self.caps
    }

    /// The memory layout the plan was validated against.
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// Sum of all regions' lengths.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The chunks of region `index` from byte `offset` of it on, as the driver issues them.
    /// Empty when `index` is out of range or `offset >= len`.
    pub fn chunks(&self, index: usize, offset: u64) -> Chunks {
        match self.regions.get(index) {
            Some(r) if offset < r.len => Chunks {
                cur: r.gpa + offset,
                end: r.end(),
                max: self.caps.max_chunk,
                align: self.caps.cut_alignment(),
            },
            _ => Chunks {
                cur: 0,
                end: 0,
                max: 1,
                align: 1,
            },
        }
    }

    /// Number of populate calls the whole plan takes when no call stops early.
    pub fn chunk_count(&self) -> u64 {
        (0..self.regions.len())
            .map(|i| self.chunks(i, 0).count() as u64)
            .sum()
    }

    /// Region `index`'s bytes, for an offline measurement: the source, zeros, or (for in-place
    /// content) what `reader` reads at the region's address.
    pub fn content_of(
        &self,
        index: usize,
        reader: Option<&dyn InPlaceReader>,
    ) -> Result<RegionBytes<'_>, ContentError> {
        let r = self
            .regions
            .get(index)
            .ok_or(ContentError::NoRegion(index))?;
        let (region, gpa, len) = (index, r.gpa, r.len);
        if r.released > 0 {
            return Err(ContentError::Released { region, gpa, len });
        }
        match &r.content {
            Content::Zero => Ok(RegionBytes::Zeros),
            Content::InPlace | Content::Guest(_) => {
                // Ask for the reader before allocating: a region may be far larger than memory.
                if matches!(r.content, Content::InPlace) && reader.is_none() {
                    return Err(ContentError::NoReader { region, gpa, len });
                }
                let failed = |reason: String| ContentError::ReadFailed {
                    region,
                    gpa,
                    len,
                    reason,
                };
                let n = usize::try_from(len)
                    .map_err(|_| failed("larger than this machine can address".into()))?;
                let mut buf = Vec::new();
                buf.try_reserve_exact(n).map_err(|e| {
                    failed(format!(
                        "cannot allocate {len:#x} bytes to read it into: {e}"
                    ))
                })?;
                buf.resize(n, 0);
                let read = match &r.content {
                    Content::Guest(g) => g.read(0, &mut buf, false),
                    _ => reader
                        .ok_or(ContentError::NoReader { region, gpa, len })?
                        .read_in_place(gpa, &mut buf),
                };
                read.map_err(|reason| ContentError::ReadFailed {
                    region,
                    gpa,
                    len,
                    reason,
                })?;
                Ok(RegionBytes::Bytes(Cow::Owned(buf)))
            }
            c => Ok(RegionBytes::Bytes(Cow::Borrowed(
                c.bytes().unwrap_or_default(),
            ))),
        }
    }

    /// The source of region `index`'s bytes `offset..offset+len` as a chunk source.
    pub(crate) fn chunk_source(
        &self,
        index: usize,
        offset: u64,
        len: u64,
    ) -> Option<ChunkSource<'_>> {
        let r = self.regions.get(index)?;
        Some(match &r.content {
            Content::InPlace => ChunkSource::InPlace,
            Content::Zero => ChunkSource::Zero,
            c => {
                let b = c.bytes()?;
                ChunkSource::Bytes(b.get(offset as usize..offset.checked_add(len)? as usize)?)
            }
        })
    }

    /// Releases region `index`'s source up to `upto` bytes from its start (already populated).
    /// Returns the bytes newly released.
    pub(crate) fn release_source(&mut self, index: usize, upto: u64) -> std::io::Result<u64> {
        let Some(r) = self.regions.get_mut(index) else {
            return Ok(0);
        };
        if upto <= r.released {
            return Ok(0);
        }
        let from = r.released;
        let freed = match &mut r.content {
            Content::Buffer(b) => {
                // A buffer releases whole host pages only (and the tail page at its end): the
                // page `upto` falls inside stays, counted and released by a later call.
                let freed = b.discard(from as usize, (upto - from) as usize)? as u64;
                let page = crate::source::host_page_size();
                r.released = if upto == r.len {
                    upto
                } else {
                    (upto - upto % page).max(from)
                };
                return Ok(freed);
            }
            Content::Bytes(Cow::Owned(v)) if upto == r.len => {
                let n = v.len() as u64 - from;
                *v = Vec::new();
                n
            }
            _ => return Ok(0),
        };
        r.released = upto;
        Ok(freed)
    }
}

fn check_overlaps(regions: &[Region<'_>]) -> Result<Vec<u32>, PlanError> {
    // Sort by address; at equal addresses ripas regions come first (they may contain data).
    // The keys are sorted as compact (address, data flag and index) pairs, so comparisons do not
    // chase into the regions themselves.
    let mut keys: Vec<(u64, u64)> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.gpa, (u64::from(r.role != Role::Ripas) << 32) | i as u64))
        .collect();
    keys.sort_unstable();
    let sorted: Vec<u32> = keys.into_iter().map(|(_, k)| k as u32).collect();
    let overlap = |a: usize, b: usize| {
        let (later, earlier) = if a > b { (a, b) } else { (b, a) };
        let (l, e) = (&regions[later], &regions[earlier]);
        PlanError::Overlap {
            region: later,
            gpa: l.gpa,
            len: l.len,
            other: earlier,
            other_gpa: e.gpa,
            other_len: e.len,
        }
    };
    // Data regions among themselves, and ripas regions among themselves, must not overlap.
    for want_ripas in [false, true] {
        let mut prev: Option<usize> = None;
        for &i in &sorted {
            let i = i as usize;
            if (regions[i].role == Role::Ripas) != want_ripas {
                continue;
            }
            if let Some(p) = prev {
                if regions[p].end() > regions[i].gpa {
                    return Err(overlap(p, i));
                }
            }
            prev = Some(i);
        }
    }
    // A data region meeting a ripas region must lie wholly inside it and be listed after it.
    let ripas: Vec<usize> = sorted
        .iter()
        .map(|i| *i as usize)
        .filter(|i| regions[*i].role == Role::Ripas)
        .collect();
    if !ripas.is_empty() {
        for (i, r) in regions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.role != Role::Ripas)
        {
            // Ripas regions are disjoint and sorted, so their ends are sorted too.
            let k = ripas.partition_point(|j| regions[*j].end() <= r.gpa);
            let Some(&j) = ripas.get(k) else { continue };
            let q = &regions[j];
            if q.gpa >= r.end() {
                continue;
            }
            if q.gpa > r.gpa || r.end() > q.end() {
                return Err(overlap(i, j));
            }
            if j > i {
                return Err(PlanError::RipasAfterData {
                    region: i,
                    gpa: r.gpa,
                    len: r.len,
                    ripas: j,
                });
            }
        }
    }
    Ok(sorted)
}

/// The chunks of one region: `(gpa, len)` pairs, each at most `max_chunk` long, cut only at
/// multiples of the backend's [cut alignment](BackendCaps::cut_alignment), so that an aligned
/// hugepage span inside the region is never split.
#[derive(Clone, Debug)]
pub struct Chunks {
    cur: u64,
    end: u64,
    max: u64,
    align: u64,
}

impl Iterator for Chunks {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.cur >= self.end {
            return None;
        }
        let rest = self.end - self.cur;
        let misalign = self.cur % self.align;
        let len = if misalign != 0 {
            // Up to the next aligned boundary (at most `align - granule <= max` away).
            (self.align - misalign).min(rest).min(self.max)
        } else if rest <= self.max {
            rest
        } else {
            // The largest multiple of the alignment that fits (at least one: align <= max).
            (self.max - self.max % self.align).max(self.align.min(self.max))
        };
        let gpa = self.cur;
        self.cur += len;
        Some((gpa, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendCaps, Conversion, RoleSet};

    /// An in-place region far larger than memory: without a reader the answer is `NoReader`
    /// (nothing allocated first), with one a typed `ReadFailed`, never a panic
    /// (`fuzz/regressions/fuzz_plan-huge-in-place-content`).
    #[test]
    fn content_of_a_huge_in_place_region_is_refused_not_allocated() {
        let caps = BackendCaps {
            granule: 4096,
            max_chunk: 1 << 30,
            hugepage_chunks: false,
            in_place: true,
            conversion: Conversion::NotNeeded,
            roles: RoleSet::COMMON,
        };
        let len = 1u64 << 62;
        let plan = PlanBuilder::new()
            .in_place(0, len, Role::Measured)
            .build(&caps, &MemoryLayout::unbounded())
            .unwrap();
        assert!(matches!(
            plan.content_of(0, None),
            Err(ContentError::NoReader { region: 0, gpa: 0, len: l }) if l == len
        ));
        let reader = |_gpa: u64, _buf: &mut [u8]| -> Result<(), String> {
            unreachable!("no buffer of 2^62 bytes can be allocated")
        };
        match plan.content_of(0, Some(&reader)) {
            Err(ContentError::ReadFailed {
                region: 0, reason, ..
            }) => {
                assert!(
                    reason.starts_with("cannot allocate 0x4000000000000000 bytes"),
                    "{reason}"
                )
            }
            other => panic!("{:?}", other.err()),
        }
    }

    /// Releasing a `SourceBuf` counts what the buffer really released (whole host pages), and
    /// a page released only in part is released, and counted, by the call that completes it.
    #[test]
    fn release_counts_whole_pages_only() {
        let page = crate::source::host_page_size();
        let len = 3 * page;
        let mut buf = SourceBuf::new(len as usize).unwrap();
        buf.as_mut_slice().fill(0x5a);
        let caps = BackendCaps {
            granule: 4096,
            max_chunk: 1 << 20,
            hugepage_chunks: false,
            in_place: false,
            conversion: Conversion::NotNeeded,
            roles: RoleSet::COMMON,
        };
        let mut plan = PlanBuilder::new()
            .buffer(0, Role::Measured, buf)
            .build(&caps, &MemoryLayout::unbounded())
            .unwrap();
        // Half way into the second page: only the first page can go.
        assert_eq!(plan.release_source(0, page + page / 2).unwrap(), page);
        assert_eq!(plan.regions()[0].released(), page);
        // On to the end: the second and third pages.
        assert_eq!(plan.release_source(0, len).unwrap(), 2 * page);
        assert_eq!(plan.regions()[0].released(), len);
        assert_eq!(plan.release_source(0, len).unwrap(), 0);
    }
}
