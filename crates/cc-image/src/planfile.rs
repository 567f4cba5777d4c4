//! Plan files: a small, versioned JSON description of a launch.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use cc_populate::{MemoryLayout, Role};
#[cfg(feature = "cca")]
use cca_backend::{HashAlgo, RealmParams, RecParams, RmmVersion};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "cca")]
use crate::image::CcaLaunch;
use crate::image::{ImageRegion, LaunchImage, Origin, SnpVmsa};
use crate::{Error, Num, Platform};

/// The only plan-file version this crate reads.
pub const PLAN_FILE_VERSION: u64 = 1;

pub use crate::image::DEFAULT_VMSA_GPA;

/// One entry of a plan file's `regions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRegion {
    /// First guest-physical address.
    pub gpa: Num,
    /// Size in bytes.
    pub size: Num,
    /// Role.
    pub role: Role,
    /// Content file, relative to the plan file's folder (measured and unmeasured only;
    /// absent = zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Offset in the file (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_offset: Option<Num>,
}

/// One entry of a plan file's `snp.vmsa`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanVmsa {
    /// The 4096-byte VMSA page, relative to the plan file's folder.
    pub file: PathBuf,
    /// The address it is measured at (default [`DEFAULT_VMSA_GPA`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpa: Option<Num>,
}

/// A plan file's `snp` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSnp {
    /// VMSA pages, measured after all regions in this order.
    #[serde(default)]
    pub vmsa: Vec<PlanVmsa>,
}

/// One entry of a plan file's `cca.recs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRec {
    /// Entry point.
    pub pc: Num,
    /// X0..X7.
    pub gprs: [Num; 8],
    /// Whether the REC is runnable.
    pub runnable: bool,
}

/// A plan file's `cca` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCca {
    /// `"sha256"` or `"sha512"`.
    pub hash: String,
    /// IPA width in bits.
    pub ipa_bits: Num,
    /// LPA2 enabled.
    pub lpa2: bool,
    /// Breakpoints (a count, at least 2).
    pub num_bps: Num,
    /// Watchpoints (a count, at least 2).
    pub num_wps: Num,
    /// SVE vector length in bits (0 = SVE off).
    pub sve_vl: Num,
    /// PMU counters (`null` = PMU off).
    pub pmu_counters: Option<Num>,
    /// RECs in creation order.
    pub recs: Vec<PlanRec>,
    /// The RMM version whose measurement rules the RIM follows: `"1.0"` (RMI_RTT_INIT_RIPAS
    /// measured) or `"2.0"` (not measured). Absent: not said, measured as `"1.0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmm: Option<String>,
}

/// A version-1 plan file, as typed data (e.g. to write one with `serde_json`).
///
/// ```
/// use cc_image::planfile::{PlanFile, PlanRegion};
/// use cc_image::{Num, Platform};
/// use cc_populate::Role;
/// let plan = PlanFile {
///     version: Num(1),
///     platform: Platform::Tdx,
///     regions: vec![PlanRegion {
///         gpa: Num(0xffff_0000),
///         size: Num(0x1_0000),
///         role: Role::Measured,
///         file: Some("tdvf.fd".into()),
///         file_offset: None,
///     }],
///     snp: None,
///     cca: None,
/// };
/// let json = serde_json::to_string(&plan).unwrap();
/// assert!(json.starts_with(r#"{"version":1,"platform":"tdx","regions":[{"gpa":4294901760,"#));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Always 1.
    pub version: Num,
    /// The platform.
    pub platform: Platform,
    /// Regions, in populate (and measurement) order.
    pub regions: Vec<PlanRegion>,
    /// SNP section (SNP plans only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<PlanSnp>,
    /// CCA section (required for, and only allowed in, CCA plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca: Option<PlanCca>,
}

/// The top level, read before its sections so that errors can name the entry they are in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    version: Value,
    platform: Value,
    regions: Vec<Value>,
    #[serde(default)]
    snp: Option<Value>,
    #[serde(default)]
    cca: Option<Value>,
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown platform {s:?}, expected \"plain\", \"snp\", \"tdx\" or \"cca\""
            ))
        })
    }
}

