//! `ccpop`: the cc-populate command line.
//!
//! - `ccpop demo`: populate a generated guest image (at least 64 MiB of code, data and zero
//!   regions) into guest_memfd on this machine's KVM through the driver, then have a vCPU
//!   checksum every populated byte; prints `verified` only when the guest confirmed all of it.
//! - `ccpop plan`: print the populate plan a VMM would run for a firmware image, an IGVM file
//!   or a cc-image plan file.
//! - `ccpop measure`: print the launch measurement a platform would compute for it (for CCA,
//!   under the RMM version and launch order given with `--rmm` and `--order`); with
//!   `--trace FILE`, write every measured step to FILE (JSON lines, `cc_image::trace`).
//! - `ccpop diff A B`: where two traces part (the first differing step, what differs, and
//!   whether the rest is a shift or changed content).
//!
//! Every error is one line on stderr (`ccpop: <message>`); the exit code is 1 when the demo's
//! guest saw other bytes than were populated or `diff`'s traces differ, 2 for every other
//! failure.

mod check;
mod demo;
mod error;
mod firmware;
mod launch;
mod progress;
mod summary;
mod trace;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::firmware::{CcaOptions, NamedPlan, SnpLaunchArgs, SnpOptions, TdxOptions, VcpuSigArgs};
use crate::summary::PlanSummary;

/// Populate and measure confidential-VM launch images (guest_memfd, SEV-SNP, TDX, Arm CCA).
#[derive(Debug, Parser)]
#[command(name = "ccpop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Populate a generated guest image into guest_memfd on this machine's KVM and have a vCPU
    /// verify every populated byte.
    Demo(DemoArgs),
    /// Print the populate plan a VMM would run for a firmware image, an IGVM file or a plan file
    /// (regions, roles, chunk and call counts).
    Plan(PlanArgs),
    /// Print the launch measurement a platform computes for a firmware image, an IGVM file or a
    /// plan file; the last line is the digest in lower-case hex.
    #[command(subcommand)]
    Measure(MeasureCommand),
    /// Compare two traces written by `measure --trace`: the first line is `first difference:
    /// step N, gpa 0x...`, then what differs there, where each side came from, and whether the
    /// rest is a shift or changed content. Exit 0 when equal, 1 when they differ, 2 on bad
    /// input.
    Diff(DiffArgs),
    /// Check what the hardware signed (an SNP attestation report, a TDX quote, a CCA token) or
    /// an SNP ID block against the expected launch: prints `match: ...` (exit 0) or the first
    /// field that differs (exit 1). Parsing only: verify signatures and certificate chains
    /// first.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Build and sign an SEV-SNP ID block and ID authentication structure (ECDSA P-384 keys in
    /// PEM) for a launch digest; prints QEMU's `id-block=...,id-auth=...` and the key digests
    /// the guest's report will carry.
    IdBlock(IdBlockCli),
}

