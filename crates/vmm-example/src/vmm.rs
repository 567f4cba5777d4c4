//! The VMM: its VM object, its guest memory and memslots, and the launch of an IGVM file.

use std::fmt;
use std::time::{Duration, Instant};

use cc_image::{load_igvm_with, IgvmPolicy, LaunchImage, Platform};
use cc_populate::{Content, Driver, GuestSource, MemoryLayout, Memslot, PlanBuilder, RegionSpec};
use sev_backend::uapi::{
    kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update,
};
use sev_backend::{
    snp_caps, AttachState, FinishParams, KernelVersion, LaunchConfig, LaunchState, PageType,
    SevCmd, SevIoctl, SevIoctlError, SnpBackend, StartParams, UpdateSource,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{Error, SnpHypervisor};

const PAGE: u64 = 4096;

/// The ioctls a launch made, by command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlCounts {
    /// `KVM_SEV_INIT2`.
    pub init2: u64,
    /// `KVM_SEV_SNP_LAUNCH_START`.
    pub launch_start: u64,
    /// `KVM_SEV_SNP_LAUNCH_UPDATE`.
    pub launch_update: u64,
    /// `KVM_SEV_SNP_LAUNCH_FINISH`.
    pub launch_finish: u64,
    /// `KVM_SET_MEMORY_ATTRIBUTES` (making guest memory private).
    pub set_memory_attributes: u64,
}

impl IoctlCounts {
    /// Every ioctl counted.
    pub fn total(&self) -> u64 {
        self.init2
            + self.launch_start
            + self.launch_update
            + self.launch_finish
            + self.set_memory_attributes
    }

    /// The ioctls that put the image into guest memory: conversions and `LAUNCH_UPDATE`s.
    pub fn populate(&self) -> u64 {
        self.launch_update + self.set_memory_attributes
    }
}

impl fmt::Display for IoctlCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ioctls: {} KVM_SET_MEMORY_ATTRIBUTES, {} LAUNCH_UPDATE, INIT2 {}, LAUNCH_START {}, LAUNCH_FINISH {}",
            self.total(),
            self.set_memory_attributes,
            self.launch_update,
            self.init2,
            self.launch_start,
            self.launch_finish
        )
    }
}

/// The VMM's ioctl log: a [`SevIoctl`] that counts what goes through it to the layer it wraps.
struct Counted<'a> {
    inner: &'a mut dyn SevIoctl,
    counts: &'a mut IoctlCounts,
}

impl SevIoctl for Counted<'_> {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        let c = &mut self.counts;
        match &cmd {
            SevCmd::Init2(_) => c.init2 += 1,
            SevCmd::LaunchStart(_) => c.launch_start += 1,
            SevCmd::LaunchUpdate { .. } => c.launch_update += 1,
            SevCmd::LaunchFinish(_) => c.launch_finish += 1,
        }
        self.inner.encrypt_op(cmd)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        self.counts.set_memory_attributes += 1;
        self.inner.set_private(gpa, len)
    }
    fn in_place_populate(&self) -> bool {
        self.inner.in_place_populate()
    }
    fn kernel(&self) -> KernelVersion {
        self.inner.kernel()
    }
    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        self.inner.create_vcpu(id)
    }
    fn vm_alive(&mut self) -> Option<bool> {
        self.inner.vm_alive()
    }
}

fn command(cmd: &'static str) -> impl Fn(SevIoctlError) -> Error {
    move |e| Error::Command {
        cmd,
        errno: e.errno,
        fw_error: e.fw_error,
    }
}

/// How the VMM puts the image into private memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PopulatePath {
    /// Through cc-populate's driver and sev-backend's [`SnpBackend`] attached to the launch:
    /// one conversion per region, one `LAUNCH_UPDATE` per chunk of at most 2 MiB (cut at 2 MiB
    /// boundaries), the bytes read from the VMM's guest memory ([`GuestSource`]).
    #[default]
    Driver,
    /// Page by page, as Cloud Hypervisor does: for every 4 KiB page, one
    /// `KVM_SET_MEMORY_ATTRIBUTES` and one `LAUNCH_UPDATE`.
    PagePerCall,
}

/// How the VMM launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchOptions {
    /// How the IGVM file is measured and populated (empty pages: NORMAL of zeros, or ZERO).
    pub policy: IgvmPolicy,
    /// vCPUs the VMM creates.
    pub vcpus: u32,
    /// How it populates.
    pub path: PopulatePath,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            policy: IgvmPolicy::CLOUD_HYPERVISOR,
            vcpus: 1,
            path: PopulatePath::Driver,
        }
    }
}