struct Ctx<'a> {
    path: &'a Path,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Field {
            path: self.path.to_path_buf(),
            field: one_line(field.into()),
            reason: one_line(reason.into()),
        }
    }

    fn parse<T: DeserializeOwned>(&self, field: &str, v: Value) -> Result<T, Error> {
        serde_json::from_value(v).map_err(|e| self.err(field, e.to_string()))
    }

    #[cfg(feature = "cca")]
    fn small<T: TryFrom<u64>>(&self, field: &str, v: Num, max: u64) -> Result<T, Error> {
        T::try_from(v.0)
            .ok()
            .filter(|_| v.0 <= max)
            .ok_or_else(|| self.err(field, format!("{} is out of range (at most {max})", v.0)))
    }

    /// Reads `len` bytes of `file` (relative to the plan's folder) from `offset`.
    fn read(&self, field: &str, file: &Path, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let full = self.dir.join(file);
        let io = |e: std::io::Error| self.err(field, format!("{}: {e}", full.display()));
        // Only regular files: opening a FIFO would block, and a device has no length to check.
        if !std::fs::metadata(&full).map_err(io)?.is_file() {
            return Err(self.err(field, format!("{} is not a regular file", full.display())));
        }
        let mut f = File::open(&full).map_err(io)?;
        let have = f.metadata().map_err(io)?.len();
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > have) {
            return Err(self.err(
                field,
                format!(
                    "{} has {have:#x} bytes, the region needs {len:#x} from offset {offset:#x} (the file is too short)",
                    full.display()
                ),
            ));
        }
        let n = usize::try_from(len).map_err(|_| self.err(field, "too large for memory"))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n)
            .map_err(|_| self.err(field, format!("cannot allocate {len:#x} bytes")))?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.take(len).read_to_end(&mut buf).map_err(io)?;
        if buf.len() != n {
            return Err(self.err(
                field,
                format!("{} ended after {:#x} bytes", full.display(), buf.len()),
            ));
        }
        Ok(buf)
    }
}

/// Messages quote what the file says (an unknown field's name, a file path); control
/// characters in it are escaped so that every refusal stays one line.
fn one_line(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Reads a plan file (see the crate docs for the format): parses and checks every field,
/// reads the content files (relative to the plan file's folder), and validates the regions
/// against the platform's [capabilities](Platform::caps), so that every problem is reported
/// here, as one line naming the field or region.
pub fn load_plan_file(path: &Path) -> Result<LaunchImage, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_plan(&text, path, dir)
}

/// [`load_plan_file`], refusing a plan whose platform is not `platform` (for a command line
/// that names the platform as well as the file).
///
/// ```
/// # #[cfg(all(feature = "tdx", feature = "snp"))]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("cc-image-as-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("plan.json");
/// std::fs::write(&path, r#"{"version": 1, "platform": "tdx", "regions": []}"#)?;
/// assert!(cc_image::load_plan_file_as(&path, cc_image::Platform::Tdx).is_ok());
/// let e = cc_image::load_plan_file_as(&path, cc_image::Platform::Snp).unwrap_err();
/// assert!(e.to_string().ends_with("plan.json: the plan is for platform tdx, not snp"));
/// # Ok(())
/// # }
/// # #[cfg(not(all(feature = "tdx", feature = "snp")))] fn main() {}
/// ```
pub fn load_plan_file_as(path: &Path, platform: Platform) -> Result<LaunchImage, Error> {
    let image = load_plan_file(path)?;
    if image.platform() != platform {
        return Err(Error::PlatformMismatch {
            path: path.to_path_buf(),
            file: image.platform(),
            requested: platform,
        });
    }
    Ok(image)
}