#[derive(Debug, Subcommand)]
enum CheckCommand {
    /// An SNP attestation report (the 0x4A0-byte ATTESTATION_REPORT), or an ID block with
    /// its ID_AUTH_INFO as SNP_LAUNCH_FINISH checks them.
    Snp {
        /// The report file.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["id_block", "id_auth"])]
        report: Option<PathBuf>,
        /// An ID block (base64, as QEMU's id-block takes it).
        #[arg(long, value_name = "B64", requires = "id_auth")]
        id_block: Option<String>,
        /// Its ID authentication structure (base64, QEMU's id-auth).
        #[arg(long, value_name = "B64")]
        id_auth: Option<String>,
        /// The expected launch digest (96 hex digits: `ccpop measure snp`'s last line).
        #[arg(long, value_name = "HEX")]
        measurement: String,
        /// The expected guest policy.
        #[arg(long, value_name = "POLICY", value_parser = parse_u64)]
        policy: Option<u64>,
        /// The expected family ID (32 hex digits).
        #[arg(long, value_name = "HEX")]
        family_id: Option<String>,
        /// The expected image ID (32 hex digits).
        #[arg(long, value_name = "HEX")]
        image_id: Option<String>,
        /// The expected host data (64 hex digits).
        #[arg(long, value_name = "HEX")]
        host_data: Option<String>,
        /// The ID key (PEM) whose digest the report must carry.
        #[arg(long, value_name = "PEM")]
        id_key: Option<PathBuf>,
        /// The author key (PEM) whose digest the report must carry.
        #[arg(long, value_name = "PEM")]
        author_key: Option<PathBuf>,
    },
    /// A TDX quote (version 4 or 5).
    Tdx {
        /// The quote file.
        #[arg(long, value_name = "FILE")]
        quote: PathBuf,
        /// The expected MRTD (96 hex digits: `ccpop measure tdx`'s last line).
        #[arg(long, value_name = "HEX")]
        mrtd: String,
        /// The expected TD attributes.
        #[arg(long, value_name = "N", value_parser = parse_u64)]
        td_attributes: Option<u64>,
        /// The expected XFAM.
        #[arg(long, value_name = "N", value_parser = parse_u64)]
        xfam: Option<u64>,
        /// The expected MRCONFIGID (96 hex digits).
        #[arg(long, value_name = "HEX")]
        mr_config_id: Option<String>,
    },
    /// A CCA attestation token (CBOR; the whole token or its realm token).
    Cca {
        /// The token file.
        #[arg(long, value_name = "FILE")]
        token: PathBuf,
        /// The expected RIM (`ccpop measure cca`'s last line).
        #[arg(long, value_name = "HEX")]
        rim: String,
        /// The expected realm hash algorithm (`sha256` or `sha512`).
        #[arg(long, value_name = "ALGO")]
        hash: Option<String>,
        /// The expected realm personalization value (128 hex digits).
        #[arg(long, value_name = "HEX")]
        rpv: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct IdBlockCli {
    /// The launch digest the ID block vouches for (96 hex digits).
    #[arg(long, value_name = "HEX")]
    measurement: String,
    /// The ID key: an ECDSA P-384 private key, PEM (SEC1 or PKCS#8).
    #[arg(long, value_name = "PEM")]
    id_key: PathBuf,
    /// The author key (PEM), which signs the ID key (the launch then needs
    /// author-key-enabled).
    #[arg(long, value_name = "PEM")]
    author_key: Option<PathBuf>,
    /// The guest policy the launch will have.
    #[arg(long, value_name = "POLICY", value_parser = parse_u64, default_value = "0x30000")]
    policy: u64,
    /// FAMILY_ID (32 hex digits; default zeros).
    #[arg(long, value_name = "HEX")]
    family_id: Option<String>,
    /// IMAGE_ID (32 hex digits; default zeros).
    #[arg(long, value_name = "HEX")]
    image_id: Option<String>,
    /// GUEST_SVN.
    #[arg(long, value_name = "N", default_value_t = 0)]
    guest_svn: u32,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// One trace (JSON lines).
    #[arg(value_name = "TRACE_A")]
    a: PathBuf,
    /// The other.
    #[arg(value_name = "TRACE_B")]
    b: PathBuf,
}

/// `--trace FILE`.
#[derive(Debug, Clone, clap::Args)]
struct TraceArg {
    /// Also write every measured step, in order, to FILE: one JSON object per line with the
    /// step, its kind, address, content hash, the running measurement after it and where it
    /// came from (compare two with `ccpop diff`).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Size of the generated image in MiB (16 to 4096; below 64 is a test size).
    #[arg(long, default_value_t = demo::MIN_SIZE_MIB, value_name = "N")]
    size_mib: u64,
    /// Flip one byte after populating, to show (and test) that the guest catches it.
    #[arg(long, hide = true)]
    corrupt: bool,
    /// Let the populate of region NAME write 4 KiB past its end, reporting success (to show,
    /// and test, that the guest check catches an overrun).
    #[arg(long, hide = true, value_name = "NAME")]
    overrun: Option<String>,
    /// The KVM device to open (for testing the message when KVM is missing).
    #[arg(long, hide = true, default_value = "/dev/kvm", value_name = "PATH")]
    kvm_device: std::path::PathBuf,
}

/// A confidential-computing platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Platform {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// Arm CCA.
    Cca,
}

impl Platform {
    fn name(self) -> &'static str {
        match self {
            Platform::Snp => "snp",
            Platform::Tdx => "tdx",
            Platform::Cca => "cca",
        }
    }
}

