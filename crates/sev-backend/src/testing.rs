//! An in-process model of the SEV-SNP launch of Linux 6.12, 6.18 and 7.3, for tests of code
//! built on [`SnpBackend`](crate::SnpBackend) without SNP hardware.
//!
//! [`KernelModel`] implements [`SevIoctl`] as these functions of Linux 6.18.2 behave
//! ([`KernelModel::new`]), or of the version given to [`KernelModel::for_version`]; each rule
//! below names the function it follows, and the code repeats the citation where it applies it.
//!
//! **Where the versions differ** (read in 6.12.118, 6.18.2 and 7.3.4; the rest is the same in
//! all three):
//!
//! - `sev.c: __sev_guest_init`: 6.12 takes an SNP guest's `ghcb_version` 1 (the `< 2` check
//!   is 6.18's and 7.3's), and its `sev_supported_vmsa_features` is at most `DEBUG_SWAP`
//!   (`SECURE_TSC` from 6.18 on: `sev_hardware_setup`).
//! - `sev.c: snp_launch_start`: 6.12 also requires SMT (bit 16) and refuses SINGLE_SOCKET (bit
//!   20); 7.3 checks the policy against the host's `snp_supported_policy_bits` (the firmware's
//!   bits masked by `KVM_SNP_POLICY_MASK_VALID`, [`KernelModel::supported_policy_bits`])
//!   instead of the fixed `SNP_POLICY_MASK_VALID`.
//! - `sev.c: snp_launch_update`: 6.12 accepts `len` 0 (success, no progress); 7.3 refuses a
//!   content page whose `uaddr` is 0 or not page-aligned with `-EINVAL` before any page (6.12
//!   and 6.18 copy from any address and warn on 0 per page).
//! - `guest_memfd.c: kvm_gmem_populate`: 6.12 and 6.18 walk by folio order (always 0:
//!   `__kvm_gmem_get_pfn` sets `max_order = 0`) and refuse a prepared (uptodate) folio with
//!   `-EEXIST` themselves; 7.3 walks strictly per 4 KiB page, pins each source page
//!   (`get_user_pages_fast`) before taking the mapping lock, writable for a CPUID page
//!   (`may_writeback_src`: a read-only mapping fails, `-EFAULT`), and no longer checks
//!   preparation: a page populated already is refused by `sev.c: sev_gmem_post_populate`'s RMP
//!   check (`-EEXIST`), so `LAUNCH_UPDATE` answers the same `-EIO`/0 either way.
//! - `sev.c: sev_es_sync_vmsa`: 6.12 and 7.3 refuse a vCPU whose state is protected already
//!   (`guest_state_protected`, `-EINVAL`), so a second `LAUNCH_FINISH` is `-EINVAL` before the
//!   firmware; 6.18.2 lacks the check.
//! - `guest_memfd.c`: binding a guest_memfd range another memslot holds is `-EEXIST` in 6.12.118
//!   and 7.3.4 (`kvm_gmem_commit_memory_region`), `-EINVAL` in 6.18.2 (`kvm_gmem_bind`)
//!   ([`KernelModel::add_gmem_memslot`]).
//!
//! The rules, as Linux 6.18.2 has them:
//!
//! - `virt/kvm/kvm_main.c: kvm_vm_ioctl`: a dead VM (`kvm->vm_dead`, set by `KVM_BUG`) answers
//!   every ioctl with `-EIO` before looking at it, so `kvm_sev_cmd.error` stays as sent (0).
//! - `arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl`: once `KVM_SEV_INIT2` made the VM an SNP guest,
//!   command ids below `KVM_SEV_SNP_LAUNCH_START` (such as a second `KVM_SEV_INIT2`) are `-EPERM`.
//! - `sev.c: sev_guest_init2` / `__sev_guest_init`: `-EINVAL` when the VM was initialised
//!   already (`need_init` clear), vCPUs exist, `flags` is not 0, `vmsa_features` has a bit the
//!   host does not support (`sev_supported_vmsa_features`: at most `DEBUG_SWAP` and
//!   `SECURE_TSC`), or `ghcb_version` is above 2 or (after 0 became 2) below 2. The pads are not
//!   checked. After the checks, host state can fail it (`sev_asid_new`: `-ENOTTY`, `-EBUSY`;
//!   `sev_platform_init` with the PSP status; `-ENOMEM`; `snp_guest_req_init`: `-EIO`), scripted
//!   with [`KernelModel::init_host_error`]; the VM then stays uninitialised.
//! - `sev.c: snp_launch_start`: `-ENOTTY` before `KVM_SEV_INIT2`; `-EINVAL` for a second start
//!   (`snp_context` exists), `flags` not 0, a `policy` bit outside `SNP_POLICY_MASK_VALID`, or
//!   the must-be-one bit 17 clear; a failure of `SNP_GCTX_CREATE` (`snp_context_create`) is
//!   `-ENOTTY` with the firmware status in `error`; a failure of `SNP_LAUNCH_START` (or
//!   `SNP_ACTIVATE`) is `-EIO` with its status, and the context is decommissioned. Either way
//!   no context is kept, so a later start may succeed.
//! - `sev.c: snp_launch_update`: `-EINVAL` before `KVM_SEV_SNP_LAUNCH_START` (no `snp_context`),
//!   for `len` 0 or not page-aligned, `flags` not 0, a page type other than NORMAL, ZERO,
//!   UNMEASURED, SECRETS, CPUID, and for a `gfn_start` outside a guest_memfd memslot; `uaddr` is
//!   not checked (alignment neither). Then `virt/kvm/guest_memfd.c: kvm_gmem_populate` runs page
//!   by page (6.18 gives order-0 folios, `__kvm_gmem_get_pfn` sets `max_order = 0`) up to the
//!   memslot's end, stopping at a pending signal (`-EINTR`), a page already prepared
//!   (`-EEXIST`), a page not private (`-EINVAL`), and in `sev.c: sev_gmem_post_populate` at
//!   `uaddr` 0 for a content type (a `WARN_ON_ONCE`, `-EINVAL`), a source it cannot read
//!   (`-EFAULT`) or a firmware failure. `kvm_gmem_populate` returns the pages done when there
//!   are any (the error is lost; the call succeeds and `gfn_start`, `len` and, for types other
//!   than ZERO, `uaddr` are advanced) and the error only when there are none, which
//!   `snp_launch_update` turns into `-EIO` whatever it was, with `error` = the firmware status
//!   of the failing page (0 when the firmware was not reached). `LAUNCH_UPDATE` never returns
//!   `-EAGAIN` or `-EINTR` in 6.18.
//! - `sev.c: sev_gmem_post_populate`: when the firmware rejects a CPUID page with
//!   `SEV_RET_INVALID_PARAM`, the page is reclaimed and the firmware's corrected table copied
//!   back into the source page, also when earlier pages of the call succeeded (then the call
//!   succeeds with those pages and the table is in the source for the next call to send).
//! - `drivers/crypto/ccp/sev-dev.c: __sev_do_cmd_locked`: a PSP time-out is `-ETIMEDOUT` with
//!   status 0 and marks the PSP dead (every later command `-EBUSY`, status untouched); the page
//!   reclaim that follows in `sev_gmem_post_populate` then fails, and `sev.c: snp_page_reclaim`
//!   calls `KVM_BUG`, killing the VM.
//! - `sev.c: snp_launch_finish`: `-ENOTTY` before `KVM_SEV_INIT2`, `-EINVAL` before the start
//!   and for `flags` not 0; then every vCPU's VMSA is measured (`snp_launch_update_vmsa`;
//!   `sev_es_sync_vmsa` refuses a vCPU with guest debugging or DR7 bits, `-EINVAL`, after the
//!   vCPUs before it: [`KernelModel::debug_vcpu`])
//!   *before* the ID block is read, so `-EINVAL` for an ID block (`id_block_en`) whose
//!   `id_block_uaddr` or `id_auth_uaddr` is 0 (`sev-dev.c: psp_copy_user_blob`) comes after the
//!   VMSAs went to the firmware: that launch cannot be finished any more.
//!
//! **A kernel with the in-place conversion series** ([`KernelModel::series_v8`], a
//! [`SeriesKernel`]): v8's patch text (posted 2026-06-18) applied to its base, kvm-x86/next
//! `b7fbe9a1bf9e`, which the model takes for 7.3's rules except where the patch text shows the
//! base differs (an assumption: the rest of the base was not compared with 7.3.4):
//!
//! - `sev.c: snp_launch_update` of the base checks only that a content page's source is
//!   page-aligned, so `uaddr` 0 is not refused there (7.3.4's `!params.uaddr` check came after
//!   v8: "KVM: SEV: Fix user-space triggerable WARN_ON on snp_launch_update path", 2026-06-23,
//!   whose review quotes the base blob `74fb15551e83` that v8 patch 22/46 patches too);
//!   `guest_memfd.c: kvm_gmem_populate` pins no source for `uaddr` 0;
//! - v8 patch 22/46 `sev_gmem_post_populate`: with `kvm.gmem_in_place_conversion` on, a content
//!   page without a source is encrypted and measured as it lies: the bytes the page held when
//!   it was converted to private (conversion never touches contents; the host cannot write a
//!   private page). With it off: `-EINVAL` (no warning), which `snp_launch_update` reports as
//!   `-EIO` with status 0 before the first page;
//! - v8 patch 22/46 `snp_launch_update`: partial progress advances `gfn_start` and `len`, and
//!   `uaddr` only when one was given; a rejected CPUID page is copied back only into a source;
//! - the pages must be private: with the module parameter on, in the guest_memfd's own
//!   attributes (`kvm_gmem_range_is_private`), which the model reads from the guest_memfds
//!   given to [`KernelModel::add_guest_memfd`] (converted through gmem's per-guest_memfd
//!   path, [`SevIoctl::set_private`]); the page contents it measures are read from those files
//!   as they were at conversion. A page whose content the model has no guest_memfd for is not
//!   answered: the call stops there and [`KernelModel::violations`] says why. A file changed
//!   after its conversion (which a real guest_memfd's `SIGBUS` forbids and gmem's views refuse)
//!   is recorded in [`KernelModel::violations`], and the content at conversion is measured.
//!
//! What the model cannot follow is the PSP firmware: which statuses it returns and when (the
//! tests script them with [`Step`], [`KernelModel::start_fw_error`],
//! [`KernelModel::finish_fw_error`] and [`KernelModel::cpuid_check`]), and what a second
//! `LAUNCH_FINISH` after VMSAs were measured does (6.18 re-syncs VMSAs it already gave to the
//! firmware; the model records the attempt in [`KernelModel::violations`] and answers `-EIO`
//! with status `SEV_RET_INVALID_GUEST_STATE`, an assumption). It assumes the page reclaim after
//! a firmware failure succeeds, and that a failed firmware command leaves the guest context as
//! it was (so the same page may be sent again).
//!
//! The model keeps its own ledger (pages in populate order with their type), records every
//! command's parameter bytes, and computes the launch digest the firmware would, with its own
//! `PAGE_INFO` code and a second SHA-384 implementation (`sha2`; the crate measures with
//! `cc-hash`), so tests can compare it with the crate's offline [`measure`](crate::measure).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;

