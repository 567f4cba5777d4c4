//! Where things live in the scratch area, and the identity page tables.
//!
//! The scratch area starts at a 2 MiB-aligned GPA. Its first [`SLOT_SIZE`] bytes are the crate's
//! memslot (anonymous memory):
//!
//! | offset | size | contents |
//! |---|---|---|
//! | `0x00_0000` | 2 MiB | 512 page directories; directory `i` maps GiB `i` with 2 MiB pages |
//! | `0x20_0000` | 4 KiB | PML4 (entry 0 only) |
//! | `0x20_1000` | 4 KiB | PDPT (one entry per mapped GiB) |
//! | `0x20_2000` | 2 KiB | guest code: the checksum program |
//! | `0x20_2800` | 2 KiB | guest code: the copy program |
//! | `0x20_3000` | 4 KiB | stack (the code uses none; `rsp` points at its top) |
//! | `0x20_4000` | to 4 MiB | range table: (`gpa`, `len`) pairs, or copy table: (`src`, `dst`, `len`) triples, of little-endian `u64` |
//!
//! The next 2 MiB (`SLOT_SIZE..SCRATCH_SIZE`) are covered by no memslot but mapped by the page
//! tables: the report address is its first byte, the completion record the 8 bytes after it.

/// Bytes in one 2 MiB page.
pub(crate) const PAGE_2M: u64 = 2 << 20;
/// Bytes mapped by one page directory (1 GiB).
pub(crate) const GIB: u64 = 1 << 30;
/// Highest number of bytes the page tables can map: one PML4 entry, 512 GiB.
pub(crate) const MAX_MAP: u64 = 512 * GIB;

/// Size of the crate's memslot at the start of the scratch area.
pub(crate) const SLOT_SIZE: u64 = 4 << 20;
/// Size of the whole scratch area: the memslot plus an unbacked 2 MiB page holding the report address.
pub(crate) const SCRATCH_SIZE: u64 = SLOT_SIZE + PAGE_2M;
/// Offset of the report address (first byte after the memslot).
pub(crate) const REPORT_OFFSET: u64 = SLOT_SIZE;
/// Offset of the completion record, 8 bytes after the report address.
pub(crate) const DONE_OFFSET: u64 = REPORT_OFFSET + 8;

/// Offset of the 512 page directories.
pub(crate) const PD_OFFSET: u64 = 0;
/// Offset of the PML4.
pub(crate) const PML4_OFFSET: u64 = 0x20_0000;
/// Offset of the PDPT.
pub(crate) const PDPT_OFFSET: u64 = 0x20_1000;
/// Offset of the guest code.
pub(crate) const CODE_OFFSET: u64 = 0x20_2000;
/// Offset of the copy program.
pub(crate) const COPY_CODE_OFFSET: u64 = 0x20_2800;
/// Offset of the top of the stack (it grows down into `0x20_3000..0x20_4000`).
pub(crate) const STACK_TOP_OFFSET: u64 = 0x20_4000;
/// Offset of the range table.
pub(crate) const TABLE_OFFSET: u64 = 0x20_4000;
/// Bytes of one range table entry.
pub(crate) const TABLE_ENTRY: u64 = 16;
/// Most ranges one run can check (the table fills the memslot's tail).
pub(crate) const MAX_RANGES: usize = ((SLOT_SIZE - TABLE_OFFSET) / TABLE_ENTRY) as usize;

/// Bytes of one copy table entry.
pub(crate) const COPY_ENTRY: u64 = 24;
/// Most copies one run can do.
pub(crate) const MAX_COPIES: usize = ((SLOT_SIZE - TABLE_OFFSET) / COPY_ENTRY) as usize;

// The areas do not overlap, in the order of the table above.
const _: () = {
    assert!(PML4_OFFSET >= PD_OFFSET + 512 * 4096);
    assert!(PDPT_OFFSET >= PML4_OFFSET + 4096);
    assert!(CODE_OFFSET >= PDPT_OFFSET + 4096);
    assert!(CODE_OFFSET + crate::code::GUEST_CODE.len() as u64 <= COPY_CODE_OFFSET);
    assert!(COPY_CODE_OFFSET + crate::code::COPY_CODE.len() as u64 <= STACK_TOP_OFFSET - 4096);
    assert!(TABLE_OFFSET >= STACK_TOP_OFFSET);
    assert!(TABLE_OFFSET < SLOT_SIZE);
};

/// Present.
const PTE_P: u64 = 1 << 0;
/// Writable.
const PTE_RW: u64 = 1 << 1;
/// User (CPL 3) may access.
const PTE_US: u64 = 1 << 2;
/// Page size: this page-directory entry maps a 2 MiB page.
const PTE_PS: u64 = 1 << 7;

/// Upper-level entry flags: present, writable, user.
pub(crate) const UPPER_FLAGS: u64 = PTE_P | PTE_RW | PTE_US;
/// 2 MiB leaf flags: present, writable, user, large page.
pub(crate) const LEAF_FLAGS: u64 = PTE_P | PTE_RW | PTE_US | PTE_PS;