/// Where a plan comes from: exactly one of these.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
struct InputArgs {
    /// A firmware image (SNP: an OVMF build with SEV metadata; TDX: a TDVF image; CCA: any
    /// image, placed at --load-gpa). `--ovmf` is the same flag.
    #[arg(long, value_name = "IMAGE", visible_alias = "ovmf")]
    firmware: Option<PathBuf>,
    /// An IGVM file (SNP or TDX).
    #[arg(long, value_name = "FILE")]
    igvm: Option<PathBuf>,
    /// A cc-image plan file (JSON; the platform is the file's).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The platform (with --plan it may come from the file; a mismatch is an error).
    #[arg(long, required_unless_present = "plan")]
    platform: Option<Platform>,
    #[command(flatten)]
    input: InputArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    snp: SnpArgs,
    #[command(flatten)]
    tdx: TdxArgs,
    #[command(flatten)]
    cca: CcaArgs,
    #[command(flatten)]
    igvm_args: IgvmArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct SnpArgs {
    /// SNP firmware: how SEV metadata sections become page types (`qemu`: as QEMU,
    /// pre-validated memory as ZERO pages; `ec2`: as QEMU, CPUID pages last; `gce`:
    /// pre-validated memory as UNMEASURED pages; `unmeasured`: every non-secrets, non-CPUID
    /// section as UNMEASURED). Default: `qemu`, for `measure snp` the --vmm-type's.
    #[arg(long, value_name = "POLICY")]
    section_policy: Option<String>,
}

/// `measure snp`: what `sev-snp-measure --mode snp` (and `snp:svsm`) takes.
#[derive(Debug, Clone, clap::Args)]
struct SnpLaunchFlags {
    /// Number of vCPUs: their VMSA pages are synthesized and measured last.
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// The vCPU type (QEMU's name: EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3],
    /// EPYC-Milan[-v1,-v2], EPYC-Genoa[-v1], EPYC-Turin).
    #[arg(long, value_name = "CPUTYPE")]
    vcpu_type: Option<String>,
    /// The vCPU's CPUID signature (hex with 0x, or decimal).
    #[arg(long, value_name = "VALUE", value_parser = parse_u64)]
    vcpu_sig: Option<u64>,
    /// The vCPU's family (with --vcpu-model and --vcpu-stepping).
    #[arg(long, value_name = "FAMILY")]
    vcpu_family: Option<u32>,
    /// The vCPU's model.
    #[arg(long, value_name = "MODEL")]
    vcpu_model: Option<u32>,
    /// The vCPU's stepping.
    #[arg(long, value_name = "STEPPING")]
    vcpu_stepping: Option<u32>,
    /// The VMM whose reset state the VMSAs carry: qemu, ec2 or gce (any case).
    #[arg(long, value_name = "VMMTYPE", default_value = "qemu")]
    vmm_type: String,
    /// The SEV features asked of KVM for the VMSAs (hex with 0x, or decimal; default 0x1).
    #[arg(long, value_name = "VALUE", value_parser = parse_u64)]
    guest_features: Option<u64>,
    /// Measured direct boot: the kernel whose hash fills the firmware's hashes table.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Measured direct boot: the initrd (with --kernel).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Measured direct boot: the kernel command line (with --kernel).
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    append: Option<String>,
    /// The digest of the firmware pages, precomputed (96 hex digits): used instead of hashing
    /// the image's pages (its metadata is still read).
    #[arg(long, value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// A COCONUT-SVSM image, loaded below the firmware and its variable store.
    #[arg(long, value_name = "PATH")]
    svsm: Option<PathBuf>,
    /// The size of the OVMF variable store between the firmware and the SVSM, in bytes.
    #[arg(long, value_name = "SIZE", value_parser = parse_u64)]
    vars_size: Option<u64>,
    /// The OVMF variable store file (its size is used).
    #[arg(long, value_name = "PATH")]
    vars_file: Option<PathBuf>,
    /// How the digest is printed: hex or base64.
    #[arg(long, value_name = "FORMAT", default_value = "hex")]
    output_format: String,
    /// Write the synthesized VMSA pages to DIR/vmsa0.bin, vmsa1.bin, ... (default: .).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    dump_vmsa: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::Args)]
struct TdxArgs {
    /// TDX firmware: leave PAGE_AUG sections to the guest (not in MRTD) instead of adding them
    /// as QEMU does.
    #[arg(long)]
    page_aug_leave_for_guest: bool,
}

#[derive(Debug, Clone, clap::Args)]
struct CcaArgs {
    /// CCA firmware: the IPA the image is loaded at (hex with 0x, or decimal); RIPAS RAM covers
    /// the image's granules and the one REC enters there.
    #[arg(long, value_name = "GPA", value_parser = parse_u64)]
    load_gpa: Option<u64>,
    /// CCA firmware: the realm's measurement hash (`sha256` or `sha512`).
    #[arg(long, default_value = "sha256")]
    hash: String,
    /// CCA firmware: the realm's IPA width in bits.
    #[arg(long, default_value_t = 40)]
    ipa_bits: u8,
    /// CCA firmware: breakpoints the realm has. A v12+ kernel measures this count only when the
    /// VMM writes BRPs = N - 1 into every vCPU's ID_AA64DFR0_EL1; otherwise it measures the
    /// RMM's maximum (the value ID_AA64DFR0_EL1 reads back).
    #[arg(long, default_value_t = 2, value_name = "N")]
    num_bps: u8,
    /// CCA firmware: watchpoints the realm has (ID_AA64DFR0_EL1.WRPs + 1, as --num-bps).
    #[arg(long, default_value_t = 2, value_name = "N")]
    num_wps: u8,
    /// CCA firmware: SVE vector length in bits (0: the vCPUs have no KVM_ARM_VCPU_SVE; else
    /// their finalized maximum vector length).
    #[arg(long, default_value_t = 0, value_name = "BITS")]
    sve_vl: u16,
    /// CCA firmware: PMU counters (PMCR_EL0.N) of vCPUs with KVM_ARM_VCPU_PMU_V3; absent: no
    /// PMU.
    #[arg(long, value_name = "N")]
    pmu_counters: Option<u8>,
    /// CCA firmware: LPA2 enabled (series v12 never enables it).
    #[arg(long)]
    lpa2: bool,
}

/// How a CCA RIM is measured: which RMM's rules and which launch order.
#[derive(Debug, Clone, clap::Args)]
struct CcaMeasureArgs {
    /// The RMM rules the host's firmware follows: 1.0 (RTT_INIT_RIPAS measured: series v12, and
    /// v13 on its own firmware branch) or 2.0 (not measured: TF-RMM from commit bdb07f46 on;
    /// v13 on such a firmware, v14). A plan file may say it in cca.rmm; then --rmm may only
    /// repeat it. Neither: 1.0. Per series: v12 `--rmm 1.0 --order v12`, v13 `--rmm 1.0 --order
    /// v12` or `--rmm 2.0` by firmware, v14 `--rmm 2.0`.
    #[arg(long, value_name = "VERSION")]
    rmm: Option<String>,
    /// The launch order: `planned` (the plan's order, then the RECs: plan files naming no
    /// order, and v13/v14 under RMM 2.0 rules) or `v12` (the order the v12-v14 kernels issue
    /// the RMI calls in, whatever the VMM's: the data in populate order, the RECs with only
    /// vCPU id 0 runnable, then RIPAS of the plan's ripas regions, which stand for the
    /// guest_memfd memslots in the kernel's memslot walk order, minus what was populated;
    /// --plan only).
    #[arg(long, default_value = "planned", value_name = "ORDER")]
    order: String,
}

#[derive(Debug, Clone, clap::Args)]
struct IgvmArgs {
    /// IGVM: where VMSAs are measured and what a measured page without bytes is. `kvm`: VMSAs
    /// after all pages at KVM's VMSA address, as a KVM launch through these crates does;
    /// `reference`: in file order at the file's address, as the igvm crate's reference
    /// measurement does; `cloud-hypervisor`: as `kvm`, and a page without bytes is a ZERO page
    /// (PAGE_TYPE_ZERO), as Cloud Hypervisor populates it (`kvm` and `reference` measure it as
    /// a NORMAL page of zeros; SEV-SNP only, TDX measures it the same under every policy).
    #[arg(long, default_value = "kvm", value_name = "POLICY")]
    igvm_policy: String,
}

#[derive(Debug, Subcommand)]
enum MeasureCommand {
    /// The SEV-SNP launch digest. With --firmware: a QEMU-style launch, the image ending at
    /// 4 GiB as measured pages, its SEV metadata sections, then one VMSA page per --vmsa file
    /// in order.
    Snp {
        #[command(flatten)]
        input: InputArgs,
        /// A 4096-byte VMSA page, measured after the image (repeat for each vCPU, in order).
        #[arg(long, value_name = "FILE", conflicts_with = "firmware_only")]
        vmsa: Vec<PathBuf>,
        /// The digest after the image pages alone (no metadata sections, no VMSAs).
        #[arg(long)]
        firmware_only: bool,
        #[command(flatten)]
        snp: SnpArgs,
        #[command(flatten)]
        launch: Box<SnpLaunchFlags>,
        #[command(flatten)]
        igvm_args: IgvmArgs,
        #[command(flatten)]
        trace: TraceArg,
    },
    /// The TDX MRTD. With --firmware: a TDVF image as QEMU populates it.
    Tdx {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        tdx: TdxArgs,
        #[command(flatten)]
        igvm_args: IgvmArgs,
        #[command(flatten)]
        trace: TraceArg,
    },
    /// The Arm CCA RIM. With --firmware: a realm whose image is loaded at --load-gpa, entered
    /// there by one runnable REC with x0..x7 zero, its parameters from the --hash, --ipa-bits,
    /// --num-bps, --num-wps, --sve-vl, --pmu-counters and --lpa2 options; with --plan: the
    /// realm, RECs and (if it says) RMM version of the file. --rmm and --order say how the
    /// realm was launched.
    Cca {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        cca: CcaArgs,
        #[command(flatten)]
        how: CcaMeasureArgs,
        #[command(flatten)]
        trace: TraceArg,
    },
}

/// Parses `0x`-prefixed hex or decimal.
fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|e| format!("{s:?} is not a number (hex with 0x, or decimal): {e}"))
}

