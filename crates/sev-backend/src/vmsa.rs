//! The VMSA pages KVM measures at `KVM_SEV_SNP_LAUNCH_FINISH`, synthesized from the launch's
//! inputs (vCPU count, signature, VMM type, SEV features) so that a verifier needs no dump of
//! them.
//!
//! What KVM writes (Linux 6.18, `arch/x86/kvm/svm/sev.c`, `snp_launch_update_vmsa` ->
//! `sev_es_sync_vmsa`): for each vCPU in index order, the VMCB save area as the vCPU's reset and
//! the VMM's `KVM_SET_SREGS`/`KVM_SET_REGS`/`KVM_SET_XSAVE` left it, the general registers,
//! `XCR0`, `PKRU`, `XSS`, `DR6`, `sev_features = sev->vmsa_features` (which
//! `__sev_guest_init` always ORs with `SVM_SEV_FEAT_SNP_ACTIVE` for an SNP VM), and, for VM
//! types other than `KVM_X86_DEFAULT_VM` (every SNP VM), the x87/SSE state of the guest FPU.
//! Each page is recorded at GPA `0xFFFFFFFFF000` ([`crate::uapi::SNP_VMSA_GPA`]).
//!
//! The page layout is the kernel's `struct sev_es_save_area` (`arch/x86/include/asm/svm.h`);
//! [`layout`] holds the offsets this module writes, pinned by tests against that struct.
//!
//! Register values per VMM ([`VmmType`]):
//! - **QEMU**: its x86 reset state (`x86_cpu_reset_hold`): real-mode segments with accessed
//!   bits (`CS` 0x9b, data 0x93, `TR` 0x8b busy 32-bit TSS, `LDTR` 0x82), `RDX` = the CPUID
//!   signature, `FCW` 0x37f, `MXCSR` 0x1f80, `XCR0` 1, `PAT` 0x0007040600070406; KVM adds
//!   `EFER.SVME` (0x1000), keeps `CR4.MCE` of the host (0x40) and clears `CR0.CD/NW` (0x10).
//!   The BSP starts at 0xfffffff0; the APs at the address OVMF's SEV-ES reset block gives
//!   (QEMU `sev_es_set_reset_vector`: `CS.base` = address & 0xffff0000, `RIP` = its low 16
//!   bits).
//! - **EC2** and **GCE**: the register states `sev-snp-measure` (0.0.13) records for those
//!   hypervisors (EC2: KVM's own defaults for the BSP's `CS` 0x9a and `SS` 0x92, `TR` 0x83,
//!   `RDX` 0x600, no FPU state; GCE: QEMU's segments, `RDX` 0x600, `PAT` 0x70106, no FPU state).
//!   Their register state is their VMM's, which the kernel source cannot tell; these values are
//!   the ones their operators' live measurements match.

use std::fmt;
use std::str::FromStr;

use crate::digest::PAGE;

/// Byte offsets in the VMSA page (the kernel's `struct sev_es_save_area`).
pub mod layout {
    /// `ES` (a segment: `u16 selector, u16 attrib, u32 limit, u64 base`).
    pub const ES: usize = 0x000;
    /// `CS`.
    pub const CS: usize = 0x010;
    /// `SS`.
    pub const SS: usize = 0x020;
    /// `DS`.
    pub const DS: usize = 0x030;
    /// `FS`.
    pub const FS: usize = 0x040;
    /// `GS`.
    pub const GS: usize = 0x050;
    /// `GDTR`.
    pub const GDTR: usize = 0x060;
    /// `LDTR`.
    pub const LDTR: usize = 0x070;
    /// `IDTR`.
    pub const IDTR: usize = 0x080;
    /// `TR`.
    pub const TR: usize = 0x090;
    /// `EFER`.
    pub const EFER: usize = 0x0d0;
    /// `XSS`.
    pub const XSS: usize = 0x140;
    /// `CR4`.
    pub const CR4: usize = 0x148;
    /// `CR0`.
    pub const CR0: usize = 0x158;
    /// `DR7`.
    pub const DR7: usize = 0x160;
    /// `DR6`.
    pub const DR6: usize = 0x168;
    /// `RFLAGS`.
    pub const RFLAGS: usize = 0x170;
    /// `RIP`.
    pub const RIP: usize = 0x178;
    /// `RSP`.
    pub const RSP: usize = 0x1d8;
    /// `RAX`.
    pub const RAX: usize = 0x1f8;
    /// `G_PAT`.
    pub const G_PAT: usize = 0x268;
    /// `PKRU` (u32).
    pub const PKRU: usize = 0x2e8;
    /// `RDX`.
    pub const RDX: usize = 0x310;
    /// `SEV_FEATURES`.
    pub const SEV_FEATURES: usize = 0x3b0;
    /// `XCR0`.
    pub const XCR0: usize = 0x3e8;
    /// `MXCSR` (u32).
    pub const MXCSR: usize = 0x408;
    /// `X87_FTW` (u16).
    pub const X87_FTW: usize = 0x40c;
    /// `X87_FCW` (u16).
    pub const X87_FCW: usize = 0x410;
    /// One past the save area (`sizeof(struct sev_es_save_area)` = 1648); the rest of the page
    /// is zero.
    pub const END: usize = 0x670;
}