use gmem::{GuestMemfd, MemoryState};

use crate::error::SEV_RET_INVALID_PARAM;
use crate::ioctl::{SevCmd, SevIoctl, SevIoctlError, UpdateSource};
use crate::kernel::{KernelVersion, SeriesKernel};
use crate::uapi::{
    kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update,
};

const PAGE: u64 = 4096;

/// `SVM_SEV_FEAT_DEBUG_SWAP` (`arch/x86/include/asm/svm.h`, Linux 6.18.2).
pub const SVM_SEV_FEAT_DEBUG_SWAP: u64 = 1 << 5;
/// `SVM_SEV_FEAT_SECURE_TSC` (`arch/x86/include/asm/svm.h`, Linux 6.18.2).
pub const SVM_SEV_FEAT_SECURE_TSC: u64 = 1 << 9;

/// `SEV_RET_INVALID_GUEST_STATE` (`include/uapi/linux/psp-sev.h`).
const SEV_RET_INVALID_GUEST_STATE: u32 = 0x02;

/// What happens during one `LAUNCH_UPDATE` call, beyond what the model decides itself (pages
/// not private, populated twice, outside the memslot, an unreadable source, a CPUID table
/// [`KernelModel::cpuid_check`] rejects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing external: every page asked is populated unless the model stops it.
    All,
    /// A signal is pending when the populate reaches the page after this many
    /// (`virt/kvm/guest_memfd.c: kvm_gmem_populate`, `-EINTR`).
    Signal(u64),
    /// The firmware fails `SNP_LAUNCH_UPDATE` of the page after this many, with this status
    /// (`sev.c: sev_gmem_post_populate`, `fw_err`).
    Firmware {
        /// Pages done first.
        after: u64,
        /// The firmware status.
        code: u32,
    },
    /// The PSP times out on the page after this many (`sev-dev.c: __sev_do_cmd_locked`): the
    /// PSP is dead from then on, and the failed page reclaim kills the VM (`sev.c:
    /// snp_page_reclaim`, `KVM_BUG`).
    PspTimeout(u64),
}

