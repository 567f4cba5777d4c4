//! The IGVM loader of `cc-image` on arbitrary files: `parse_igvm` and `load_igvm` for every
//! platform, then the plan and (when small) the launch measurement of what loads, compared with
//! the IGVM reference implementation (the `igvm` crate's `measurement` module).
//!
//! Never panics to its caller: panics inside the `igvm` crate are contained by `parse_igvm`
//! (`catch_unwind`), so this target lets those unwind (libfuzzer-sys would otherwise abort on
//! any panic, even a caught one) and still aborts on every other panic, and on any panic that
//! escapes `cc-image`. A loaded image's regions are non-empty, do not wrap, and carry data of
//! their size (or none); its plan, validated for the platform, never panics. A file that loads
//! for SEV-SNP or TDX under [`IgvmPolicy::REFERENCE`] and measures has the measurement
//! `igvm::measurement` computes for the platform's compatibility mask (`generate_snp_measurement`,
//! `generate_tdx_measurement`), whenever that reference computes one (it refuses, for example, an
//! SNP file without a guest policy, and may panic on what `cc-image` refused to load anyway).
#![no_main]

use std::panic::{catch_unwind, AssertUnwindSafe};

use cc_image::{hex, load_igvm, load_igvm_with, parse_igvm, IgvmPolicy, Platform};
use cc_populate::MemoryLayout;
use igvm::{IgvmFile, IgvmPlatformHeader};
use igvm_defs::IgvmPlatformType;
use libfuzzer_sys::fuzz_target;

/// Largest image (sum of region sizes) whose launch measurement is computed per input.
const MEASURE_LIMIT: u64 = 8 << 20;

/// Lets panics raised inside the `igvm` crate unwind (to `parse_igvm`'s `catch_unwind`), and
/// keeps libfuzzer-sys's abort for every other panic. Set `FUZZ_IGVM_STRICT=1` to abort on
/// the contained ones too (to collect them: they are `igvm` crate bugs, see the README).
fn contain_igvm_panics() {
    if std::env::var_os("FUZZ_IGVM_STRICT").is_some() {
        return;
    }
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_igvm = info.location().is_some_and(|l| {
            let f = l.file();
            f.contains("/igvm-0.") || f.contains("/igvm_defs-0.")
        });
        if !in_igvm {
            abort(info);
        }
    }));
}

/// The reference measurement of `file` for `platform` (`Snp` or `Tdx`): `None` when the file
/// has no header for the platform or the reference refuses (or panics inside `igvm`, contained
/// here as `parse_igvm` contains the parser's).
fn reference(file: &IgvmFile, platform: Platform) -> Option<[u8; 48]> {
    let wanted = match platform {
        Platform::Snp => IgvmPlatformType::SEV_SNP,
        Platform::Tdx => IgvmPlatformType::TDX,
        _ => return None,
    };
    // The same header `cc-image` takes the compatibility mask from: the first for the platform.
    let mask = file
        .platforms()
        .iter()
        .map(|p| match p {
            IgvmPlatformHeader::SupportedPlatform(info) => info,
        })
        .find(|info| info.platform_type == wanted)?
        .compatibility_mask;
    let run = || match platform {
        Platform::Snp => igvm::measurement::generate_snp_measurement(
            file.initializations(),
            file.directives(),
            mask,
        ),
        _ => igvm::measurement::generate_tdx_measurement(file.directives(), mask),
    };
    catch_unwind(AssertUnwindSafe(run)).ok()?.ok()
}

fuzz_target!(init: contain_igvm_panics(), |data: &[u8]| {
    // Refusals are typed errors (`cc_image::Error`); formatting one must not panic.
    let file = parse_igvm(data).map_err(|e| e.to_string()).ok();
    for platform in [Platform::Snp, Platform::Tdx, Platform::Cca, Platform::Plain] {
        let Ok(image) = load_igvm(data, platform) else {
            continue;
        };
        assert_eq!(image.platform(), platform);
        let mut total = 0u128;
        for r in image.regions() {
            assert!(r.size() > 0, "empty region at {:#x}", r.gpa());
            assert!(r.gpa() as u128 + r.size() as u128 <= u64::MAX as u128, "region wraps");
            if let Some(d) = r.data() {
                assert_eq!(d.len() as u64, r.size(), "region at {:#x}", r.gpa());
            }
            total += r.size() as u128;
        }
        if let Ok(plan) = image.plan(&platform.caps(), &MemoryLayout::unbounded()) {
            assert_eq!(plan.regions().len(), image.regions().len());
        }
        if total > MEASURE_LIMIT as u128 {
            continue;
        }
        let _ = image.measure();
        // The reference measures VP contexts where the file puts them, at the file's address.
        let Ok(ours) = load_igvm_with(data, platform, IgvmPolicy::REFERENCE).and_then(|i| i.measure())
        else {
            continue;
        };
        let file = file.as_ref().expect("a file that loads parses");
        if let Some(want) = reference(file, platform) {
            assert_eq!(hex(&ours), hex(&want), "{platform}: measurement differs from igvm::measurement");
        }
    }
});