/// `SEV_FEATURES` bit 0, `SNPActive`: KVM sets it in every SNP VMSA.
pub const SEV_FEATURE_SNP_ACTIVE: u64 = 1 << 0;
/// `SEV_FEATURES` bit 5, `DebugSwap`.
pub const SEV_FEATURE_DEBUG_SWAP: u64 = 1 << 5;
/// The most vCPUs a KVM guest can have (`KVM_MAX_NR_VCPUS`' upper bound, arch/x86/kvm/Kconfig).
pub const MAX_VCPUS: u32 = 4096;

/// The BSP's reset address.
pub const BSP_RESET_EIP: u32 = 0xffff_fff0;

/// The VMM whose reset register state the VMSAs carry (and, with it, how the firmware's
/// metadata sections are populated: see [`crate::SectionPolicy::for_vmm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum VmmType {
    /// QEMU on KVM.
    #[default]
    Qemu,
    /// Amazon EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl VmmType {
    /// Every VMM type.
    pub const ALL: [VmmType; 3] = [VmmType::Qemu, VmmType::Ec2, VmmType::Gce];

    /// Its name (`qemu`, `ec2`, `gce`).
    pub fn name(self) -> &'static str {
        match self {
            VmmType::Qemu => "qemu",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        }
    }
}

impl fmt::Display for VmmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A VMM type name that is none of `qemu`, `ec2`, `gce`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVmm(pub String);

impl fmt::Display for UnknownVmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown VMM type {:?} (known: qemu, ec2, gce)", self.0)
    }
}

impl std::error::Error for UnknownVmm {}

impl FromStr for VmmType {
    type Err = UnknownVmm;

    /// Parses a name, ASCII case-insensitively (`QEMU`, `qemu`, `EC2`, ...).
    fn from_str(s: &str) -> Result<Self, UnknownVmm> {
        VmmType::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownVmm(s.to_string()))
    }
}

/// The inputs of the VMSAs of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuConfig {
    /// Number of vCPUs (1 to [`MAX_VCPUS`]).
    pub count: u32,
    /// The CPUID signature QEMU puts in `RDX` ([`crate::cpu_signature`],
    /// [`crate::VcpuType::signature`]); EC2 and GCE use their own value.
    pub signature: u32,
    /// The VMM.
    pub vmm: VmmType,
    /// The `SEV_FEATURES` asked of KVM (`KVM_SEV_INIT2`'s `vmsa_features`); KVM adds
    /// [`SEV_FEATURE_SNP_ACTIVE`].
    pub guest_features: u64,
}

impl Default for VcpuConfig {
    /// One QEMU vCPU of signature 0 with features `SNPActive`.
    fn default() -> Self {
        VcpuConfig {
            count: 1,
            signature: 0,
            vmm: VmmType::Qemu,
            guest_features: SEV_FEATURE_SNP_ACTIVE,
        }
    }
}

/// The VMSA pages of a launch: the BSP's, then one per AP (all APs start alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmsas {
    bsp: Box<[u8; PAGE]>,
    ap: Option<Box<[u8; PAGE]>>,
    count: u32,
}

