//! Test support for tests that need KVM, a kernel capability, a file a test reads, or a tool it
//! runs.
//!
//! Each such test names what it needs ([`Need`]); a test binary built with `harness = false`
//! hands its tests to [`run`], which probes the running kernel once, runs the tests whose needs
//! are met, and reports every other one as **ignored** (libtest's "skipped"), never as passed or
//! failed, with one line naming the missing capability and the kernel release:
//!
//! ```text
//! SKIPPED [guest_memfd_shared] kvm::shared_view_write: needs guest_memfd with MMAP|INIT_SHARED on a default VM: KVM_CAP_GUEST_MEMFD_FLAGS is 0x0 (kernel 6.18.44-fc)
//! ```
//!
//! The same line is appended to the file named by `CCPOP_KVM_SKIP_LOG` when it is set, so CI can
//! re-probe the kernel independently and fail when a test skipped for something the kernel
//! offers. Run with `--include-ignored`, a skipped test fails with its reason (it cannot pass).
//!
//! A test file (its `[[test]]` entry has `harness = false`):
//!
//! ```no_run
//! use gmem::testing::{self, Need};
//!
//! fn writes_through_the_shared_view() {
//!     let (_kvm, vm) = testing::default_vm();
//!     let caps = gmem::Capabilities::probe(&vm);
//!     assert!(caps.guest_memfd);
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     testing::run(vec![gmem::kvm_test!(
//!         writes_through_the_shared_view,
//!         Need::SharedGuestMemfd
//!     )])
//! }
//! ```

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;

use kvm_ioctls::{Kvm, VmFd};
use libtest_mimic::{Arguments, Failed, Trial};

use crate::{uapi, Capabilities, GmemFlags};

pub use crate::model::{ModelCall, SeriesModel};

/// The environment variable naming the skip log.
pub const SKIP_LOG_ENV: &str = "CCPOP_KVM_SKIP_LOG";

/// `KVM_X86_SW_PROTECTED_VM` (`arch/x86/include/uapi/asm/kvm.h`): a VM type with private memory
/// managed through memory attributes, and no hardware protection.
pub const KVM_X86_SW_PROTECTED_VM: u64 = 1;

/// What a test needs from the machine it runs on.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// `/dev/kvm` opens and `KVM_CREATE_VM` makes a default VM.
    Kvm,
    /// `KVM_CAP_GUEST_MEMFD` on a default VM.
    GuestMemfd,
    /// guest_memfd with `MMAP | INIT_SHARED` on a default VM (`KVM_CAP_GUEST_MEMFD_FLAGS`,
    /// Linux 6.18 on): the shared view.
    SharedGuestMemfd,
    /// The opposite of [`Need::SharedGuestMemfd`]: a kernel without it (for a test of what a
    /// program says on such a kernel).
    NoSharedGuestMemfd,
    /// `KVM_CAP_USER_MEMORY2`.
    UserMemory2,
    /// `KVM_X86_SW_PROTECTED_VM` in `KVM_CAP_VM_TYPES`.
    SwProtectedVm,
    /// `KVM_MEMORY_ATTRIBUTE_PRIVATE` in `KVM_CAP_MEMORY_ATTRIBUTES` on a software-protected VM.
    PrivateAttributes,
    /// `KVM_CAP_PRE_FAULT_MEMORY` on a software-protected VM.
    PreFaultMemory,
    /// A file a test reads, and what provides it (e.g. `Debian's ovmf package`).
    File {
        /// The path the test opens.
        path: &'static str,
        /// What installs it, for the skip line.
        from: &'static str,
    },
    /// A file whose path is known only when the test runs (an environment variable's
    /// directory, a folder beside the repository). Its id is `file:<path>`, as for
    /// [`Need::File`], with the path `path()` returned.
    FileAt {
        /// The path the test opens.
        path: fn() -> std::path::PathBuf,
        /// What installs it, for the skip line.
        from: &'static str,
    },
    /// Something that is not one file: a tool or a package the test runs. `id` is what the skip
    /// line and log carry, so CI can re-check it independently (`lab/skipcheck.py` knows each
    /// id a test uses; an id it does not know fails the check). `check` says why it is
    /// unusable, or `Ok`.
    Tool {
        /// The skip id, e.g. `python:sevsnpmeasure`.
        id: &'static str,
        /// What it is and what installs it, for the skip line.
        from: &'static str,
        /// `Err(why)` where the tool is unusable on this host.
        check: fn() -> Result<(), String>,
    },
}

impl Need {
    /// The short name the skip line and log carry in brackets (what CI re-checks).
    pub fn id(&self) -> String {
        match self {
            Need::Kvm => "kvm".into(),
            Need::GuestMemfd => "guest_memfd".into(),
            Need::SharedGuestMemfd => "guest_memfd_shared".into(),
            Need::NoSharedGuestMemfd => "no_guest_memfd_shared".into(),
            Need::UserMemory2 => "user_memory2".into(),
            Need::SwProtectedVm => "sw_protected_vm".into(),
            Need::PrivateAttributes => "memory_attributes_private".into(),
            Need::PreFaultMemory => "pre_fault_memory".into(),
            Need::File { path, .. } => format!("file:{path}"),
            Need::FileAt { path, .. } => format!("file:{}", path().display()),
            Need::Tool { id, .. } => (*id).to_string(),
        }
    }
}

/// Two needs are equal when they name the same thing: the same id and description (a
/// [`Need::FileAt`]'s or [`Need::Tool`]'s function is not compared, as function addresses are
/// not unique).
impl PartialEq for Need {
    fn eq(&self, other: &Need) -> bool {
        self.id() == other.id() && self.to_string() == other.to_string()
    }
}

impl Eq for Need {}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Kvm => write!(f, "/dev/kvm and KVM_CREATE_VM"),
            Need::GuestMemfd => write!(f, "guest_memfd (KVM_CAP_GUEST_MEMFD) on a default VM"),
            Need::SharedGuestMemfd => {
                write!(f, "guest_memfd with MMAP|INIT_SHARED on a default VM")
            }
            Need::NoSharedGuestMemfd => {
                write!(f, "a kernel without guest_memfd MMAP|INIT_SHARED on a default VM")
            }
            Need::UserMemory2 => write!(f, "KVM_SET_USER_MEMORY_REGION2 (KVM_CAP_USER_MEMORY2)"),
            Need::SwProtectedVm => write!(f, "the software-protected VM type (KVM_CAP_VM_TYPES bit 1)"),
            Need::PrivateAttributes => write!(
                f,
                "KVM_MEMORY_ATTRIBUTE_PRIVATE on a software-protected VM (KVM_CAP_MEMORY_ATTRIBUTES)"
            ),
            Need::PreFaultMemory => write!(
                f,
                "KVM_PRE_FAULT_MEMORY on a software-protected VM (KVM_CAP_PRE_FAULT_MEMORY)"
            ),
            Need::File { path, from } => write!(f, "{path} ({from})"),
            Need::FileAt { path, from } => write!(f, "{} ({from})", path().display()),
            Need::Tool { id, from, .. } => write!(f, "{id} ({from})"),
        }
    }
}