/// Writes `value` as little-endian at `offset` of `mem`. `offset + 8 <= mem.len()` is the caller's
/// invariant (all offsets here are constants well inside the memslot); a write past the end is
/// dropped.
pub(crate) fn put_u64(mem: &mut [u8], offset: u64, value: u64) {
    let start = offset as usize;
    if let Some(dst) = mem.get_mut(start..start + 8) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
}

/// Builds identity page tables in `mem` (the memslot's first bytes, at least [`CODE_OFFSET`] long) for a scratch
/// area at `scratch_gpa`, whatever `mem` held before: every 2 MiB page below `limit` (rounded down to 2 MiB) is mapped
/// present, writable and user-accessible; everything above is not present.
pub(crate) fn build_page_tables(mem: &mut [u8], scratch_gpa: u64, limit: u64) {
    let limit = limit.min(MAX_MAP) & !(PAGE_2M - 1);
    put_u64(mem, PML4_OFFSET, (scratch_gpa + PDPT_OFFSET) | UPPER_FLAGS);
    for entry in 1..512u64 {
        put_u64(mem, PML4_OFFSET + entry * 8, 0);
    }
    for gib in 0..512u64 {
        let pd = PD_OFFSET + gib * 4096;
        let mapped = gib * GIB < limit;
        let pdpte = if mapped {
            (scratch_gpa + pd) | UPPER_FLAGS
        } else {
            0
        };
        put_u64(mem, PDPT_OFFSET + gib * 8, pdpte);
        for page in 0..512u64 {
            let gpa = gib * GIB + page * PAGE_2M;
            let pde = if gpa < limit { gpa | LEAF_FLAGS } else { 0 };
            put_u64(mem, pd + page * 8, pde);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_u64(mem: &[u8], offset: u64) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&mem[offset as usize..offset as usize + 8]);
        u64::from_le_bytes(word)
    }

    /// Walks the tables like the MMU does for a 2 MiB leaf; returns the physical address or None.
    fn translate(mem: &[u8], scratch_gpa: u64, va: u64) -> Option<u64> {
        let in_slot = |gpa: u64| gpa.checked_sub(scratch_gpa).filter(|o| *o < SLOT_SIZE);
        let pml4e = get_u64(mem, PML4_OFFSET + ((va >> 39) & 511) * 8);
        if pml4e & 0x7 != 0x7 {
            return None;
        }
        let pdpt = in_slot(pml4e & 0x000f_ffff_ffff_f000)?;
        let pdpte = get_u64(mem, pdpt + ((va >> 30) & 511) * 8);
        if pdpte & 0x7 != 0x7 || pdpte & 0x80 != 0 {
            return None;
        }
        let pd = in_slot(pdpte & 0x000f_ffff_ffff_f000)?;
        let pde = get_u64(mem, pd + ((va >> 21) & 511) * 8);
        if pde & 0x87 != 0x87 {
            return None;
        }
        Some((pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff))
    }

    #[test]
    fn layout_fits_in_the_slot() {
        assert_eq!(PD_OFFSET + 512 * 4096, PML4_OFFSET);
        assert_eq!(
            TABLE_OFFSET + MAX_RANGES as u64 * TABLE_ENTRY,
            SLOT_SIZE,
            "the table ends exactly at the end of the memslot"
        );
        assert_eq!(MAX_RANGES, 130_048);
        assert_eq!(SCRATCH_SIZE % PAGE_2M, 0);
    }

    #[test]
    fn identity_maps_below_the_limit_only() {
        let mut mem = vec![0xffu8; SLOT_SIZE as usize];
        let scratch = 3 * GIB + 10 * PAGE_2M;
        let limit = 40 * GIB;
        build_page_tables(&mut mem, scratch, limit);
        for va in [
            0,
            8,
            PAGE_2M - 8,
            PAGE_2M,
            GIB - 1,
            GIB,
            scratch,
            scratch + SLOT_SIZE,
            limit - 8,
        ] {
            assert_eq!(translate(&mem, scratch, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&mem, scratch, limit), None);
        assert_eq!(translate(&mem, scratch, 100 * GIB), None);
        assert_eq!(
            translate(&mem, scratch, MAX_MAP),
            None,
            "PML4 entry 1 is empty"
        );
        // Exactly one PML4 entry.
        assert_eq!(get_u64(&mem, PML4_OFFSET + 8), 0);
        // A leaf entry, by hand: GiB 1, page 3 = 0x4060_0000 | P | RW | US | PS.
        assert_eq!(get_u64(&mem, PD_OFFSET + 4096 + 3 * 8), 0x4060_0087);
        // An upper entry, by hand: PDPT[2] -> PD 2 at scratch + 0x2000, P | RW | US.
        assert_eq!(get_u64(&mem, PDPT_OFFSET + 2 * 8), scratch + 0x2000 + 7);
    }

    #[test]
    fn limit_is_rounded_down_to_a_large_page_and_capped() {
        let mut mem = vec![0u8; SLOT_SIZE as usize];
        build_page_tables(&mut mem, 0, PAGE_2M + 4096);
        assert_eq!(translate(&mem, 0, 0), Some(0));
        assert_eq!(translate(&mem, 0, PAGE_2M), None);
        build_page_tables(&mut mem, 0, u64::MAX);
        assert_eq!(translate(&mem, 0, MAX_MAP - 8), Some(MAX_MAP - 8));
    }
}
