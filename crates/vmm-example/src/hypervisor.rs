//! The VMM's hypervisor layer: what its VM object needs from KVM for an SEV-SNP guest, in the
//! shape of a VMM's own hypervisor abstraction (Cloud Hypervisor's `hypervisor::Vm`). The VMM
//! owns the implementation and everything in it; the crates get only what
//! [`SnpHypervisor::with_sev`] lends them for one call.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use gmem::{Adopted, AdoptedState, Capabilities, GmemFlags, GuestMemfd};
use kvm_bindings::{kvm_create_guest_memfd, kvm_userspace_memory_region2, KVM_MEM_GUEST_MEMFD};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use sev_backend::uapi::KVM_X86_SNP_VM;
use sev_backend::{KvmSevIoctl, KvmSevRef, SevIoctl, SEV_DEVICE};

use crate::Error;

/// A failed system call of the VMM's.
fn os(op: impl Into<String>, errno: i32) -> Error {
    Error::Os {
        op: op.into(),
        errno,
    }
}

/// What the VMM's VM object needs from the hypervisor to launch an SEV-SNP guest.
pub trait SnpHypervisor {
    /// Binds guest-physical `[gpa, gpa + len)` as memslot `slot`: private pages from the VM's
    /// guest_memfd at `gmem_offset`, shared pages from the VMM's own mapping at host address
    /// `host` (`KVM_SET_USER_MEMORY_REGION2` with `KVM_MEM_GUEST_MEMFD`). The memslot and the
    /// mapping stay the VMM's.
    fn add_memslot(
        &mut self,
        slot: u32,
        gpa: u64,
        len: u64,
        gmem_offset: u64,
        host: u64,
    ) -> Result<(), Error>;

    /// `KVM_CREATE_VCPU(id)`: the vCPU stays the VMM's.
    fn create_vcpu(&mut self, id: u64) -> Result<(), Error>;

    /// How many vCPUs the VM has.
    fn vcpu_count(&self) -> usize;

    /// Lends the VM's SEV ioctl layer to `f` for the duration of the call: the VM fd, the
    /// `/dev/sev` fd and the guest_memfd, all borrowed (nothing is handed over, so nothing has
    /// to be given back).
    fn with_sev(
        &mut self,
        f: &mut dyn FnMut(&mut dyn SevIoctl) -> Result<(), Error>,
    ) -> Result<(), Error>;

    /// The launch digest the platform computed, where the layer can read it (a model of the
    /// kernel and firmware); `None` on hardware, where only the guest's attestation report
    /// carries it.
    fn launch_digest(&self) -> Option<[u8; 48]> {
        None
    }
}

/// The real thing: an SEV-SNP VM on `/dev/kvm`, owned by the VMM. Its VM fd, the `/dev/sev`
/// fd, its guest_memfd and its vCPUs are plain fields; [`with_sev`](SnpHypervisor::with_sev)
/// lends them as a [`KvmSevRef`] (VM fd and `/dev/sev` borrowed) with the guest_memfd adopted
/// borrowed ([`GuestMemfd::adopt`] with [`Adopted::Borrowed`]) and the VMM's memslots recorded
/// in it ([`GuestMemfd::record_memslot`]), so conversions go through the VMM's guest_memfd.
#[derive(Debug)]
pub struct KvmSnp {
    vm: VmFd,
    sev: File,
    guest_memfd: OwnedFd,
    flags: GmemFlags,
    caps: Capabilities,
    /// The VMM's memslots: (slot, gpa, guest_memfd offset, len).
    memslots: Vec<(u32, u64, u64, u64)>,
    /// guest_memfd file ranges made private so far (what the next lend tells gmem); `None`
    /// before the first lend: as the guest_memfd was created.
    private: Option<Vec<(u64, u64)>>,
    vcpus: Vec<VcpuFd>,
}

