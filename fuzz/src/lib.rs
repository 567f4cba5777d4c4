//! Shared input types and oracles for the cc-populate fuzz targets.
//!
//! The fuzzer's bytes are decoded with `arbitrary` into the small input types here, which bias
//! addresses and lengths toward the values where range arithmetic breaks: zero, granule and
//! hugepage boundaries, and the top of the 64-bit address space. The oracles are deliberately
//! naive (linear scans, pairwise O(n^2) checks, `u128` arithmetic) and never call the code under
//! test to decide what the right answer is.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use cc_populate::{BackendCaps, Conversion, Memslot, Role, RoleSet};

/// 4 KiB.
pub const PAGE: u64 = 4096;
/// 2 MiB.
pub const M2: u64 = 2 << 20;
/// 1 GiB.
pub const G1: u64 = 1 << 30;

/// Every role, in an order the fuzz crate owns (used for role masks, independently of
/// `cc_populate::Role::ALL`).
pub const ROLES: [Role; 6] = [
    Role::Measured,
    Role::Unmeasured,
    Role::Zero,
    Role::Secrets,
    Role::Cpuid,
    Role::Ripas,
];

/// Whether the oracle thinks `role` carries content (everything but zero and ripas).
pub fn oracle_carries_content(role: Role) -> bool {
    !matches!(role, Role::Zero | Role::Ripas)
}

/// The role set of a bit mask over [`ROLES`].
pub fn role_set(mask: u8) -> RoleSet {
    ROLES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| *r)
        .collect()
}

/// Whether the mask over [`ROLES`] holds `role`.
pub fn mask_has(mask: u8, role: Role) -> bool {
    ROLES
        .iter()
        .position(|r| *r == role)
        .is_some_and(|i| mask & (1 << i) != 0)
}

/// A zero buffer that sources borrow from (no allocation per run).
pub fn zeros(len: usize) -> &'static [u8] {
    static BUF: OnceLock<Vec<u8>> = OnceLock::new();
    let b = BUF.get_or_init(|| vec![0u8; MAX_SOURCE as usize]);
    &b[..len.min(b.len())]
}

/// Largest source the targets hand out (bigger content-carrying regions get a short source,
/// or in-place / zero content).
pub const MAX_SOURCE: u64 = 4 << 20;

/// An address, biased toward the interesting ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    /// Any value.
    Raw(u64),
    /// `n` pages.
    Pages(u16),
    /// `a` 2 MiB pages plus `b` 4 KiB pages, minus `c` 4 KiB pages.
    Near2M(u8, u8, u8),
    /// `a` 1 GiB pages plus `b` 4 KiB pages, minus `c` 4 KiB pages.
    Near1G(u8, u8, u8),
    /// `n` pages below the top of the address space (`n = 0` is 0).
    Top(u16),
    /// `n` bytes below the top (unaligned).
    TopRaw(u16),
    /// Inside memslot `idx` (modulo the number of slots), `n` pages from its start.
    InSlot(u8, u16),
    /// At the end of memslot `idx` minus `n` pages.
    SlotEnd(u8, u16),
}

impl Addr {
    /// The address, given the memslots (for the slot-relative variants).
    pub fn get(self, slots: &[Memslot]) -> u64 {
        let slot = |i: u8| slots.get(i as usize % slots.len().max(1)).copied();
        match self {
            Addr::Raw(v) => v,
            Addr::Pages(n) => n as u64 * PAGE,
            Addr::Near2M(a, b, c) => {
                (a as u64 * M2 + b as u64 * PAGE).wrapping_sub(c as u64 * PAGE)
            }
            Addr::Near1G(a, b, c) => {
                (a as u64 * G1 + b as u64 * PAGE).wrapping_sub(c as u64 * PAGE)
            }
            Addr::Top(n) => 0u64.wrapping_sub(n as u64 * PAGE),
            Addr::TopRaw(n) => u64::MAX - n as u64,
            Addr::InSlot(i, n) => slot(i).map_or(0, |s| s.gpa.wrapping_add(n as u64 * PAGE)),
            Addr::SlotEnd(i, n) => slot(i).map_or(0, |s| {
                s.gpa.wrapping_add(s.size).wrapping_sub(n as u64 * PAGE)
            }),
        }
    }
}