fn snp_options(a: &SnpArgs, firmware_only: bool) -> SnpOptions {
    SnpOptions {
        section_policy: a.section_policy.clone().unwrap_or_else(|| "qemu".into()),
        firmware_only,
    }
}

fn snp_launch_args(
    snp: &SnpArgs,
    l: &SnpLaunchFlags,
    vmsa: &[PathBuf],
    trace: bool,
) -> SnpLaunchArgs {
    SnpLaunchArgs {
        trace,
        section_policy: snp.section_policy.clone(),
        vcpus: l.vcpus,
        sig: VcpuSigArgs {
            vcpu_type: l.vcpu_type.clone(),
            vcpu_sig: l.vcpu_sig,
            family: l.vcpu_family,
            model: l.vcpu_model,
            stepping: l.vcpu_stepping,
        },
        vmm_type: l.vmm_type.clone(),
        guest_features: l.guest_features,
        kernel: l.kernel.clone(),
        initrd: l.initrd.clone(),
        append: l.append.clone(),
        ovmf_hash: l.snp_ovmf_hash.clone(),
        svsm: l.svsm.clone(),
        vars_size: l.vars_size,
        vars_file: l.vars_file.clone(),
        vmsa: vmsa.to_vec(),
    }
}

/// Measures an SNP launch of a firmware image and prints it (the digest last); writes the
/// VMSA pages only after everything was computed.
fn measure_snp_firmware(
    path: &Path,
    image: &[u8],
    args: &SnpLaunchArgs,
    firmware_only: bool,
    l: &SnpLaunchFlags,
    trace_to: Option<&Path>,
) -> Result<(), Error> {
    let format = match l.output_format.as_str() {
        "hex" => firmware::hex,
        "base64" => firmware::base64,
        f => {
            return Err(Error::Usage(format!(
                "--output-format {f}: unknown (known: hex, base64)"
            )))
        }
    };
    let r = firmware::snp_launch(path, image, args)?;
    if let Some(dir) = &l.dump_vmsa {
        let v = r.m.vmsas.as_ref().ok_or_else(|| {
            Error::Usage("--dump-vmsa writes the VMSAs --vcpus synthesizes: give --vcpus".into())
        })?;
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--dump-vmsa {}: not a directory",
                dir.display()
            )));
        }
        for (i, page) in v.iter().enumerate() {
            let p = dir.join(format!("vmsa{i}.bin"));
            std::fs::write(&p, page)
                .map_err(|e| Error::Usage(format!("--dump-vmsa {}: {e}", p.display())))?;
        }
    }
    let (regions, bytes) = if firmware_only {
        (1, image.len() as u64)
    } else {
        (r.m.regions.len(), r.m.regions.iter().map(|x| x.1).sum())
    };
    println!(
        "snp launch digest of {}: {}, {}",
        path.display(),
        summary::plural(regions, "region"),
        summary::size(bytes)
    );
    if !firmware_only {
        println!("  VMSA pages: {}", r.vmsa_pages);
    }
    let digest = if firmware_only {
        r.m.firmware_digest
    } else {
        r.m.digest
    };
    if let Some(to) = trace_to {
        let names = match &r.m.vmsas {
            Some(v) => (0..v.count())
                .map(|k| format!("VMSA of vCPU {k}"))
                .collect(),
            None => args
                .vmsa
                .iter()
                .map(|p| format!("--vmsa {}", p.display()))
                .collect(),
        };
        let sources = trace::snp_sources(&r.m.regions, path, image.len() as u64, names);
        let mut steps = cc_image::trace::snp_steps(&r.m.trace, &sources);
        if firmware_only {
            // The digest after the image's pages: the trace up to there (none of it when
            // --snp-ovmf-hash gave that digest instead of the pages).
            let n = match args.ovmf_hash {
                Some(_) => 0,
                None => (image.len() / sev_backend::PAGE).min(steps.len()),
            };
            steps.truncate(n);
        }
        trace::write(to, &steps, &firmware::hex(&digest))?;
    }
    println!("{}", format(&digest));
    Ok(())
}

