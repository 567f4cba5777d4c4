//! QEMU's measured direct boot (`-kernel`/`-initrd`/`-append` with `kernel-hashes=on`): the SEV
//! hashes table QEMU writes into the firmware's hashes page, and the page the launch measures.
//!
//! QEMU (`target/i386/sev.c`, `build_kernel_loader_hashes`, `sev_add_kernel_loader_hashes`,
//! `snp_launch_update_kernel_hashes`; `hw/i386/x86-common.c`, `x86_load_linux`):
//! - SHA-256 of the command line with its terminating NUL (`"\0"` when there is none), of the
//!   initrd (of no bytes when there is none), and of the kernel file as given (setup and
//!   kernel parts, unpatched for a confidential guest).
//! - The table, packed: header GUID `9438d606-4f22-4cc9-b479-a793d411fd21`, `u16` length 168,
//!   then three entries `{GUID, u16 length 50, SHA-256}` for the command line
//!   (`97d02dd8-bd20-4c94-aa78-e7714d36ab2a`), the initrd
//!   (`44baf731-3a2f-4bd7-9af1-41e29169781d`) and the kernel
//!   (`4de79437-abd2-427f-b835-d5b172d2045b`), padded with zeros to 176 bytes.
//! - Where: the firmware's GUIDed table entry `7255371f-3a3b-4b04-927b-1da6efa8d454` gives the
//!   table's `{u32 base, u32 size}`; QEMU refuses a base of 0 or a size below 176. For SNP the
//!   whole `SNP_KERNEL_HASHES` metadata section is measured as `NORMAL` pages: zeros, with the
//!   table at offset `base & 0xfff` of the section (QEMU asserts it fits).

use std::path::{Path, PathBuf};

use crate::hash::{sha256, sha256_reader};
use crate::ovmf::{guid, Guid, OvmfImage, SectionKind, SevSection};