/// One command as the model received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Command id.
    pub id: u32,
    /// The parameter struct's bytes on entry.
    pub params: Vec<u8>,
}

/// One memslot of the model's VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memslot {
    /// First guest-physical address (page-aligned).
    pub gpa: u64,
    /// Length in bytes (page-aligned).
    pub len: u64,
    /// Whether it is backed by guest_memfd (`KVM_MEM_GUEST_MEMFD`).
    pub guest_memfd: bool,
}

/// A guest_memfd given to the model ([`KernelModel::add_guest_memfd`]), bound at `gpa`.
struct ModelGmem {
    gmem: GuestMemfd,
    /// The same file, for reading page contents as the firmware sees them.
    file: File,
    gpa: u64,
    offset: u64,
    len: u64,
}

/// Decides whether the firmware accepts a CPUID page: returns `Some(corrected page)` to reject.
pub type CpuidCheck = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The model. See the module docs.
pub struct KernelModel {
    /// The kernel whose rules are followed.
    pub version: KernelVersion,
    /// The in-place conversion series the kernel carries ([`KernelModel::series_v8`]), if any.
    pub series: Option<SeriesKernel>,
    /// 7.3: the firmware's policy bits (`sev.c: sev_hardware_setup` masks them by
    /// `KVM_SNP_POLICY_MASK_VALID` into `snp_supported_policy_bits`; the model does the same);
    /// by default 6.18's `SNP_POLICY_MASK_VALID`. Not used by 6.12 and 6.18.
    pub supported_policy_bits: u64,
    /// vCPUs created (`KVM_CREATE_VCPU`).
    pub vcpus: u32,
    /// guest_memfd bindings made through [`add_gmem_memslot`](Self::add_gmem_memslot):
    /// (guest_memfd id, first page offset, pages).
    pub gmem_bindings: Vec<(u32, u64, u64)>,
    /// Answers for the next `LAUNCH_UPDATE` calls (empty: [`Step::All`]).
    pub script: VecDeque<Step>,
    /// The VM's memslots. [`KernelModel::new`] gives one guest_memfd memslot over the first
    /// 2^52 bytes (as a VMM with all guest memory in guest_memfd).
    pub memslots: Vec<Memslot>,
    /// The host's `sev_supported_vmsa_features` (`sev.c: sev_hardware_setup`); by default
    /// every feature the version can offer (6.12: `DEBUG_SWAP`; 6.18, 7.3: and `SECURE_TSC`).
    pub supported_vmsa_features: u64,
    /// Whether vCPUs were created (then `KVM_SEV_INIT2` is `-EINVAL`).
    pub vcpus_created: bool,
    /// A host failure of the next `KVM_SEV_INIT2` after its parameters passed, once (host
    /// state the model cannot decide): `(errno, error)` as `sev.c: __sev_guest_init` gives it:
    /// `sev_asid_new` (`ENOTTY` when the host has no ASID range for the type, `EBUSY` when all
    /// are taken or the misc cgroup is full), `sev_platform_init` (its errno, with the PSP
    /// status in `error`), `ENOMEM`, `snp_guest_req_init` (`EIO`). The VM stays uninitialised
    /// (`sev->active` is cleared, `need_init` still set), so a later `KVM_SEV_INIT2` may succeed.
    pub init_host_error: Option<(i32, u32)>,
    /// The firmware status `SNP_GCTX_CREATE` fails with, once (firmware internals): the start
    /// is then `-ENOTTY` with that status (`sev.c: snp_launch_start`).
    pub gctx_create_fw_error: Option<u32>,
    /// The firmware status `SNP_LAUNCH_START` fails with, once (firmware internals).
    pub start_fw_error: Option<u32>,
    /// The firmware status `SNP_LAUNCH_FINISH` fails with, once (firmware internals).
    pub finish_fw_error: Option<u32>,
    /// The firmware's CPUID check (`None`: every table accepted).
    pub cpuid_check: Option<CpuidCheck>,
    /// VMSA pages KVM measures at `LAUNCH_FINISH` (at `SNP_VMSA_GPA`), one per vCPU.
    pub vmsas: Vec<Vec<u8>>,
    /// The index of a vCPU with guest debugging or DR7 bits set (`KVM_SET_GUEST_DEBUG`):
    /// `sev.c: sev_es_sync_vmsa` refuses it with `-EINVAL` at `LAUNCH_FINISH`, after the
    /// VMSAs of the vCPUs before it went to the firmware.
    pub debug_vcpu: Option<usize>,
    /// Every command received.
    pub calls: Vec<Call>,
    /// Private pages (by page address).
    pub private: BTreeSet<u64>,
    /// Populated pages in populate order: (address, page type, content as the firmware saw it).
    pub ledger: Vec<(u64, u8, Vec<u8>)>,
    /// Addresses of pages a call tried to populate a second time (must stay empty).
    pub twice: Vec<u64>,
    /// Addresses of pages a call tried to populate while shared (must stay empty).
    pub not_private: Vec<u64>,
    /// CPUID corrections written into a buffer the backend marked read-only (must stay empty).
    pub wrote_shared: Vec<u64>,
    /// Kernel warnings (`WARN_ON_ONCE`) the calls hit (must stay empty).
    pub warnings: Vec<String>,
    /// Commands sent into a state the model cannot follow (must stay empty).
    pub violations: Vec<String>,
    /// The `/dev/sev` fd the VMM's layer puts in every command's `sev_fd` (`struct
    /// kvm_sev_cmd`), checked as the kernel checks it (`None`: not checked). The kernel issues
    /// `SNP_LAUNCH_START` on that fd and then **remembers its number** (`sev.c:
    /// snp_launch_start`: `sev->fd = argp->sev_fd`, Linux 6.12, 6.18.2, 7.3.4):
    /// `SNP_LAUNCH_FINISH` (`snp_launch_finish`: `sev_issue_cmd(kvm, ...)`) and every guest
    /// request for the VM's life (`snp_handle_guest_req`, [`guest_request`](Self::guest_request))
    /// go through the remembered number, looked up in the VMM's fd table at each use
    /// (`__sev_issue_cmd`: `-EBADF` when it is not open, or not the SEV device), while the
    /// VMSA updates at finish go through the finish command's own `sev_fd`.
    pub sev_device: Option<std::os::fd::RawFd>,
    /// The fd number `SNP_LAUNCH_START` remembered, and the (device, inode) of the file it was.
    remembered_sev: Option<(std::os::fd::RawFd, (u64, u64))>,
    populated: BTreeSet<u64>,
    gmems: Vec<ModelGmem>,
    /// What each page converted through a guest_memfd held at its conversion (GPA -> page).
    at_conversion: BTreeMap<u64, Vec<u8>>,
    digest: [u8; 48],
    snp_active: bool,
    snp_context: bool,
    vmsas_measured: bool,
    psp_dead: bool,
    vm_dead: bool,
}

