//! Private memory on real KVM: a software-protected VM (`KVM_X86_SW_PROTECTED_VM`), gmem's
//! conversion through `KVM_SET_MEMORY_ATTRIBUTES`, checked against what a real-mode vCPU reads,
//! the `KVM_EXIT_MEMORY_FAULT` a VMM gets, and `KVM_PRE_FAULT_MEMORY`.
//!
//! Every kernel behaviour asserted here names the function it comes from, read in Linux 7.3.4
//! and 6.12.118 (Debian's linux-source packages); where the two differ, both are named.
//!
//! Guest layout: GPA page 0 holds the code, in a plain memslot (no guest_memfd) this test owns;
//! the memory under test starts at GPA 0x1000. The guest reports what it read by `out` to
//! port 0x3f8. A shared page of the memory under test reads as the shared backing's byte
//! (`0xa0 + page number`, written by the host); a private page as the guest_memfd's (zero when
//! fresh: a new guest_memfd folio is cleared before it is mapped, virt/kvm/guest_memfd.c:
//! 7.3 `kvm_gmem_get_pfn`, 6.12 `kvm_gmem_prepare_folio`).

mod common;

use std::sync::Arc;

use common::PAGE;
use gmem::testing::{self, Need};
use gmem::{Error, GmemFlags, GuestMemfd, MemoryFault, MemoryState};
use kvm_bindings::{kvm_memory_attributes, kvm_pre_fault_memory, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress, MmapRegion,
};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

const PORT: u16 = 0x3f8;
const CODE_SLOT: u32 = 100;
const PRIVATE: u64 = gmem::uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE;

/// Real-mode code, assembled by hand, at GPA 0:
/// ```text
/// probe (0x000): reads the first byte of pages 1..=N (N patched at 0x007) and outs each
///   000: ba f8 03        mov dx, 0x3f8
///   003: be 00 10        mov si, 0x1000
///   006: b9 NN 00        mov cx, N
///   009: 8a 04           mov al, [si]
///   00b: ee              out dx, al
///   00c: 81 c6 00 10     add si, 0x1000
///   010: e2 f7           loop 0x009
///   012: f4              hlt
/// write (0x100): mov bx, ADDR (0x101); mov byte [bx], VAL (0x105); hlt
///   100: bb LL HH  103: c6 07 VV  106: f4
/// read (0x200): mov dx, 0x3f8; mov bx, ADDR (0x204); mov al, [bx]; out dx, al; hlt
///   200: ba f8 03  203: bb LL HH  206: 8a 07  208: ee  209: f4
/// ```
const PROBE: [u8; 19] = [
    0xba, 0xf8, 0x03, 0xbe, 0x00, 0x10, 0xb9, 0x00, 0x00, 0x8a, 0x04, 0xee, 0x81, 0xc6, 0x00, 0x10,
    0xe2, 0xf7, 0xf4,
];
const WRITE: [u8; 7] = [0xbb, 0x00, 0x00, 0xc6, 0x07, 0x00, 0xf4];
const READ: [u8; 10] = [0xba, 0xf8, 0x03, 0xbb, 0x00, 0x00, 0x8a, 0x07, 0xee, 0xf4];

/// What a vCPU run ended with.
#[derive(Debug, PartialEq)]
enum Stop {
    /// `hlt`, after these bytes were written to the port.
    Halt(Vec<u8>),
    /// `KVM_RUN` failed with `KVM_EXIT_MEMORY_FAULT`, after these bytes.
    Fault(MemoryFault, Vec<u8>),
}

/// A software-protected VM with one vCPU in real mode and its code page.
struct Guest {
    vm: VmFd,
    vcpu: VcpuFd,
    /// The code page's memory: leaked, so it stays mapped for as long as the VM may use it.
    code: &'static GuestRegionMmap<()>,
    /// What an emulated MMIO read returns.
    mmio_byte: u8,
}

