//! The guest programs, assembled by hand: the checksum program ([`GUEST_CODE`]) and the copy
//! program ([`COPY_CODE`], described at its definition).
//!
//! It runs at CPL 3 in 64-bit mode with identity paging (virtual address = guest-physical address)
//! and no IDT: any fault shuts the vCPU down. The host sets these registers before entry:
//!
//! | register | value |
//! |---|---|
//! | `rsi` | GPA of the range table: `count` pairs of little-endian `u64` (`gpa`, `len`) |
//! | `rcx` | `count`, the number of pairs |
//! | `rdi` | the report address (a GPA no memslot covers, so every store there is an MMIO exit) |
//!
//! For each pair, the guest computes [`checksum`](crate::checksum) over the `len / 8` little-endian
//! words at `gpa` and stores the 64-bit result to `[rdi]`. When the table is done it stores the number
//! of ranges it checked to `[rdi + 8]` (the completion record) and spins on `jmp $`; the host never
//! resumes it after that store.
//!
//! The inner loop is the checksum's definition, word by word: `x = w ^ key`, where `key` is the
//! word's GPA times [`POSITION_KEY`](crate::POSITION_KEY) (kept in `r10` and stepped by
//! `8 * POSITION_KEY` per word, which is the same product modulo 2^64), then the
//! [`mix`](crate::mix) finalizer (`x ^= x >> 33; x *= MIX_K1; x ^= x >> 33; x *= MIX_K2;
//! x ^= x >> 33`), then `sum += x`. The constants are loaded with `movabs` at entry and are the
//! crate's public constants (a unit test compares the immediates).
//!
//! The host validates every pair before it writes the table (`len` is a non-zero multiple of 8), so
//! the inner loop always ends.

/// Offset of the `outer` label (the range loop) inside [`GUEST_CODE`].
#[cfg(test)]
pub(crate) const OUTER: usize = 0x28;
/// Offset of the `inner` label (the word loop) inside [`GUEST_CODE`].
#[cfg(test)]
pub(crate) const INNER: usize = 0x46;
/// Offset of the `done` label (completion record) inside [`GUEST_CODE`].
#[cfg(test)]
pub(crate) const DONE: usize = 0x8c;