/// What a launch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchReport {
    /// How it populated.
    pub path: PopulatePath,
    /// Pages populated (the image's, excluding the VMSAs KVM measures at `LAUNCH_FINISH`).
    pub pages: u64,
    /// The ioctls made, from `KVM_SEV_INIT2` to `LAUNCH_FINISH`.
    pub ioctls: IoctlCounts,
    /// The launch digest the platform computed, where the hypervisor layer can read it
    /// ([`SnpHypervisor::launch_digest`]).
    pub digest: Option<[u8; 48]>,
    /// The launch digest computed offline from the file ([`LaunchImage::measure`]), what a
    /// verifier expects.
    pub expected: Vec<u8>,
    /// Whether `LAUNCH_FINISH` was given the file's ID block.
    pub id_block: bool,
    /// Wall time of the populate step (conversions and `LAUNCH_UPDATE`s).
    pub populate_time: Duration,
}

impl LaunchReport {
    /// Whether the platform's digest is known and equals the offline measurement.
    pub fn digest_matches(&self) -> bool {
        self.digest.is_some_and(|d| d[..] == self.expected[..])
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl fmt::Display for LaunchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?}: {} pages, {} ({} to populate) in {:.3} ms",
            self.path,
            self.pages,
            self.ioctls,
            self.ioctls.populate(),
            self.populate_time.as_secs_f64() * 1e3
        )?;
        match self.digest {
            Some(d) => writeln!(f, "  launch digest {}", hex(&d))?,
            None => writeln!(f, "  launch digest: in the guest's attestation report")?,
        }
        write!(
            f,
            "  expected      {}{}",
            hex(&self.expected),
            if self.digest_matches() {
                " (equal)"
            } else {
                ""
            }
        )
    }
}

/// A page-aligned page, the source of one `LAUNCH_UPDATE` of the page-per-call loop.
#[repr(C, align(4096))]
struct AlignedPage([u8; PAGE as usize]);

/// A VMM's VM: it owns its hypervisor layer (VM fd, `/dev/sev`, guest_memfd, vCPUs: `H`), its
/// guest memory (a vm-memory [`GuestMemoryMmap`], the shared pages its devices use) and its
/// memslots, and launches an SEV-SNP guest from an IGVM file through cc-image, cc-populate and
/// sev-backend, lending them what they need for each call.
#[derive(Debug)]
pub struct Vmm<H> {
    hypervisor: H,
    memory: GuestMemoryMmap,
    memslots: Vec<Memslot>,
}

impl<H: SnpHypervisor> Vmm<H> {
    /// Maps guest memory for `ram` (guest-physical `(start, size)` ranges, page-aligned) and
    /// binds each range as memslot 0, 1, ... backed by the guest_memfd, one after the other in
    /// the file.
    pub fn new(mut hypervisor: H, ram: &[(u64, u64)]) -> Result<Vmm<H>, Error> {
        let ranges: Vec<(GuestAddress, usize)> = ram
            .iter()
            .map(|&(gpa, size)| {
                usize::try_from(size)
                    .map(|s| (GuestAddress(gpa), s))
                    .map_err(|_| Error::Memory(format!("[{gpa:#x}..+{size:#x}): too large")))
            })
            .collect::<Result<_, _>>()?;
        let memory = GuestMemoryMmap::<()>::from_ranges(&ranges)
            .map_err(|e| Error::Memory(format!("mapping {ram:x?}: {e}")))?;
        let mut memslots = Vec::with_capacity(ram.len());
        let mut offset = 0;
        for (slot, &(gpa, size)) in (0u32..).zip(ram) {
            let host = memory
                .get_host_address(GuestAddress(gpa))
                .map_err(|e| Error::Memory(format!("{gpa:#x}: {e}")))?;
            hypervisor.add_memslot(slot, gpa, size, offset, host as u64)?;
            memslots.push(Memslot { slot, gpa, size });
            offset += size;
        }
        Ok(Vmm {
            hypervisor,
            memory,
            memslots,
        })
    }

    /// The guest memory (the shared pages devices use).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The hypervisor layer.
    pub fn hypervisor(&self) -> &H {
        &self.hypervisor
    }

