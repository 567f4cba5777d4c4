//! The IGVM loader of `cc-image` on arbitrary files: `parse_igvm` and `load_igvm` for every
//! platform, then the plan and (when small) the launch measurement of what loads.
//!
//! Never panics to its caller: panics inside the `igvm` crate are contained by `parse_igvm`
//! (`catch_unwind`), so this target lets those unwind (libfuzzer-sys would otherwise abort on
//! any panic, even a caught one) and still aborts on every other panic, and on any panic that
//! escapes `cc-image`. A loaded image's regions are non-empty, do not wrap, and carry data of
//! their size (or none); its plan, validated for the platform, never panics, and every refusal
//! is a typed error.
#![no_main]

use cc_image::{load_igvm, parse_igvm, Platform};
use cc_populate::MemoryLayout;
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

fuzz_target!(init: contain_igvm_panics(), |data: &[u8]| {
    if let Err(e) = parse_igvm(data) {
        assert!(!e.to_string().is_empty());
    }
    for platform in [Platform::Snp, Platform::Tdx, Platform::Cca, Platform::Plain] {
        let image = match load_igvm(data, platform) {
            Ok(i) => i,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                continue;
            }
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
        match image.plan(&platform.caps(), &MemoryLayout::unbounded()) {
            Ok(plan) => {
                assert_eq!(plan.regions().len(), image.regions().len());
                if total <= MEASURE_LIMIT as u128 {
                    if let Err(e) = image.measure() {
                        assert!(!e.to_string().is_empty());
                    }
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