impl KvmSnp {
    /// Probes `kvm` for SEV-SNP ([`sev_backend::probe`]), then creates the SNP VM, opens
    /// `/dev/sev` and creates a guest_memfd of `guest_memfd_size` bytes. On a host without
    /// SEV-SNP: [`Error::Sev`] with [`sev_backend::Error::NotSupported`] saying why.
    ///
    /// ```no_run
    /// use vmm_example::{KvmSnp, LaunchOptions, Vmm};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kvm = kvm_ioctls::Kvm::new()?;
    /// let mut vmm = Vmm::new(KvmSnp::create(&kvm, 256 << 20)?, &[(0, 256 << 20)])?;
    /// let report = vmm.launch_igvm(&std::fs::read("guest.igvm")?, &LaunchOptions::default())?;
    /// println!("{report}");
    /// // The VMM's own, as before the launch: run its vCPUs.
    /// let vcpu = &vmm.hypervisor().vcpus()[0];
    /// # let _ = vcpu;
    /// # Ok(())
    /// # }
    /// ```
    pub fn create(kvm: &Kvm, guest_memfd_size: u64) -> Result<KvmSnp, Error> {
        sev_backend::probe(kvm)?;
        let vm = kvm
            .create_vm_with_type(u64::from(KVM_X86_SNP_VM))
            .map_err(|e| os("KVM_CREATE_VM(KVM_X86_SNP_VM)", e.errno()))?;
        let sev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(SEV_DEVICE)
            .map_err(|e| {
                os(
                    format!("open({SEV_DEVICE})"),
                    e.raw_os_error().unwrap_or(libc::EIO),
                )
            })?;
        let raw = vm
            .create_guest_memfd(kvm_create_guest_memfd {
                size: guest_memfd_size,
                ..Default::default()
            })
            .map_err(|e| {
                os(
                    format!("KVM_CREATE_GUEST_MEMFD({guest_memfd_size:#x})"),
                    e.errno(),
                )
            })?;
        // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new fd that nothing else owns.
        let guest_memfd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(KvmSnp::from_parts(vm, sev, guest_memfd, GmemFlags::empty()))
    }

    /// The VMM's VM fd, SEV device and guest_memfd (created on `vm` with `flags`), as the VMM
    /// made them itself: nothing is checked or issued here (the VM's capabilities are probed
    /// for the guest_memfd's conversions).
    pub fn from_parts(vm: VmFd, sev: File, guest_memfd: OwnedFd, flags: GmemFlags) -> KvmSnp {
        let caps = Capabilities::probe(&vm);
        KvmSnp {
            vm,
            sev,
            guest_memfd,
            flags,
            caps,
            memslots: Vec::new(),
            private: None,
            vcpus: Vec::new(),
        }
    }

    /// The VM fd.
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// The guest_memfd.
    pub fn guest_memfd(&self) -> BorrowedFd<'_> {
        self.guest_memfd.as_fd()
    }

    /// The vCPUs, to run them after the launch.
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }

    /// The guest_memfd file ranges `[start, end)` private as gmem recorded them after the last
    /// lend (empty before the first).
    pub fn private_ranges(&self) -> &[(u64, u64)] {
        self.private.as_deref().unwrap_or_default()
    }
}

