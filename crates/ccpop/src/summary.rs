//! Printing plans and reports for people (and plans as JSON for tools).

use std::fmt::Write as _;

use cc_populate::{Plan, Report, Role};
use serde::Serialize;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// `bytes` in the largest binary unit that keeps it readable: `4 KiB`, `2 MiB`, `1.02 MiB`.
pub fn size(bytes: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.2} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// `n thing` or `n things`.
pub fn plural(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// One region of a plan, as printed and as serialised by `ccpop plan --json`.
#[derive(Debug, Serialize)]
pub struct RegionLine {
    /// Index in the plan's (populate) order.
    pub index: usize,
    /// A name for people (`firmware`, `kernel`, a section type), if the caller has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// The role (`measured`, `zero`, ...).
    pub role: String,
    /// The content kind (`source`, `in-place`, `zero`).
    pub content: String,
    /// Populate calls for this region.
    pub chunks: u64,
}

/// The bytes of one role in a plan.
#[derive(Debug, Serialize)]
pub struct RoleBytes {
    /// The role.
    pub role: String,
    /// Its bytes.
    pub bytes: u64,
}

/// A plan, as printed and as serialised by `ccpop plan --json`.
#[derive(Debug, Serialize)]
pub struct PlanSummary {
    /// The platform the plan is for (`plain`, `snp`, `tdx`, `cca`).
    pub platform: String,
    /// Regions in populate order.
    pub regions: Vec<RegionLine>,
    /// Sum of the regions' lengths.
    pub total_bytes: u64,
    /// Populate calls for the whole plan.
    pub chunks: u64,
    /// Bytes per role, in role order, roles with no bytes left out.
    pub bytes_by_role: Vec<RoleBytes>,
    /// The backend granule the plan was validated against.
    pub granule: u64,
    /// The largest populate call.
    pub max_chunk: u64,
}

impl PlanSummary {
    /// Summarises `plan`; `names[i]` (when given) names region `i`.
    pub fn new(platform: &str, plan: &Plan<'_>, names: &[String]) -> PlanSummary {
        let regions: Vec<RegionLine> = plan
            .regions()
            .iter()
            .enumerate()
            .map(|(i, r)| RegionLine {
                index: i,
                name: names.get(i).cloned(),
                gpa: r.gpa(),
                len: r.len(),
                role: r.role().to_string(),
                content: r.content().kind().to_string(),
                chunks: plan.chunks(i, 0).count() as u64,
            })
            .collect();
        let bytes_by_role = Role::ALL
            .iter()
            .map(|role| {
                let n = plan
                    .regions()
                    .iter()
                    .filter(|r| r.role() == *role)
                    .map(|r| r.len())
                    .sum::<u64>();
                RoleBytes {
                    role: role.to_string(),
                    bytes: n,
                }
            })
            .filter(|r| r.bytes > 0)
            .collect();
        PlanSummary {
            platform: platform.to_string(),
            chunks: regions.iter().map(|r| r.chunks).sum(),
            regions,
            total_bytes: plan.total_bytes(),
            bytes_by_role,
            granule: plan.caps().granule,
            max_chunk: plan.caps().max_chunk,
        }
    }

    /// The human-readable form: a header line, one line per region, the bytes per role.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan ({}): {}, {} ({} bytes), {} populate calls (granule {}, calls of at most {})",
            self.platform,
            plural(self.regions.len(), "region"),
            size(self.total_bytes),
            self.total_bytes,
            self.chunks,
            size(self.granule),
            size(self.max_chunk)
        );
        let _ = writeln!(
            s,
            "  {:>3}  {:<40}  {:>10}  {:<10}  {:<8}  {:>5}  name",
            "#", "guest-physical range", "size", "role", "content", "calls"
        );
        for r in &self.regions {
            let _ = writeln!(
                s,
                "  {:>3}  [{:#018x}, {:#018x})  {:>10}  {:<10}  {:<8}  {:>5}  {}",
                r.index,
                r.gpa,
                r.gpa.saturating_add(r.len),
                size(r.len),
                r.role,
                r.content,
                r.chunks,
                r.name.as_deref().unwrap_or("")
            );
        }
        let roles: Vec<String> = self
            .bytes_by_role
            .iter()
            .map(|r| format!("{} {}", r.role, size(r.bytes)))
            .collect();
        let _ = writeln!(s, "  by role: {}", roles.join(", "));
        s
    }
}

/// The human-readable report: bytes, calls, retries, time, throughput.
pub fn report(report: &Report) -> String {
    let secs = report.elapsed.as_secs_f64();
    let bytes = report.bytes_populated();
    let throughput = if secs > 0.0 {
        format!("{:.1} MiB/s", bytes as f64 / MIB as f64 / secs)
    } else {
        "n/a".to_string()
    };
    let done = report
        .regions
        .iter()
        .filter(|r| r.populated == r.len)
        .count();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "report: {done}/{} regions populated, {} ({bytes} bytes) in {} calls, {} retries, {} conversions, {} of source released",
        report.regions.len(),
        size(bytes),
        report.calls(),
        report.retries(),
        report.convert_calls(),
        size(report.bytes_released())
    );
    let _ = writeln!(s, "  time {:.3} ms, throughput {throughput}", secs * 1000.0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(size(2 << 20), "2 MiB");
        assert_eq!(size((1 << 20) + (1 << 19)), "1.50 MiB");
        assert_eq!(size(3 << 30), "3 GiB");
        assert_eq!(size(1000), "1000 B");
    }
}
