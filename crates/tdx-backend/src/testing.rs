//! An in-process model of the kernel's TDX ioctls, for testing VMM code without TDX hardware.
//!
//! [`TdxModel`] implements [`TdxIoctl`] the way Linux 6.16+ behaves
//! (`arch/x86/kvm/vmx/tdx.c`, `Documentation/virt/kvm/x86/intel-tdx.rst`):
//!
//! - vCPU sub-commands need an initialized TD and fail with `EINVAL` after finalization or
//!   with a non-zero `hw_error` on input;
//! - `KVM_TDX_INIT_MEM_REGION` needs an initialized vCPU, page-aligned `source_addr` and `gpa`,
//!   a non-zero `nr_pages`, only the `KVM_TDX_MEASURE_MEMORY_REGION` flag; it then loops a page
//!   at a time: a pending signal stops it with `EINTR`, a page not private with `EINVAL`, a page
//!   already added with `EEXIST`, a module failure with `EIO`; each added page advances
//!   `source_addr`, `gpa` and `nr_pages` together, and the region is written back whatever
//!   the outcome;
//! - each added page goes into the model's own MRTD (TDH.MEM.PAGE.ADD, then 16 x TDH.MR.EXTEND
//!   of the source bytes when measured), and into a ledger of what was populated;
//! - `KVM_TDX_FINALIZE_VM` fixes MRTD ([`TdxModel::mrtd`]).
//!
//! Failures are injected through [`TdxModel::script`] (one [`Event`] per INIT_MEM_REGION call)
//! and [`TdxModel::fail_vm_op`]. Every call is recorded with its exact arguments in
//! [`TdxModel::calls`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::backend::TdParams;
use crate::ioctl::{TdxIoctl, CAPS_HEADER, CPUID2_HEADER, CPUID_ENTRY, INIT_VM_HEADER};
use crate::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_TDX_CAPABILITIES,
    KVM_TDX_FINALIZE_VM, KVM_TDX_INIT_MEM_REGION, KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM,
    KVM_TDX_MEASURE_MEMORY_REGION,
};
use crate::{Mrtd, PAGE_SIZE};

/// What happens during one `KVM_TDX_INIT_MEM_REGION` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Every page is added.
    Complete,
    /// A signal is pending when the loop reaches page `after_pages`: `EINTR`.
    Signal {
        /// Pages added before.
        after_pages: u64,
    },
    /// The private mapping changed under KVM at page `after_pages`: `EAGAIN`.
    Again {
        /// Pages added before.
        after_pages: u64,
    },
    /// TDH.MEM.PAGE.ADD fails at page `after_pages`: `EIO`. Linux 6.16 does not copy the
    /// module status out for this sub-command (`hw_error` stays 0); `hw_error: Some(code)`
    /// models a kernel that does.
    ModuleError {
        /// Pages added before.
        after_pages: u64,
        /// The status the kernel reports, if any.
        hw_error: Option<u64>,
    },
}

/// Which fd a call was issued on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The VM fd.
    Vm,
    /// The vCPU fd.
    Vcpu,
}

/// One recorded call, with its arguments as passed (before the model wrote anything back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// VM or vCPU.
    pub scope: Scope,
    /// The command as passed. `data` is zeroed when it pointed at a payload or region
    /// (an address, different on every run).
    pub cmd: kvm_tdx_cmd,
    /// The payload bytes as passed.
    pub payload: Option<Vec<u8>>,
    /// The `kvm_tdx_init_mem_region` as passed, with `source_addr` made relative to the
    /// source slice (0 = its start).
    pub region: Option<kvm_tdx_init_mem_region>,
    /// The result.
    pub result: Result<(), i32>,
}

/// A page the model populated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddedPage {
    /// Whether it was extended into MRTD.
    pub measured: bool,
    /// Index of the call (in [`TdxModel::calls`]) that added it.
    pub call: usize,
}

/// The kernel model. See the [module docs](self).
#[derive(Debug)]
pub struct TdxModel {
    /// What `KVM_TDX_CAPABILITIES` reports (attributes, XFAM) and how many CPUID entries.
    pub supported_attrs: u64,
    /// Supported XFAM.
    pub supported_xfam: u64,
    /// Number of configurable CPUID entries reported.
    pub cpuid_entries: u32,
    /// Events for the next `KVM_TDX_INIT_MEM_REGION` calls (empty = [`Event::Complete`]).
    pub script: VecDeque<Event>,
    /// Make the next VM-scoped call with this sub-command id fail with `(errno, hw_error)`.
    pub fail_vm_op: Option<(u32, i32, u64)>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// The pages populated, by GPA.
    pub added: BTreeMap<u64, AddedPage>,
    /// GPAs a call tried to add a second time (refused with `EEXIST`).
    pub twice: Vec<u64>,
    /// The `TdParams` the TD was initialized with.
    pub params: Option<TdParams>,
    /// The initial RCX given to `KVM_TDX_INIT_VCPU`.
    pub vcpu_rcx: Option<u64>,
    private: BTreeSet<u64>,
    mrtd: Mrtd,
    finalized: Option<[u8; 48]>,
}

