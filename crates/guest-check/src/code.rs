//! The guest program, assembled by hand.
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
//! The host validates every pair before it writes the table (`len` is a non-zero multiple of 8), so
//! the inner loop always ends.

/// Offset of the `outer` label (the range loop) inside [`GUEST_CODE`].
#[cfg(test)]
pub(crate) const OUTER: usize = 0x03;
/// Offset of the `inner` label (the word loop) inside [`GUEST_CODE`].
#[cfg(test)]
pub(crate) const INNER: usize = 0x1e;
/// Offset of the `done` label (completion record) inside [`GUEST_CODE`].
#[cfg(test)]
pub(crate) const DONE: usize = 0x3f;

/// The guest's machine code. Offsets on the left; `rel8` jumps count from the next instruction.
#[rustfmt::skip]
pub(crate) const GUEST_CODE: [u8; 0x45] = [
    // 0x00: xor r9d, r9d          ; r9 = ranges done (REX.RB 31 /r, ModRM 11 001 001)
    0x45, 0x31, 0xc9,
    // outer (0x03):
    // 0x03: test rcx, rcx         ; any range left? (REX.W 85 /r, ModRM 11 001 001)
    0x48, 0x85, 0xc9,
    // 0x06: jz done               ; 0x3f - 0x08 = 0x37
    0x74, 0x37,
    // 0x08: mov rdx, [rsi]        ; rdx = range gpa (REX.W 8b /r, ModRM 00 010 110)
    0x48, 0x8b, 0x16,
    // 0x0b: mov r8, [rsi + 8]     ; r8 = range len in bytes (REX.WR 8b /r, ModRM 01 000 110, disp8)
    0x4c, 0x8b, 0x46, 0x08,
    // 0x0f: add rsi, 16           ; next table entry (REX.W 83 /0 ib, ModRM 11 000 110)
    0x48, 0x83, 0xc6, 0x10,
    // 0x13: shr r8, 3             ; r8 = number of words (REX.WB c1 /5 ib, ModRM 11 101 000)
    0x49, 0xc1, 0xe8, 0x03,
    // 0x17: mov eax, 1            ; a = 1, zero-extended into rax (b8+r id)
    0xb8, 0x01, 0x00, 0x00, 0x00,
    // 0x1c: xor ebx, ebx          ; b = 0 (31 /r, ModRM 11 011 011)
    0x31, 0xdb,
    // inner (0x1e):
    // 0x1e: add rax, [rdx]        ; a += w (REX.W 03 /r, ModRM 00 000 010)
    0x48, 0x03, 0x02,
    // 0x21: add rbx, rax          ; b += a (REX.W 01 /r, ModRM 11 000 011)
    0x48, 0x01, 0xc3,
    // 0x24: add rdx, 8            ; next word (REX.W 83 /0 ib, ModRM 11 000 010)
    0x48, 0x83, 0xc2, 0x08,
    // 0x28: dec r8                ; (REX.WB ff /1, ModRM 11 001 000)
    0x49, 0xff, 0xc8,
    // 0x2b: jnz inner             ; 0x1e - 0x2d = -0x0f
    0x75, 0xf1,
    // 0x2d: rol rbx, 32           ; (REX.W c1 /0 ib, ModRM 11 000 011)
    0x48, 0xc1, 0xc3, 0x20,
    // 0x31: xor rax, rbx          ; result = a ^ rol(b, 32) (REX.W 31 /r, ModRM 11 011 000)
    0x48, 0x31, 0xd8,
    // 0x34: mov [rdi], rax        ; report the result: MMIO exit (REX.W 89 /r, ModRM 00 000 111)
    0x48, 0x89, 0x07,
    // 0x37: inc r9                ; (REX.WB ff /0, ModRM 11 000 001)
    0x49, 0xff, 0xc1,
    // 0x3a: dec rcx               ; (REX.W ff /1, ModRM 11 001 001)
    0x48, 0xff, 0xc9,
    // 0x3d: jmp outer             ; 0x03 - 0x3f = -0x3c
    0xeb, 0xc4,
    // done (0x3f):
    // 0x3f: mov [rdi + 8], r9     ; completion record: MMIO exit (REX.WR 89 /r, ModRM 01 001 111, disp8)
    0x4c, 0x89, 0x4f, 0x08,
    // 0x43: jmp $                 ; never reached by a resumed vCPU: the host stops here
    0xeb, 0xfe,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Target of the `rel8` jump whose opcode byte is at `at`.
    fn rel8_target(at: usize) -> usize {
        let next = at + 2;
        let disp = i64::from(GUEST_CODE[at + 1] as i8);
        usize::try_from(next as i64 + disp).unwrap_or(usize::MAX)
    }

    #[test]
    fn jumps_land_on_their_labels() {
        assert_eq!(GUEST_CODE[0x06], 0x74);
        assert_eq!(rel8_target(0x06), DONE);
        assert_eq!(GUEST_CODE[0x2b], 0x75);
        assert_eq!(rel8_target(0x2b), INNER);
        assert_eq!(GUEST_CODE[0x3d], 0xeb);
        assert_eq!(rel8_target(0x3d), OUTER);
        assert_eq!(GUEST_CODE[0x43], 0xeb);
        assert_eq!(rel8_target(0x43), 0x43);
    }

    /// The listing written by hand from the comments above (Intel syntax, objdump's spelling).
    const LISTING: &[&str] = &[
        "xor r9d,r9d",
        "test rcx,rcx",
        "je 0x3f",
        "mov rdx,QWORD PTR [rsi]",
        "mov r8,QWORD PTR [rsi+0x8]",
        "add rsi,0x10",
        "shr r8,0x3",
        "mov eax,0x1",
        "xor ebx,ebx",
        "add rax,QWORD PTR [rdx]",
        "add rbx,rax",
        "add rdx,0x8",
        "dec r8",
        "jne 0x1e",
        "rol rbx,0x20",
        "xor rax,rbx",
        "mov QWORD PTR [rdi],rax",
        "inc r9",
        "dec rcx",
        "jmp 0x3",
        "mov QWORD PTR [rdi+0x8],r9",
        "jmp 0x43",
    ];

    /// Disassembles [`GUEST_CODE`] with binutils' objdump (an independent decoder) and compares it
    /// with [`LISTING`]. Skipped where objdump is missing.
    #[test]
    fn objdump_agrees_with_the_listing() {
        let path =
            std::env::temp_dir().join(format!("guest-check-code-{}.bin", std::process::id()));
        std::fs::write(&path, GUEST_CODE).unwrap();
        let out = std::process::Command::new("objdump")
            .args(["-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel"])
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let out = match out {
            Ok(out) if out.status.success() => out,
            other => {
                println!("SKIPPED: objdump_agrees_with_the_listing: objdump unusable: {other:?}");
                return;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        // Lines look like "  3d:\teb c4                \tjmp    0x3"; keep the instruction.
        let got: Vec<String> = text
            .lines()
            .filter_map(|l| l.split('\t').nth(2))
            .map(|ins| ins.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(got, LISTING);
    }
}
