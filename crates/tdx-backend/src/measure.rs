//! The role mapping shared by the backend and the offline measurement, and MRTD of a [`Plan`].

use cc_populate::{BackendCaps, Conversion, Role, RoleSet, HUGE_1G, PAGE_SIZE};
#[cfg(feature = "measure")]
use cc_populate::{Content, Plan};

#[cfg(feature = "measure")]
use crate::{Error, Mrtd};

/// What TDX does with a page of a given [`Role`]: every page is added with TDH.MEM.PAGE.ADD
/// (from a source page: the module cannot encrypt in place); measured pages are also extended
/// into MRTD (`KVM_TDX_MEASURE_MEMORY_REGION`: 16 x TDH.MR.EXTEND).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageOp {
    /// Whether the page's content is extended into MRTD.
    pub measure: bool,
}

/// The TDX page operation for `role`: `Measured` = PAGE.ADD + MR.EXTEND; `Unmeasured` =
/// PAGE.ADD; `Zero` = PAGE.ADD of a page from a zero source. SEV-SNP and CCA roles have none.
pub fn page_op(role: Role) -> Option<PageOp> {
    match role {
        Role::Measured => Some(PageOp { measure: true }),
        Role::Unmeasured | Role::Zero => Some(PageOp { measure: false }),
        _ => None,
    }
}

/// What the TDX backend declares to `cc-populate`: 4 KiB granule (the module adds 4 KiB pages;
/// KVM maps private memory at 4 KiB while populating), chunks up to 1 GiB (one
/// `KVM_TDX_INIT_MEM_REGION` takes any page count inside one memslot; the kernel loops a page at
/// a time and reports how far it got), no in-place population (the module copies from a
/// separate source page; a backend built with `TdxBackend::with_in_place` declares `in_place`
/// for kernels with the in-place conversion series), ranges made private before populate, the
/// common roles only.
pub const TDX_CAPS: BackendCaps = BackendCaps {
    granule: PAGE_SIZE,
    max_chunk: HUGE_1G,
    hugepage_chunks: false,
    in_place: false,
    conversion: Conversion::BeforePopulate,
    roles: RoleSet::COMMON,
};

#[cfg(feature = "measure")]
/// The order in which a region's PAGE.ADD and MR.EXTEND records reach MRTD. VMM/kernel stacks
/// differ here, which changes MRTD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExtendOrder {
    /// Upstream KVM (Linux 6.16+): each page is added and then, if measured, extended, before
    /// the next page. What this crate's backend produces.
    #[default]
    PerPage,
    /// Older (pre-upstream) KVM/QEMU stacks: all pages of a region are added first, then the
    /// measured ones are extended. Offered for verifying such TDs; this crate's backend never
    /// produces it.
    AddAllThenExtend,
}

#[cfg(feature = "measure")]
/// Options for [`measure_plan_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeasureOptions {
    /// Record order.
    pub order: ExtendOrder,
}

#[cfg(feature = "measure")]
/// The MRTD a TD gets when `plan` is populated by this crate's backend (regions in the plan's
/// order, [`ExtendOrder::PerPage`]), ready for TDH.MR.FINALIZE.
///
/// ```
/// use cc_populate::{MemoryLayout, PlanBuilder, Role};
/// let fw = vec![0xccu8; 8192];
/// let plan = PlanBuilder::new()
///     .source(0xffff_e000, Role::Measured, &fw)
///     .zero(0x80_0000, 0x1000)
///     .build(&tdx_backend::TDX_CAPS, &MemoryLayout::unbounded())?;
/// let mrtd = tdx_backend::measure_plan(&plan)?;
/// assert_eq!(mrtd.len(), 48);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn measure_plan(plan: &Plan<'_>) -> Result<[u8; 48], Error> {
    measure_plan_with(plan, &MeasureOptions::default())
}

#[cfg(feature = "measure")]
/// [`measure_plan`] with options.
pub fn measure_plan_with(plan: &Plan<'_>, options: &MeasureOptions) -> Result<[u8; 48], Error> {
    let mut mrtd = Mrtd::new();
    measure_plan_into(&mut mrtd, plan, options)?;
    Ok(mrtd.finish())
}

#[cfg(feature = "measure")]
/// Adds `plan`'s records, in order, to `mrtd` (for a [`Mrtd::traced`] one, or for callers
/// that add other records around the plan's).
///
/// ```
/// use cc_populate::{MemoryLayout, PlanBuilder, Role};
/// use tdx_backend::{measure_plan, measure_plan_into, MeasureOptions, Mrtd};
/// let fw = vec![0xccu8; 4096];
/// let plan = PlanBuilder::new()
///     .source(0xffff_f000, Role::Measured, &fw)
///     .build(&tdx_backend::TDX_CAPS, &MemoryLayout::unbounded())?;
/// let mut m = Mrtd::new().traced();
/// measure_plan_into(&mut m, &plan, &MeasureOptions::default())?;
/// assert_eq!(m.records().len(), 1 + 16);
/// assert_eq!(m.finish(), measure_plan(&plan)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn measure_plan_into(
    mrtd: &mut Mrtd,
    plan: &Plan<'_>,
    options: &MeasureOptions,
) -> Result<(), Error> {
    for (i, r) in plan.regions().iter().enumerate() {
        let (gpa, len, role) = (r.gpa(), r.len(), r.role());
        let op = page_op(role).ok_or(Error::RoleUnsupported {
            region: i,
            gpa,
            len,
            role,
        })?;
        let content_err = |reason: &str| Error::Content {
            region: i,
            gpa,
            len,
            reason: reason.to_string(),
        };
        if len % PAGE_SIZE != 0 || gpa % PAGE_SIZE != 0 {
            return Err(content_err("not 4 KiB aligned"));
        }
        let bytes: Option<&[u8]> = if !op.measure {
            None
        } else {
            match r.content() {
                Content::Zero => None,
                Content::InPlace => {
                    return Err(content_err(
                        "in-place content cannot be measured offline (TDX needs a source)",
                    ))
                }
                _ if r.released() > 0 => {
                    return Err(content_err("its source was released after populating"))
                }
                _ => Some(
                    r.source()
                        .filter(|b| b.len() as u64 == len)
                        .ok_or_else(|| content_err("source length differs from the region's"))?,
                ),
            }
        };
        let pages = len / PAGE_SIZE;
        match options.order {
            ExtendOrder::PerPage => {
                for p in 0..pages {
                    let pgpa = gpa + p * PAGE_SIZE;
                    mrtd.page_add(pgpa);
                    if op.measure {
                        extend(mrtd, pgpa, bytes, p);
                    }
                }
            }
            ExtendOrder::AddAllThenExtend => {
                for p in 0..pages {
                    mrtd.page_add(gpa + p * PAGE_SIZE);
                }
                if op.measure {
                    for p in 0..pages {
                        extend(mrtd, gpa + p * PAGE_SIZE, bytes, p);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(feature = "measure")]
fn extend(mrtd: &mut Mrtd, gpa: u64, bytes: Option<&[u8]>, page: u64) {
    let at = (page * PAGE_SIZE) as usize;
    match bytes
        .and_then(|b| b.get(at..at + PAGE_SIZE as usize))
        .and_then(|s| <&[u8; PAGE_SIZE as usize]>::try_from(s).ok())
    {
        Some(p) => mrtd.extend_page(gpa, p),
        None => mrtd.extend_zero_page(gpa),
    }
}