/// The GUIDed table entry giving the hashes table's base and size.
pub const SEV_HASH_TABLE_RV_GUID: Guid = guid("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// The hashes table's header GUID.
pub const SEV_HASH_TABLE_HEADER_GUID: Guid = guid("9438d606-4f22-4cc9-b479-a793d411fd21");
/// The kernel entry's GUID.
pub const SEV_KERNEL_ENTRY_GUID: Guid = guid("4de79437-abd2-427f-b835-d5b172d2045b");
/// The initrd entry's GUID.
pub const SEV_INITRD_ENTRY_GUID: Guid = guid("44baf731-3a2f-4bd7-9af1-41e29169781d");
/// The command line entry's GUID.
pub const SEV_CMDLINE_ENTRY_GUID: Guid = guid("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

/// Size of the table (`SevHashTable`).
pub const SEV_HASH_TABLE_LEN: usize = 16 + 2 + 3 * SEV_HASH_ENTRY_LEN;
/// Size of one entry (`SevHashTableEntry`).
pub const SEV_HASH_ENTRY_LEN: usize = 16 + 2 + 32;
/// Size of the table padded to 16 bytes (`PaddedSevHashTable`), what QEMU writes.
pub const SEV_PADDED_HASH_TABLE_LEN: usize = SEV_HASH_TABLE_LEN.div_ceil(16) * 16;

/// The largest `SNP_KERNEL_HASHES` section [`kernel_hashes_section`] builds (2 MiB). The
/// section's length is the firmware's word, up to 4 GiB, and its content is built in memory;
/// the table it holds needs part of one page (edk2's OVMF has a 4 KiB section, the only size
/// sev-snp-measure accepts), so a larger section is refused rather than allocated.
pub const MAX_KERNEL_HASHES_SECTION_LEN: u32 = 2 << 20;

/// The three hashes of a measured direct boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevHashes {
    /// SHA-256 of the kernel file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of nothing without one).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line and its NUL.
    pub cmdline: [u8; 32],
}

impl SevHashes {
    /// The hashes of `kernel`, `initrd` and the command line `append` (as given: not trimmed),
    /// the kernel and initrd hashed on two threads.
    ///
    /// ```
    /// use sev_backend::SevHashes;
    /// let h = SevHashes::new(b"kernel bytes", None, Some("console=ttyS0"));
    /// assert_eq!(h, SevHashes::new(b"kernel bytes", Some(b""), Some("console=ttyS0")));
    /// assert_ne!(h, SevHashes::new(b"kernel bytes", None, Some(" console=ttyS0")));
    /// ```
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> SevHashes {
        let mut cmdline = append.unwrap_or("").as_bytes().to_vec();
        cmdline.push(0);
        let initrd = initrd.unwrap_or(&[]);
        let (kernel, initrd) = if kernel.len().min(initrd.len()) >= 1 << 20 {
            std::thread::scope(|s| {
                let i = s.spawn(|| sha256(initrd));
                let k = sha256(kernel);
                // A hashing thread cannot panic short of a bug; pass one on unchanged.
                (k, i.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            })
        } else {
            (sha256(kernel), sha256(initrd))
        };
        SevHashes {
            kernel,
            initrd,
            cmdline: sha256(&cmdline),
        }
    }

    /// The hashes of the files `kernel` and `initrd` (each streamed through its own thread, never
    /// held whole in memory) and the command line `append`. A file that cannot be opened or
    /// read is an error naming it.
    pub fn from_files(
        kernel: &Path,
        initrd: Option<&Path>,
        append: Option<&str>,
    ) -> Result<SevHashes, BootFileError> {
        let hash = |which: &'static str, p: &Path| {
            std::fs::File::open(p)
                .and_then(sha256_reader)
                .map_err(|source| BootFileError {
                    which,
                    path: p.to_path_buf(),
                    source,
                })
        };
        let (kernel, initrd) = std::thread::scope(|s| {
            let i = s.spawn(|| match initrd {
                Some(p) => hash("initrd", p),
                None => Ok(sha256(&[])),
            });
            let k = hash("kernel", kernel);
            // A hashing thread cannot panic short of a bug; pass one on unchanged.
            (k, i.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        });
        let mut cmdline = append.unwrap_or("").as_bytes().to_vec();
        cmdline.push(0);
        Ok(SevHashes {
            kernel: kernel?,
            initrd: initrd?,
            cmdline: sha256(&cmdline),
        })
    }

    /// The padded table QEMU writes (176 bytes).
    pub fn table(&self) -> [u8; SEV_PADDED_HASH_TABLE_LEN] {
        let mut t = [0u8; SEV_PADDED_HASH_TABLE_LEN];
        t[..16].copy_from_slice(&SEV_HASH_TABLE_HEADER_GUID);
        t[16..18].copy_from_slice(&(SEV_HASH_TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (SEV_CMDLINE_ENTRY_GUID, &self.cmdline),
            (SEV_INITRD_ENTRY_GUID, &self.initrd),
            (SEV_KERNEL_ENTRY_GUID, &self.kernel),
        ];
        for (i, (g, h)) in entries.into_iter().enumerate() {
            let e = &mut t[18 + i * SEV_HASH_ENTRY_LEN..][..SEV_HASH_ENTRY_LEN];
            e[..16].copy_from_slice(&g);
            e[16..18].copy_from_slice(&(SEV_HASH_ENTRY_LEN as u16).to_le_bytes());
            e[18..].copy_from_slice(h);
        }
        t
    }
}

/// A kernel or initrd file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{which} {}: {source}", path.display())]
pub struct BootFileError {
    /// `kernel` or `initrd`.
    pub which: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Where a firmware wants the hashes table, and why it cannot have one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashesAreaError {
    /// No `SEV_HASH_TABLE_RV_GUID` entry (or one too short to hold base and size).
    #[error(
        "the firmware has no SEV hashes table entry (7255371f-3a3b-4b04-927b-1da6efa8d454): \
         it does not support measured direct boot"
    )]
    NoTableEntry,
    /// No `SNP_KERNEL_HASHES` section in the SEV metadata.
    #[error("the firmware's SEV metadata has no SNP_KERNEL_HASHES section")]
    NoSection,
    /// The table entry's area is unusable (QEMU's check: base 0 or size below 176).
    #[error(
        "the firmware's hashes table area (base {base:#x}, size {size:#x}) is too small: \
         the table needs {SEV_PADDED_HASH_TABLE_LEN:#x} bytes"
    )]
    AreaTooSmall {
        /// The entry's base.
        base: u32,
        /// The entry's size.
        size: u32,
    },
    /// The section is larger than [`MAX_KERNEL_HASHES_SECTION_LEN`].
    #[error(
        "the firmware's SNP_KERNEL_HASHES section [{gpa:#x}..+{len:#x}) is larger than the \
         {MAX_KERNEL_HASHES_SECTION_LEN:#x} bytes a hashes section is built in"
    )]
    SectionTooLarge {
        /// The section's base.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The table does not fit in the section at its page offset.
    #[error(
        "the firmware's SNP_KERNEL_HASHES section [{gpa:#x}..+{len:#x}) is too small for the \
         {SEV_PADDED_HASH_TABLE_LEN}-byte table at offset {offset:#x}"
    )]
    SectionTooSmall {
        /// The section's base.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The table's offset in it.
        offset: u64,
    },
}