impl Default for KernelModel {
    fn default() -> Self {
        KernelModel::new()
    }
}

impl std::fmt::Debug for KernelModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelModel")
            .field("calls", &self.calls.len())
            .field("populated", &self.populated.len())
            .field("twice", &self.twice)
            .field("vm_dead", &self.vm_dead)
            .finish()
    }
}

fn model_sha384(data: &[u8]) -> [u8; 48] {
    <sha2::Sha384 as sha2::Digest>::digest(data).into()
}

/// The firmware's record for one page, written out here independently of
/// [`crate::page_info`]: DIGEST_CUR, CONTENTS, LENGTH = 0x70, PAGE_TYPE, zeros, GPA.
fn fw_extend(cur: &[u8; 48], page_type: u8, gpa: u64, content: Option<&[u8]>) -> [u8; 48] {
    let contents: [u8; 48] = match content {
        Some(c) if page_type == 1 || page_type == 2 => model_sha384(c),
        _ => [0; 48],
    };
    let mut h = <sha2::Sha384 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, cur);
    sha2::Digest::update(&mut h, contents);
    sha2::Digest::update(&mut h, [0x70, 0x00, page_type, 0, 0, 0, 0, 0]);
    sha2::Digest::update(&mut h, gpa.to_le_bytes());
    sha2::Digest::finalize(h).into()
}

fn err(errno: i32, fw_error: u32) -> Result<(), SevIoctlError> {
    Err(SevIoctlError { errno, fw_error })
}

/// The (device, inode) of the open file `fd` names in this process, `None` when no file is
/// open under that number: what `__sev_issue_cmd`'s `CLASS(fd, f)(fd)` finds.
fn open_file(fd: std::os::fd::RawFd) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat only writes the stat buffer, which is valid and as large as it expects; a
    // closed or foreign fd number only makes it fail with EBADF.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// `SNP_POLICY_MASK_VALID` of `sev.c` (Linux 6.18.2): API minor and major (bits 0-15), SMT
/// (16), the must-be-one bit 17, DEBUG (19), SINGLE_SOCKET (20).
const POLICY_VALID: u64 = 0xffff | 1 << 16 | 1 << 17 | 1 << 19 | 1 << 20;

/// Why a populate stopped (`kvm_gmem_populate`'s `ret`, and the firmware status).
struct Stop {
    fw_error: u32,
}

impl KernelModel {
    /// A fresh SNP VM (`KVM_X86_SNP_VM`, before `KVM_SEV_INIT2`): one guest_memfd memslot,
    /// nothing private, nothing populated.
    pub fn new() -> Self {
        KernelModel::for_version(KernelVersion::V6_18)
    }

    /// A fresh SNP VM on `version`'s rules (see the module docs for what differs).
    pub fn for_version(version: KernelVersion) -> Self {
        KernelModel {
            version,
            series: None,
            supported_policy_bits: POLICY_VALID,
            vcpus: 0,
            gmem_bindings: Vec::new(),
            script: VecDeque::new(),
            memslots: vec![Memslot {
                gpa: 0,
                len: 1 << 52,
                guest_memfd: true,
            }],
            supported_vmsa_features: version.vmsa_features_known(),
            vcpus_created: false,
            init_host_error: None,
            gctx_create_fw_error: None,
            start_fw_error: None,
            finish_fw_error: None,
            cpuid_check: None,
            vmsas: Vec::new(),
            debug_vcpu: None,
            calls: Vec::new(),
            private: BTreeSet::new(),
            ledger: Vec::new(),
            twice: Vec::new(),
            not_private: Vec::new(),
            wrote_shared: Vec::new(),
            warnings: Vec::new(),
            violations: Vec::new(),
            sev_device: None,
            remembered_sev: None,
            populated: BTreeSet::new(),
            gmems: Vec::new(),
            at_conversion: BTreeMap::new(),
            digest: [0; 48],
            snp_active: false,
            snp_context: false,
            vmsas_measured: false,
            psp_dead: false,
            vm_dead: false,
        }
    }

    /// A fresh SNP VM on a kernel with the in-place conversion series v8, its module parameter
    /// `kvm.gmem_in_place_conversion` as given (see the module docs; 7.3's rules elsewhere).
    pub fn series_v8(in_place_conversion: bool) -> Self {
        let mut m = KernelModel::for_version(KernelVersion::V7_3);
        m.series = Some(SeriesKernel::v8(in_place_conversion));
        m
    }

    /// Gives the model a guest_memfd bound at `gpa..gpa+len` from file offset `offset` (recorded
    /// on the handle with [`GuestMemfd::record_memslot`], slot = its index): conversions of
    /// ranges it covers go through it ([`GuestMemfd::convert_gpa`], so through its conversion
    /// path, e.g. gmem's `SeriesModel`), and in-place populate reads its pages. Refused as
    /// `record_memslot` refuses the range, or when the file cannot be duplicated.
    pub fn add_guest_memfd(
        &mut self,
        gmem: GuestMemfd,
        gpa: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), gmem::Error> {
        let slot = u32::try_from(self.gmems.len()).unwrap_or(u32::MAX);
        gmem.record_memslot(slot, gpa, offset, len)?;
        let fd = std::os::fd::AsFd::as_fd(&gmem)
            .try_clone_to_owned()
            .map_err(|source| gmem::Error::Io {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                offset,
                len,
                source,
            })?;
        self.gmems.push(ModelGmem {
            gmem,
            file: File::from(fd),
            gpa,
            offset,
            len,
        });
        Ok(())
    }

    /// The `i`-th guest_memfd given to [`add_guest_memfd`](Self::add_guest_memfd).
    pub fn guest_memfd(&self, i: usize) -> Option<&GuestMemfd> {
        self.gmems.get(i).map(|g| &g.gmem)
    }

    /// The `i`-th guest_memfd, mutably (to write through a shared view of a range not yet
    /// converted).
    pub fn guest_memfd_mut(&mut self, i: usize) -> Option<&mut GuestMemfd> {
        self.gmems.get_mut(i).map(|g| &mut g.gmem)
    }

