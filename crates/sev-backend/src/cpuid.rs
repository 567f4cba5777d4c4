//! The SNP CPUID page: parsing (untrusted bytes, never panics) and the per-leaf difference
//! between the table a VMM gave and the one the firmware corrected.

use crate::uapi::{SNP_CPUID_COUNT_MAX, SNP_CPUID_FN_SIZE};
use crate::Error;

/// One CPUID function of the table (`struct snp_cpuid_fn` without its reserved word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuidLeaf {
    /// Leaf (EAX input).
    pub eax_in: u32,
    /// Sub-leaf (ECX input).
    pub ecx_in: u32,
    /// XCR0 input.
    pub xcr0_in: u64,
    /// XSS input.
    pub xss_in: u64,
    /// Outputs EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

impl CpuidLeaf {
    /// The inputs that identify the entry.
    pub fn key(&self) -> (u32, u32, u64, u64) {
        (self.eax_in, self.ecx_in, self.xcr0_in, self.xss_in)
    }
}

/// A parsed SNP CPUID table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidTable {
    /// The `count` valid entries, in table order.
    pub leaves: Vec<CpuidLeaf>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Parses an SNP CPUID table (`struct snp_cpuid_table`) from the start of `page`. Refuses a
/// buffer shorter than the header or than `count` entries, and a `count` above 64. Never panics.
///
/// ```
/// let mut page = vec![0u8; 4096];
/// page[0] = 1; // count
/// page[16..20].copy_from_slice(&0x8000_0000u32.to_le_bytes()); // eax_in
/// page[40..44].copy_from_slice(&0x8000_001fu32.to_le_bytes()); // eax out
/// let t = sev_backend::parse_cpuid_table(&page)?;
/// assert_eq!(t.leaves[0].eax_in, 0x8000_0000);
/// assert_eq!(t.leaves[0].regs[0], 0x8000_001f);
/// # Ok::<(), sev_backend::Error>(())
/// ```
pub fn parse_cpuid_table(page: &[u8]) -> Result<CpuidTable, Error> {
    if page.len() < 16 {
        return Err(Error::CpuidTable {
            reason: format!("{} bytes, the header alone has 16", page.len()),
        });
    }
    let count = u32_at(page, 0) as usize;
    if count > SNP_CPUID_COUNT_MAX {
        return Err(Error::CpuidTable {
            reason: format!("count {count} exceeds the firmware's limit of {SNP_CPUID_COUNT_MAX}"),
        });
    }
    let need = 16 + count * SNP_CPUID_FN_SIZE;
    if page.len() < need {
        return Err(Error::CpuidTable {
            reason: format!(
                "{count} entries need {need} bytes, the buffer has {}",
                page.len()
            ),
        });
    }
    let leaves = (0..count)
        .map(|i| {
            let o = 16 + i * SNP_CPUID_FN_SIZE;
            CpuidLeaf {
                eax_in: u32_at(page, o),
                ecx_in: u32_at(page, o + 4),
                xcr0_in: u64_at(page, o + 8),
                xss_in: u64_at(page, o + 16),
                regs: [
                    u32_at(page, o + 24),
                    u32_at(page, o + 28),
                    u32_at(page, o + 32),
                    u32_at(page, o + 36),
                ],
            }
        })
        .collect();
    Ok(CpuidTable { leaves })
}

/// How one CPUID entry differs between the VMM's table and the firmware's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafDiff {
    /// Leaf.
    pub eax_in: u32,
    /// Sub-leaf.
    pub ecx_in: u32,
    /// XCR0 input.
    pub xcr0_in: u64,
    /// XSS input.
    pub xss_in: u64,
    /// EAX..EDX in the VMM's table (`None`: the entry is only in the firmware's).
    pub ours: Option<[u32; 4]>,
    /// EAX..EDX in the firmware's table (`None`: the entry is only in the VMM's).
    pub firmware: Option<[u32; 4]>,
}

impl std::fmt::Display for LeafDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let regs = |r: Option<[u32; 4]>| match r {
            Some(r) => format!("{:08x} {:08x} {:08x} {:08x}", r[0], r[1], r[2], r[3]),
            None => "(absent)".to_string(),
        };
        write!(
            f,
            "leaf {:#x} sub-leaf {:#x}: ours {} firmware {}",
            self.eax_in,
            self.ecx_in,
            regs(self.ours),
            regs(self.firmware)
        )
    }
}