impl Vmsas {
    /// Number of vCPUs (pages).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The page of vCPU `index` (0 is the BSP), or `None` past the count.
    pub fn page(&self, index: u32) -> Option<&[u8; PAGE]> {
        match (index, &self.ap) {
            (0, _) => Some(&self.bsp),
            (i, Some(ap)) if i < self.count => Some(ap),
            _ => None,
        }
    }

    /// Every page, in vCPU order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8; PAGE]> + '_ {
        (0..self.count).filter_map(|i| self.page(i))
    }

    /// The distinct pages (BSP, then the APs' one if there are APs) with how many vCPUs use each,
    /// in vCPU order: what the digest needs to hash only once.
    pub fn distinct(&self) -> Vec<(&[u8; PAGE], u32)> {
        let mut v = vec![(&*self.bsp, 1)];
        if let Some(ap) = &self.ap {
            v.push((&**ap, self.count - 1));
        }
        v
    }
}

/// Why VMSAs cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmsaError {
    /// No vCPUs, or more than KVM allows.
    #[error("{0} vCPUs: a launch has 1 to {MAX_VCPUS}")]
    VcpuCount(u32),
    /// APs but no address to start them at.
    #[error(
        "{0} vCPUs need an AP reset address, and the firmware has no SEV-ES reset block \
         (00f771de-1a7e-4fcb-890e-68c77e2fb44e)"
    )]
    NoApResetAddress(u32),
}

/// A 4 KiB VMSA page being filled.
struct Page(Box<[u8; PAGE]>);

impl Page {
    fn new() -> Page {
        Page(Box::new([0u8; PAGE]))
    }
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.put(at, &v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
    fn u64(&mut self, at: usize, v: u64) {
        self.put(at, &v.to_le_bytes());
    }
    fn seg(&mut self, at: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.u16(at, selector);
        self.u16(at + 2, attrib);
        self.u32(at + 4, limit);
        self.u64(at + 8, base);
    }
}

/// Registers common to every VMSA KVM launches from a reset state.
fn common(p: &mut Page, pat: u64, rdx: u64, features: u64, mxcsr: u32, fcw: u16) {
    use layout::*;
    // svm_set_efer: EFER.SVME; svm_set_cr4: the host's CR4.MCE; svm_set_cr0: CR0.ET with CD/NW
    // cleared; DR7/DR6 at their fixed-1 values (DR7_FIXED_1, DR6_ACTIVE_LOW); RFLAGS bit 1.
    p.u64(EFER, 0x1000);
    p.u64(CR4, 0x40);
    p.u64(CR0, 0x10);
    p.u64(DR7, 0x400);
    p.u64(DR6, 0xffff_0ff0);
    p.u64(RFLAGS, 0x2);
    p.u64(G_PAT, pat);
    p.u64(RDX, rdx);
    p.u64(SEV_FEATURES, features);
    // vcpu->arch.xcr0 = XFEATURE_MASK_FP at reset.
    p.u64(XCR0, 0x1);
    p.u32(MXCSR, mxcsr);
    p.u16(X87_FCW, fcw);
}

/// PAT's power-on value (AMD APM vol. 2, A.3), KVM's `MSR_IA32_CR_PAT_DEFAULT`.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

fn reset_vmsa(eip: u32, cfg: &VcpuConfig) -> Box<[u8; PAGE]> {
    use layout::*;
    let features = cfg.guest_features | SEV_FEATURE_SNP_ACTIVE;
    let mut p = Page::new();
    let (cs, ss, tr, pat, rdx, mxcsr, fcw) = match cfg.vmm {
        VmmType::Qemu => (
            0x9b,
            0x93,
            0x8b,
            PAT_DEFAULT,
            u64::from(cfg.signature),
            0x1f80,
            0x37f,
        ),
        VmmType::Ec2 => {
            let cs = if eip == BSP_RESET_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, PAT_DEFAULT, 0x600, 0, 0)
        }
        VmmType::Gce => (0x9b, 0x93, 0x8b, 0x0007_0106, 0x600, 0, 0),
    };
    for at in [ES, DS, FS, GS] {
        p.seg(at, 0, 0x93, 0xffff, 0);
    }
    p.seg(CS, 0xf000, cs, 0xffff, u64::from(eip & 0xffff_0000));
    p.seg(SS, 0, ss, 0xffff, 0);
    p.seg(GDTR, 0, 0, 0xffff, 0);
    p.seg(IDTR, 0, 0, 0xffff, 0);
    p.seg(LDTR, 0, 0x82, 0xffff, 0);
    p.seg(TR, 0, tr, 0xffff, 0);
    p.u64(RIP, u64::from(eip & 0xffff));
    common(&mut p, pat, rdx, features, mxcsr, fcw);
    p.0
}

