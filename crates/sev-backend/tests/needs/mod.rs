//! What the tests that compare with published values and with sev-snp-measure need, as
//! `gmem::testing::Need`s: a test that lacks one is reported ignored with a `SKIPPED [<id>]`
//! line (logged to `$CCPOP_KVM_SKIP_LOG`), and CI's `lab/skipcheck.py` re-checks each id.

#![allow(dead_code)]

use std::path::PathBuf;

use gmem::testing::Need;

/// The OVMF image Debian/Ubuntu's `ovmf` package installs.
pub const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// [`DEBIAN_OVMF`], as a need.
pub const OVMF: Need = Need::File {
    path: DEBIAN_OVMF,
    from: "Debian's ovmf package: apt-get install ovmf",
};

const FIXTURES_FROM: &str = "virtee/sev-snp-measure's tests/fixtures, in \
                             shared/fixtures/sev-snp-measure beside the repository or \
                             $CCPOP_SSM_FIXTURES";

/// sev-snp-measure's fixtures: `$CCPOP_SSM_FIXTURES`, else `shared/fixtures/sev-snp-measure`
/// beside the repository.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CCPOP_SSM_FIXTURES").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/fixtures/sev-snp-measure"
            ))
        },
        PathBuf::from,
    )
}

/// The AmdSev OVMF fixture (with a hashes table).
pub fn amdsev() -> PathBuf {
    fixtures_dir().join("ovmf_AmdSev_suffix.bin")
}

/// The OvmfX64 fixture (no hashes table).
pub fn ovmfx64() -> PathBuf {
    fixtures_dir().join("ovmf_OvmfX64_suffix.bin")
}

/// The OVMF the SVSM fixture launches with.
pub fn svsm_ovmf() -> PathBuf {
    fixtures_dir().join("svsm_ovmf.fd")
}

/// The COCONUT-SVSM fixture.
pub fn svsm() -> PathBuf {
    fixtures_dir().join("svsm.bin")
}

/// A fixture `path`, as a need.
pub const fn fixture(path: fn() -> PathBuf) -> Need {
    Need::FileAt {
        path,
        from: FIXTURES_FROM,
    }
}

/// The directory `tests/peer/setup.sh` fills: `$CCPOP_PEER_DIR`, else `/tmp/ccpop-peer`.
pub fn peer_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CCPOP_PEER_DIR").unwrap_or_else(|| "/tmp/ccpop-peer".into()))
}

fn peer_kernel() -> PathBuf {
    peer_dir().join("vmlinuz")
}

fn peer_initrd() -> PathBuf {
    peer_dir().join("initrd.img")
}

const SETUP: &str = "bash crates/sev-backend/tests/peer/setup.sh [$CCPOP_PEER_DIR]";

fn sevsnpmeasure() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sevsnpmeasure"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "python3 -c 'import sevsnpmeasure': {}",
        err.lines().last().unwrap_or("failed")
    ))
}

/// sev-snp-measure's Python package (with its `snp-create-id-block` and `cryptography`).
pub const SEV_SNP_MEASURE: Need = Need::Tool {
    id: "python:sevsnpmeasure",
    from: "sev-snp-measure 0.0.13 from PyPI: bash crates/sev-backend/tests/peer/setup.sh",
    check: sevsnpmeasure,
};

/// What the comparisons with sev-snp-measure itself need: its Python package, the kernel and
/// initrd of `setup.sh`, Debian's OVMF and the AmdSev fixture.
pub fn peer() -> Vec<Need> {
    vec![
        SEV_SNP_MEASURE,
        Need::FileAt {
            path: peer_kernel,
            from: SETUP,
        },
        Need::FileAt {
            path: peer_initrd,
            from: SETUP,
        },
        OVMF,
        fixture(amdsev),
    ]
}