/// The hashes table area of a parsed firmware: `(base, size)` from its GUIDed table entry.
pub fn hashes_area(ovmf: &OvmfImage<'_>) -> Result<(u32, u32), HashesAreaError> {
    let e = ovmf
        .entry(&SEV_HASH_TABLE_RV_GUID)
        .filter(|d| d.len() >= 8)
        .ok_or(HashesAreaError::NoTableEntry)?;
    let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    Ok((le(&e[..4]), le(&e[4..8])))
}

/// The content of the firmware's `SNP_KERNEL_HASHES` section with `hashes` in it, as QEMU
/// populates it: the section's bytes, zeros but for the table at `base & 0xfff`. Refuses a
/// firmware without the table entry or the section, and a table that does not fit.
pub fn kernel_hashes_section(
    ovmf: &OvmfImage<'_>,
    hashes: &SevHashes,
) -> Result<(SevSection, Vec<u8>), HashesAreaError> {
    let (base, size) = hashes_area(ovmf)?;
    let section = ovmf
        .sev_metadata
        .as_ref()
        .and_then(|m| {
            m.sections
                .iter()
                .find(|s| s.kind == SectionKind::SnpKernelHashes)
        })
        .copied()
        .ok_or(HashesAreaError::NoSection)?;
    if base == 0 || (size as usize) < SEV_PADDED_HASH_TABLE_LEN {
        return Err(HashesAreaError::AreaTooSmall { base, size });
    }
    if section.len > MAX_KERNEL_HASHES_SECTION_LEN {
        return Err(HashesAreaError::SectionTooLarge {
            gpa: section.base.into(),
            len: section.len.into(),
        });
    }
    let offset = (base & 0xfff) as usize;
    let len = section.len as usize;
    if offset + SEV_PADDED_HASH_TABLE_LEN > len {
        return Err(HashesAreaError::SectionTooSmall {
            gpa: section.base.into(),
            len: section.len.into(),
            offset: offset as u64,
        });
    }
    let mut content = vec![0u8; len];
    content[offset..offset + SEV_PADDED_HASH_TABLE_LEN].copy_from_slice(&hashes.table());
    Ok((section, content))
}