/// The VMSAs of an SNP launch from a firmware reset: the BSP at 0xfffffff0, the APs at
/// `ap_reset_eip` (the firmware's SEV-ES reset block: [`crate::OvmfImage::sev_es_reset_eip`]).
/// Refuses 0 or more than [`MAX_VCPUS`] vCPUs, and APs without an address.
///
/// ```
/// use sev_backend::{snp_vmsas, vmsa_layout, VcpuConfig, VcpuType, VmmType};
///
/// let cfg = VcpuConfig {
///     count: 4,
///     signature: VcpuType::by_name("EPYC-Milan").unwrap().signature(),
///     vmm: VmmType::Qemu,
///     guest_features: 0x1,
/// };
/// let vmsas = snp_vmsas(&cfg, Some(0x80_b004))?;
/// assert_eq!(vmsas.iter().count(), 4);
/// let ap = vmsas.page(1).unwrap();
/// assert_eq!(ap[vmsa_layout::RIP..][..8], 0xb004u64.to_le_bytes());
/// # Ok::<(), sev_backend::VmsaError>(())
/// ```
pub fn snp_vmsas(cfg: &VcpuConfig, ap_reset_eip: Option<u32>) -> Result<Vmsas, VmsaError> {
    if cfg.count == 0 || cfg.count > MAX_VCPUS {
        return Err(VmsaError::VcpuCount(cfg.count));
    }
    let ap = match (cfg.count, ap_reset_eip) {
        (1, _) => None,
        (_, Some(eip)) => Some(reset_vmsa(eip, cfg)),
        (n, None) => return Err(VmsaError::NoApResetAddress(n)),
    };
    Ok(Vmsas {
        bsp: reset_vmsa(BSP_RESET_EIP, cfg),
        ap,
        count: cfg.count,
    })
}