/// The guest's machine code. Offsets on the left; `rel8` jumps count from the next instruction.
#[rustfmt::skip]
pub(crate) const GUEST_CODE: [u8; 0x92] = [
    // 0x00: movabs r11, 0x9e3779b97f4a7c15; r11 = POSITION_KEY (REX.WB b8+r io)
    0x49, 0xbb, 0x15, 0x7c, 0x4a, 0x7f, 0xb9, 0x79, 0x37, 0x9e,
    // 0x0a: movabs r12, 0xff51afd7ed558ccd; r12 = MIX_K1 (REX.WB b8+r io)
    0x49, 0xbc, 0xcd, 0x8c, 0x55, 0xed, 0xd7, 0xaf, 0x51, 0xff,
    // 0x14: movabs r13, 0xc4ceb9fe1a85ec53; r13 = MIX_K2 (REX.WB b8+r io)
    0x49, 0xbd, 0x53, 0xec, 0x85, 0x1a, 0xfe, 0xb9, 0xce, 0xc4,
    // 0x1e: mov r15, r11            ; r15 = POSITION_KEY ... (REX.WRB 89 /r, ModRM 11 011 111)
    0x4d, 0x89, 0xdf,
    // 0x21: shl r15, 3              ; ... * 8: the key step from one word to the next (REX.WB c1 /4 ib)
    0x49, 0xc1, 0xe7, 0x03,
    // 0x25: xor r9d, r9d            ; r9 = ranges done (REX.RB 31 /r)
    0x45, 0x31, 0xc9,
    // outer (0x28):
    // 0x28: test rcx, rcx           ; any range left? (REX.W 85 /r)
    0x48, 0x85, 0xc9,
    // 0x2b: jz done                 ; 0x8c - 0x2d = 0x5f
    0x74, 0x5f,
    // 0x2d: mov rdx, [rsi]          ; rdx = range gpa (REX.W 8b /r, ModRM 00 010 110)
    0x48, 0x8b, 0x16,
    // 0x30: mov r8, [rsi + 8]       ; r8 = range len in bytes (REX.WR 8b /r, ModRM 01 000 110, disp8)
    0x4c, 0x8b, 0x46, 0x08,
    // 0x34: add rsi, 16             ; next table entry (REX.W 83 /0 ib)
    0x48, 0x83, 0xc6, 0x10,
    // 0x38: shr r8, 3               ; r8 = number of words (REX.WB c1 /5 ib)
    0x49, 0xc1, 0xe8, 0x03,
    // 0x3c: mov r10, rdx            ; r10 = gpa ... (REX.WB 89 /r)
    0x49, 0x89, 0xd2,
    // 0x3f: imul r10, r11           ; ... * POSITION_KEY: the first word's key (REX.WRB 0f af /r)
    0x4d, 0x0f, 0xaf, 0xd3,
    // 0x43: xor r14d, r14d          ; r14 = sum = 0 (REX.RB 31 /r)
    0x45, 0x31, 0xf6,
    // inner (0x46):
    // 0x46: mov rax, [rdx]          ; x = w (REX.W 8b /r, ModRM 00 000 010)
    0x48, 0x8b, 0x02,
    // 0x49: xor rax, r10            ; x ^= key of this word's GPA (REX.WR 31 /r)
    0x4c, 0x31, 0xd0,
    // 0x4c: add r10, r15            ; key of the next word (REX.WRB 01 /r)
    0x4d, 0x01, 0xfa,
    // 0x4f: mov rbx, rax            ; x ^= x >> 33 (REX.W 89 /r) ...
    0x48, 0x89, 0xc3,
    // 0x52: shr rbx, 33             ; (REX.W c1 /5 ib)
    0x48, 0xc1, 0xeb, 0x21,
    // 0x56: xor rax, rbx            ; (REX.W 31 /r)
    0x48, 0x31, 0xd8,
    // 0x59: imul rax, r12           ; x *= MIX_K1 (REX.WB 0f af /r)
    0x49, 0x0f, 0xaf, 0xc4,
    // 0x5d: mov rbx, rax            ; x ^= x >> 33 ...
    0x48, 0x89, 0xc3,
    // 0x60: shr rbx, 33
    0x48, 0xc1, 0xeb, 0x21,
    // 0x64: xor rax, rbx
    0x48, 0x31, 0xd8,
    // 0x67: imul rax, r13           ; x *= MIX_K2 (REX.WB 0f af /r)
    0x49, 0x0f, 0xaf, 0xc5,
    // 0x6b: mov rbx, rax            ; x ^= x >> 33 ...
    0x48, 0x89, 0xc3,
    // 0x6e: shr rbx, 33
    0x48, 0xc1, 0xeb, 0x21,
    // 0x72: xor rax, rbx
    0x48, 0x31, 0xd8,
    // 0x75: add r14, rax            ; sum += x (REX.WB 01 /r)
    0x49, 0x01, 0xc6,
    // 0x78: add rdx, 0x8            ; next word (REX.W 83 /0 ib)
    0x48, 0x83, 0xc2, 0x08,
    // 0x7c: dec r8                  ; (REX.WB ff /1)
    0x49, 0xff, 0xc8,
    // 0x7f: jnz inner               ; 0x46 - 0x81 = -0x3b
    0x75, 0xc5,
    // 0x81: mov [rdi], r14          ; report the sum: MMIO exit (REX.WR 89 /r, ModRM 00 110 111)
    0x4c, 0x89, 0x37,
    // 0x84: inc r9                  ; (REX.WB ff /0)
    0x49, 0xff, 0xc1,
    // 0x87: dec rcx                 ; (REX.W ff /1)
    0x48, 0xff, 0xc9,
    // 0x8a: jmp outer               ; 0x28 - 0x8c = -0x64
    0xeb, 0x9c,
    // done (0x8c):
    // 0x8c: mov [rdi + 8], r9       ; completion record: MMIO exit (REX.WR 89 /r, ModRM 01 001 111, disp8)
    0x4c, 0x89, 0x4f, 0x08,
    // 0x90: jmp $                   ; never reached by a resumed vCPU: the host stops here
    0xeb, 0xfe,
];

/// Offset of the copy program's `outer` label inside [`COPY_CODE`].
#[cfg(test)]
pub(crate) const COPY_OUTER: usize = 0x0d;
/// Offset of the copy program's `done` label inside [`COPY_CODE`].
#[cfg(test)]
pub(crate) const COPY_DONE: usize = 0x2e;