    /// The guest_memfd covering `gpa`, and the page's file offset.
    fn gmem_of(&self, gpa: u64) -> Option<(&ModelGmem, u64)> {
        self.gmems
            .iter()
            .find(|g| gpa >= g.gpa && gpa - g.gpa < g.len)
            .map(|g| (g, g.offset + (gpa - g.gpa)))
    }

    /// The page at `gpa` as its guest_memfd holds it now, if one covers it.
    fn file_page(&self, gpa: u64) -> Option<Vec<u8>> {
        let (g, offset) = self.gmem_of(gpa)?;
        let mut page = vec![0u8; PAGE as usize];
        g.file.read_exact_at(&mut page, offset).ok()?;
        Some(page)
    }

    /// Whether the page at `gpa` is private where the kernel looks: with the series' module
    /// parameter on, the guest_memfd's own attributes (v8 `kvm_gmem_range_is_private`), as the
    /// handle records what the kernel accepted; otherwise the VM's attributes.
    fn page_private(&self, gpa: u64) -> bool {
        let per_file = self.series.is_some_and(|s| s.in_place_conversion);
        match self.gmem_of(gpa) {
            Some((g, offset)) if per_file => g
                .gmem
                .private_ranges()
                .iter()
                .any(|&(a, b)| offset >= a && offset < b),
            _ => self.private.contains(&gpa),
        }
    }

    /// The launch digest the firmware computed from what it was given.
    pub fn launch_digest(&self) -> [u8; 48] {
        self.digest
    }

    /// Whether the page at `gpa` was populated.
    pub fn is_populated(&self, gpa: u64) -> bool {
        self.populated.contains(&(gpa & !(PAGE - 1)))
    }