/// [`load_plan_file`] for plan text already in memory: `path` names it in messages, `dir` is
/// the folder content files are relative to.
pub fn parse_plan(text: &str, path: &Path, dir: &Path) -> Result<LaunchImage, Error> {
    let cx = Ctx { path, dir };
    let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    // The version first: a later version's fields must not be reported as unknown.
    let version = match value.as_object().map(|o| o.get("version")) {
        None => return Err(cx.err("(top level)", "expected a JSON object")),
        Some(None) => return Err(cx.err("version", "missing (this reader knows version 1)")),
        Some(Some(v)) => cx.parse::<Num>("version", v.clone())?.0,
    };
    if version != PLAN_FILE_VERSION {
        return Err(cx.err(
            "version",
            format!("unsupported plan file version {version} (this reader knows version 1)"),
        ));
    }
    let top: TopLevel = cx.parse("(top level)", value)?;
    let platform: Platform = cx.parse("platform", top.platform)?;
    let _ = top.version;
    if !platform.is_built() {
        return Err(cx.err("platform", Error::NotBuilt(platform).to_string()));
    }

    let mut image = LaunchImage::new(platform);
    if platform != Platform::Cca && top.cca.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(cx.err(
            "cca",
            format!("only allowed in a cca plan (this plan is for {platform})"),
        ));
    }
    let limit = match platform {
        #[cfg(feature = "cca")]
        Platform::Cca => {
            let v = top
                .cca
                .filter(|v| !v.is_null())
                .ok_or_else(|| cx.err("cca", "missing: a cca plan needs its realm parameters"))?;
            let cca = parse_cca(&cx, v)?;
            let limit = cca.realm.protected_limit();
            image.cca = Some(cca);
            Some(limit)
        }
        _ => None,
    };
    for (i, v) in top.regions.into_iter().enumerate() {
        let field = format!("regions[{i}]");
        let r: PlanRegion = cx.parse(&field, v)?;
        image.regions.push(region(&cx, &field, i, r, limit)?);
    }
    if let Some(v) = top.snp.filter(|v| !v.is_null()) {
        if platform != Platform::Snp {
            return Err(cx.err(
                "snp",
                format!("only allowed in an snp plan (this plan is for {platform})"),
            ));
        }
        let snp: PlanSnpRaw = cx.parse("snp", v)?;
        for (i, v) in snp.vmsa.into_iter().enumerate() {
            let field = format!("snp.vmsa[{i}]");
            let e: PlanVmsa = cx.parse(&field, v)?;
            let page = cx.read(&format!("{field}.file"), &e.file, 0, 4096)?;
            let full = cx.dir.join(&e.file);
            let len = std::fs::metadata(&full).map(|m| m.len()).unwrap_or(0);
            if len != 4096 {
                return Err(cx.err(
                    format!("{field}.file"),
                    format!("{} has {len} bytes, a VMSA page has 4096", full.display()),
                ));
            }
            let gpa = e.gpa.map_or(DEFAULT_VMSA_GPA, |g| g.0);
            if !gpa.is_multiple_of(4096) {
                return Err(cx.err(
                    format!("{field}.gpa"),
                    format!("{gpa:#x} is not 4 KiB aligned"),
                ));
            }
            let mut boxed = Box::new([0u8; 4096]);
            boxed.copy_from_slice(&page);
            image.vmsas.push(SnpVmsa {
                gpa,
                given_gpa: gpa,
                vp_index: None,
                header: None,
                page: boxed,
                regions_before: usize::MAX,
            });
        }
    }
    let n = image.regions.len();
    for v in &mut image.vmsas {
        v.regions_before = n;
    }
    // Overlaps, alignment and roles, checked once here (naming the region by its index).
    image
        .plan(&platform.try_caps()?, &MemoryLayout::unbounded())
        .map_err(|e| match e {
            Error::Plan(source) => Error::PlanFile {
                path: path.to_path_buf(),
                source,
            },
            e => e,
        })?;
    Ok(image)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanSnpRaw {
    #[serde(default)]
    vmsa: Vec<Value>,
}