/// What the running kernel offers, probed once per test binary.
#[derive(Debug, Clone)]
pub struct Host {
    /// `uname -r`.
    pub release: String,
    /// Why `/dev/kvm` or `KVM_CREATE_VM` failed, if it did.
    pub kvm_error: Option<String>,
    /// The capabilities of a default VM.
    pub default_vm: Option<Capabilities>,
    /// The capabilities of a software-protected VM, where that type exists.
    pub protected_vm: Option<Capabilities>,
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown (no /proc/sys/kernel/osrelease)".to_string())
}

impl Host {
    /// Probes the running kernel (the answer of the first call, for the whole process).
    pub fn get() -> &'static Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        HOST.get_or_init(Host::probe)
    }

    fn probe() -> Host {
        let release = kernel_release();
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                return Host {
                    release,
                    kvm_error: Some(format!("/dev/kvm: {e}")),
                    default_vm: None,
                    protected_vm: None,
                }
            }
        };
        let default_vm = match kvm.create_vm() {
            Ok(vm) => Capabilities::probe(&vm),
            Err(e) => {
                return Host {
                    release,
                    kvm_error: Some(format!("KVM_CREATE_VM: {e}")),
                    default_vm: None,
                    protected_vm: None,
                }
            }
        };
        let protected_vm = default_vm
            .supports_vm_type(KVM_X86_SW_PROTECTED_VM as u32)
            .then(|| kvm.create_vm_with_type(KVM_X86_SW_PROTECTED_VM).ok())
            .flatten()
            .map(|vm| Capabilities::probe(&vm));
        Host {
            release,
            kvm_error: None,
            default_vm: Some(default_vm),
            protected_vm,
        }
    }

    /// Why this host cannot give `need`, or `None` when it can.
    pub fn lacks(&self, need: &Need) -> Option<String> {
        if let Need::File { path, from } = need {
            return (!std::path::Path::new(path).exists())
                .then(|| format!("{path} is missing (it comes from {from})"));
        }
        if let Need::FileAt { path, from } = need {
            let path = path();
            return (!path.exists())
                .then(|| format!("{} is missing (it comes from {from})", path.display()));
        }
        if let Need::Tool { check, .. } = need {
            // (What installs it is in the need's description, which the skip line names.)
            return check().err();
        }
        if let Some(e) = &self.kvm_error {
            return Some(e.clone());
        }
        let vm = self.default_vm.unwrap_or_default();
        let protected = || {
            self.protected_vm.ok_or_else(|| {
                format!(
                    "KVM_CAP_VM_TYPES is {:#x}: no software-protected VM type",
                    vm.vm_types
                )
            })
        };
        let shared = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
        match need {
            Need::Kvm | Need::File { .. } | Need::FileAt { .. } | Need::Tool { .. } => None,
            Need::GuestMemfd => {
                (!vm.guest_memfd).then(|| "KVM_CAP_GUEST_MEMFD is 0 on a default VM".into())
            }
            Need::SharedGuestMemfd => (!vm.guest_memfd || !vm.guest_memfd_flags.contains(shared))
                .then(|| {
                    format!(
                        "KVM_CAP_GUEST_MEMFD is {}, KVM_CAP_GUEST_MEMFD_FLAGS {:#x} on a default VM",
                        u8::from(vm.guest_memfd),
                        vm.guest_memfd_flags.bits()
                    )
                }),
            Need::NoSharedGuestMemfd => (vm.guest_memfd && vm.guest_memfd_flags.contains(shared))
                .then(|| {
                    format!(
                        "KVM_CAP_GUEST_MEMFD_FLAGS is {:#x} on a default VM: the kernel has it",
                        vm.guest_memfd_flags.bits()
                    )
                }),
            Need::UserMemory2 => {
                (!vm.user_memory2).then(|| "KVM_CAP_USER_MEMORY2 is 0".into())
            }
            Need::SwProtectedVm => protected().err(),
            Need::PrivateAttributes => match protected() {
                Err(e) => Some(e),
                Ok(p) => (p.memory_attributes & uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE == 0).then(|| {
                    format!(
                        "KVM_CAP_MEMORY_ATTRIBUTES is {:#x} on a software-protected VM",
                        p.memory_attributes
                    )
                }),
            },
            Need::PreFaultMemory => match protected() {
                Err(e) => Some(e),
                Ok(p) => (!p.pre_fault_memory).then(|| {
                    "KVM_CAP_PRE_FAULT_MEMORY is 0 on a software-protected VM".into()
                }),
            },
        }
    }
}