fn tdx_options(a: &TdxArgs) -> TdxOptions {
    TdxOptions {
        page_aug_leave_for_guest: a.page_aug_leave_for_guest,
    }
}

fn cca_options(a: &CcaArgs) -> CcaOptions {
    CcaOptions {
        load_gpa: a.load_gpa,
        hash: a.hash.clone(),
        ipa_bits: a.ipa_bits,
        num_bps: a.num_bps,
        num_wps: a.num_wps,
        sve_vl: a.sve_vl,
        pmu_counters: a.pmu_counters,
        lpa2: a.lpa2,
        rmm: cca_backend::RmmVersion::default(),
        order: cca_backend::MeasureOrder::default(),
    }
}

/// The `--rmm` name, if given.
fn parse_rmm(name: Option<&str>) -> Result<Option<cca_backend::RmmVersion>, Error> {
    name.map(|n| {
        cca_backend::RmmVersion::from_name(n)
            .ok_or_else(|| Error::Usage(format!("--rmm {n}: unknown (known: 1.0, 2.0)")))
    })
    .transpose()
}

/// The `--order` name.
fn parse_order(name: &str) -> Result<cca_backend::MeasureOrder, Error> {
    cca_backend::MeasureOrder::from_name(name)
        .ok_or_else(|| Error::Usage(format!("--order {name}: unknown (known: planned, v12)")))
}