fn region(
    cx: &Ctx<'_>,
    field: &str,
    index: usize,
    r: PlanRegion,
    cca_limit: Option<u64>,
) -> Result<ImageRegion, Error> {
    let (gpa, size) = (r.gpa.0, r.size.0);
    let end = gpa.checked_add(size).ok_or_else(|| {
        cx.err(
            field,
            format!("gpa {gpa:#x} + size {size:#x} ends past 2^64"),
        )
    })?;
    if let Some(limit) = cca_limit {
        if end > limit {
            return Err(cx.err(
                field,
                format!(
                    "[{gpa:#x}..{end:#x}) is not in the protected half of the IPA space (below {limit:#x})"
                ),
            ));
        }
    }
    let data = match (&r.file, r.role) {
        (None, _) => {
            if r.file_offset.is_some() {
                return Err(cx.err(format!("{field}.file_offset"), "given without a file"));
            }
            None
        }
        (Some(file), Role::Measured | Role::Unmeasured) => {
            let off = r.file_offset.map_or(0, |n| n.0);
            Some(cx.read(&format!("{field}.file"), file, off, size)?)
        }
        (Some(_), role) => {
            return Err(cx.err(
                format!("{field}.file"),
                format!(
                    "a {role} region cannot have a file (only measured and unmeasured regions do)"
                ),
            ))
        }
    };
    Ok(ImageRegion {
        gpa,
        size,
        role: r.role,
        data,
        origin: Origin::PlanFile { index },
    })
}

#[cfg(feature = "cca")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanCcaRaw {
    hash: String,
    ipa_bits: Num,
    lpa2: bool,
    num_bps: Num,
    num_wps: Num,
    sve_vl: Num,
    pmu_counters: Option<Num>,
    recs: Vec<Value>,
    #[serde(default)]
    rmm: Option<Value>,
}

#[cfg(feature = "cca")]
fn parse_cca(cx: &Ctx<'_>, v: Value) -> Result<CcaLaunch, Error> {
    let c: PlanCcaRaw = cx.parse("cca", v)?;
    let hash = HashAlgo::from_name(&c.hash).ok_or_else(|| {
        cx.err(
            "cca.hash",
            format!("{:?} is not \"sha256\" or \"sha512\"", c.hash),
        )
    })?;
    let mut realm = RealmParams::new(hash, cx.small("cca.ipa_bits", c.ipa_bits, 255)?);
    realm.lpa2 = c.lpa2;
    realm.num_bps = cx.small("cca.num_bps", c.num_bps, 255)?;
    realm.num_wps = cx.small("cca.num_wps", c.num_wps, 255)?;
    realm.sve_vl = cx.small("cca.sve_vl", c.sve_vl, u16::MAX.into())?;
    realm.pmu_counters = c
        .pmu_counters
        .map(|n| cx.small("cca.pmu_counters", n, 255))
        .transpose()?;
    realm.validate().map_err(|e| match e {
        cca_backend::Error::InvalidParam { field, .. } => {
            cx.err(format!("cca.{field}"), e.to_string())
        }
        e => cx.err("cca", e.to_string()),
    })?;
    let mut recs = Vec::with_capacity(c.recs.len());
    for (i, v) in c.recs.into_iter().enumerate() {
        let r: PlanRec = cx.parse(&format!("cca.recs[{i}]"), v)?;
        recs.push(RecParams {
            pc: r.pc.0,
            gprs: r.gprs.map(|g| g.0),
            runnable: r.runnable,
        });
    }
    let rmm = match c.rmm {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(
            RmmVersion::from_name(&name)
                .ok_or_else(|| cx.err("cca.rmm", format!("{name:?} is not \"1.0\" or \"2.0\"")))?,
        ),
        Some(other) => {
            return Err(cx.err(
                "cca.rmm",
                format!("{other} is not \"1.0\" or \"2.0\" (a JSON string)"),
            ))
        }
    };
    Ok(CcaLaunch { realm, recs, rmm })
}