    /// The hypervisor layer, mutably (e.g. to create a vCPU).
    pub fn hypervisor_mut(&mut self) -> &mut H {
        &mut self.hypervisor
    }

    /// The memslots.
    pub fn memslots(&self) -> &[Memslot] {
        &self.memslots
    }

    /// Launches `igvm`: loads it under `opts.policy`, writes its pages into guest memory (as
    /// an IGVM loader does), issues the VMM's own `KVM_SEV_INIT2`, creates its vCPUs, issues
    /// `LAUNCH_START` with the file's guest policy, populates by `opts.path`, and finishes with
    /// the file's ID block, if any.
    pub fn launch_igvm(
        &mut self,
        igvm: &[u8],
        opts: &LaunchOptions,
    ) -> Result<LaunchReport, Error> {
        let image = load_igvm_with(igvm, Platform::Snp, opts.policy)?;
        let expected = image.measure()?;
        self.load(&image)?;
        let mut ioctls = IoctlCounts::default();
        let policy = image.snp_policy().unwrap_or(StartParams::default().policy);
        self.start(opts.vcpus, policy, &mut ioctls)?;
        let t = Instant::now();
        let id_block = image.snp_id_block();
        let finish = FinishParams {
            id_block: id_block.map(|b| &b.id_block),
            id_auth: id_block.map(|b| &*b.id_auth),
            auth_key: id_block.is_some_and(|b| b.author_key_enabled),
            ..Default::default()
        };
        let populate_time;
        match opts.path {
            PopulatePath::Driver => {
                populate_time = self.populate_with_driver(&image, &finish, &mut ioctls)?;
            }
            PopulatePath::PagePerCall => {
                self.populate_page_per_call(&image, &mut ioctls)?;
                populate_time = t.elapsed();
                self.finish_by_hand(&finish, &mut ioctls)?;
            }
        }
        Ok(LaunchReport {
            path: opts.path,
            pages: image.regions().iter().map(|r| r.size() / PAGE).sum(),
            ioctls,
            digest: self.hypervisor.launch_digest(),
            expected,
            id_block: id_block.is_some(),
            populate_time,
        })
    }

    /// Writes the image's page data (and its shared pages) into guest memory at their
    /// addresses; pages without data stay as they are (zero in fresh memory).
    fn load(&self, image: &LaunchImage) -> Result<(), Error> {
        let write = |gpa: u64, data: &[u8]| {
            self.memory
                .write_slice(data, GuestAddress(gpa))
                .map_err(|e| Error::Memory(format!("writing [{gpa:#x}..+{:#x}): {e}", data.len())))
        };
        for r in image.regions() {
            if let Some(data) = r.data() {
                write(r.gpa(), data)?;
            }
        }
        for p in image.shared_pages() {
            write(p.gpa, &p.data)?;
        }
        Ok(())
    }

    /// The VMM's own VM setup, before anything is populated: `KVM_SEV_INIT2`, its vCPUs,
    /// `KVM_SEV_SNP_LAUNCH_START`.
    fn start(&mut self, vcpus: u32, policy: u64, ioctls: &mut IoctlCounts) -> Result<(), Error> {
        self.hypervisor.with_sev(&mut |io| {
            let mut init = kvm_sev_init::default();
            Counted {
                inner: io,
                counts: ioctls,
            }
            .encrypt_op(SevCmd::Init2(&mut init))
            .map_err(command("KVM_SEV_INIT2"))
        })?;
        for id in 0..vcpus {
            self.hypervisor.create_vcpu(u64::from(id))?;
        }
        self.hypervisor.with_sev(&mut |io| {
            let mut start = kvm_sev_snp_launch_start {
                policy,
                ..Default::default()
            };
            Counted {
                inner: io,
                counts: ioctls,
            }
            .encrypt_op(SevCmd::LaunchStart(&mut start))
            .map_err(command("KVM_SEV_SNP_LAUNCH_START"))
        })
    }