/// The VMSAs of a COCONUT-SVSM launch (QEMU): every vCPU alike, in 32-bit protected mode with
/// flat segments, entering the SVSM at `eip`, with features `SNPActive` only — the layout
/// `sev-snp-measure --mode snp:svsm` computes, with one difference where the kernel decides:
/// `X87_FCW` is 0x37f (the guest FPU state QEMU's reset gives, which `sev_es_sync_vmsa` copies
/// into every SNP VMSA), where `sev-snp-measure` 0.0.13 leaves it 0 (its SVSM save area passes
/// the value under a name that is not the field's).
pub fn svsm_vmsas(count: u32, signature: u32, eip: u32) -> Result<Vmsas, VmsaError> {
    use layout::*;
    if count == 0 || count > MAX_VCPUS {
        return Err(VmsaError::VcpuCount(count));
    }
    let mut p = Page::new();
    for at in [ES, SS, DS, FS] {
        p.seg(at, 16, 0xc93, 0xffff_ffff, 0);
    }
    p.seg(CS, 8, 0xc9b, 0xffff_ffff, 0);
    p.seg(GS, 0, 0x93, 0xffff, 0);
    p.seg(GDTR, 0, 0, 0xffff, 0);
    p.seg(IDTR, 0, 0, 0xffff, 0);
    p.seg(LDTR, 0, 0x82, 0xffff, 0);
    p.seg(TR, 0, 0x8b, 0xffff, 0);
    p.u64(RIP, u64::from(eip));
    common(
        &mut p,
        PAT_DEFAULT,
        u64::from(signature),
        SEV_FEATURE_SNP_ACTIVE,
        0x1f80,
        0x37f,
    );
    // CR0.PE: the SVSM starts in protected mode.
    p.u64(CR0, 0x11);
    let page = p.0;
    Ok(Vmsas {
        ap: (count > 1).then(|| page.clone()),
        bsp: page,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `struct sev_es_save_area` (Linux 6.18 arch/x86/include/asm/svm.h), field by
    /// field with its size, walked to give every offset: an independent derivation of
    /// [`layout`].
    const KERNEL_FIELDS: &[(&str, usize)] = &[
        ("es", 16),
        ("cs", 16),
        ("ss", 16),
        ("ds", 16),
        ("fs", 16),
        ("gs", 16),
        ("gdtr", 16),
        ("ldtr", 16),
        ("idtr", 16),
        ("tr", 16),
        ("pl0_ssp", 8),
        ("pl1_ssp", 8),
        ("pl2_ssp", 8),
        ("pl3_ssp", 8),
        ("u_cet", 8),
        ("reserved_0xc8", 2),
        ("vmpl", 1),
        ("cpl", 1),
        ("reserved_0xcc", 4),
        ("efer", 8),
        ("reserved_0xd8", 104),
        ("xss", 8),
        ("cr4", 8),
        ("cr3", 8),
        ("cr0", 8),
        ("dr7", 8),
        ("dr6", 8),
        ("rflags", 8),
        ("rip", 8),
        ("dr0", 8),
        ("dr1", 8),
        ("dr2", 8),
        ("dr3", 8),
        ("dr0_addr_mask", 8),
        ("dr1_addr_mask", 8),
        ("dr2_addr_mask", 8),
        ("dr3_addr_mask", 8),
        ("reserved_0x1c0", 24),
        ("rsp", 8),
        ("s_cet", 8),
        ("ssp", 8),
        ("isst_addr", 8),
        ("rax", 8),
        ("star", 8),
        ("lstar", 8),
        ("cstar", 8),
        ("sfmask", 8),
        ("kernel_gs_base", 8),
        ("sysenter_cs", 8),
        ("sysenter_esp", 8),
        ("sysenter_eip", 8),
        ("cr2", 8),
        ("reserved_0x248", 32),
        ("g_pat", 8),
        ("dbgctl", 8),
        ("br_from", 8),
        ("br_to", 8),
        ("last_excp_from", 8),
        ("last_excp_to", 8),
        ("reserved_0x298", 80),
        ("pkru", 4),
        ("tsc_aux", 4),
        ("tsc_scale", 8),
        ("tsc_offset", 8),
        ("reserved_0x300", 8),
        ("rcx", 8),
        ("rdx", 8),
        ("rbx", 8),
        ("reserved_0x320", 8),
        ("rbp", 8),
        ("rsi", 8),
        ("rdi", 8),
        ("r8", 8),
        ("r9", 8),
        ("r10", 8),
        ("r11", 8),
        ("r12", 8),
        ("r13", 8),
        ("r14", 8),
        ("r15", 8),
        ("reserved_0x380", 16),
        ("guest_exit_info_1", 8),
        ("guest_exit_info_2", 8),
        ("guest_exit_int_info", 8),
        ("guest_nrip", 8),
        ("sev_features", 8),
        ("vintr_ctrl", 8),
        ("guest_exit_code", 8),
        ("virtual_tom", 8),
        ("tlb_id", 8),
        ("pcpu_id", 8),
        ("event_inj", 8),
        ("xcr0", 8),
        ("reserved_0x3f0", 16),
        ("x87_dp", 8),
        ("mxcsr", 4),
        ("x87_ftw", 2),
        ("x87_fsw", 2),
        ("x87_fcw", 2),
        ("x87_fop", 2),
        ("x87_ds", 2),
        ("x87_cs", 2),
        ("x87_rip", 8),
        ("fpreg_x87", 80),
        ("fpreg_xmm", 256),
        ("fpreg_ymm", 256),
    ];

    fn kernel_offset(name: &str) -> usize {
        let mut at = 0;
        for (n, size) in KERNEL_FIELDS {
            if *n == name {
                return at;
            }
            at += size;
        }
        panic!("no field {name}");
    }

    #[test]
    fn layout_is_the_kernels_struct() {
        // EXPECTED_SEV_ES_SAVE_AREA_SIZE, and the kernel's BUILD_BUG_RESERVED_OFFSET checks.
        let size: usize = KERNEL_FIELDS.iter().map(|f| f.1).sum();
        assert_eq!(size, 1648);
        assert_eq!(layout::END, 1648);
        for off in [
            0xc8, 0xcc, 0xd8, 0x1c0, 0x248, 0x298, 0x300, 0x320, 0x380, 0x3f0,
        ] {
            assert_eq!(kernel_offset(&format!("reserved_{off:#x}")), off);
        }
        let ours = [
            ("es", layout::ES),
            ("cs", layout::CS),
            ("ss", layout::SS),
            ("ds", layout::DS),
            ("fs", layout::FS),
            ("gs", layout::GS),
            ("gdtr", layout::GDTR),
            ("ldtr", layout::LDTR),
            ("idtr", layout::IDTR),
            ("tr", layout::TR),
            ("efer", layout::EFER),
            ("xss", layout::XSS),
            ("cr4", layout::CR4),
            ("cr0", layout::CR0),
            ("dr7", layout::DR7),
            ("dr6", layout::DR6),
            ("rflags", layout::RFLAGS),
            ("rip", layout::RIP),
            ("rsp", layout::RSP),
            ("rax", layout::RAX),
            ("g_pat", layout::G_PAT),
            ("pkru", layout::PKRU),
            ("rdx", layout::RDX),
            ("sev_features", layout::SEV_FEATURES),
            ("xcr0", layout::XCR0),
            ("mxcsr", layout::MXCSR),
            ("x87_ftw", layout::X87_FTW),
            ("x87_fcw", layout::X87_FCW),
        ];
        for (name, off) in ours {
            assert_eq!(kernel_offset(name), off, "{name}");
        }
    }

    fn u64_at(p: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn qemu_bsp_and_aps() {
        let cfg = VcpuConfig {
            count: 3,
            signature: 0x00a0_0f11,
            vmm: VmmType::Qemu,
            guest_features: 0x20,
        };
        let v = snp_vmsas(&cfg, Some(0x0080_b004)).unwrap();
        assert_eq!(v.count(), 3);
        assert_eq!(v.iter().count(), 3);
        assert!(v.page(3).is_none());
        let (bsp, ap) = (v.page(0).unwrap(), v.page(1).unwrap());
        assert_eq!(v.page(2).unwrap(), ap);
        assert_eq!(u64_at(bsp, layout::RIP), 0xfff0);
        assert_eq!(u64_at(bsp, layout::CS + 8), 0xffff_0000);
        assert_eq!(u64_at(ap, layout::RIP), 0xb004);
        assert_eq!(u64_at(ap, layout::CS + 8), 0x0080_0000);
        assert_eq!(u64_at(bsp, layout::RDX), 0x00a0_0f11);
        // KVM ORs SNPActive into the features asked for (__sev_guest_init).
        assert_eq!(u64_at(bsp, layout::SEV_FEATURES), 0x21);
        assert!(bsp[layout::END..].iter().all(|&b| b == 0));
        let distinct = v.distinct();
        assert_eq!(distinct.len(), 2);
        assert_eq!(distinct[1].1, 2);
    }

    #[test]
    fn refusals() {
        let mut cfg = VcpuConfig {
            count: 0,
            ..VcpuConfig::default()
        };
        assert_eq!(snp_vmsas(&cfg, None), Err(VmsaError::VcpuCount(0)));
        cfg.count = MAX_VCPUS + 1;
        assert_eq!(
            snp_vmsas(&cfg, Some(0)),
            Err(VmsaError::VcpuCount(MAX_VCPUS + 1))
        );
        cfg.count = 2;
        assert_eq!(snp_vmsas(&cfg, None), Err(VmsaError::NoApResetAddress(2)));
        cfg.count = 1;
        assert_eq!(snp_vmsas(&cfg, None).map(|v| v.count()), Ok(1));
        assert_eq!(svsm_vmsas(0, 0, 0), Err(VmsaError::VcpuCount(0)));
        assert_eq!(
            svsm_vmsas(MAX_VCPUS + 1, 0, 0),
            Err(VmsaError::VcpuCount(MAX_VCPUS + 1))
        );
        assert_eq!("EC2".parse::<VmmType>(), Ok(VmmType::Ec2));
        assert_eq!("Gce".parse::<VmmType>(), Ok(VmmType::Gce));
        assert_eq!(
            "kvmtool".parse::<VmmType>(),
            Err(UnknownVmm("kvmtool".to_string()))
        );
    }
}
