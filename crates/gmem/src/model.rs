//! A model of the in-place conversion series' `KVM_SET_MEMORY_ATTRIBUTES2` and capability
//! answers, for tests of the per-guest_memfd conversion path (feature `test-utils`).
//!
//! Every behaviour cites the v8 patch (posted 2026-06-18) and function it follows, and nothing
//! is answered that v8 cannot answer. What is not modelled: `EFAULT` (the argument is always a
//! valid buffer here), the per-CPU LRU drain (v8 patch 18/46 drains once per call, which makes
//! a transient reference vanish inside the call; a pin here is a reference that survives it),
//! and host faults (a modelled handle is backed by a memfd, which never `SIGBUS`es: the tests
//! check gmem's record, which is what stops safe code from touching a private page).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::BorrowedFd;
use std::os::raw::c_ulong;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmm_sys_util::errno;

use crate::range::page_size;
use crate::uapi::{self, kvm_memory_attributes2};
use crate::{AttributesIoctl, Capabilities, GmemSeries};

/// One call the model received: `(offset, size, attributes)`.
pub type ModelCall = (u64, u64, u64);

#[derive(Debug)]
struct State {
    series: GmemSeries,
    size: u64,
    /// `kvm.gmem_in_place_conversion` (v8 patch 24/46: on by default unless the kernel is built
    /// with `CONFIG_KVM_VM_MEMORY_ATTRIBUTES`; read-only, 0444).
    module_param: bool,
    /// `CONFIG_KVM_VM_MEMORY_ATTRIBUTES` (only then does `KVM_CAP_MEMORY_ATTRIBUTES` offer
    /// PRIVATE with the module parameter off).
    vm_attributes_config: bool,
    /// `kvm_arch_has_private_mem(kvm)` for the file's VM (a VM type with private memory).
    private_mem: bool,
    /// Private pages (page index), the file's attributes maple tree reduced to PRIVATE.
    private: BTreeSet<u64>,
    /// Pages with a reference the conversion safety check finds: how many more calls it stays
    /// (`u32::MAX`: until unpinned).
    pins: BTreeMap<u64, u32>,
    /// Fail the next call that reaches `kvm_gmem_mas_preallocate` with `ENOMEM`.
    enomem: bool,
    /// Pages whose private contents a call destroyed (the v8 data-loss case).
    lost: BTreeSet<u64>,
    calls: Vec<ModelCall>,
}

/// A guest_memfd of series v8 as its conversion ioctl and capabilities see it. Clones share the
/// state, so a test keeps one clone to inspect while the handle owns another.
///
/// ```
/// use gmem::testing::SeriesModel;
/// use gmem::{GmemFlags, GmemSeries, GuestMemfd, MemoryState};
///
/// let model = SeriesModel::new(GmemSeries::V8, 4 * 4096, false);
/// let mut g = GuestMemfd::with_model(4 * 4096, GmemFlags::MMAP, GmemSeries::V8, Box::new(model.clone()))?;
/// // A file created without INIT_SHARED starts private: nothing maps until converted.
/// assert!(g.map_shared(0, 4096).is_err());
/// g.convert(0, 2 * 4096, MemoryState::Shared)?;
/// assert!(!model.is_private(0) && model.is_private(2 * 4096));
/// assert_eq!(g.private_ranges(), vec![(2 * 4096, 4 * 4096)]);
/// g.map_shared(0, 2 * 4096)?.write_at(0, b"image")?;
/// # Ok::<(), gmem::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SeriesModel {
    state: Arc<Mutex<State>>,
}

