//! The worked integration on a real `/dev/kvm`:
//! - where the host has no SEV-SNP (`KVM_X86_SNP_VM` missing from `KVM_CAP_VM_TYPES`, or no
//!   `/dev/sev`), the VMM's launch ends in the typed "not supported" error naming what is
//!   missing;
//! - with the VMM's real objects (a software-protected VM standing in for the SNP VM, which no
//!   machine here can make, its guest_memfd, memslots over its `GuestMemoryMmap`, vCPUs), the
//!   launch lends them all: conversions go through the VMM's guest_memfd adopted borrowed, the
//!   SEV commands to sev-backend's model (the firmware). Needs guest_memfd and private memory
//!   attributes: the KVM lab (lab/tests.txt).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use gmem::testing::{self, Need};
use gmem::GmemFlags;
use sev_backend::testing::KernelModel;
use sev_backend::{KernelVersion, SevCmd, SevIoctl, SevIoctlError};
use vm_memory::{Bytes, GuestAddress};
use vmm_example::testing::{page_bytes, sample_file, Kind, SAMPLE};
use vmm_example::{Error, KvmSnp, LaunchOptions, PopulatePath, SnpHypervisor, Vmm};

const MIB: u64 = 1 << 20;

fn the_launch_on_this_host_ends_in_not_supported_or_runs() {
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let probe = sev_backend::probe(&kvm);
    let vm = KvmSnp::create(&kvm, 16 * MIB);
    match probe {
        Err(sev_backend::Error::NotSupported { reason }) => {
            let e = vm.unwrap_err();
            assert!(e.is_not_supported(), "{e}");
            assert_eq!(
                e.to_string(),
                format!("SEV-SNP: SNP not supported by this KVM: {reason}")
            );
        }
        Err(e) => panic!("probe: {e}"),
        // An SEV-SNP host (never seen by this project): the whole launch, on hardware.
        Ok(_) => {
            let mut vmm = Vmm::new(vm.unwrap(), &[(0, 16 * MIB)]).unwrap();
            let report = vmm
                .launch_igvm(&sample_file(), &LaunchOptions::default())
                .unwrap();
            assert_eq!(report.digest, None);
        }
    }
}

/// The VMM's hypervisor layer in the lab: its real VM, guest_memfd, memslots and vCPUs
/// ([`KvmSnp`]), and the model taking the SEV commands a software-protected VM has no
/// firmware for.
struct LabVm {
    kvm: KvmSnp,
    model: KernelModel,
}

/// What `LabVm` lends: conversions through the real layer (the VMM's guest_memfd), then told to
/// the model; SEV commands to the model.
struct Firmware<'a> {
    kvm: &'a mut dyn SevIoctl,
    model: &'a mut KernelModel,
}

impl SevIoctl for Firmware<'_> {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        self.model.encrypt_op(cmd)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        self.kvm.set_private(gpa, len)?;
        self.model.set_private(gpa, len)
    }
    fn kernel(&self) -> KernelVersion {
        self.model.kernel()
    }
}

impl SnpHypervisor for LabVm {
    fn add_memslot(
        &mut self,
        slot: u32,
        gpa: u64,
        len: u64,
        gmem_offset: u64,
        host: u64,
    ) -> Result<(), Error> {
        self.kvm.add_memslot(slot, gpa, len, gmem_offset, host)?;
        self.model
            .add_gmem_memslot(gpa, len, 0, gmem_offset)
            .map_err(|errno| Error::Os {
                op: "the model's memslot".into(),
                errno,
            })
    }
    fn create_vcpu(&mut self, id: u64) -> Result<(), Error> {
        self.kvm.create_vcpu(id)?;
        self.model.create_vcpu(id).map_err(|errno| Error::Os {
            op: "the model's vCPU".into(),
            errno,
        })
    }
    fn vcpu_count(&self) -> usize {
        self.kvm.vcpu_count()
    }
    fn with_sev(
        &mut self,
        f: &mut dyn FnMut(&mut dyn SevIoctl) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let LabVm { kvm, model } = self;
        kvm.with_sev(&mut |io| {
            f(&mut Firmware {
                kvm: io,
                model: &mut *model,
            })
        })
    }
    fn launch_digest(&self) -> Option<[u8; 48]> {
        Some(self.model.launch_digest())
    }
}

fn a_vmm_lends_its_real_vm_guest_memfd_memslots_and_vcpus() {
    for path in [PopulatePath::Driver, PopulatePath::PagePerCall] {
        let (_kvm, vm) = testing::protected_vm();
        let raw = vm
            .create_guest_memfd(kvm_bindings::kvm_create_guest_memfd {
                size: 16 * MIB,
                ..Default::default()
            })
            .unwrap();
        // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new fd that nothing else owns.
        let guest_memfd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The model takes the SEV commands: /dev/null stands in for /dev/sev.
        let sev = File::open("/dev/null").unwrap();
        let mut model = KernelModel::new();
        model.memslots.clear();
        let lab = LabVm {
            kvm: KvmSnp::from_parts(vm, sev, guest_memfd, GmemFlags::empty()),
            model,
        };
        let mut vmm = Vmm::new(lab, &[(0, 16 * MIB)]).unwrap();
        let opts = LaunchOptions {
            path,
            vcpus: 2,
            ..Default::default()
        };
        let report = vmm.launch_igvm(&sample_file(), &opts).unwrap();
        assert!(report.digest_matches(), "{path:?}: {report}");

        // Every conversion went through the VMM's guest_memfd: gmem's record holds exactly the
        // image's pages (memslot 0 is GPA 0 at file offset 0), whole runs merged.
        let mut want: Vec<(u64, u64)> = SAMPLE
            .iter()
            .map(|r| (r.gpa, r.gpa + r.pages * 4096))
            .collect();
        want.sort_unstable();
        let k = &vmm.hypervisor().kvm;
        assert_eq!(k.private_ranges(), want, "{path:?}");

        // Everything is the VMM's again, and usable.
        let user_memory = libc::c_ulong::from(kvm_bindings::KVM_CAP_USER_MEMORY);
        assert!(k.vm().check_extension_raw(user_memory) > 0);
        let dup = k.guest_memfd().try_clone_to_owned().unwrap();
        assert_ne!(dup.as_raw_fd(), k.guest_memfd().as_raw_fd());
        assert_eq!(k.vcpus().len(), 2);
        k.vcpus()[1].get_regs().unwrap();
        let kernel = SAMPLE.iter().find(|r| r.kind == Kind::Data).unwrap().gpa;
        let mut page = vec![0u8; 4096];
        vmm.memory()
            .read_slice(&mut page, GuestAddress(kernel))
            .unwrap();
        assert_eq!(page, page_bytes(kernel, 1));
    }
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(
            the_launch_on_this_host_ends_in_not_supported_or_runs,
            Need::Kvm
        ),
        gmem::kvm_test!(
            a_vmm_lends_its_real_vm_guest_memfd_memslots_and_vcpus,
            Need::GuestMemfd,
            Need::UserMemory2,
            Need::PrivateAttributes
        ),
    ])
}
