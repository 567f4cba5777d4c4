//! `--trace FILE` and `ccpop diff`: measurement traces written, read and compared.

use std::path::Path;

use cc_image::trace::{self, Sources, TraceStep};

use crate::error::Error;
use crate::firmware::NamedPlan;

/// Writes `steps` to `path` as JSON lines, after checking that the last step's running value is
/// the measurement printed (the trace and the measurement are the same computation).
pub fn write(path: &Path, steps: &[TraceStep], measurement: &str) -> Result<(), Error> {
    if let Some(last) = steps.last() {
        if last.digest != measurement {
            return Err(Error::Platform(format!(
                "internal error: the trace ends at {} but the measurement is {measurement}",
                last.digest
            )));
        }
    }
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    trace::write_jsonl(steps, std::io::BufWriter::new(f)).map_err(io)
}

/// The named ranges of a firmware plan: each region by its name, with the input file and
/// offset where its bytes come from it.
pub fn plan_sources(plan: &NamedPlan<'_>, file: &Path) -> Sources {
    let mut sources = Sources::new();
    for ((r, name), off) in plan
        .plan
        .regions()
        .iter()
        .zip(&plan.names)
        .zip(&plan.offsets)
    {
        sources = match off {
            Some(off) => {
                sources.with_file(r.gpa(), r.len(), name, file.display().to_string(), *off)
            }
            None => sources.with(r.gpa(), r.len(), name),
        };
    }
    sources
}

/// The named ranges of an SNP firmware launch (`(gpa, len, page type, what)` per region); the
/// region holding the whole firmware image carries the file and its offsets.
pub fn snp_sources(
    regions: &[(u64, u64, sev_backend::PageType, String)],
    file: &Path,
    image_len: u64,
    vmsa_names: Vec<String>,
) -> Sources {
    let mut sources = Sources::new();
    for (gpa, len, _, what) in regions {
        sources = if *len == image_len && gpa.checked_add(*len) == Some(1 << 32) {
            sources.with_file(*gpa, *len, what, file.display().to_string(), 0)
        } else {
            sources.with(*gpa, *len, what)
        };
    }
    sources.with_vmsa_names(vmsa_names)
}

/// Reads a trace file.
fn read(path: &Path) -> Result<Vec<TraceStep>, Error> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    trace::read_jsonl(std::io::BufReader::new(f))
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// `ccpop diff A B`: prints where the traces part (nothing when equal); `Err` with exit code 1
/// when they differ, 2 when one cannot be read.
pub fn diff_command(a: &Path, b: &Path) -> Result<(), Error> {
    let (ta, tb) = (read(a)?, read(b)?);
    match trace::diff(&ta, &tb) {
        None => {
            println!("equal: {} steps", ta.len());
            Ok(())
        }
        Some(d) => {
            println!("{d}");
            Err(Error::Differ(d.first_line()))
        }
    }
}