/// The RMM version to measure a plan file with: the file's, the command line's, or 1.0; a
/// version on the command line that contradicts the file's is refused.
fn resolve_rmm(
    path: &Path,
    file: Option<cca_backend::RmmVersion>,
    cli: Option<cca_backend::RmmVersion>,
) -> Result<(cca_backend::RmmVersion, &'static str), Error> {
    match (file, cli) {
        (Some(f), Some(c)) if f != c => Err(Error::Usage(format!(
            "{}: the plan file says cca.rmm \"{}\" and --rmm says {}: give one, or the same",
            path.display(),
            f.name(),
            c.name()
        ))),
        (Some(f), _) => Ok((f, "cca.rmm")),
        (None, Some(c)) => Ok((c, "--rmm")),
        (None, None) => Ok((cca_backend::RmmVersion::default(), "default")),
    }
}

fn print_plan(plan: &NamedPlan<'_>, json: bool) -> Result<(), Error> {
    let summary = PlanSummary::new(plan.platform, &plan.plan, &plan.names);
    if json {
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::Usage(format!("JSON output: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", summary.human());
    }
    Ok(())
}

/// What was loaded: the firmware bytes, or a cc-image launch image.
enum Loaded {
    Firmware(PathBuf, Vec<u8>),
    Image(PathBuf, Box<cc_image::LaunchImage>),
}

fn load(input: &InputArgs, platform: Option<Platform>, igvm: &IgvmArgs) -> Result<Loaded, Error> {
    match (&input.firmware, &input.igvm, &input.plan) {
        (Some(f), _, _) => Ok(Loaded::Firmware(f.to_path_buf(), firmware::read(f)?)),
        (_, Some(i), _) => {
            let platform = platform.map(Platform::name).unwrap_or_default();
            if platform == "cca" {
                return Err(Error::Usage(
                    "--igvm: IGVM files are loaded for platform snp or tdx, not cca".into(),
                ));
            }
            Ok(Loaded::Image(
                i.to_path_buf(),
                Box::new(launch::load_igvm(i, platform, &igvm.igvm_policy)?),
            ))
        }
        (_, _, Some(p)) => Ok(Loaded::Image(
            p.to_path_buf(),
            Box::new(launch::load_plan(p, platform.map(Platform::name))?),
        )),
        _ => Err(Error::Usage(
            "give one of --firmware, --igvm or --plan".into(),
        )),
    }
}

/// Plans firmware bytes for `platform`.
fn firmware_plan<'a>(
    platform: Platform,
    path: &Path,
    image: &'a [u8],
    padded: &'a [u8],
    snp: &SnpOptions,
    tdx: &TdxOptions,
    cca: &CcaOptions,
) -> Result<NamedPlan<'a>, Error> {
    match platform {
        Platform::Snp => firmware::snp_plan(path, image, snp),
        Platform::Tdx => firmware::tdx_plan(path, image, tdx),
        Platform::Cca => firmware::cca_plan(path, padded, cca),
    }
}

fn plan_command(a: &PlanArgs) -> Result<(), Error> {
    match load(&a.input, a.platform, &a.igvm_args)? {
        Loaded::Firmware(path, image) => {
            let platform = a
                .platform
                .ok_or_else(|| Error::Usage("--firmware needs --platform".into()))?;
            let padded = firmware::cca_padded(&image);
            let plan = firmware_plan(
                platform,
                &path,
                &image,
                &padded,
                &snp_options(&a.snp, false),
                &tdx_options(&a.tdx),
                &cca_options(&a.cca),
            )?;
            print_plan(&plan, a.json)
        }
        Loaded::Image(path, image) => print_plan(&launch::plan(&path, &image)?, a.json),
    }
}