/// The entries that differ between `ours` and `firmware`, matched by their inputs, in the order
/// of `ours` followed by entries only the firmware has.
pub fn cpuid_diff(ours: &CpuidTable, firmware: &CpuidTable) -> Vec<LeafDiff> {
    // Entries are matched by their inputs; a table that repeats inputs is matched occurrence by
    // occurrence (the n-th entry with given inputs against the n-th in the other table), so a
    // table never differs from itself.
    let nth = |t: &CpuidTable, k, n: usize| {
        t.leaves
            .iter()
            .filter(|l| l.key() == k)
            .nth(n)
            .map(|l| l.regs)
    };
    let occurrence = |t: &CpuidTable, i: usize| {
        let k = t.leaves[i].key();
        t.leaves[..i].iter().filter(|l| l.key() == k).count()
    };
    let mut out = Vec::new();
    for (i, l) in ours.leaves.iter().enumerate() {
        let fw = nth(firmware, l.key(), occurrence(ours, i));
        if fw != Some(l.regs) {
            out.push(LeafDiff {
                eax_in: l.eax_in,
                ecx_in: l.ecx_in,
                xcr0_in: l.xcr0_in,
                xss_in: l.xss_in,
                ours: Some(l.regs),
                firmware: fw,
            });
        }
    }
    for (i, l) in firmware.leaves.iter().enumerate() {
        if nth(ours, l.key(), occurrence(firmware, i)).is_none() {
            out.push(LeafDiff {
                eax_in: l.eax_in,
                ecx_in: l.ecx_in,
                xcr0_in: l.xcr0_in,
                xss_in: l.xss_in,
                ours: None,
                firmware: Some(l.regs),
            });
        }
    }
    out
}

impl CpuidTable {
    /// The table as the 4 KiB CPUID page the firmware takes (`struct snp_cpuid_table` at its
    /// start, zeros after). Refuses more than 64 entries (`SNP_CPUID_COUNT_MAX`).
    ///
    /// ```
    /// use sev_backend::{parse_cpuid_table, CpuidLeaf, CpuidTable};
    /// let t = CpuidTable { leaves: vec![CpuidLeaf { eax_in: 1, ecx_in: 0, xcr0_in: 0, xss_in: 0, regs: [0xa00f11, 0, 0, 0] }] };
    /// assert_eq!(parse_cpuid_table(&t.to_page()?)?, t);
    /// # Ok::<(), sev_backend::Error>(())
    /// ```
    pub fn to_page(&self) -> Result<Vec<u8>, Error> {
        if self.leaves.len() > SNP_CPUID_COUNT_MAX {
            return Err(Error::CpuidTable {
                reason: format!(
                    "{} entries, the firmware takes at most {SNP_CPUID_COUNT_MAX}",
                    self.leaves.len()
                ),
            });
        }
        let mut page = vec![0u8; 4096];
        page[..4].copy_from_slice(&(self.leaves.len() as u32).to_le_bytes());
        for (i, l) in self.leaves.iter().enumerate() {
            let o = 16 + i * SNP_CPUID_FN_SIZE;
            page[o..o + 4].copy_from_slice(&l.eax_in.to_le_bytes());
            page[o + 4..o + 8].copy_from_slice(&l.ecx_in.to_le_bytes());
            page[o + 8..o + 16].copy_from_slice(&l.xcr0_in.to_le_bytes());
            page[o + 16..o + 24].copy_from_slice(&l.xss_in.to_le_bytes());
            for (k, r) in l.regs.iter().enumerate() {
                page[o + 24 + 4 * k..o + 28 + 4 * k].copy_from_slice(&r.to_le_bytes());
            }
        }
        Ok(page)
    }
}

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (`arch/x86/include/uapi/asm/kvm.h`).
pub const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;