impl Guest {
    fn new() -> Guest {
        let (_kvm, vm) = testing::protected_vm();
        let code: &'static GuestRegionMmap<()> = Box::leak(Box::new(
            GuestRegionMmap::new(MmapRegion::new(PAGE as usize).unwrap(), GuestAddress(0)).unwrap(),
        ));
        let region = kvm_userspace_memory_region {
            slot: CODE_SLOT,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: PAGE,
            userspace_addr: code.as_ptr() as u64,
        };
        // SAFETY: the region names a leaked mapping of PAGE bytes, never unmapped.
        unsafe { vm.set_user_memory_region(region) }.unwrap();
        for (at, bytes) in [(0x000, &PROBE[..]), (0x100, &WRITE[..]), (0x200, &READ[..])] {
            code.write_slice(bytes, MemoryRegionAddress(at)).unwrap();
        }
        let vcpu = vm.create_vcpu(0).unwrap();
        Guest {
            vm,
            vcpu,
            code,
            mmio_byte: 0x77,
        }
    }

    fn poke(&self, at: u64, bytes: &[u8]) {
        self.code
            .write_slice(bytes, MemoryRegionAddress(at))
            .unwrap();
    }

    /// Runs from `rip` until `hlt` or a memory fault.
    fn run_from(&mut self, rip: u64) -> Stop {
        let mut sregs = self.vcpu.get_sregs().unwrap();
        for seg in [&mut sregs.cs, &mut sregs.ds] {
            seg.base = 0;
            seg.selector = 0;
        }
        self.vcpu.set_sregs(&sregs).unwrap();
        let mut regs = self.vcpu.get_regs().unwrap();
        regs.rip = rip;
        regs.rflags = 2;
        self.vcpu.set_regs(&regs).unwrap();
        self.resume(Vec::new())
    }

    /// Runs on from where the vCPU stopped.
    fn resume(&mut self, mut out: Vec<u8>) -> Stop {
        for _ in 0..200 {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, bytes)) => {
                    assert_eq!(port, PORT);
                    out.extend_from_slice(bytes);
                }
                Ok(VcpuExit::Hlt) => return Stop::Halt(out),
                Ok(VcpuExit::MemoryFault { flags, gpa, size }) => {
                    return Stop::Fault(MemoryFault::new(flags, gpa, size), out)
                }
                Ok(VcpuExit::MmioRead(_, data)) => data.fill(self.mmio_byte),
                Ok(other) => panic!("unexpected exit {other:?} after {out:?}"),
                Err(e) => panic!("KVM_RUN: {e} after {out:?}"),
            }
        }
        panic!("the guest did not halt; got {out:?}");
    }

    /// The first byte of guest pages 1..=n, as the guest reads them.
    fn probe(&mut self, n: u8) -> Vec<u8> {
        self.poke(0x007, &[n]);
        match self.run_from(0x000) {
            Stop::Halt(out) => out,
            other => panic!("probe: {other:?}"),
        }
    }

    /// The guest stores `val` at `gpa`.
    fn write(&mut self, gpa: u16, val: u8) {
        self.poke(0x101, &gpa.to_le_bytes());
        self.poke(0x105, &[val]);
        assert_eq!(self.run_from(0x100), Stop::Halt(vec![]));
    }

    /// The guest loads the byte at `gpa` and outs it.
    fn read(&mut self, gpa: u16) -> Stop {
        self.poke(0x204, &gpa.to_le_bytes());
        self.run_from(0x200)
    }

    /// `KVM_SET_MEMORY_ATTRIBUTES` issued directly (not through gmem), with the kernel's errno.
    fn set_attributes(&self, address: u64, size: u64, attributes: u64, flags: u64) -> i32 {
        let arg = kvm_memory_attributes {
            address,
            size,
            attributes,
            flags,
        };
        match self.vm.set_memory_attributes(arg) {
            Ok(()) => 0,
            Err(e) => e.errno(),
        }
    }

    /// `KVM_PRE_FAULT_MEMORY` issued once, directly: the errno and what the kernel left.
    fn raw_pre_fault(&self, gpa: u64, size: u64, flags: u64) -> (i32, u64, u64) {
        let mut arg = kvm_pre_fault_memory {
            gpa,
            size,
            flags,
            ..Default::default()
        };
        // SAFETY: a vCPU fd and a valid 64-byte kvm_pre_fault_memory that lives across the call.
        let ret =
            unsafe { ioctl_with_mut_ref(&self.vcpu, gmem::uapi::KVM_PRE_FAULT_MEMORY, &mut arg) };
        let errno = if ret == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        };
        (errno, arg.gpa, arg.size)
    }
}