    /// The plan over the VMM's memslots, each region's bytes read from the VMM's own guest
    /// memory at its address, populated by the driver through an [`SnpBackend`] attached to
    /// the launch the VMM started; then `LAUNCH_FINISH`.
    fn populate_with_driver(
        &mut self,
        image: &LaunchImage,
        finish: &FinishParams<'_>,
        ioctls: &mut IoctlCounts,
    ) -> Result<Duration, Error> {
        let Vmm {
            hypervisor,
            memory,
            memslots,
        } = self;
        let config = LaunchConfig::default();
        let caps = snp_caps(false, config.max_chunk);
        let layout = MemoryLayout::new(memslots)?;
        let mut b = PlanBuilder::with_capacity(image.regions().len());
        for r in image.regions() {
            let content = if r.role().carries_content() {
                Content::Guest(GuestSource::new(&*memory, r.gpa()))
            } else {
                Content::Zero
            };
            b.push(RegionSpec {
                gpa: r.gpa(),
                len: r.size(),
                role: r.role(),
                content,
            });
        }
        let plan = b.build(&caps, &layout)?;
        let at = AttachState {
            state: LaunchState::Started,
            vcpus: u32::try_from(hypervisor.vcpu_count()).unwrap_or(u32::MAX),
        };
        let mut took = Duration::ZERO;
        hypervisor.with_sev(&mut |io| {
            let io = Counted {
                inner: io,
                counts: &mut *ioctls,
            };
            let mut snp = SnpBackend::attach(io, config, at)?;
            let t = Instant::now();
            Driver::new(&mut snp).run(&plan)?;
            took = t.elapsed();
            snp.finish(finish)?;
            Ok(())
        })?;
        Ok(took)
    }

    /// Cloud Hypervisor's loop: each 4 KiB page made private and populated by its own
    /// `LAUNCH_UPDATE`, its bytes copied out of guest memory into a page-aligned buffer.
    fn populate_page_per_call(
        &mut self,
        image: &LaunchImage,
        ioctls: &mut IoctlCounts,
    ) -> Result<(), Error> {
        let Vmm {
            hypervisor, memory, ..
        } = self;
        let mut page = Box::new(AlignedPage([0; PAGE as usize]));
        hypervisor.with_sev(&mut |io| {
            let mut io = Counted {
                inner: io,
                counts: &mut *ioctls,
            };
            for r in image.regions() {
                let ty = PageType::for_role(r.role()).ok_or_else(|| Error::Page {
                    gpa: r.gpa(),
                    reason: format!("role {} has no SEV-SNP page type", r.role()),
                })?;
                for gpa in (r.gpa()..r.gpa() + r.size()).step_by(PAGE as usize) {
                    io.set_private(gpa, PAGE).map_err(|errno| Error::Os {
                        op: format!("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [{gpa:#x}..+{PAGE:#x})"),
                        errno,
                    })?;
                    let zero = ty == PageType::Zero;
                    if !zero {
                        memory
                            .read_slice(&mut page.0, GuestAddress(gpa))
                            .map_err(|e| Error::Memory(format!("reading {gpa:#x}: {e}")))?;
                    }
                    let mut p = kvm_sev_snp_launch_update {
                        gfn_start: gpa / PAGE,
                        uaddr: if zero { 0 } else { page.0.as_ptr() as u64 },
                        len: PAGE,
                        type_: ty.code(),
                        ..Default::default()
                    };
                    let source = (!zero).then(|| UpdateSource::Bounce(&mut page.0[..]));
                    io.encrypt_op(SevCmd::LaunchUpdate {
                        params: &mut p,
                        source,
                    })
                    .map_err(command("KVM_SEV_SNP_LAUNCH_UPDATE"))?;
                    if p.len != 0 {
                        return Err(Error::Page {
                            gpa,
                            reason: "KVM_SEV_SNP_LAUNCH_UPDATE succeeded without populating it"
                                .into(),
                        });
                    }
                }
            }
            Ok(())
        })
    }

    /// `LAUNCH_FINISH` issued by the VMM itself (the page-per-call path).
    fn finish_by_hand(
        &mut self,
        finish: &FinishParams<'_>,
        ioctls: &mut IoctlCounts,
    ) -> Result<(), Error> {
        self.hypervisor.with_sev(&mut |io| {
            let mut fin = kvm_sev_snp_launch_finish {
                id_block_uaddr: finish.id_block.map_or(0, |b| b.as_ptr() as u64),
                id_auth_uaddr: finish.id_auth.map_or(0, |b| b.as_ptr() as u64),
                id_block_en: u8::from(finish.id_block.is_some()),
                auth_key_en: u8::from(finish.auth_key),
                ..Default::default()
            };
            Counted {
                inner: io,
                counts: ioctls,
            }
            .encrypt_op(SevCmd::LaunchFinish(&mut fin))
            .map_err(command("KVM_SEV_SNP_LAUNCH_FINISH"))
        })
    }
}