/// A length, biased toward the interesting ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    /// Zero.
    Zero,
    /// Any value.
    Raw(u64),
    /// `n` pages.
    Pages(u8),
    /// `a` 2 MiB pages plus `b` 4 KiB pages, minus `c` 4 KiB pages.
    Near2M(u8, u8, u8),
    /// `a` 1 GiB pages plus `b` 4 KiB pages.
    Near1G(u8, u16),
    /// Up to `n` pages below the top of the address space from the start (n = 0: exactly to
    /// 2^64, which overflows).
    ToTop(u16),
}

impl Len {
    /// The length, for a region or slot starting at `gpa`.
    pub fn get(self, gpa: u64) -> u64 {
        match self {
            Len::Zero => 0,
            Len::Raw(v) => v,
            Len::Pages(n) => n as u64 * PAGE,
            Len::Near2M(a, b, c) => (a as u64 * M2 + b as u64 * PAGE).wrapping_sub(c as u64 * PAGE),
            Len::Near1G(a, b) => a as u64 * G1 + b as u64 * PAGE,
            Len::ToTop(n) => 0u64.wrapping_sub(gpa).wrapping_sub(n as u64 * PAGE),
        }
    }
}

/// A granule: mostly valid powers of two, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GranuleIn {
    /// `4 KiB << (s % 10)`.
    Shift(u8),
    /// Any value.
    Raw(u64),
}

impl GranuleIn {
    /// The granule.
    pub fn get(self) -> u64 {
        match self {
            GranuleIn::Shift(s) => PAGE << (s % 10),
            GranuleIn::Raw(v) => v,
        }
    }
}

/// A maximum chunk: mostly near the hugepage sizes, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum MaxChunkIn {
    /// `n` granules (n = 0 is invalid).
    Granules(u16),
    /// 2 MiB plus `d` granules, minus `m`.
    Near2M(u8, u8),
    /// 1 GiB plus `d` granules, minus `m`; times `k + 1`.
    Near1G(u8, u8, u8),
    /// The largest multiple of the granule.
    Huge,
    /// Any value.
    Raw(u64),
}

impl MaxChunkIn {
    /// The maximum chunk for `granule`.
    pub fn get(self, granule: u64) -> u64 {
        let g = granule.max(1);
        match self {
            MaxChunkIn::Granules(n) => (n as u64).wrapping_mul(g),
            MaxChunkIn::Near2M(d, m) => M2
                .wrapping_add((d as u64).wrapping_mul(g))
                .wrapping_sub((m as u64).wrapping_mul(g)),
            MaxChunkIn::Near1G(d, m, k) => G1
                .wrapping_add((d as u64).wrapping_mul(g))
                .wrapping_sub((m as u64).wrapping_mul(g))
                .wrapping_mul(k as u64 % 4 + 1),
            MaxChunkIn::Huge => u64::MAX - u64::MAX % g,
            MaxChunkIn::Raw(v) => v,
        }
    }
}

/// Backend capabilities as the fuzzer draws them.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct CapsIn {
    /// Granule.
    pub granule: GranuleIn,
    /// Maximum chunk.
    pub max_chunk: MaxChunkIn,
    /// Hugepage chunking.
    pub hugepage_chunks: bool,
    /// In-place support.
    pub in_place: bool,
    /// Conversion.
    pub conversion: Conversion,
    /// Supported roles, as a mask over [`ROLES`].
    pub roles: u8,
}