impl Default for TdxModel {
    fn default() -> Self {
        Self::new()
    }
}

impl TdxModel {
    /// A fresh TD VM: nothing initialized, nothing private.
    pub fn new() -> Self {
        TdxModel {
            supported_attrs: 1 << 28,
            supported_xfam: 0x6_02e7,
            cpuid_entries: 2,
            script: VecDeque::new(),
            fail_vm_op: None,
            calls: Vec::new(),
            added: BTreeMap::new(),
            twice: Vec::new(),
            params: None,
            vcpu_rcx: None,
            private: BTreeSet::new(),
            mrtd: Mrtd::new(),
            finalized: None,
        }
    }

    /// MRTD after `KVM_TDX_FINALIZE_VM`, or `None` before.
    pub fn mrtd(&self) -> Option<[u8; 48]> {
        self.finalized
    }

    /// Bytes populated inside `gpa..gpa+len`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        self.added.range(gpa..gpa.saturating_add(len)).count() as u64 * PAGE_SIZE
    }

    /// Whether the page at `gpa` is private.
    pub fn is_private(&self, gpa: u64) -> bool {
        self.private.contains(&(gpa / PAGE_SIZE))
    }

    fn record(&mut self, call: Call) -> Result<(), i32> {
        let r = call.result;
        self.calls.push(call);
        r
    }

    fn injected(&mut self, id: u32, cmd: &mut kvm_tdx_cmd) -> Option<i32> {
        match self.fail_vm_op {
            Some((fid, errno, hw)) if fid == id => {
                self.fail_vm_op = None;
                cmd.hw_error = hw;
                Some(errno)
            }
            _ => None,
        }
    }

    fn vm_op_inner(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        if cmd.hw_error != 0 || cmd.flags != 0 {
            return Err(libc::EINVAL);
        }
        if let Some(errno) = self.injected(cmd.id, cmd) {
            return Err(errno);
        }
        match cmd.id {
            KVM_TDX_CAPABILITIES => {
                let b = payload.ok_or(libc::EFAULT)?;
                let room = read_u32(b, CAPS_HEADER).ok_or(libc::EFAULT)?;
                if room < self.cpuid_entries {
                    write_u32(b, CAPS_HEADER, self.cpuid_entries);
                    return Err(libc::E2BIG);
                }
                b.get_mut(..48).ok_or(libc::EFAULT)?.fill(0);
                b[0..8].copy_from_slice(&self.supported_attrs.to_le_bytes());
                b[8..16].copy_from_slice(&self.supported_xfam.to_le_bytes());
                write_u32(b, CAPS_HEADER, self.cpuid_entries);
                for i in 0..self.cpuid_entries as usize {
                    let at = CAPS_HEADER + CPUID2_HEADER + i * CPUID_ENTRY;
                    // Leaf 0x7 sub-leaf i, all bits configurable: just something recognisable.
                    write_u32(b, at, 7);
                    write_u32(b, at + 4, i as u32);
                    write_u32(b, at + 12, u32::MAX);
                }
                Ok(())
            }
            KVM_TDX_INIT_VM => {
                if self.params.is_some() {
                    return Err(libc::EINVAL);
                }
                let b = payload.ok_or(libc::EFAULT)?;
                let nent = read_u32(b, INIT_VM_HEADER).ok_or(libc::EFAULT)?;
                let need = INIT_VM_HEADER + CPUID2_HEADER + nent as usize * CPUID_ENTRY;
                if b.len() < need {
                    return Err(libc::EFAULT);
                }
                let mut p = TdParams {
                    attributes: read_u64(b, 0).unwrap_or(0),
                    xfam: read_u64(b, 8).unwrap_or(0),
                    ..TdParams::default()
                };
                if b[160..256].iter().any(|x| *x != 0) {
                    return Err(libc::EINVAL);
                }
                p.mrconfigid.copy_from_slice(&b[16..64]);
                p.mrowner.copy_from_slice(&b[64..112]);
                p.mrownerconfig.copy_from_slice(&b[112..160]);
                for i in 0..nent as usize {
                    let at = INIT_VM_HEADER + CPUID2_HEADER + i * CPUID_ENTRY;
                    let w = |k: usize| read_u32(b, at + 4 * k).unwrap_or(0);
                    p.cpuid.push(kvm_cpuid_entry2 {
                        function: w(0),
                        index: w(1),
                        flags: w(2),
                        eax: w(3),
                        ebx: w(4),
                        ecx: w(5),
                        edx: w(6),
                        padding: [w(7), w(8), w(9)],
                    });
                }
                if p.attributes & !self.supported_attrs != 0 {
                    return Err(libc::EINVAL);
                }
                self.params = Some(p);
                Ok(())
            }
            KVM_TDX_FINALIZE_VM => {
                if self.params.is_none() || self.finalized.is_some() || cmd.data != 0 {
                    return Err(libc::EINVAL);
                }
                self.finalized = Some(self.mrtd.current());
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn write_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

impl TdxIoctl for TdxModel {
    fn vm_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        let mut as_passed = *cmd;
        let copy = payload.as_ref().map(|p| p.to_vec());
        if copy.is_some() {
            as_passed.data = 0;
        }
        let result = self.vm_op_inner(cmd, payload);
        self.record(Call {
            scope: Scope::Vm,
            cmd: as_passed,
            payload: copy,
            region: None,
            result,
        })
    }

    fn vcpu_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        let as_passed = *cmd;
        let copy = payload.as_ref().map(|p| p.to_vec());
        let result = if self.params.is_none() || self.finalized.is_some() || cmd.hw_error != 0 {
            Err(libc::EINVAL)
        } else {
            match cmd.id {
                KVM_TDX_INIT_VCPU if cmd.flags == 0 && self.vcpu_rcx.is_none() => {
                    self.vcpu_rcx = Some(cmd.data);
                    Ok(())
                }
                _ => Err(libc::EINVAL),
            }
        };
        self.record(Call {
            scope: Scope::Vcpu,
            cmd: as_passed,
            payload: copy,
            region: None,
            result,
        })
    }

    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        let base = source.as_ptr() as u64;
        let mut as_passed = *cmd;
        as_passed.data = 0;
        let mut region_passed = *region;
        region_passed.source_addr = region.source_addr.wrapping_sub(base);
        let call = self.calls.len();
        let event = self.script.pop_front().unwrap_or(Event::Complete);
        let result = self.populate(cmd, region, source, base, call, event);
        self.record(Call {
            scope: Scope::Vcpu,
            cmd: as_passed,
            payload: None,
            region: Some(region_passed),
            result,
        })
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        if gpa % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 || gpa.checked_add(len).is_none() {
            return Err(libc::EINVAL);
        }
        for p in 0..len / PAGE_SIZE {
            self.private.insert(gpa / PAGE_SIZE + p);
        }
        Ok(())
    }
}