    /// Bytes populated inside `gpa..gpa+len`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        self.populated.range(gpa..gpa.saturating_add(len)).count() as u64 * PAGE
    }

    /// Whether the VM is dead (`kvm->vm_dead`): every ioctl on it is `-EIO` from now on.
    pub fn vm_dead(&self) -> bool {
        self.vm_dead
    }

    /// Whether the PSP was marked dead after a time-out (`sev-dev.c: psp_dead`).
    pub fn psp_dead(&self) -> bool {
        self.psp_dead
    }

    /// Whether `LAUNCH_FINISH` measured the VMSAs (whatever it returned).
    pub fn vmsas_measured(&self) -> bool {
        self.vmsas_measured
    }

    /// Adds a guest_memfd memslot over `gpa..gpa+len`, bound to guest_memfd `gmem` (any id the
    /// test chooses) at `offset`, as `KVM_SET_USER_MEMORY_REGION2` does: a range of that
    /// guest_memfd another memslot holds is refused, `EEXIST` in 6.12.118 and 7.3.4
    /// (`virt/kvm/guest_memfd.c: kvm_gmem_commit_memory_region`), `EINVAL` in 6.18.2
    /// (`kvm_gmem_bind`); an address, length or offset not page-aligned, or a length of 0, is
    /// `EINVAL` (`virt/kvm/kvm_main.c: check_memory_region_flags`, `kvm_set_memory_region`).
    pub fn add_gmem_memslot(
        &mut self,
        gpa: u64,
        len: u64,
        gmem: u32,
        offset: u64,
    ) -> Result<(), i32> {
        if len == 0
            || !gpa.is_multiple_of(PAGE)
            || !len.is_multiple_of(PAGE)
            || !offset.is_multiple_of(PAGE)
            || gpa.checked_add(len).is_none()
            || offset.checked_add(len).is_none()
        {
            return Err(libc::EINVAL);
        }
        let (start, pages) = (offset / PAGE, len / PAGE);
        if self
            .gmem_bindings
            .iter()
            .any(|&(g, s, n)| g == gmem && s < start + pages && start < s + n)
        {
            return Err(self.version.gmem_rebind_errno());
        }
        if self
            .memslots
            .iter()
            .any(|m| m.gpa < gpa + len && gpa < m.gpa.saturating_add(m.len))
        {
            // kvm_main.c: kvm_set_memory_region: a GPA range another memslot covers.
            return Err(libc::EEXIST);
        }
        self.gmem_bindings.push((gmem, start, pages));
        self.memslots.push(Memslot {
            gpa,
            len,
            guest_memfd: true,
        });
        Ok(())
    }

    fn slot_of(&self, gpa: u64) -> Option<Memslot> {
        self.memslots
            .iter()
            .copied()
            .find(|s| gpa >= s.gpa && gpa - s.gpa < s.len)
    }

    /// `sev.c: __sev_guest_init` through `sev_guest_init2` (Linux 6.18.2).
    fn init2(&mut self, p: &kvm_sev_init) -> Result<(), SevIoctlError> {
        // sev_guest_init2's `!need_init` -> -EINVAL cannot be reached here: need_init is
        // cleared only by a successful init, after which sev_mem_enc_ioctl answers EPERM.
        // __sev_guest_init: `kvm->created_vcpus`, `data->flags`.
        if self.vcpus_created || p.flags != 0 {
            return err(libc::EINVAL, 0);
        }
        // `data->vmsa_features & ~valid_vmsa_features` (SNP: SECURE_TSC stays valid).
        // (The host's features are at most what the version offers: sev_hardware_setup.)
        let supported = self.supported_vmsa_features & self.version.vmsa_features_known();
        if p.vmsa_features & !supported != 0 {
            return err(libc::EINVAL, 0);
        }
        // `ghcb_version > GHCB_VERSION_MAX (2)`; 0 becomes 2; `snp_active && ghcb_version < 2`.
        let ghcb = if p.ghcb_version == 0 {
            2
        } else {
            p.ghcb_version
        };
        // 6.12 has no `snp_active && ghcb_version < 2` check.
        if p.ghcb_version > 2 || (ghcb < 2 && !self.version.snp_ghcb_v1_allowed()) {
            return err(libc::EINVAL, 0);
        }
        // sev_asid_new, sev_platform_init (argp->error = init_args.error), allocations.
        if let Some((errno, code)) = self.init_host_error.take() {
            return err(errno, code);
        }
        self.snp_active = true;
        Ok(())
    }

    /// `sev.c: snp_launch_start` (Linux 6.18.2).
    fn launch_start(&mut self, p: &kvm_sev_snp_launch_start) -> Result<(), SevIoctlError> {
        if !self.snp_active {
            return err(libc::ENOTTY, 0);
        }
        if self.snp_context || p.flags != 0 {
            return err(libc::EINVAL, 0);
        }
        // 6.12 and 6.18: SNP_POLICY_MASK_VALID; 7.3: snp_supported_policy_bits.
        // (7.3: the host's bits are the firmware's masked by KVM_SNP_POLICY_MASK_VALID.)
        let valid = match self.version {
            KernelVersion::V7_3 => self.supported_policy_bits & self.version.policy_mask(),
            _ => POLICY_VALID,
        };
        if p.policy & !valid != 0 || p.policy & (1 << 17) == 0 {
            return err(libc::EINVAL, 0);
        }
        // 6.12: `!(policy & SNP_POLICY_MASK_SMT)`, `policy & SNP_POLICY_MASK_SINGLE_SOCKET`.
        if self.version.policy_needs_smt_no_single_socket()
            && (p.policy & (1 << 16) == 0 || p.policy & (1 << 20) != 0)
        {
            return err(libc::EINVAL, 0);
        }
        // snp_context_create: SNP_GCTX_CREATE failed (its status is in `error`), no context
        // was kept, and snp_launch_start answers -ENOTTY. It is issued on the command's own
        // `sev_fd` (`__sev_issue_cmd(argp->sev_fd, ...)`), so a closed fd fails it the same way.
        let device = match self.sev_device {
            Some(fd) => match open_file(fd) {
                Some(file) => Some((fd, file)),
                None => return err(libc::ENOTTY, 0),
            },
            None => None,
        };
        if let Some(code) = self.gctx_create_fw_error.take() {
            return err(libc::ENOTTY, code);
        }
        if let Some(code) = self.start_fw_error.take() {
            // __sev_issue_cmd fails (-EIO, status); snp_decommission_context frees the context.
            return err(libc::EIO, code);
        }
        self.snp_context = true;
        // sev->fd = argp->sev_fd: the number, kept for the VM's life.
        self.remembered_sev = device;
        Ok(())
    }

    /// `__sev_issue_cmd(sev->fd, ...)` on the fd number `SNP_LAUNCH_START` remembered:
    /// `-EBADF` when nothing is open under it now, or a file other than the one it named (the
    /// kernel accepts any open SEV device file there: `sev_issue_cmd_external_user` checks
    /// `f_op == &sev_fops`; every open of the device node has its device and inode).
    fn remembered_fd_ok(&self) -> Result<(), SevIoctlError> {
        match self.remembered_sev {
            Some((fd, file)) if open_file(fd) != Some(file) => err(libc::EBADF, 0),
            _ => Ok(()),
        }
    }

    /// An SNP guest request (`sev.c: snp_handle_guest_req`, on the guest's `MSG_REPORT_REQ`
    /// and others, Linux 6.12, 6.18.2, 7.3.4): issued on the `/dev/sev` fd number
    /// `SNP_LAUNCH_START` remembered, whatever the VMM holds now. `Err(EBADF)` once the VMM has
    /// closed that fd (a VMM that drops a backend owning its `/dev/sev` fd, or reuses the
    /// number for another file); `Err(EINVAL)` before the launch finished.
    pub fn guest_request(&mut self) -> Result<(), i32> {
        if !self.vmsas_measured {
            return Err(libc::EINVAL);
        }
        self.remembered_fd_ok().map_err(|e| e.errno)
    }

    /// `sev.c: snp_launch_finish` (Linux 6.18.2).
    fn launch_finish(&mut self, p: &kvm_sev_snp_launch_finish) -> Result<(), SevIoctlError> {
        if !self.snp_active {
            return err(libc::ENOTTY, 0);
        }
        if !self.snp_context || p.flags != 0 {
            return err(libc::EINVAL, 0);
        }
        // snp_launch_update_vmsa: every vCPU's VMSA goes to the firmware first.
        if self.vmsas_measured && self.version.second_finish_einval() {
            // 6.12, 7.3: sev_es_sync_vmsa refuses a vCPU with guest_state_protected.
            return err(libc::EINVAL, 0);
        }
        // snp_launch_update_vmsa issues each VMSA's LAUNCH_UPDATE on the finish command's own
        // sev_fd (`__sev_issue_cmd(argp->sev_fd, ...)`): a closed one fails the first.
        if self.sev_device.is_some_and(|fd| open_file(fd).is_none()) && !self.vmsas.is_empty() {
            return err(libc::EBADF, 0);
        }
        if self.vmsas_measured {
            // 6.18 syncs and hands over VMSAs the firmware already owns: firmware internals.
            self.violations
                .push("KVM_SEV_SNP_LAUNCH_FINISH after the VMSAs were measured".into());
            return err(libc::EIO, SEV_RET_INVALID_GUEST_STATE);
        }
        // sev_es_sync_vmsa: a vCPU with guest_debug or DR7 bits is -EINVAL, the vCPUs before
        // it measured (none when it is the first: then the launch can still be finished).
        if let Some(d) = self.debug_vcpu.filter(|d| *d < self.vmsas.len()) {
            for v in &self.vmsas[..d] {
                self.digest = fw_extend(&self.digest, 2, crate::uapi::SNP_VMSA_GPA, Some(v));
            }
            self.vmsas_measured = d > 0;
            return err(libc::EINVAL, 0);
        }
        for v in std::mem::take(&mut self.vmsas) {
            self.digest = fw_extend(&self.digest, 2, crate::uapi::SNP_VMSA_GPA, Some(&v));
        }
        self.vmsas_measured = true;
        // Then the ID block and its authentication structure (sev-dev.c: psp_copy_user_blob:
        // a zero address is -EINVAL).
        if p.id_block_en != 0 && (p.id_block_uaddr == 0 || p.id_auth_uaddr == 0) {
            return err(libc::EINVAL, 0);
        }
        // SNP_LAUNCH_FINISH itself: sev_issue_cmd(kvm, ...), on the remembered fd number.
        self.remembered_fd_ok()?;
        if let Some(code) = self.finish_fw_error.take() {
            return err(libc::EIO, code);
        }
        Ok(())
    }

    /// The content an in-place populate of the page at `gpa` measures: what it held when it was
    /// converted (or, for a page private since the file was created, what the file holds).
    /// `None`, with the reason in [`violations`](Self::violations), for a page no guest_memfd
    /// of the model covers (its content is unknown here).
    fn in_place_page(&mut self, gpa: u64) -> Option<Vec<u8>> {
        let Some(now) = self.file_page(gpa) else {
            self.violations.push(format!(
                "in-place populate of GPA {gpa:#x}: no guest_memfd given to the model covers it, so its content is unknown"
            ));
            return None;
        };
        match self.at_conversion.get(&gpa) {
            Some(then) if *then != now => {
                self.violations.push(format!(
                    "GPA {gpa:#x} was written after its conversion to private (a real guest_memfd refuses host access to private pages); measuring what it held at conversion"
                ));
                Some(then.clone())
            }
            Some(then) => Some(then.clone()),
            None => Some(now),
        }
    }

    /// `sev.c: snp_launch_update` and `guest_memfd.c: kvm_gmem_populate` (Linux 6.18.2).
    fn launch_update(
        &mut self,
        p: &mut kvm_sev_snp_launch_update,
        mut source: Option<UpdateSource<'_>>,
    ) -> Result<(), SevIoctlError> {
        if !self.snp_active || !self.snp_context {
            return err(libc::EINVAL, 0);
        }
        // 6.12 checks only `!PAGE_ALIGNED(len)`; 6.18 and 7.3 also `!len`.
        if (p.len == 0 && self.version.zero_len_update_refused())
            || !p.len.is_multiple_of(PAGE)
            || p.flags != 0
            || !matches!(p.type_, 1 | 3..=6)
        {
            return err(libc::EINVAL, 0);
        }
        // 7.3: a content page's `uaddr` must be non-zero and page-aligned, before the memslot.
        // Series v8's base: page-aligned only (`if (!PAGE_ALIGNED(src))`), so 0 passes.
        let unaligned = !p.uaddr.is_multiple_of(PAGE);
        let refused = match self.series {
            Some(_) => unaligned,
            None => p.uaddr == 0 || unaligned,
        };
        if self.version.aligned_source_required() && p.type_ != 3 && refused {
            return err(libc::EINVAL, 0);
        }
        if p.len == 0 {
            // 6.12: kvm_gmem_populate of 0 pages returns 0: success, nothing advanced (the
            // memslot is still looked up first).
            return match p.gfn_start.checked_mul(PAGE).and_then(|g| self.slot_of(g)) {
                Some(s) if s.guest_memfd => Ok(()),
                _ => err(libc::EINVAL, 0),
            };
        }
        // `gfn_to_memslot(kvm, params.gfn_start)` must have guest_memfd.
        let Some(slot) = p
            .gfn_start
            .checked_mul(PAGE)
            .and_then(|gpa| self.slot_of(gpa))
            .filter(|s| s.guest_memfd)
        else {
            return err(libc::EINVAL, 0);
        };
        let step = self.script.pop_front().unwrap_or(Step::All);
        let zero = p.type_ == 3;
        // `src = type == ZERO ? NULL : uaddr`.
        let src = if zero { 0 } else { p.uaddr };
        let base = source.as_ref().map_or(0, |s| s.bytes().as_ptr() as u64);
        // kvm_gmem_populate: `npages = min(slot->npages - (start_gfn - slot->base_gfn), npages)`.
        let slot_end = (slot.gpa + slot.len) / PAGE;
        let npages = (p.len / PAGE).min(slot_end - p.gfn_start);
        let mut stop: Option<Stop> = None;
        let mut done = 0;
        while done < npages {
            let gpa = (p.gfn_start + done) * PAGE;
            if step == Step::Signal(done) {
                stop = Some(Stop { fw_error: 0 });
                break;
            }
            let off = src.wrapping_sub(base).wrapping_add(done * PAGE);
            let v7 = self.version == KernelVersion::V7_3;
            if v7 && !zero && src != 0 {
                // 7.3 kvm_gmem_populate: get_user_pages_fast(src + i * PAGE_SIZE, 1,
                // FOLL_WRITE for CPUID) before the mapping lock: -EFAULT for a source it
                // cannot pin, or one lent read-only when the kernel may write it back.
                let readable = usize::try_from(off).ok().is_some_and(|o| {
                    source.as_ref().is_some_and(|s| {
                        o.checked_add(PAGE as usize)
                            .is_some_and(|e| e <= s.bytes().len())
                    })
                });
                let writable = matches!(source, Some(UpdateSource::Bounce(_)));
                if !readable || (p.type_ == 6 && !writable) {
                    stop = Some(Stop { fw_error: 0 });
                    break;
                }
            }
            // 6.12, 6.18 kvm_gmem_populate: `is_prepared` -> -EEXIST (checked before the
            // attributes); 7.3: sev_gmem_post_populate's RMP check (after them) -> -EEXIST.
            if !v7 && self.populated.contains(&gpa) {
                self.twice.push(gpa);
                stop = Some(Stop { fw_error: 0 });
                break;
            }
            // kvm_range_has_memory_attributes(PRIVATE) -> -EINVAL (series v8 with the module
            // parameter on: kvm_gmem_range_is_private, the file's attributes).
            if !self.page_private(gpa) {
                self.not_private.push(gpa);
                stop = Some(Stop { fw_error: 0 });
                break;
            }
            if v7 && self.populated.contains(&gpa) {
                self.twice.push(gpa);
                stop = Some(Stop { fw_error: 0 });
                break;
            }
            // sev_gmem_post_populate.
            let mut in_place: Option<Vec<u8>> = None;
            if !zero && src == 0 {
                match self.series {
                    // v8 patch 22/46: no source page, in-place conversion on: the page is
                    // encrypted as it lies.
                    Some(s) if s.populates_in_place() => match self.in_place_page(gpa) {
                        Some(page) => in_place = Some(page),
                        None => {
                            stop = Some(Stop { fw_error: 0 });
                            break;
                        }
                    },
                    // v8 patch 22/46: `!gmem_in_place_conversion && !src_page` -> -EINVAL.
                    Some(_) => {
                        stop = Some(Stop { fw_error: 0 });
                        break;
                    }
                    None => {
                        self.warnings.push(format!(
                            "sev_gmem_post_populate: WARN_ON_ONCE(type {} && !src) at GPA {gpa:#x}",
                            p.type_
                        ));
                        stop = Some(Stop { fw_error: 0 });
                        break;
                    }
                }
            }
            let content: Option<Vec<u8>> = if zero {
                None
            } else if in_place.is_some() {
                in_place
            } else {
                // copy_from_user(src + i * PAGE_SIZE) -> -EFAULT.
                let bytes = source.as_ref().and_then(|s| {
                    let o = usize::try_from(off).ok()?;
                    s.bytes().get(o..o.checked_add(PAGE as usize)?)
                });
                match bytes {
                    Some(b) => Some(b.to_vec()),
                    None => {
                        stop = Some(Stop { fw_error: 0 });
                        break;
                    }
                }
            };
            // __sev_issue_cmd(SEV_CMD_SNP_LAUNCH_UPDATE). (A dead PSP fails every later
            // command with -EBUSY, but the model's VM died with it: kvm_vm_ioctl answers first.)
            if step == Step::PspTimeout(done) {
                self.psp_dead = true;
                self.vm_dead = true;
                stop = Some(Stop { fw_error: 0 });
                break;
            }
            let mut fw: Option<u32> = match step {
                Step::Firmware { after, code } if after == done => Some(code),
                _ => None,
            };
            if self.vmsas_measured && fw.is_none() {
                // After LAUNCH_FINISH the guest context is no longer launching: firmware
                // internals (the status is an assumption).
                self.violations.push(format!(
                    "KVM_SEV_SNP_LAUNCH_UPDATE at GPA {gpa:#x} after LAUNCH_FINISH"
                ));
                fw = Some(SEV_RET_INVALID_GUEST_STATE);
            }
            let mut fixed: Option<Vec<u8>> = None;
            if fw.is_none() && p.type_ == 6 {
                if let (Some(check), Some(c)) = (self.cpuid_check.as_ref(), content.as_deref()) {
                    fixed = check(c);
                    if fixed.is_some() {
                        fw = Some(SEV_RET_INVALID_PARAM);
                    }
                }
            }
            if let Some(code) = fw {
                // fw_err: the page is reclaimed; for CPUID + INVALID_PARAM the page (with the
                // firmware's table) is copied back to `src + i * PAGE_SIZE`.
                // (v8 patch 22/46: `&& src_page`: in place, nothing is copied back.)
                if p.type_ == 6 && code == SEV_RET_INVALID_PARAM && src != 0 {
                    let page = fixed.or(content).unwrap_or_default();
                    match source.as_mut() {
                        Some(UpdateSource::Bounce(b)) => {
                            if let Some(dst) = usize::try_from(off)
                                .ok()
                                .and_then(|o| b.get_mut(o..o + PAGE as usize))
                            {
                                let n = page.len().min(dst.len());
                                dst[..n].copy_from_slice(&page[..n]);
                            }
                        }
                        _ => self.wrote_shared.push(gpa),
                    }
                }
                stop = Some(Stop { fw_error: code });
                break;
            }
            self.digest = fw_extend(&self.digest, p.type_, gpa, content.as_deref());
            self.populated.insert(gpa);
            self.ledger
                .push((gpa, p.type_, content.unwrap_or_default()));
            done += 1;
        }
        match stop {
            // `ret && !i ? ret : i`, then snp_launch_update: count < 0 -> -EIO, error =
            // fw_error.
            Some(s) if done == 0 => err(libc::EIO, s.fw_error),
            _ => {
                p.gfn_start += done;
                p.len -= done * PAGE;
                // Series v8 patch 22/46: `if (src && type != ZERO)`; before it, any non-ZERO.
                if !zero && (self.series.is_none() || src != 0) {
                    p.uaddr = p.uaddr.wrapping_add(done * PAGE);
                }
                Ok(())
            }
        }
    }
}