/// One test of a `harness = false` test binary: its name, what it needs, and its body (which
/// fails by panicking, as a `#[test]` does). Made by [`kvm_test!`](crate::kvm_test).
pub struct Test {
    name: String,
    needs: Vec<Need>,
    body: fn(),
}

impl Test {
    /// A test named `name` that needs every one of `needs`.
    pub fn new(name: &str, needs: Vec<Need>, body: fn()) -> Test {
        Test {
            name: name.to_string(),
            needs,
            body,
        }
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the test needs.
    pub fn needs(&self) -> &[Need] {
        &self.needs
    }
}

/// A [`Test`] named after its function: `kvm_test!(function, Need::A, Need::B)`.
#[macro_export]
macro_rules! kvm_test {
    ($body:path $(, $need:expr)* $(,)?) => {
        $crate::testing::Test::new(stringify!($body), vec![$($need),*], $body)
    };
}

/// The skip line for `test`, missing `need` for `reason`.
pub fn skip_line(test: &str, need: &Need, reason: &str, release: &str) -> String {
    format!(
        "SKIPPED [{}] {test}: needs {need}: {reason} (kernel {release})",
        need.id()
    )
}

/// The first need of `test` that `host` lacks, with the skip line for it.
pub fn skip_of(test: &Test, host: &Host) -> Option<String> {
    test.needs.iter().find_map(|need| {
        host.lacks(need)
            .map(|reason| skip_line(&test.name, need, &reason, &host.release))
    })
}

/// Runs `tests` as libtest does (same arguments, same output), skipping as ignored each test
/// whose needs the running kernel lacks, with its skip line printed and logged.
pub fn run(tests: Vec<Test>) -> ExitCode {
    let args = Arguments::from_args();
    let host = Host::get();
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            let name = std::path::Path::new(&a)
                .file_name()?
                .to_string_lossy()
                .into_owned();
            // cargo names test binaries `<target>-<16 hex digits>`: keep the target's name.
            Some(match name.rsplit_once('-') {
                Some((target, hash))
                    if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    target.to_string()
                }
                _ => name,
            })
        })
        .unwrap_or_default();
    let trials = tests
        .into_iter()
        .map(|test| match skip_of(&test, host) {
            Some(line) => {
                if !args.list && selected(&args, &test.name) {
                    record_skip_line(&format!("{line} [{binary}]"));
                }
                Trial::test(test.name, move || Err(Failed::from(line))).with_ignored_flag(true)
            }
            None => {
                let body = test.body;
                Trial::test(test.name, move || {
                    body();
                    Ok(())
                })
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Whether libtest's name filter of `args` selects `name` (so only those skips are printed).
fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |f: &str| {
        if args.exact {
            name == f
        } else {
            name.contains(f)
        }
    };
    if args.skip.iter().any(|s| matches(s)) {
        return false;
    }
    args.filter.as_deref().is_none_or(matches)
}

/// Prints a skip line to stderr and appends it to the file named by `CCPOP_KVM_SKIP_LOG` (if
/// set). [`run`] calls it for every skipped test.
pub fn record_skip_line(line: &str) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!(
                "could not append to {SKIP_LOG_ENV}={}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

/// `/dev/kvm`, for a test whose needs [`run`] checked (panics, failing the test, if it cannot
/// be opened after all).
pub fn kvm() -> Kvm {
    match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => panic!("/dev/kvm: {e} (the harness found it usable)"),
    }
}

/// `/dev/kvm` and a default VM, for a test whose needs [`run`] checked.
pub fn default_vm() -> (Kvm, VmFd) {
    let kvm = kvm();
    let vm = match kvm.create_vm() {
        Ok(vm) => vm,
        Err(e) => panic!("KVM_CREATE_VM: {e}"),
    };
    (kvm, vm)
}

/// `/dev/kvm` and a software-protected VM, for a test that needs [`Need::SwProtectedVm`].
pub fn protected_vm() -> (Kvm, VmFd) {
    let kvm = kvm();
    let vm = match kvm.create_vm_with_type(KVM_X86_SW_PROTECTED_VM) {
        Ok(vm) => vm,
        Err(e) => panic!("KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM): {e}"),
    };
    (kvm, vm)
}
