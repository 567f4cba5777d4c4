//! The check guest's code, disassembled by binutils' objdump and compared with a listing written
//! by hand. Without objdump the test is reported ignored with a `SKIPPED [tool:objdump]` line
//! (gmem::testing's harness); CI fails where objdump runs after all.

use gmem::testing::{self, Need};

/// The listing written by hand from the comments on the guest code in `src/code.rs` (Intel
/// syntax, objdump's spelling).
const LISTING: &[&str] = &[
    "movabs r11,0x9e3779b97f4a7c15",
    "movabs r12,0xff51afd7ed558ccd",
    "movabs r13,0xc4ceb9fe1a85ec53",
    "mov r15,r11",
    "shl r15,0x3",
    "xor r9d,r9d",
    "test rcx,rcx",
    "je 0x8c",
    "mov rdx,QWORD PTR [rsi]",
    "mov r8,QWORD PTR [rsi+0x8]",
    "add rsi,0x10",
    "shr r8,0x3",
    "mov r10,rdx",
    "imul r10,r11",
    "xor r14d,r14d",
    "mov rax,QWORD PTR [rdx]",
    "xor rax,r10",
    "add r10,r15",
    "mov rbx,rax",
    "shr rbx,0x21",
    "xor rax,rbx",
    "imul rax,r12",
    "mov rbx,rax",
    "shr rbx,0x21",
    "xor rax,rbx",
    "imul rax,r13",
    "mov rbx,rax",
    "shr rbx,0x21",
    "xor rax,rbx",
    "add r14,rax",
    "add rdx,0x8",
    "dec r8",
    "jne 0x46",
    "mov QWORD PTR [rdi],r14",
    "inc r9",
    "dec rcx",
    "jmp 0x28",
    "mov QWORD PTR [rdi+0x8],r9",
    "jmp 0x90",
];

/// The copy program's listing, written by hand from its comments.
const COPY_LISTING: &[&str] = &[
    "mov r10,rdi",
    "mov rbx,rsi",
    "mov rdx,rcx",
    "xor r9d,r9d",
    "cld",
    "test rdx,rdx",
    "je 0x2e",
    "mov rsi,QWORD PTR [rbx]",
    "mov rdi,QWORD PTR [rbx+0x8]",
    "mov rcx,QWORD PTR [rbx+0x10]",
    "add rbx,0x18",
    "rep movs BYTE PTR es:[rdi],BYTE PTR ds:[rsi]",
    "inc r9",
    "mov QWORD PTR [r10],r9",
    "dec rdx",
    "jmp 0xd",
    "mov QWORD PTR [r10+0x8],r9",
    "jmp 0x32",
];

/// `code` disassembled by binutils' objdump (an independent decoder), one instruction per entry.
fn disassemble(code: &[u8], name: &str) -> Vec<String> {
    let path = std::env::temp_dir().join(format!("guest-check-{name}-{}.bin", std::process::id()));
    std::fs::write(&path, code).unwrap();
    let out = std::process::Command::new("objdump")
        .args(["-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines look like "  8a:\teb 9c                \tjmp    0x28"; keep the instruction.
    text.lines()
        .filter_map(|l| l.split('\t').nth(2))
        .map(|ins| ins.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The check program disassembled equals [`LISTING`].
fn objdump_agrees_with_the_listing() {
    assert_eq!(
        disassemble(guest_check::guest_code_for_tests(), "code"),
        LISTING
    );
}

/// The copy program disassembled equals [`COPY_LISTING`].
fn objdump_agrees_with_the_copy_listing() {
    assert_eq!(
        disassemble(guest_check::copy_code_for_tests(), "copy"),
        COPY_LISTING
    );
}

/// Why `objdump --version` does not run, if it does not.
fn objdump() -> Result<(), String> {
    match std::process::Command::new("objdump")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("objdump --version: {}", o.status)),
        Err(e) => Err(format!("objdump: {e}")),
    }
}

fn main() -> std::process::ExitCode {
    let objdump = || Need::Tool {
        id: "tool:objdump",
        from: "binutils: apt-get install binutils",
        check: objdump,
    };
    testing::run(vec![
        gmem::kvm_test!(objdump_agrees_with_the_listing, objdump()),
        gmem::kvm_test!(objdump_agrees_with_the_copy_listing, objdump()),
    ])
}