/// The longest command line the kernel image accepts, from its x86 boot protocol setup
/// header (Documentation/arch/x86/boot.rst): `cmdline_size` (offset 0x238) from protocol 2.06
/// on, 255 before; `None` for an image without the `HdrS` header (an ELF kernel, say), which
/// states no limit.
pub fn kernel_cmdline_limit(kernel: &[u8]) -> Option<usize> {
    let at = |o: usize, n: usize| kernel.get(o..o + n);
    if at(0x202, 4)? != b"HdrS" {
        return None;
    }
    let v = at(0x206, 2)?;
    let protocol = u16::from_le_bytes([v[0], v[1]]);
    if protocol < 0x206 {
        return Some(255);
    }
    let s = at(0x238, 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        assert_eq!(SEV_HASH_TABLE_LEN, 168);
        assert_eq!(SEV_PADDED_HASH_TABLE_LEN, 176);
        let h = SevHashes {
            kernel: [0xaa; 32],
            initrd: [0xbb; 32],
            cmdline: [0xcc; 32],
        };
        let t = h.table();
        // 06 d6 38 94: the header GUID's first field, little-endian.
        assert_eq!(t[..4], [0x06, 0xd6, 0x38, 0x94]);
        assert_eq!(t[16..18], [168, 0]);
        assert_eq!(t[18..22], [0xd8, 0x2d, 0xd0, 0x97]);
        assert_eq!(t[34..36], [50, 0]);
        assert_eq!(t[36..68], [0xcc; 32]);
        assert_eq!(t[86..118], [0xbb; 32]);
        assert_eq!(t[118..122], [0x37, 0x94, 0xe7, 0x4d]);
        assert_eq!(t[136..168], [0xaa; 32]);
        assert_eq!(t[168..], [0; 8]);
    }

    /// An image whose GUIDed table points the hashes table at `base` and whose metadata has
    /// one `SNP_KERNEL_HASHES` section of `len` bytes.
    fn hashes_firmware(base: u32, len: u32) -> OvmfImage<'static> {
        static AREA: [u8; 8] = [0x00, 0x0c, 0x81, 0x00, 0x00, 0x04, 0x00, 0x00];
        OvmfImage {
            image: &[],
            entries: vec![crate::ovmf::GuidEntry {
                guid: SEV_HASH_TABLE_RV_GUID,
                offset: 0,
                data: &AREA,
            }],
            sev_metadata: Some(crate::ovmf::SevMetadata {
                offset: 0,
                version: 1,
                sections: vec![SevSection {
                    base,
                    len,
                    kind: SectionKind::SnpKernelHashes,
                }],
            }),
        }
    }

    #[test]
    fn section_size_is_bounded_before_anything_is_allocated() {
        let h = SevHashes::new(b"k", None, None);
        // The usual 4 KiB section: the table at the area's page offset (0xc00), zeros around.
        let (section, content) =
            kernel_hashes_section(&hashes_firmware(0x81_0000, 0x1000), &h).unwrap();
        assert_eq!((section.base, section.len), (0x81_0000, 0x1000));
        assert_eq!(content.len(), 0x1000);
        assert_eq!(content[0xc00..0xc00 + SEV_PADDED_HASH_TABLE_LEN], h.table());
        assert!(content[..0xc00].iter().all(|b| *b == 0));
        assert!(content[0xc00 + SEV_PADDED_HASH_TABLE_LEN..]
            .iter()
            .all(|b| *b == 0));
        // The largest accepted, and one page more: refused by size, naming the section.
        let max = MAX_KERNEL_HASHES_SECTION_LEN;
        let fw = hashes_firmware(0x80_0000, max);
        assert_eq!(
            kernel_hashes_section(&fw, &h).unwrap().1.len(),
            max as usize
        );
        for len in [max + 0x1000, 0xffff_f000] {
            let err = kernel_hashes_section(&hashes_firmware(0x80_0000, len), &h).unwrap_err();
            assert_eq!(
                err,
                HashesAreaError::SectionTooLarge {
                    gpa: 0x80_0000,
                    len: len.into()
                }
            );
            assert!(err.to_string().contains("[0x800000.."), "{err}");
        }
    }

    #[test]
    fn cmdline_limit_from_the_setup_header() {
        let mut k = vec![0u8; 0x300];
        assert_eq!(kernel_cmdline_limit(&k), None);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x205u16.to_le_bytes());
        assert_eq!(kernel_cmdline_limit(&k), Some(255));
        k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        k[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        assert_eq!(kernel_cmdline_limit(&k), Some(2047));
        assert_eq!(kernel_cmdline_limit(&k[..0x230]), None);
    }
}