impl CapsIn {
    /// The capabilities.
    pub fn get(self) -> BackendCaps {
        let granule = self.granule.get();
        BackendCaps {
            granule,
            max_chunk: self.max_chunk.get(granule),
            hugepage_chunks: self.hugepage_chunks,
            in_place: self.in_place,
            conversion: self.conversion,
            roles: role_set(self.roles),
        }
    }
}

/// Whether the oracle thinks the capabilities are valid: granule a power of two >= 4 KiB (by
/// bit counting), max_chunk a non-zero multiple of it.
pub fn oracle_caps_ok(c: &BackendCaps) -> bool {
    c.granule.count_ones() == 1
        && c.granule >= PAGE
        && c.max_chunk != 0
        && c.max_chunk.is_multiple_of(c.granule)
}

/// A memslot as the fuzzer draws it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct SlotIn {
    /// Slot id.
    pub slot: u32,
    /// Address (slot-relative variants resolve against the slots drawn before it).
    pub gpa: Addr,
    /// Size.
    pub size: Len,
}

/// Resolves drawn slots in order.
pub fn slots_of(input: &[SlotIn]) -> Vec<Memslot> {
    let mut out: Vec<Memslot> = Vec::with_capacity(input.len());
    for s in input {
        let gpa = s.gpa.get(&out);
        out.push(Memslot {
            slot: s.slot,
            gpa,
            size: s.size.get(gpa),
        });
    }
    out
}

/// `[a, a+alen)` and `[b, b+blen)` intersect (computed in `u128`, so regions reaching 2^64 are
/// fine).
pub fn intersects(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    let (a, alen, b, blen) = (a as u128, alen as u128, b as u128, blen as u128);
    alen > 0 && blen > 0 && a < b + blen && b < a + alen
}

/// `[inner, inner+ilen)` lies within `[outer, outer+olen)` (in `u128`).
pub fn within(inner: u64, ilen: u64, outer: u64, olen: u64) -> bool {
    let (i, il, o, ol) = (inner as u128, ilen as u128, outer as u128, olen as u128);
    i >= o && i + il <= o + ol
}

/// The memslot (by linear scan) whose range contains `gpa`.
pub fn oracle_slot_at(slots: &[Memslot], gpa: u64) -> Option<Memslot> {
    slots
        .iter()
        .copied()
        .find(|s| within(gpa, 1, s.gpa, s.size) && s.size > 0)
}

/// Whether the oracle accepts these memslots: every slot non-empty and ending at or below
/// 2^64 - 1 (the end must be representable), no two intersecting.
pub fn oracle_slots_ok(slots: &[Memslot]) -> bool {
    let each = slots
        .iter()
        .all(|s| s.size > 0 && (s.gpa as u128 + s.size as u128) <= u64::MAX as u128);
    let pairs = slots.iter().enumerate().all(|(i, a)| {
        slots[i + 1..]
            .iter()
            .all(|b| !intersects(a.gpa, a.size, b.gpa, b.size))
    });
    each && pairs
}

/// Upper bound on the number of chunks a region of `len` bytes is cut into with `max_chunk`
/// (every full chunk is at least half of `max_chunk`, plus a leading and a trailing piece).
pub fn chunk_bound(len: u64, max_chunk: u64) -> u128 {
    2 * (len as u128) / (max_chunk.max(1) as u128) + 3
}

/// The OVMF GUIDed table footer GUID `96b582de-1fb2-45f7-baea-a366c55a082d` in on-disk
/// (mixed-endian) byte order, written out by hand.
pub const OVMF_FOOTER: [u8; 16] = [
    0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d,
];
/// `dc886566-984a-4798-a75e-5585a7bf67cc` (SEV metadata offset entry), on-disk order.
pub const SEV_META_GUID: [u8; 16] = [
    0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc,
];
/// `e47a6535-984a-4798-865e-4685a7bf8ec2` (TDX metadata offset entry), on-disk order.
pub const TDX_META_GUID: [u8; 16] = [
    0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2,
];