impl SeriesModel {
    /// A file of `size` bytes on a VM with private memory, module parameter on, created with
    /// (`init_shared`) or without `INIT_SHARED`: all shared, or all private (v8 patch 01/46
    /// `kvm_gmem_init_inode`).
    pub fn new(series: GmemSeries, size: u64, init_shared: bool) -> SeriesModel {
        let page = page_size();
        let private = if init_shared {
            BTreeSet::new()
        } else {
            (0..size / page).collect()
        };
        SeriesModel {
            state: Arc::new(Mutex::new(State {
                series,
                size,
                module_param: true,
                vm_attributes_config: false,
                private_mem: true,
                private,
                pins: BTreeMap::new(),
                enomem: false,
                lost: BTreeSet::new(),
                calls: Vec::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below completes before the lock is released; a panic elsewhere leaves a
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets `kvm.gmem_in_place_conversion` (and whether the kernel was built with
    /// `CONFIG_KVM_VM_MEMORY_ATTRIBUTES`, which decides what the VM-wide capability answers).
    pub fn module_param(self, on: bool, vm_attributes_config: bool) -> SeriesModel {
        {
            let mut s = self.state();
            s.module_param = on;
            s.vm_attributes_config = vm_attributes_config;
        }
        self
    }

    /// Sets whether the file's VM has private memory (`kvm_arch_has_private_mem`).
    pub fn private_mem(self, on: bool) -> SeriesModel {
        self.state().private_mem = on;
        self
    }

    /// Holds a reference on the page at `offset` for the next `calls` calls that check it
    /// (`None`: until [`unpin`](Self::unpin)), so converting it to private answers `EAGAIN`.
    pub fn pin(&self, offset: u64, calls: Option<u32>) {
        let page = offset / page_size();
        self.state().pins.insert(page, calls.unwrap_or(u32::MAX));
    }

    /// Drops the reference [`pin`](Self::pin) took.
    pub fn unpin(&self, offset: u64) {
        let page = offset / page_size();
        self.state().pins.remove(&page);
    }

    /// Makes the next call that gets as far as allocating fail with `ENOMEM`.
    pub fn fail_next_with_enomem(&self) {
        self.state().enomem = true;
    }

    /// Whether the page at `offset` is private in the file.
    pub fn is_private(&self, offset: u64) -> bool {
        self.state().private.contains(&(offset / page_size()))
    }

    /// The file offsets of pages whose private contents a call destroyed.
    pub fn lost_pages(&self) -> Vec<u64> {
        let page = page_size();
        self.state().lost.iter().map(|p| p * page).collect()
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<ModelCall> {
        self.state().calls.clone()
    }

    /// What `KVM_CHECK_EXTENSION` answers for `cap` on the file's VM (v8 patch 17/46
    /// `kvm_vm_ioctl_check_extension_generic`, `kvm_supported_vm_mem_attributes`):
    /// - the series' `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES`: PRIVATE with the module parameter
    ///   on and a VM with private memory, else 0;
    /// - `KVM_CAP_MEMORY_ATTRIBUTES`: 0 with the module parameter on or without private memory,
    ///   else PRIVATE where the kernel was built with `CONFIG_KVM_VM_MEMORY_ATTRIBUTES` (without
    ///   it the capability is not handled: 0);
    /// - `KVM_CAP_GUEST_MEMFD`: 1; anything else: 0.
    pub fn check_extension(&self, cap: u32) -> i32 {
        let s = self.state();
        let private = uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE as i32;
        if cap == s.series.cap_guest_memfd_memory_attributes() {
            return if s.module_param && s.private_mem {
                private
            } else {
                0
            };
        }
        match cap {
            uapi::KVM_CAP_MEMORY_ATTRIBUTES
                if !s.module_param && s.private_mem && s.vm_attributes_config =>
            {
                private
            }
            uapi::KVM_CAP_GUEST_MEMFD => 1,
            _ => 0,
        }
    }

    /// The [`Capabilities`] probed with the series' number, as this model answers them.
    pub fn capabilities(&self) -> Capabilities {
        let series = self.state().series;
        Capabilities::from_answers(|cap| self.check_extension(cap), Some(series))
    }
}

fn err(errno: i32) -> Result<(), errno::Error> {
    Err(errno::Error::new(errno))
}

impl AttributesIoctl for SeriesModel {
    fn set_memory_attributes2(
        &mut self,
        _fd: BorrowedFd<'_>,
        request: c_ulong,
        arg: &mut kvm_memory_attributes2,
    ) -> Result<(), errno::Error> {
        let page = page_size();
        let mut s = self.state();
        s.calls.push((arg.offset, arg.size, arg.attributes));
        // v8 patch 13/46 `kvm_gmem_ioctl`: an unknown request, or the module parameter off,
        // is ENOTTY.
        if request != s.series.set_memory_attributes2() || !s.module_param {
            return err(libc::ENOTTY);
        }
        // v8 patch 13/46 `kvm_gmem_set_attributes`: input checks, each EINVAL, before
        // anything changes (and before error_offset is ever written).
        let end = arg.offset.checked_add(arg.size);
        let invalid = arg.flags != 0
            || arg.reserved.iter().any(|r| *r != 0)
            || !s.private_mem
            || arg.attributes & !uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE != 0
            || arg.size == 0
            || end.is_none()
            || !arg.offset.is_multiple_of(page)
            || !arg.size.is_multiple_of(page)
            || arg.offset >= s.size
            || end.is_some_and(|e| e > s.size);
        if invalid {
            return err(libc::EINVAL);
        }
        let (first, last) = (arg.offset / page, (arg.offset + arg.size) / page);
        let to_private = arg.attributes & uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE != 0;
        // v8 patch 16/46 `__kvm_gmem_set_attributes`: a range already in the state returns 0.
        if (first..last).all(|p| s.private.contains(&p) == to_private) {
            return Ok(());
        }
        // v8 patch 14/46: ENOMEM from `kvm_gmem_mas_preallocate` sets err_index to the start,
        // and `kvm_gmem_set_attributes` copies error_offset back.
        if s.enomem {
            s.enomem = false;
            arg.error_offset = arg.offset;
            return err(libc::ENOMEM);
        }
        // v8 patch 14/46 `kvm_gmem_is_safe_for_conversion` (to private only): the first page
        // whose refcount is not guest_memfd's own stops the call with EAGAIN, nothing changed,
        // error_offset naming that page.
        if to_private {
            let pinned = s.pins.range(first..last).next().map(|(p, _)| *p);
            if let Some(p) = pinned {
                if let Some(left) = s.pins.get_mut(&p) {
                    if *left != u32::MAX {
                        *left -= 1;
                    }
                    if *left == 0 {
                        s.pins.remove(&p);
                    }
                }
                arg.error_offset = p * page;
                return err(libc::EAGAIN);
            }
        }
        // Past the point of no return. The v8 data-loss case: converting to private a range
        // that is partly private already destroys the private part's contents (the invalidation
        // covers the whole range, and v8 patch 20/46 `kvm_gmem_get_invalidate_filter` includes
        // the private mappings whenever any page of it is private; fix posted 2026-07-05).
        if to_private && s.series.partial_conversion_loses_data() {
            let already: Vec<u64> = (first..last).filter(|p| s.private.contains(p)).collect();
            s.lost.extend(already);
        }
        for p in first..last {
            if to_private {
                s.private.insert(p);
            } else {
                s.private.remove(&p);
            }
        }
        Ok(())
    }
}
