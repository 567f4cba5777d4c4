//! `/init` of the KVM lab's initramfs (see `lab/README.md`).
//!
//! Mounts what the tests need, reports what the kernel's KVM offers (probed here with raw
//! `KVM_CHECK_EXTENSION` calls, independently of the crates under test), runs each line of
//! `/lab/plan` (`<name>\t<timeout seconds>\t<program>\t<args...>`, tab-separated) with a time
//! bound, and powers the machine off. Everything it says starts with `@@LAB ` on a line of its
//! own, so `lab/run` can tell it from the tests' output on the same serial console.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `_IO(0xAE, 0x01)`: KVM_CREATE_VM (include/uapi/linux/kvm.h).
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
/// `_IO(0xAE, 0x03)`: KVM_CHECK_EXTENSION.
const KVM_CHECK_EXTENSION: libc::c_ulong = 0xAE03;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n@@LAB {line}");
    let _ = out.flush();
}

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (Ok(s), Ok(t), Ok(f)) = (CString::new(source), CString::new(target), CString::new(fstype))
    else {
        return;
    };
    // SAFETY: three valid NUL-terminated strings and no data argument; mount(2) reads only them.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        say(&format!(
            "WARN mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// `KVM_CHECK_EXTENSION(cap)` on `fd`, or -1.
fn check(fd: &OwnedFd, cap: libc::c_ulong) -> i64 {
    // SAFETY: KVM_CHECK_EXTENSION takes an integer argument and writes no memory.
    i64::from(unsafe { libc::ioctl(fd.as_raw_fd(), KVM_CHECK_EXTENSION, cap) })
}

/// A VM of `vm_type` on `kvm`, if KVM_CREATE_VM accepts it.
fn create_vm(kvm: &OwnedFd, vm_type: libc::c_ulong) -> Option<OwnedFd> {
    // SAFETY: KVM_CREATE_VM takes an integer argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, vm_type) };
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The capabilities the tests' needs are made of, as `name=value` pairs (-1: not asked).
fn probe_caps() -> String {
    let path = c"/dev/kvm";
    // SAFETY: a valid path; the return is a new fd or -1.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return format!("kvm=0 error={}", std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: a new fd that nothing else owns.
    let kvm = unsafe { OwnedFd::from_raw_fd(fd) };
    let Some(vm) = create_vm(&kvm, 0) else {
        return "kvm=0 error=create_vm".into();
    };
    // Capability numbers from include/uapi/linux/kvm.h (6.12 to 7.3 agree on these).
    let guest_memfd = check(&vm, 234);
    let flags = check(&vm, 244);
    let vm_types = check(&kvm, 235);
    let user_memory2 = check(&vm, 231);
    let (attrs, pre_fault) = match (vm_types >= 0 && vm_types & 2 != 0)
        .then(|| create_vm(&kvm, 1))
        .flatten()
    {
        Some(p) => (check(&p, 233), check(&p, 236)),
        None => (-1, -1),
    };
    format!(
        "kvm=1 guest_memfd={guest_memfd} guest_memfd_flags={flags} vm_types={vm_types} \
         user_memory2={user_memory2} memory_attributes_private={attrs} pre_fault_memory={pre_fault}"
    )
}

fn run_plan() {
    let plan = match std::fs::read_to_string("/lab/plan") {
        Ok(p) => p,
        Err(e) => {
            say(&format!("ERROR /lab/plan: {e}"));
            return;
        }
    };
    for line in plan.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split('\t');
        let (Some(name), Some(secs), Some(program)) = (fields.next(), fields.next(), fields.next())
        else {
            say(&format!("ERROR bad plan line: {line}"));
            continue;
        };
        let secs: u64 = secs.parse().unwrap_or(600);
        let args: Vec<&str> = fields.collect();
        say(&format!("BEGIN {name}"));
        let start = Instant::now();
        let mut command = Command::new(program);
        if coverage() {
            // One profile per process (tests run ccpop as a child too), sent out at the end.
            command.env("LLVM_PROFILE_FILE", "/tmp/profraw/%p-%m.profraw");
        }
        let child = command
            .args(&args)
            .env("NO_COLOR", "1")
            .env("CCPOP_KVM_SKIP_LOG", "/tmp/skips")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                say(&format!("END {name} rc=spawn-error:{e} secs=0"));
                continue;
            }
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if start.elapsed() > Duration::from_secs(secs) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break None,
            }
        };
        let took = start.elapsed().as_secs_f64();
        match status {
            Some(s) => say(&format!(
                "END {name} rc={} secs={took:.1}",
                s.code().map_or("signal".to_string(), |c| c.to_string())
            )),
            None => say(&format!("END {name} rc=timeout secs={took:.1}")),
        }
    }
    if let Ok(skips) = std::fs::read_to_string("/tmp/skips") {
        for l in skips.lines() {
            say(&format!("SKIP {l}"));
        }
    }
}

/// Whether lab/run built the binaries with `-C instrument-coverage` (it then packs this file).
fn coverage() -> bool {
    std::path::Path::new("/lab/coverage").exists()
}

/// Standard base64 (RFC 4648, with padding) of `data`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Prints each coverage profile as `@@LAB PROFRAW <name> <base64 piece>` lines, then
/// `@@LAB PROFRAW-END <name> <bytes>`, for lab/run to put back together.
fn send_profiles() {
    let Ok(entries) = std::fs::read_dir("/tmp/profraw") else {
        say("PROFRAW-NONE");
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        for piece in data.chunks(3 * 1024) {
            println!("@@LAB PROFRAW {name} {}", base64(piece));
        }
        say(&format!("PROFRAW-END {name} {}", data.len()));
    }
}

fn main() {
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("tmpfs", "/tmp", "tmpfs");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say(&format!("START {}", release.trim()));
    say(&format!("CAPS {}", probe_caps()));
    if coverage() {
        let _ = std::fs::create_dir_all("/tmp/profraw");
    }
    run_plan();
    if coverage() {
        send_profiles();
    }
    say("DONE");
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    // A reset, not a power-off: the lab kernel has no ACPI, so it could only halt, while QEMU,
    // started with -no-reboot, exits on a reset.
    // SAFETY: as PID 1, ending the machine is what this program exists to do last.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
}