/// A shared backing for `pages` pages at `gpa`, page `k` of the guest (`gpa / PAGE + i`)
/// starting with `0xa0 + k`.
fn backing(gpa: u64, pages: u64) -> Arc<GuestRegionMmap<()>> {
    let r = GuestRegionMmap::new(
        MmapRegion::new((pages * PAGE) as usize).unwrap(),
        GuestAddress(gpa),
    )
    .unwrap();
    for i in 0..pages {
        let page = gpa / PAGE + i;
        r.write_slice(&[0xa0 + page as u8], MemoryRegionAddress(i * PAGE))
            .unwrap();
    }
    Arc::new(r)
}

fn first_byte(r: &GuestRegionMmap<()>, gpa: u64) -> u8 {
    let mut b = [0u8; 1];
    r.read_slice(&mut b, MemoryRegionAddress(gpa - r.start_addr().0))
        .unwrap();
    b[0]
}

/// The guest's probe of pages 1..=n where `private` pages read `0` and others their backing byte.
fn expect(n: u64, private: &[u64]) -> Vec<u8> {
    (1..=n)
        .map(|p| {
            if private.contains(&p) {
                0
            } else {
                0xa0 + p as u8
            }
        })
        .collect()
}

/// Pages 1..=8 at GPA 0x1000 are file pages 0..8 (flags 0) with a shared backing the host fills.
fn guest_with_memory() -> (Guest, GuestMemfd, Arc<GuestRegionMmap<()>>, gmem::Memslot) {
    let g = Guest::new();
    let gm = GuestMemfd::create(&g.vm, 8 * PAGE, GmemFlags::empty()).unwrap();
    let shared = backing(PAGE, 8);
    let slot = gm
        .bind_with_shared(0, 0, 8 * PAGE, Arc::clone(&shared))
        .unwrap();
    (g, gm, shared, slot)
}

fn convert_to_private_and_back_the_guest_sees_each_backing() {
    let (mut g, mut gm, shared, _slot) = guest_with_memory();
    assert_eq!(
        gm.conversion_path(),
        Some(gmem::ConversionPath::VmAttributes)
    );
    // A VM's attributes start empty, i.e. shared (`kvm_get_memory_attributes` reads 0 for a GFN
    // never set, include/linux/kvm_host.h): nothing is private, the guest reads the backing.
    assert_eq!(gm.private_ranges(), vec![]);
    assert_eq!(g.probe(8), expect(8, &[]));

    // File pages 1..3 (GPA pages 2, 3) to private: the guest now gets guest_memfd pages for
    // them (x86 `kvm_mmu_page_fault` sets PFERR_PRIVATE_ACCESS from the attribute for a
    // software-protected VM; `kvm_mmu_faultin_pfn` then maps from the guest_memfd).
    gm.set_private(PAGE, 2 * PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(PAGE, 3 * PAGE)]);
    assert_eq!(g.probe(8), expect(8, &[2, 3]));
    // The guest writes its private page; the shared backing of that GPA is untouched.
    g.write(0x2000, 0x5a);
    assert_eq!(g.probe(3), vec![0xa1, 0x5a, 0]);
    assert_eq!(first_byte(&shared, 0x2000), 0xa2);
    // A shared page's guest write lands in the backing the host reads.
    g.write(0x5000, 0x55);
    assert_eq!(first_byte(&shared, 0x5000), 0x55);
    g.write(0x5000, 0xa5);

    // Back to shared: the guest reads the backing again.
    gm.set_shared(PAGE, 2 * PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![]);
    assert_eq!(g.probe(8), expect(8, &[]));

    // Private again: the guest_memfd kept the page's private data (conversion by attributes
    // does not free guest_memfd pages on 6.12 or 7.3: `kvm_vm_set_mem_attributes` only zaps
    // the mappings).
    gm.set_private(PAGE, PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(PAGE, 2 * PAGE)]);
    assert_eq!(g.probe(3), vec![0xa1, 0x5a, 0xa3]);
    // The helper VMMs use on a memory fault: the GPA's file offset.
    assert_eq!(gm.offset_of_gpa(0x2000, PAGE).unwrap(), PAGE);
    assert!(matches!(
        gm.offset_of_gpa(0x8000, 2 * PAGE),
        Err(Error::GpaNotBound { gpa: 0x8000, .. })
    ));
}