/// The SNP CPUID table for a vCPU whose CPUID (what the VMM gives `KVM_SET_CPUID2`) is
/// `entries` (`function`, `index`, `flags`, EAX..EDX each), built the way QEMU builds it
/// (`target/i386/sev.c: sev_snp_cpuid_info_fill`, as read in QEMU 9.x): one table entry per
/// KVM entry in the same order; the sub-leaf input only where the entry is indexed
/// (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`), 0 otherwise; and for leaf 0xD sub-leaves 0 and 1, XCR0
/// input 1, XSS input 0 and EBX 0x240 (the XSAVE area of the initial XCR0 = x87 state: the
/// 512-byte legacy area and the 64-byte header), since the guest computes larger sizes from
/// the other sub-leaves. More than 64 entries is [`Error::CpuidTable`].
///
/// Whether the firmware accepts the values is the firmware's to say (its CPUID policy): a
/// rejection comes back through [`CpuidPolicy`](crate::CpuidPolicy) with the per-leaf
/// difference.
///
/// ```
/// use sev_backend::{parse_cpuid_table, snp_cpuid_table};
/// // (function, index, flags, [eax, ebx, ecx, edx])
/// let entries = [(0xd, 1, 1, [0xf, 0x3c0, 0, 0]), (1, 0, 0, [0xa00f11, 0x800, 0, 0])];
/// let t = snp_cpuid_table(&entries)?;
/// assert_eq!((t.leaves[0].xcr0_in, t.leaves[0].regs[1]), (1, 0x240));
/// assert_eq!(parse_cpuid_table(&t.to_page()?)?, t);
/// # Ok::<(), sev_backend::Error>(())
/// ```
pub fn snp_cpuid_table(entries: &[(u32, u32, u32, [u32; 4])]) -> Result<CpuidTable, Error> {
    if entries.len() > SNP_CPUID_COUNT_MAX {
        return Err(Error::CpuidTable {
            reason: format!(
                "the vCPU's CPUID has {} entries, the firmware's table at most {SNP_CPUID_COUNT_MAX}",
                entries.len()
            ),
        });
    }
    let leaves = entries
        .iter()
        .map(|&(function, index, flags, mut regs)| {
            let ecx_in = if flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 {
                index
            } else {
                0
            };
            let mut xcr0_in = 0;
            if function == 0xd && ecx_in <= 1 {
                xcr0_in = 1;
                regs[1] = 0x240;
            }
            CpuidLeaf {
                eax_in: function,
                ecx_in,
                xcr0_in,
                xss_in: 0,
                regs,
            }
        })
        .collect();
    Ok(CpuidTable { leaves })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_with_repeated_inputs_does_not_differ_from_itself() {
        let t = parse_cpuid_table(&table(&[(7, 0, [1, 2, 3, 4]), (7, 0, [5, 6, 7, 8])])).unwrap();
        assert!(cpuid_diff(&t, &t).is_empty());
        // Dropping the second copy is one difference: a leaf only we have.
        let one = parse_cpuid_table(&table(&[(7, 0, [1, 2, 3, 4])])).unwrap();
        let d = cpuid_diff(&t, &one);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].ours, Some([5, 6, 7, 8]));
        assert_eq!(d[0].firmware, None);
    }

    fn table(entries: &[(u32, u32, [u32; 4])]) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (leaf, sub, regs)) in entries.iter().enumerate() {
            let o = 16 + 48 * i;
            p[o..o + 4].copy_from_slice(&leaf.to_le_bytes());
            p[o + 4..o + 8].copy_from_slice(&sub.to_le_bytes());
            for (k, r) in regs.iter().enumerate() {
                p[o + 24 + 4 * k..o + 28 + 4 * k].copy_from_slice(&r.to_le_bytes());
            }
        }
        p
    }

    #[test]
    fn refuses_short_and_oversized() {
        let reason = |page: &[u8]| match parse_cpuid_table(page) {
            Err(Error::CpuidTable { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(&[0u8; 15]), "15 bytes, the header alone has 16");
        let mut p = vec![0u8; 4096];
        // SNP_CPUID_COUNT_MAX is 64 (the SNP firmware ABI, Table 14: CPUID_FUNCTION entries).
        p[0] = 65;
        assert_eq!(reason(&p), "count 65 exceeds the firmware's limit of 64");
        p[0] = 64;
        assert_eq!(parse_cpuid_table(&p).unwrap().leaves.len(), 64);
        p[0] = 2;
        assert_eq!(
            reason(&p[..16 + 48]),
            "2 entries need 112 bytes, the buffer has 64"
        );
        assert_eq!(parse_cpuid_table(&p[..16 + 96]).unwrap().leaves.len(), 2);
        // Arbitrary bytes never panic.
        for n in 0..200 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            let _ = parse_cpuid_table(&junk);
        }
    }

    #[test]
    fn diff_names_each_changed_leaf() {
        let ours = parse_cpuid_table(&table(&[
            (1, 0, [1, 2, 3, 4]),
            (7, 0, [5, 6, 7, 8]),
            (0xd, 1, [9, 9, 9, 9]),
        ]))
        .unwrap();
        let fw = parse_cpuid_table(&table(&[
            (1, 0, [1, 2, 3, 4]),
            (7, 0, [5, 6, 0, 8]),
            (0x8000_0001, 0, [1, 1, 1, 1]),
        ]))
        .unwrap();
        let d = cpuid_diff(&ours, &fw);
        assert_eq!(d.len(), 3);
        assert_eq!(
            (d[0].eax_in, d[0].ours, d[0].firmware),
            (7, Some([5, 6, 7, 8]), Some([5, 6, 0, 8]))
        );
        assert_eq!((d[1].eax_in, d[1].ecx_in, d[1].firmware), (0xd, 1, None));
        assert_eq!((d[2].eax_in, d[2].ours), (0x8000_0001, None));
        assert_eq!(
            d[0].to_string(),
            "leaf 0x7 sub-leaf 0x0: ours 00000005 00000006 00000007 00000008 firmware 00000005 00000006 00000000 00000008"
        );
        assert!(cpuid_diff(&ours, &ours).is_empty());
    }
}