/// The copy program, run by [`CheckGuest::copy`](crate::CheckGuest::copy). Same entry state as
/// [`GUEST_CODE`] except for the table:
///
/// | register | value |
/// |---|---|
/// | `rsi` | GPA of the copy table: `count` triples of little-endian `u64` (`src`, `dst`, `len`) |
/// | `rcx` | `count`, the number of triples |
/// | `rdi` | the report address |
///
/// For each triple it copies `len` bytes from `src` to `dst` with `rep movsb` (forward, the
/// direction flag cleared at entry), then stores the number of triples done so far to `[rdi]`
/// (an MMIO exit per copy, so the host knows how far it got). When the table is done it stores the
/// same count to `[rdi + 8]` (the completion record) and spins on `jmp $`. `rsi`, `rdi` and `rcx`
/// are the string instruction's operands, so the table cursor lives in `rbx`, the count left in
/// `rdx` and the report address in `r10`. The host validates every triple first (`len` non-zero,
/// source and destination disjoint and mapped).
#[rustfmt::skip]
pub(crate) const COPY_CODE: [u8; 0x34] = [
    // 0x00: mov r10, rdi            ; r10 = report address (REX.WB 89 /r, ModRM 11 111 010)
    0x49, 0x89, 0xfa,
    // 0x03: mov rbx, rsi            ; rbx = table cursor (REX.W 89 /r, ModRM 11 110 011)
    0x48, 0x89, 0xf3,
    // 0x06: mov rdx, rcx            ; rdx = copies left (REX.W 89 /r, ModRM 11 001 010)
    0x48, 0x89, 0xca,
    // 0x09: xor r9d, r9d            ; r9 = copies done (REX.RB 31 /r)
    0x45, 0x31, 0xc9,
    // 0x0c: cld                     ; string instructions go forward
    0xfc,
    // outer (0x0d):
    // 0x0d: test rdx, rdx           ; any copy left? (REX.W 85 /r, ModRM 11 010 010)
    0x48, 0x85, 0xd2,
    // 0x10: jz done                 ; 0x2e - 0x12 = 0x1c
    0x74, 0x1c,
    // 0x12: mov rsi, [rbx]          ; rsi = src (REX.W 8b /r, ModRM 00 110 011)
    0x48, 0x8b, 0x33,
    // 0x15: mov rdi, [rbx + 8]      ; rdi = dst (REX.W 8b /r, ModRM 01 111 011, disp8)
    0x48, 0x8b, 0x7b, 0x08,
    // 0x19: mov rcx, [rbx + 16]     ; rcx = len in bytes (REX.W 8b /r, ModRM 01 001 011, disp8)
    0x48, 0x8b, 0x4b, 0x10,
    // 0x1d: add rbx, 24             ; next table entry (REX.W 83 /0 ib)
    0x48, 0x83, 0xc3, 0x18,
    // 0x21: rep movsb               ; copy rcx bytes from [rsi] to [rdi] (f3 a4)
    0xf3, 0xa4,
    // 0x23: inc r9                  ; (REX.WB ff /0)
    0x49, 0xff, 0xc1,
    // 0x26: mov [r10], r9           ; report copies done: MMIO exit (REX.WRB 89 /r, ModRM 00 001 010)
    0x4d, 0x89, 0x0a,
    // 0x29: dec rdx                 ; (REX.W ff /1)
    0x48, 0xff, 0xca,
    // 0x2c: jmp outer               ; 0x0d - 0x2e = -0x21
    0xeb, 0xdf,
    // done (0x2e):
    // 0x2e: mov [r10 + 8], r9       ; completion record: MMIO exit (REX.WRB 89 /r, ModRM 01 001 010, disp8)
    0x4d, 0x89, 0x4a, 0x08,
    // 0x32: jmp $                   ; never reached by a resumed vCPU: the host stops here
    0xeb, 0xfe,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Target of the `rel8` jump whose opcode byte is at `at`.
    fn rel8_target(at: usize) -> usize {
        rel8_target_in(&GUEST_CODE, at)
    }

    /// Target of the `rel8` jump whose opcode byte is at `at` in `code`.
    fn rel8_target_in(code: &[u8], at: usize) -> usize {
        let next = at + 2;
        let disp = i64::from(code[at + 1] as i8);
        usize::try_from(next as i64 + disp).unwrap_or(usize::MAX)
    }

    #[test]
    fn jumps_land_on_their_labels() {
        assert_eq!(GUEST_CODE[0x2b], 0x74);
        assert_eq!(rel8_target(0x2b), DONE);
        assert_eq!(GUEST_CODE[0x7f], 0x75);
        assert_eq!(rel8_target(0x7f), INNER);
        assert_eq!(GUEST_CODE[0x8a], 0xeb);
        assert_eq!(rel8_target(0x8a), OUTER);
        assert_eq!(GUEST_CODE[0x90], 0xeb);
        assert_eq!(rel8_target(0x90), 0x90);
    }

    #[test]
    fn copy_jumps_land_on_their_labels() {
        assert_eq!(COPY_CODE[0x10], 0x74);
        assert_eq!(rel8_target_in(&COPY_CODE, 0x10), COPY_DONE);
        assert_eq!(COPY_CODE[0x2c], 0xeb);
        assert_eq!(rel8_target_in(&COPY_CODE, 0x2c), COPY_OUTER);
        assert_eq!(COPY_CODE[0x32], 0xeb);
        assert_eq!(rel8_target_in(&COPY_CODE, 0x32), 0x32);
    }

    /// The 64-bit immediate of the `movabs` at `at`.
    fn imm64(at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&GUEST_CODE[at + 2..at + 10]);
        u64::from_le_bytes(b)
    }

    /// The constants the guest loads are the ones the host's `checksum` uses.
    #[test]
    fn immediates_are_the_checksum_constants() {
        assert_eq!(&GUEST_CODE[0x00..0x02], &[0x49, 0xbb]); // movabs r11
        assert_eq!(imm64(0x00), crate::POSITION_KEY);
        assert_eq!(&GUEST_CODE[0x0a..0x0c], &[0x49, 0xbc]); // movabs r12
        assert_eq!(imm64(0x0a), crate::MIX_K1);
        assert_eq!(&GUEST_CODE[0x14..0x16], &[0x49, 0xbd]); // movabs r13
        assert_eq!(imm64(0x14), crate::MIX_K2);
        // The three shifts (shr rbx, imm8).
        for at in [0x52, 0x60, 0x6e] {
            assert_eq!(&GUEST_CODE[at..at + 3], &[0x48, 0xc1, 0xeb]);
            assert_eq!(u32::from(GUEST_CODE[at + 3]), crate::MIX_SHIFT);
        }
    }
}