impl SevIoctl for KernelModel {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        self.calls.push(Call {
            id: cmd.id(),
            params: cmd.params_bytes(),
        });
        // kvm_vm_ioctl: a dead VM is -EIO before anything else.
        if self.vm_dead {
            return err(libc::EIO, 0);
        }
        // sev_mem_enc_ioctl: on an SNP guest, ids below KVM_SEV_SNP_LAUNCH_START are -EPERM.
        if self.snp_active && cmd.id() < crate::uapi::KVM_SEV_SNP_LAUNCH_START {
            return err(libc::EPERM, 0);
        }
        match cmd {
            SevCmd::Init2(p) => self.init2(p),
            SevCmd::LaunchStart(p) => self.launch_start(p),
            SevCmd::LaunchUpdate { params, source } => self.launch_update(params, source),
            SevCmd::LaunchFinish(p) => self.launch_finish(p),
        }
    }

    fn kernel(&self) -> KernelVersion {
        self.version
    }

    fn series(&self) -> Option<SeriesKernel> {
        self.series
    }

    /// `KVM_CREATE_VCPU`: a dead VM is `-EIO` (`kvm_vm_ioctl`); otherwise the vCPU exists
    /// (`sev.c: sev_vcpu_create` gives it a VMSA page once the VM is an SEV-ES/SNP guest; the
    /// model counts it, and `KVM_SEV_INIT2` is `-EINVAL` from then on).
    fn create_vcpu(&mut self, _id: u64) -> Result<(), i32> {
        if self.vm_dead {
            return Err(libc::EIO);
        }
        self.vcpus += 1;
        self.vcpus_created = true;
        Ok(())
    }

    fn vm_alive(&mut self) -> Option<bool> {
        Some(!self.vm_dead)
    }

    /// `virt/kvm/kvm_main.c: kvm_vm_ioctl_set_mem_attributes` (Linux 6.18.2): size 0, overflow
    /// or an unaligned address or size is `-EINVAL`. A range a guest_memfd given to
    /// [`KernelModel::add_guest_memfd`] covers is converted through it
    /// (`gmem::convert_gpa_range`, its errno on failure).
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        if self.vm_dead {
            return Err(libc::EIO);
        }
        if len == 0
            || gpa.checked_add(len).is_none()
            || !gpa.is_multiple_of(PAGE)
            || !len.is_multiple_of(PAGE)
        {
            return Err(libc::EINVAL);
        }
        if self.gmem_of(gpa).is_some() {
            // Through the guest_memfd (its conversion path: gmem's convert). What each page
            // holds is kept: a conversion never touches contents, and from now on the host
            // cannot write the page.
            let mut refs: Vec<&mut GuestMemfd> =
                self.gmems.iter_mut().map(|g| &mut g.gmem).collect();
            gmem::convert_gpa_range(&mut refs, gpa, len, MemoryState::Private)
                .map_err(|e| e.errno())?;
            let mut a = gpa;
            while a < gpa + len {
                if let Some(page) = self.file_page(a) {
                    self.at_conversion.entry(a).or_insert(page);
                }
                a += PAGE;
            }
        }
        let mut a = gpa;
        while a < gpa + len {
            self.private.insert(a);
            a += PAGE;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_mask_is_sev_c() {
        // sev.c: SNP_POLICY_MASK_API_MINOR GENMASK(7,0), _MAJOR GENMASK(15,8), SMT BIT(16),
        // RSVD_MBO BIT(17), DEBUG BIT(19), SINGLE_SOCKET BIT(20).
        assert_eq!(POLICY_VALID, 0x1b_ffff);
    }
}