impl SnpHypervisor for KvmSnp {
    fn add_memslot(
        &mut self,
        slot: u32,
        gpa: u64,
        len: u64,
        gmem_offset: u64,
        host: u64,
    ) -> Result<(), Error> {
        let region = kvm_userspace_memory_region2 {
            slot,
            flags: KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: host,
            guest_memfd_offset: gmem_offset,
            guest_memfd: self.guest_memfd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `host..host + len` is the VMM's mapping of its guest memory, which lives as
        // long as the VMM (and so as the VM it owns); the guest_memfd is this VM's and open.
        unsafe { self.vm.set_user_memory_region2(region) }.map_err(|e| {
            os(
                format!("KVM_SET_USER_MEMORY_REGION2(slot {slot}, [{gpa:#x}..+{len:#x}))"),
                e.errno(),
            )
        })?;
        self.memslots.push((slot, gpa, gmem_offset, len));
        Ok(())
    }

    fn create_vcpu(&mut self, id: u64) -> Result<(), Error> {
        let vcpu = self
            .vm
            .create_vcpu(id)
            .map_err(|e| os(format!("KVM_CREATE_VCPU({id})"), e.errno()))?;
        self.vcpus.push(vcpu);
        Ok(())
    }

    fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    fn with_sev(
        &mut self,
        f: &mut dyn FnMut(&mut dyn SevIoctl) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // gmem works on a duplicate of the VMM's fd and closes only that; the VMM's stays open.
        let mut gmem = GuestMemfd::adopt(
            &self.vm,
            &self.caps,
            Adopted::Borrowed(self.guest_memfd.as_fd()),
            self.flags,
            self.private
                .clone()
                .map_or(AdoptedState::AsCreated, AdoptedState::Private),
        )?;
        for &(slot, gpa, offset, len) in &self.memslots {
            gmem.record_memslot(slot, gpa, offset, len)?;
        }
        let result = {
            let mut io: KvmSevRef<'_> = KvmSevIoctl::new(&self.vm, self.sev.as_fd());
            io.add_guest_memfd(&mut gmem);
            f(&mut io)
        };
        self.private = Some(gmem.private_ranges());
        result
    }
}

/// The VMM's hypervisor layer over sev-backend's model of the kernel's SEV-SNP commands
/// ([`KernelModel`](sev_backend::testing::KernelModel)), which stands in for the VM fd, its
/// guest_memfd and the firmware: the same ioctl seam ([`SevIoctl`]) the real layer lends, with
/// the launch digest the model's firmware computed. For tests and the bench (feature `model`).
#[cfg(feature = "model")]
#[derive(Debug)]
pub struct ModelVm {
    model: sev_backend::testing::KernelModel,
    vcpus: Vec<u64>,
}

#[cfg(feature = "model")]
impl ModelVm {
    /// A VM following `version`'s rules, with no memslots yet.
    pub fn new(version: sev_backend::KernelVersion) -> ModelVm {
        let mut model = sev_backend::testing::KernelModel::for_version(version);
        model.memslots.clear();
        ModelVm {
            model,
            vcpus: Vec::new(),
        }
    }

    /// The model: every command it received, its ledger of populated pages.
    pub fn model(&self) -> &sev_backend::testing::KernelModel {
        &self.model
    }

    /// The model, mutably: to script what its firmware answers
    /// ([`KernelModel::script`](sev_backend::testing::KernelModel::script), ...).
    pub fn model_mut(&mut self) -> &mut sev_backend::testing::KernelModel {
        &mut self.model
    }

    /// The vCPU ids created.
    pub fn vcpus(&self) -> &[u64] {
        &self.vcpus
    }
}

#[cfg(feature = "model")]
impl SnpHypervisor for ModelVm {
    fn add_memslot(
        &mut self,
        slot: u32,
        gpa: u64,
        len: u64,
        gmem_offset: u64,
        _host: u64,
    ) -> Result<(), Error> {
        self.model
            .add_gmem_memslot(gpa, len, 0, gmem_offset)
            .map_err(|errno| {
                os(
                    format!("KVM_SET_USER_MEMORY_REGION2(slot {slot}, [{gpa:#x}..+{len:#x}))"),
                    errno,
                )
            })
    }

    fn create_vcpu(&mut self, id: u64) -> Result<(), Error> {
        self.model
            .create_vcpu(id)
            .map_err(|errno| os(format!("KVM_CREATE_VCPU({id})"), errno))?;
        self.vcpus.push(id);
        Ok(())
    }

    fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    fn with_sev(
        &mut self,
        f: &mut dyn FnMut(&mut dyn SevIoctl) -> Result<(), Error>,
    ) -> Result<(), Error> {
        f(&mut self.model)
    }

    fn launch_digest(&self) -> Option<[u8; 48]> {
        Some(self.model.launch_digest())
    }
}