fn measured_line(plan: &NamedPlan<'_>, what: &str, path: &Path) {
    println!(
        "{} {what} of {}: {}, {}",
        plan.platform,
        path.display(),
        summary::plural(plan.plan.regions().len(), "region"),
        summary::size(plan.plan.total_bytes())
    );
}

/// Prints what a launch image holds and its measurement (last line).
fn measure_image(
    path: &Path,
    image: &cc_image::LaunchImage,
    what: &str,
    trace_to: Option<&Path>,
) -> Result<(), Error> {
    let plan = launch::plan(path, image)?;
    let digest = launch::measure(path, image)?;
    if let Some(to) = trace_to {
        let steps = image
            .trace(None)
            .map_err(|e| Error::Platform(format!("{}: {e}", path.display())))?;
        trace::write(to, &steps, &digest)?;
    }
    measured_line(&plan, what, path);
    if image.platform() == cc_image::Platform::Snp {
        println!("  VMSA pages: {}", image.vmsas().len());
    }
    if let Some(cca) = image.cca() {
        realm_lines(&cca.realm, cca.recs.len());
    }
    println!("{digest}");
    Ok(())
}

/// The realm parameters a RIM was computed with, one line.
fn realm_lines(realm: &cca_backend::RealmParams, recs: usize) {
    let onoff = |b: bool| if b { "on" } else { "off" };
    let sve = match realm.sve_vl {
        0 => "SVE off".to_string(),
        vl => format!("SVE {vl} bits"),
    };
    let pmu = match realm.pmu_counters {
        None => "PMU off".to_string(),
        Some(n) => format!("PMU {n} counters"),
    };
    println!(
        "  realm: {}, {} IPA bits, LPA2 {}, {} breakpoints, {} watchpoints, {sve}, {pmu}, {}",
        realm.hash.name(),
        realm.ipa_bits,
        onoff(realm.lpa2),
        realm.num_bps,
        realm.num_wps,
        summary::plural(recs, "REC")
    );
}

/// The RIM of a CCA plan file (or of an image with a CCA realm) under `how`.
fn measure_cca_image(
    path: &Path,
    image: &cc_image::LaunchImage,
    how: &CcaMeasureArgs,
    trace_to: Option<&Path>,
) -> Result<(), Error> {
    let cli = parse_rmm(how.rmm.as_deref())?;
    let order = parse_order(&how.order)?;
    let cca = image
        .cca()
        .ok_or_else(|| Error::Usage(format!("{}: no cca section to measure", path.display())))?;
    let (rmm, from) = resolve_rmm(path, cca.rmm, cli)?;
    let plan = launch::plan(path, image)?;
    let opts = cca_backend::MeasureOptions {
        rmm,
        order,
        ..Default::default()
    };
    let refused = |e: cc_image::Error| Error::Platform(format!("{}: {e}", path.display()));
    let rim = image.measure_cca(&opts).map_err(refused)?;
    if let Some(to) = trace_to {
        let steps = image.trace(Some(&opts)).map_err(refused)?;
        trace::write(to, &steps, &cc_image::hex(&rim))?;
    }
    measured_line(&plan, "RIM", path);
    realm_lines(&cca.realm, cca.recs.len());
    println!("  measured as: {rmm} ({from}), {} order", order.name());
    println!("{}", cc_image::hex(&rim));
    Ok(())
}