fn partly_converted_ranges_convert_whole() {
    let (mut g, mut gm, _shared, _slot) = guest_with_memory();
    gm.set_private(3 * PAGE, PAGE).unwrap();
    // [2, 5) holds one private page: the kernel converts the rest (`kvm_vm_set_mem_attributes`
    // skips only a range whose every page already has the attributes).
    gm.set_private(2 * PAGE, 3 * PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(2 * PAGE, 5 * PAGE)]);
    assert_eq!(g.probe(8), expect(8, &[3, 4, 5]));
    // Already private as a whole: the kernel's no-op path, still success.
    gm.set_private(2 * PAGE, 3 * PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(2 * PAGE, 5 * PAGE)]);
    // To shared over a range that is half private, half shared.
    gm.set_shared(4 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(2 * PAGE, 4 * PAGE)]);
    assert_eq!(g.probe(8), expect(8, &[3, 4]));
    // Already shared.
    gm.set_shared(7 * PAGE, PAGE).unwrap();
    // Punching a hole in the middle of the private range.
    gm.set_shared(3 * PAGE, PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(2 * PAGE, 3 * PAGE)]);
    assert_eq!(g.probe(8), expect(8, &[3]));
}

fn conversion_spans_memslots_in_file_order() {
    let mut g = Guest::new();
    let mut gm = GuestMemfd::create(&g.vm, 12 * PAGE, GmemFlags::empty()).unwrap();
    // File [0, 4) at GPA pages 1..5, file [4, 8) at GPA pages 9..13, file [8, 12) at 5..9.
    let a = gm
        .bind_with_shared(0, 0, 4 * PAGE, backing(PAGE, 4))
        .unwrap();
    let b = gm
        .bind_with_shared(1, 4 * PAGE, 4 * PAGE, backing(9 * PAGE, 4))
        .unwrap();
    let c = gm
        .bind_with_shared(2, 8 * PAGE, 4 * PAGE, backing(5 * PAGE, 4))
        .unwrap();
    assert_eq!((a.gpa(), b.gpa(), c.gpa()), (PAGE, 9 * PAGE, 5 * PAGE));
    // File [2, 6): GPA pages 3, 4 (slot 0) and 9, 10 (slot 1).
    gm.set_private(2 * PAGE, 4 * PAGE).unwrap();
    assert_eq!(gm.private_ranges(), vec![(2 * PAGE, 6 * PAGE)]);
    assert_eq!(g.probe(12), expect(12, &[3, 4, 9, 10]));
    gm.set_shared(3 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(
        gm.private_ranges(),
        vec![(2 * PAGE, 3 * PAGE), (5 * PAGE, 6 * PAGE)]
    );
    assert_eq!(g.probe(12), expect(12, &[3, 10]));
}

fn unbound_range_is_refused_and_changes_nothing() {
    let mut g = Guest::new();
    let mut gm = GuestMemfd::create(&g.vm, 16 * PAGE, GmemFlags::empty()).unwrap();
    let slot = gm
        .bind_with_shared(0, 0, 8 * PAGE, backing(PAGE, 8))
        .unwrap();
    gm.set_private(0, PAGE).unwrap();
    let before = gm.private_ranges();
    // File [6, 10) is bound only up to 8: refused before any ioctl, naming the first unbound
    // offset. gmem converts by file offset, and an unbound offset has no GPA to convert.
    let e = gm.set_private(6 * PAGE, 4 * PAGE).unwrap_err();
    assert!(
        matches!(e, Error::NotBound { offset, len, unbound }
            if offset == 6 * PAGE && len == 4 * PAGE && unbound == 8 * PAGE),
        "{e:?}"
    );
    assert!(e.to_string().contains("0x8000 is not bound"), "{e}");
    assert!(matches!(
        gm.set_shared(12 * PAGE, PAGE),
        Err(Error::NotBound { unbound, .. }) if unbound == 12 * PAGE
    ));
    // Nothing changed, in the record or in the kernel: the bound half stayed shared.
    assert_eq!(gm.private_ranges(), before);
    assert_eq!(g.probe(8), expect(8, &[1]));

    // The kernel itself takes any GPA range, memslot or not (`kvm_vm_ioctl_set_mem_attributes`
    // checks flags, attributes, size and alignment only; 6.12 and 7.3).
    assert_eq!(g.set_attributes(0x10_0000, 4 * PAGE, PRIVATE, 0), 0);
    assert_eq!(g.set_attributes(0x10_0000, 4 * PAGE, 0, 0), 0);

    // After the slot is deleted, the range has no GPA any more: refused the same way. (The
    // kernel keeps the GPA's attribute: the VM's attributes are not per memslot.)
    slot.unbind().unwrap();
    assert!(matches!(
        gm.set_shared(0, PAGE),
        Err(Error::NotBound { unbound: 0, .. })
    ));
    assert_eq!(gm.private_ranges(), before);
}

fn misaligned_and_bad_ranges_are_refused_before_the_kernel() {
    let (mut g, mut gm, _shared, _slot) = guest_with_memory();
    gm.set_private(2 * PAGE, PAGE).unwrap();
    let before = gm.private_ranges();
    let e = gm.set_private(PAGE + 1, PAGE).unwrap_err();
    assert!(
        matches!(e, Error::Unaligned { offset, len, page_size }
            if offset == PAGE + 1 && len == PAGE && page_size == PAGE),
        "{e:?}"
    );
    assert!(matches!(
        gm.set_shared(2 * PAGE, PAGE / 2),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        gm.set_private(PAGE, 0),
        Err(Error::EmptyRange { offset }) if offset == PAGE
    ));
    assert!(matches!(
        gm.set_private(7 * PAGE, 2 * PAGE),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        gm.convert(u64::MAX - PAGE + 1, 2 * PAGE, MemoryState::Private),
        Err(Error::RangeOverflow { .. })
    ));
    assert_eq!(gm.private_ranges(), before);
    assert_eq!(g.probe(8), expect(8, &[3]));
    // What the kernel answers for the same mistakes (`kvm_vm_ioctl_set_mem_attributes`):
    // EINVAL for an unaligned address or size, a zero size, flags, unknown attributes.
    assert_eq!(g.set_attributes(0x2001, PAGE, PRIVATE, 0), libc::EINVAL);
    assert_eq!(g.set_attributes(0x2000, PAGE / 2, PRIVATE, 0), libc::EINVAL);
    assert_eq!(g.set_attributes(0x2000, 0, PRIVATE, 0), libc::EINVAL);
    assert_eq!(g.set_attributes(0x2000, PAGE, PRIVATE, 1), libc::EINVAL);
    assert_eq!(g.set_attributes(0x2000, PAGE, 1, 0), libc::EINVAL);
    assert_eq!(g.probe(8), expect(8, &[3]));
}

fn bind_on_a_protected_vm_without_a_shared_backing() {
    let mut g = Guest::new();
    let mut gm = GuestMemfd::create(&g.vm, 4 * PAGE, GmemFlags::empty()).unwrap();
    // `bind` gives a file without MMAP an anonymous shared backing nothing but the guest writes.
    let _slot = gm.bind(0, PAGE, 0, 4 * PAGE).unwrap();
    assert_eq!(g.probe(4), vec![0, 0, 0, 0]);
    g.write(0x1000, 0x11);
    gm.set_private(0, PAGE).unwrap();
    g.write(0x1000, 0x22);
    assert_eq!(g.probe(1), vec![0x22]);
    gm.set_shared(0, PAGE).unwrap();
    assert_eq!(g.probe(1), vec![0x11]);

    // bind_with_shared refuses a backing that does not match the bound range.
    assert!(matches!(
        gm.bind_with_shared(1, 0, 2 * PAGE, backing(8 * PAGE, 1)),
        Err(Error::SharedBacking { slot: 1, gpa, .. }) if gpa == 8 * PAGE
    ));
}

fn mmap_guest_memfd_serves_shared_pages_itself() {
    let mut g = Guest::new();
    let caps = gmem::Capabilities::probe(&g.vm);
    assert!(
        caps.guest_memfd_flags.contains(GmemFlags::MMAP),
        "MMAP is offered on a default VM but not on this software-protected one: {caps}"
    );
    // INIT_SHARED is not offered where the VM has private memory (7.3 arch/x86/kvm/x86.c:
    // `kvm_arch_supports_gmem_init_shared`).
    assert!(
        !caps.guest_memfd_flags.contains(GmemFlags::INIT_SHARED),
        "{caps}"
    );
    let mut gm = GuestMemfd::create(&g.vm, 4 * PAGE, GmemFlags::MMAP).unwrap();
    // Not host-mappable: every host fault on such a file is SIGBUS (`kvm_gmem_fault_user_mapping`).
    assert!(matches!(
        gm.map_shared(0, PAGE),
        Err(Error::NotMappable { .. })
    ));
    // A separate shared backing would be ignored for the guest: refused.
    assert!(matches!(
        gm.bind_with_shared(0, 0, 4 * PAGE, backing(PAGE, 4)),
        Err(Error::SharedBacking { slot: 0, .. })
    ));
    let _slot = gm.bind(0, PAGE, 0, 4 * PAGE).unwrap();
    // The slot is guest_memfd-only (`kvm_gmem_prepare_memory_region` sets
    // KVM_MEMSLOT_GMEM_ONLY; `__kvm_mmu_faultin_pfn` maps shared faults from the guest_memfd
    // too): a page reads the same guest_memfd page whether shared or private.
    g.write(0x1000, 0x33);
    gm.set_private(0, PAGE).unwrap();
    assert_eq!(g.probe(2), vec![0x33, 0]);
    gm.set_shared(0, PAGE).unwrap();
    assert_eq!(g.probe(2), vec![0x33, 0]);
}

fn memory_fault_exit_for_private_gpa_without_guest_memfd() {
    let mut g = Guest::new();
    // GPA page 8: a plain memslot (no guest_memfd), its first 16 bytes 0xc8.
    let plain: &'static GuestRegionMmap<()> = Box::leak(Box::new(
        GuestRegionMmap::new(
            MmapRegion::new(PAGE as usize).unwrap(),
            GuestAddress(0x8000),
        )
        .unwrap(),
    ));
    plain
        .write_slice(&[0xc8; 16], MemoryRegionAddress(0))
        .unwrap();
    let region = kvm_userspace_memory_region {
        slot: 1,
        flags: 0,
        guest_phys_addr: 0x8000,
        memory_size: PAGE,
        userspace_addr: plain.as_ptr() as u64,
    };
    // SAFETY: a leaked mapping of PAGE bytes, never unmapped.
    unsafe { g.vm.set_user_memory_region(region) }.unwrap();
    assert_eq!(g.read(0x8000), Stop::Halt(vec![0xc8]));

    // The GPA made private: the access is private (`kvm_mmu_page_fault`, from the attribute)
    // and the slot has no guest_memfd to map it from: 7.3 `kvm_mmu_faultin_pfn_gmem` (6.12
    // `kvm_faultin_pfn_private`) calls `kvm_mmu_prepare_memory_fault_exit` and KVM_RUN fails
    // with EFAULT: exit 39, gpa = the faulting GFN << PAGE_SHIFT, size = PAGE_SIZE, flags =
    // KVM_MEMORY_EXIT_FLAG_PRIVATE (`kvm_prepare_memory_fault_exit`). kvm-ioctls 0.25 gives it
    // as Ok(VcpuExit::MemoryFault).
    assert_eq!(g.set_attributes(0x8000, PAGE, PRIVATE, 0), 0);
    let (fault, out) = match g.read(0x8003) {
        Stop::Fault(f, out) => (f, out),
        other => panic!("expected a memory fault, got {other:?}"),
    };
    assert_eq!(out, vec![]);
    assert_eq!(
        fault,
        MemoryFault {
            gpa: 0x8000,
            size: PAGE,
            flags: gmem::uapi::KVM_MEMORY_EXIT_FLAG_PRIVATE
        }
    );
    assert_eq!(fault.accessed_as(), MemoryState::Private);
    assert_eq!(
        g.vcpu.get_kvm_run().exit_reason,
        gmem::uapi::KVM_EXIT_MEMORY_FAULT
    );
    // The VMM resolves it by making the GPA shared; the vCPU retries the same instruction.
    assert_eq!(g.set_attributes(0x8000, PAGE, 0, 0), 0);
    assert_eq!(g.resume(out), Stop::Halt(vec![0xc8]));

    // A private GPA with no memslot at all: `kvm_handle_noslot_fault` exits the same way
    // (6.12 and 7.3) instead of emulating MMIO.
    assert_eq!(g.set_attributes(0xa000, PAGE, PRIVATE, 0), 0);
    match g.read(0xa010) {
        Stop::Fault(f, _) => assert_eq!(f, MemoryFault::new(8, 0xa000, PAGE)),
        other => panic!("expected a memory fault, got {other:?}"),
    }
    // Shared again, the same access is emulated MMIO.
    assert_eq!(g.set_attributes(0xa000, PAGE, 0, 0), 0);
    g.mmio_byte = 0x42;
    assert_eq!(g.resume(vec![]), Stop::Halt(vec![0x42]));
}

