//! `ccpop`: the cc-populate command line.
//!
//! - `ccpop demo`: populate a generated guest image (at least 64 MiB of code, data and zero
//!   regions) into guest_memfd on this machine's KVM through the driver, then have a vCPU
//!   checksum every populated byte; prints `verified` only when the guest confirmed all of it.
//! - `ccpop plan`: print the populate plan a VMM would run for a firmware image.
//! - `ccpop measure`: print the launch measurement a platform would compute for it.
//!
//! Every error is one line on stderr (`ccpop: <message>`); the exit code is 1 when the demo's
//! guest saw other bytes than were populated, 2 for every other failure.

mod demo;
mod error;
mod firmware;
mod progress;
mod summary;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::firmware::{CcaOptions, NamedPlan, SnpOptions, TdxOptions};
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
    /// Print the populate plan a VMM would run for a firmware image (regions, roles, chunk and
    /// call counts).
    Plan(PlanArgs),
    /// Print the launch measurement a platform computes for a firmware image; the last line is
    /// the digest in lower-case hex.
    #[command(subcommand)]
    Measure(MeasureCommand),
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

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The platform.
    #[arg(long)]
    platform: Platform,
    /// The firmware image (SNP: an OVMF build with SEV metadata; TDX: a TDVF image; CCA: any
    /// image, placed at --load-gpa).
    #[arg(long, value_name = "IMAGE")]
    firmware: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    snp: SnpArgs,
    #[command(flatten)]
    tdx: TdxArgs,
    #[command(flatten)]
    cca: CcaArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct SnpArgs {
    /// SNP: how SEV metadata sections become page types (`qemu`: as QEMU, pre-validated memory
    /// as ZERO pages; `unmeasured`: as UNMEASURED pages).
    #[arg(long, default_value = "qemu", value_name = "POLICY")]
    section_policy: String,
}

#[derive(Debug, Clone, Copy, clap::Args)]
struct TdxArgs {
    /// TDX: leave PAGE_AUG sections to the guest (not in MRTD) instead of adding them as QEMU
    /// does.
    #[arg(long)]
    page_aug_leave_for_guest: bool,
}

#[derive(Debug, Clone, clap::Args)]
struct CcaArgs {
    /// CCA: the IPA the firmware image is loaded at (hex with 0x, or decimal); RIPAS RAM covers
    /// the image's granules and the one REC enters there.
    #[arg(long, value_name = "GPA", value_parser = parse_u64)]
    load_gpa: Option<u64>,
    /// CCA: the realm's measurement hash (`sha256` or `sha512`).
    #[arg(long, default_value = "sha256")]
    hash: String,
    /// CCA: the realm's IPA width in bits.
    #[arg(long, default_value_t = 40)]
    ipa_bits: u8,
}

#[derive(Debug, Subcommand)]
enum MeasureCommand {
    /// The SEV-SNP launch digest of a QEMU-style launch: the image ending at 4 GiB as measured
    /// pages, its SEV metadata sections, then one VMSA page per --vmsa file in order.
    Snp {
        /// An OVMF build with SEV metadata.
        #[arg(long, value_name = "OVMF.fd")]
        firmware: PathBuf,
        /// A 4096-byte VMSA page, measured after the image (repeat for each vCPU, in order).
        #[arg(long, value_name = "FILE", conflicts_with = "firmware_only")]
        vmsa: Vec<PathBuf>,
        /// The digest after the image pages alone (no metadata sections, no VMSAs).
        #[arg(long)]
        firmware_only: bool,
        #[command(flatten)]
        snp: SnpArgs,
    },
    /// The TDX MRTD of a TDVF image as QEMU populates it.
    Tdx {
        /// A TDVF image (OVMF built with TDX metadata).
        #[arg(long, value_name = "IMAGE")]
        firmware: PathBuf,
        #[command(flatten)]
        tdx: TdxArgs,
    },
    /// The Arm CCA RIM of a realm whose firmware image is loaded at --load-gpa, entered there by
    /// one runnable REC with x0..x7 zero.
    Cca {
        /// The firmware image (zero-padded to 4 KiB granules).
        #[arg(long, value_name = "IMAGE")]
        firmware: PathBuf,
        #[command(flatten)]
        cca: CcaArgs,
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
        section_policy: a.section_policy.clone(),
        firmware_only,
    }
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

fn plan_command(a: &PlanArgs) -> Result<(), Error> {
    let image = firmware::read(&a.firmware)?;
    let path = a.firmware.as_path();
    match a.platform {
        Platform::Snp => print_plan(
            &firmware::snp_plan(path, &image, &snp_options(&a.snp, false))?,
            a.json,
        ),
        Platform::Tdx => print_plan(
            &firmware::tdx_plan(path, &image, &tdx_options(&a.tdx))?,
            a.json,
        ),
        Platform::Cca => {
            let padded = firmware::cca_padded(&image);
            print_plan(
                &firmware::cca_plan(path, &padded, &cca_options(&a.cca))?,
                a.json,
            )
        }
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

fn measure_command(m: &MeasureCommand) -> Result<(), Error> {
    match m {
        MeasureCommand::Snp {
            firmware,
            vmsa,
            firmware_only,
            snp,
        } => {
            let image = firmware::read(firmware)?;
            let plan = firmware::snp_plan(firmware, &image, &snp_options(snp, *firmware_only))?;
            let digest = firmware::snp_measure(&plan, vmsa)?;
            measured_line(&plan, "launch digest", firmware);
            println!("  VMSA pages: {}", vmsa.len());
            println!("{digest}");
        }
        MeasureCommand::Tdx { firmware, tdx } => {
            let image = firmware::read(firmware)?;
            let plan = firmware::tdx_plan(firmware, &image, &tdx_options(tdx))?;
            let mrtd = firmware::tdx_measure(&plan)?;
            measured_line(&plan, "MRTD", firmware);
            println!("{mrtd}");
        }
        MeasureCommand::Cca { firmware, cca } => {
            let image = firmware::read(firmware)?;
            let padded = firmware::cca_padded(&image);
            let opts = cca_options(cca);
            let plan = firmware::cca_plan(firmware, &padded, &opts)?;
            let rim = firmware::cca_measure(&plan, &opts)?;
            measured_line(&plan, "RIM", firmware);
            println!("{rim}");
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Size of the generated image in MiB (16 to 4096; below 64 is a test size).
    #[arg(long, default_value_t = demo::MIN_SIZE_MIB, value_name = "N")]
    size_mib: u64,
    /// Flip one byte after populating, to show (and test) that the guest catches it.
    #[arg(long, hide = true)]
    corrupt: bool,
    /// The KVM device to open (for testing the message when KVM is missing).
    #[arg(long, hide = true, default_value = "/dev/kvm", value_name = "PATH")]
    kvm_device: std::path::PathBuf,
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Demo(a) => demo::run(&demo::DemoOptions {
            size_mib: a.size_mib,
            corrupt: a.corrupt,
            kvm_device: a.kvm_device,
        }),
        Command::Plan(a) => plan_command(&a),
        Command::Measure(m) => measure_command(&m),
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