fn measure_command(m: &MeasureCommand) -> Result<(), Error> {
    match m {
        MeasureCommand::Snp {
            input,
            vmsa,
            firmware_only,
            snp,
            launch,
            igvm_args,
            trace: t,
        } => {
            if input.firmware.is_none() && (!vmsa.is_empty() || *firmware_only) {
                return Err(Error::Usage(
                    "--vmsa and --firmware-only go with --firmware (IGVM and plan files carry their own VMSAs)".into(),
                ));
            }
            match load(input, Some(Platform::Snp), igvm_args)? {
                Loaded::Firmware(path, image) => measure_snp_firmware(
                    &path,
                    &image,
                    &snp_launch_args(snp, launch, vmsa, t.trace.is_some()),
                    *firmware_only,
                    launch,
                    t.trace.as_deref(),
                )?,
                Loaded::Image(path, image) => {
                    measure_image(&path, &image, "launch digest", t.trace.as_deref())?
                }
            }
        }
        MeasureCommand::Tdx {
            input,
            tdx,
            igvm_args,
            trace: t,
        } => match load(input, Some(Platform::Tdx), igvm_args)? {
            Loaded::Firmware(path, image) => {
                let plan = firmware::tdx_plan(&path, &image, &tdx_options(tdx))?;
                let mrtd = firmware::tdx_measure(&plan)?;
                if let Some(to) = &t.trace {
                    let mut m = tdx_backend::Mrtd::new().traced();
                    tdx_backend::measure_plan_into(&mut m, &plan.plan, &Default::default())
                        .map_err(|e| Error::Platform(e.to_string()))?;
                    let sources = trace::plan_sources(&plan, &path);
                    trace::write(
                        to,
                        &cc_image::trace::tdx_steps(m.records(), &sources),
                        &mrtd,
                    )?;
                }
                measured_line(&plan, "MRTD", &path);
                println!("{mrtd}");
            }
            Loaded::Image(path, image) => measure_image(&path, &image, "MRTD", t.trace.as_deref())?,
        },
        MeasureCommand::Cca {
            input,
            cca,
            how,
            trace: t,
        } => {
            let igvm_args = IgvmArgs {
                igvm_policy: "kvm".into(),
            };
            match load(input, Some(Platform::Cca), &igvm_args)? {
                Loaded::Firmware(path, image) => {
                    let mut opts = cca_options(cca);
                    opts.rmm = parse_rmm(how.rmm.as_deref())?.unwrap_or_default();
                    opts.order = parse_order(&how.order)?;
                    if opts.order != cca_backend::MeasureOrder::Planned {
                        return Err(Error::Usage(format!(
                            "--order {}: needs the realm's guest_memfd memslots, which a firmware image does not give: write them as ripas regions of a --plan file",
                            opts.order.name()
                        )));
                    }
                    let padded = firmware::cca_padded(&image);
                    let plan = firmware::cca_plan(&path, &padded, &opts)?;
                    let (realm, rim, records) =
                        firmware::cca_measure(&plan, &opts, t.trace.is_some())?;
                    if let Some(to) = &t.trace {
                        let sources = trace::plan_sources(&plan, &path);
                        trace::write(to, &cc_image::trace::cca_steps(&records, &sources), &rim)?;
                    }
                    measured_line(&plan, "RIM", &path);
                    realm_lines(&realm, 1);
                    println!(
                        "  measured as: {} ({}), {} order",
                        opts.rmm,
                        if how.rmm.is_some() {
                            "--rmm"
                        } else {
                            "default"
                        },
                        opts.order.name()
                    );
                    println!("{rim}");
                }
                Loaded::Image(path, image) => {
                    measure_cca_image(&path, &image, how, t.trace.as_deref())?
                }
            }
        }
    }
    Ok(())
}

fn check_command(c: &CheckCommand) -> Result<(), Error> {
    match c {
        CheckCommand::Snp {
            report,
            id_block,
            id_auth,
            measurement,
            policy,
            family_id,
            image_id,
            host_data,
            id_key,
            author_key,
        } => check::snp(&check::SnpCheck {
            report: report.as_deref(),
            id_block: id_block.as_deref(),
            id_auth: id_auth.as_deref(),
            measurement,
            policy: *policy,
            family_id,
            image_id,
            host_data,
            id_key: id_key.as_deref(),
            author_key: author_key.as_deref(),
        }),
        CheckCommand::Tdx {
            quote,
            mrtd,
            td_attributes,
            xfam,
            mr_config_id,
        } => check::tdx(quote, mrtd, *td_attributes, *xfam, mr_config_id),
        CheckCommand::Cca {
            token,
            rim,
            hash,
            rpv,
        } => check::cca(token, rim, hash.as_deref(), rpv),
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Demo(a) => demo::run(&demo::DemoOptions {
            size_mib: a.size_mib,
            corrupt: a.corrupt,
            overrun: a.overrun,
            kvm_device: a.kvm_device,
        }),
        Command::Plan(a) => plan_command(&a),
        Command::Measure(m) => measure_command(&m),
        Command::Diff(d) => trace::diff_command(&d.a, &d.b),
        Command::Check(c) => check_command(&c),
        Command::IdBlock(a) => check::id_block(&check::IdBlockArgs {
            measurement: &a.measurement,
            id_key: &a.id_key,
            author_key: a.author_key.as_deref(),
            policy: a.policy,
            family_id: &a.family_id,
            image_id: &a.image_id,
            guest_svn: a.guest_svn,
        }),
    }
}

fn main() {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "ccpop: internal error: {}",
            info.to_string().replace('\n', "; ")
        );
    }));
    let cli = Cli::parse();
    let code = match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("ccpop: {}", error::one_line(&e));
            e.exit_code()
        }
        Err(_) => 2,
    };
    std::process::exit(code);
}