fn pre_fault_memory_maps_private_and_shared_and_reports_how_far() {
    let (mut g, mut gm, _shared, _slot) = guest_with_memory();
    gm.set_private(2 * PAGE, 2 * PAGE).unwrap();
    // Private GPA pages 3, 4 (from the guest_memfd), then shared ones (from the backing).
    gmem::pre_fault_memory(&g.vcpu, 3 * PAGE, 2 * PAGE).unwrap();
    gmem::pre_fault_memory(&g.vcpu, PAGE, 8 * PAGE).unwrap();
    // The guest sees what it saw before: pre-faulting maps, it does not change contents.
    assert_eq!(g.probe(8), expect(8, &[3, 4]));

    // Running past the slot's end: the pages in the slot are mapped (the kernel returns
    // success with gpa/size moved, `kvm_vcpu_pre_fault_memory`), then the first GPA without a
    // memslot fails with ENOENT (7.3 `kvm_tdp_page_prefault`, 6.12 `kvm_tdp_map_page`:
    // RET_PF_EMULATE).
    let e = gmem::pre_fault_memory(&g.vcpu, 7 * PAGE, 4 * PAGE).unwrap_err();
    assert!(
        matches!(&e, Error::PreFault { gpa, len, done, source }
            if *gpa == 7 * PAGE && *len == 4 * PAGE && *done == 2 * PAGE
                && source.errno() == libc::ENOENT),
        "{e:?}"
    );
    // The kernel's own answer for the same call: success, and what is left.
    assert_eq!(
        g.raw_pre_fault(7 * PAGE, 4 * PAGE, 0),
        (0, 9 * PAGE, 2 * PAGE)
    );
    // Nothing mapped at all: the errno itself.
    assert_eq!(
        g.raw_pre_fault(0x10_0000, PAGE, 0),
        (libc::ENOENT, 0x10_0000, PAGE)
    );
    assert!(matches!(
        gmem::pre_fault_memory(&g.vcpu, 0x10_0000, PAGE),
        Err(Error::PreFault { done: 0, ref source, .. }) if source.errno() == libc::ENOENT
    ));
    // A private GPA without a memslot: EFAULT (`kvm_handle_noslot_fault`).
    assert_eq!(g.set_attributes(0x20_0000, PAGE, PRIVATE, 0), 0);
    assert!(matches!(
        gmem::pre_fault_memory(&g.vcpu, 0x20_0000, PAGE),
        Err(Error::PreFault { done: 0, ref source, .. }) if source.errno() == libc::EFAULT
    ));
    // Refused before the kernel, which answers EINVAL (`kvm_vcpu_pre_fault_memory`).
    assert!(matches!(
        gmem::pre_fault_memory(&g.vcpu, PAGE + 1, PAGE),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        gmem::pre_fault_memory(&g.vcpu, PAGE, 0),
        Err(Error::EmptyRange { .. })
    ));
    assert_eq!(g.raw_pre_fault(PAGE + 1, PAGE, 0).0, libc::EINVAL);
    assert_eq!(g.raw_pre_fault(PAGE, 0, 0).0, libc::EINVAL);
    assert_eq!(g.raw_pre_fault(PAGE, PAGE, 1).0, libc::EINVAL);
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(
            convert_to_private_and_back_the_guest_sees_each_backing,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            partly_converted_ranges_convert_whole,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            conversion_spans_memslots_in_file_order,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            unbound_range_is_refused_and_changes_nothing,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            misaligned_and_bad_ranges_are_refused_before_the_kernel,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            bind_on_a_protected_vm_without_a_shared_backing,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        // MMAP on the software-protected VM: offered wherever the default VM offers the shared
        // view (7.3 `kvm_gmem_get_supported_flags` always includes MMAP; 6.12 has neither).
        gmem::kvm_test!(
            mmap_guest_memfd_serves_shared_pages_itself,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            memory_fault_exit_for_private_gpa_without_guest_memfd,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            pre_fault_memory_maps_private_and_shared_and_reports_how_far,
            Need::SwProtectedVm,
            Need::PrivateAttributes,
            Need::UserMemory2,
            Need::PreFaultMemory
        ),
    ])
}