/// One entry of the GUIDed table as the reference walker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// GUID bytes.
    pub guid: [u8; 16],
    /// Offset of its data in the image.
    pub offset: usize,
    /// Length of its data.
    pub len: usize,
}

/// Reads a little-endian integer of `n` bytes at `at`, if it is inside `b` (in `u128`).
pub fn le(b: &[u8], at: u128, n: usize) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let s = b.get(at..at.checked_add(n)?)?;
    Some(s.iter().rev().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
}

/// A reference walk of the OVMF GUIDed table, written from its layout: the footer GUID 48
/// bytes before the end, a `u16` total length (counting itself and the footer GUID) before it,
/// entries `data, u16 length, GUID` running backwards from there. Returns the entries from the
/// end backwards, and whether the whole table was well formed (`false`: the entries are those
/// before the first malformed one), or `None` when there is no table.
pub fn ovmf_table(image: &[u8]) -> Option<(Vec<TableEntry>, bool)> {
    let size = image.len() as u128;
    if size < 50 {
        return None;
    }
    let footer = size - 48;
    if image.get(footer as usize..footer as usize + 16)? != OVMF_FOOTER {
        return None;
    }
    let total = le(image, footer - 2, 2)? as u128;
    if total < 18 || total - 18 > footer - 2 {
        return Some((Vec::new(), false));
    }
    let start = footer - 2 - (total - 18);
    let mut end = footer - 2;
    let mut out = Vec::new();
    while end > start {
        if end - start < 18 {
            return Some((out, false));
        }
        let len = le(image, end - 18, 2)? as u128;
        if len < 18 || len > end - start {
            return Some((out, false));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&image[(end - 16) as usize..end as usize]);
        out.push(TableEntry {
            guid,
            offset: (end - len) as usize,
            len: (len - 18) as usize,
        });
        end -= len;
    }
    Some((out, true))
}

/// Whether `inner` is a sub-slice of `outer` at byte offset `at` (by address: proves a parser
/// handed out a view of its input, not of something else).
pub fn is_view(outer: &[u8], inner: &[u8], at: usize) -> bool {
    outer.as_ptr().wrapping_add(at) == inner.as_ptr()
        && at
            .checked_add(inner.len())
            .is_some_and(|e| e <= outer.len())
}

/// The bytes the kernel's `copy_from_user` reads from `v`, which must be `n` bytes long: the
/// kernel-facing fake kernels read the crates' uAPI structs this way, at the offsets of the
/// kernel's headers, not through the crates' field names.
///
/// # Safety
///
/// `T` must have no padding bytes (every byte of a live `T` is initialised), as the integer
/// structs of the KVM uAPI have.
pub unsafe fn user_bytes<T: Copy>(v: &T, n: usize) -> Vec<u8> {
    assert_eq!(
        std::mem::size_of::<T>(),
        n,
        "the struct is not the kernel's size"
    );
    // SAFETY: `v` is a live `T` of `n` bytes (checked above), all initialised (the caller's
    // promise: no padding).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), n) }.to_vec()
}

/// Writes `bytes` over `v` as the kernel's `copy_to_user` does.
///
/// # Safety
///
/// Any `size_of::<T>()` bytes must be a valid `T` (a struct of plain integers).
pub unsafe fn copy_to_user<T: Copy>(v: &mut T, bytes: &[u8]) {
    assert_eq!(
        std::mem::size_of::<T>(),
        bytes.len(),
        "the struct is not the kernel's size"
    );
    // SAFETY: `v` is a live, exclusively borrowed `T` of exactly `bytes.len()` bytes, and any
    // bytes are a valid `T` (the caller's promise).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (v as *mut T).cast::<u8>(), bytes.len())
    }
}

/// The little-endian field of `n` bytes at `at` of a struct's bytes.
pub fn field(b: &[u8], at: usize, n: usize) -> u64 {
    le(b, at as u128, n).expect("the field lies inside the struct")
}