impl TdxModel {
    fn populate(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
        base: u64,
        call: usize,
        event: Event,
    ) -> Result<(), i32> {
        if self.params.is_none() || self.finalized.is_some() || cmd.hw_error != 0 {
            return Err(libc::EINVAL);
        }
        if cmd.id != KVM_TDX_INIT_MEM_REGION || self.vcpu_rcx.is_none() {
            return Err(libc::EINVAL);
        }
        if cmd.flags & !KVM_TDX_MEASURE_MEMORY_REGION != 0 {
            return Err(libc::EINVAL);
        }
        let end = region
            .nr_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|n| region.gpa.checked_add(n));
        if region.source_addr % PAGE_SIZE != 0
            || region.gpa % PAGE_SIZE != 0
            || region.nr_pages == 0
            || end.is_none()
        {
            return Err(libc::EINVAL);
        }
        let measure = cmd.flags & KVM_TDX_MEASURE_MEMORY_REGION != 0;
        let mut i = 0u64;
        while region.nr_pages > 0 {
            match event {
                Event::Signal { after_pages } if after_pages == i => return Err(libc::EINTR),
                Event::Again { after_pages } if after_pages == i => return Err(libc::EAGAIN),
                Event::ModuleError {
                    after_pages,
                    hw_error,
                } if after_pages == i => {
                    cmd.hw_error = hw_error.unwrap_or(0);
                    return Err(libc::EIO);
                }
                _ => {}
            }
            let gpa = region.gpa;
            let off = region.source_addr.wrapping_sub(base) as usize;
            let page = source
                .get(off..off + PAGE_SIZE as usize)
                .and_then(|s| <&[u8; PAGE_SIZE as usize]>::try_from(s).ok())
                .ok_or(libc::EFAULT)?;
            // kvm_gmem_populate() checks the range is private before calling TDX's
            // post-populate: -EINVAL.
            if !self.is_private(gpa) {
                return Err(libc::EINVAL);
            }
            if self.added.contains_key(&gpa) {
                self.twice.push(gpa);
                return Err(libc::EEXIST);
            }
            self.mrtd.page_add(gpa);
            if measure {
                self.mrtd.extend_page(gpa, page);
            }
            self.added.insert(
                gpa,
                AddedPage {
                    measured: measure,
                    call,
                },
            );
            region.source_addr += PAGE_SIZE;
            region.gpa += PAGE_SIZE;
            region.nr_pages -= 1;
            i += 1;
        }
        Ok(())
    }
}
