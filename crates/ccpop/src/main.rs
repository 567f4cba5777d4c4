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
mod progress;
mod summary;

use clap::{Parser, Subcommand};

use crate::error::Error;

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
