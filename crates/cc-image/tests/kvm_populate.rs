//! On this machine's real KVM: the plan of a plan file, and the page data of IGVM files, are
//! populated into guest_memfd through the plain backend, and the memory read back is checked
//! byte for byte against the input files (read independently: the plan file's content files,
//! the IGVM file as the `igvm` crate parses it).

mod common;

use cc_image::{load_igvm, load_plan_file, Platform};
use cc_populate::plain::PlainBackend;
use cc_populate::{Backend, Driver, Role, RoleSet};
use common::*;
use gmem::testing::Need;
use gmem::{GmemFlags, GuestMemfd};
use igvm::{IgvmDirectiveHeader, IgvmFile};
use igvm_defs::IgvmPageDataType;

const MEM: u64 = 32 << 20;

/// Populates `image` into a fresh VM's guest_memfd (first filled with junk) and returns the
/// whole memory as read back.
fn populate(kvm: &kvm_ioctls::Kvm, image: &cc_image::LaunchImage, roles: RoleSet) -> Vec<u8> {
    let vm = kvm.create_vm().unwrap();
    let g = GuestMemfd::create(&vm, MEM, GmemFlags::MMAP | GmemFlags::INIT_SHARED).unwrap();
    let _slot = g.bind(0, 0, 0, MEM).unwrap();
    g.map_shared(0, MEM)
        .unwrap()
        .write_at(0, &vec![0xee; MEM as usize])
        .unwrap();
    let mut backend = PlainBackend::new().with_roles(roles);
    backend.add_memslot(0, 0, &g, 0, MEM).unwrap();
    let plan = image
        .plan(&backend.caps(), &backend.layout().unwrap())
        .unwrap();
    let report = Driver::new(&mut backend).run(&plan).unwrap();
    assert!(report.is_complete());
    let mut mem = vec![0u8; MEM as usize];
    g.map_shared(0, MEM).unwrap().read_at(0, &mut mem).unwrap();
    mem
}

fn a_plain_plan_file_lands_byte_for_byte() {
    let kvm = gmem::testing::kvm();
    let dir = std::env::temp_dir().join(format!("cc-image-kvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(77);
    let kernel = rng.bytes(3 << 20);
    let blob = rng.bytes(5 * 4096);
    std::fs::write(dir.join("kernel.bin"), &kernel).unwrap();
    std::fs::write(dir.join("blob.bin"), &blob).unwrap();
    std::fs::write(
        dir.join("plan.json"),
        r#"{"version": 1, "platform": "plain", "regions": [
          {"gpa": "0x200000", "size": "0x300000", "role": "measured", "file": "kernel.bin"},
          {"gpa": "0x1000", "size": "0x2000", "role": "unmeasured", "file": "blob.bin", "file_offset": "0x3000"},
          {"gpa": "0x800000", "size": "0x10000", "role": "zero"},
          {"gpa": "0x900000", "size": "0x1000", "role": "measured"}]}"#,
    )
    .unwrap();
    let image = load_plan_file(&dir.join("plan.json")).unwrap();
    let mem = populate(&kvm, &image, RoleSet::COMMON);
    let _ = std::fs::remove_dir_all(&dir);

    // Expected memory, from the files: junk where no region is.
    let mut want = vec![0xee; MEM as usize];
    want[0x20_0000..0x50_0000].copy_from_slice(&kernel);
    want[0x1000..0x3000].copy_from_slice(&blob[0x3000..0x5000]);
    want[0x80_0000..0x81_0000].fill(0);
    want[0x90_0000..0x90_1000].fill(0);
    assert!(
        mem == want,
        "guest memory differs from the plan file's content"
    );
}

/// The memory an IGVM file's SNP directives describe, from the `igvm` crate's parse: page
/// data (secrets pages as zeros, shared pages left alone) and inserted parameter areas.
fn expected_from_file(bytes: &[u8], mask: u32) -> Vec<u8> {
    let file = IgvmFile::new_from_binary(bytes, None).unwrap();
    let mut want = vec![0xee; MEM as usize];
    let mut areas = std::collections::HashMap::new();
    for d in file.directives() {
        if d.compatibility_mask().is_some_and(|m| m & mask == 0) {
            continue;
        }
        match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                flags,
                data_type,
                data,
                ..
            } if !flags.shared() => {
                let at = *gpa as usize;
                want[at..at + 4096].fill(0);
                if *data_type != IgvmPageDataType::SECRETS {
                    want[at..at + data.len()].copy_from_slice(data);
                }
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                areas.insert(
                    *parameter_area_index,
                    (*number_of_bytes, initial_data.clone()),
                );
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let (size, init) = &areas[&p.parameter_area_index];
                let at = p.gpa as usize;
                want[at..at + *size as usize].fill(0);
                want[at..at + init.len()].copy_from_slice(init);
            }
            _ => {}
        }
    }
    want
}

fn igvm_page_data_lands_byte_for_byte() {
    let kvm = gmem::testing::kvm();
    let mut rng = Rng(0xdead_beef);
    let roles = RoleSet::COMMON.with(Role::Secrets).with(Role::Cpuid);
    for i in 0..12 {
        let bytes = serialize(random_file(
            &mut rng,
            &Options {
                vmsas_anywhere: false,
            },
        ));
        for (platform, mask) in [(Platform::Snp, SNP), (Platform::Tdx, TDX)] {
            let image = load_igvm(&bytes, platform).unwrap();
            let mem = populate(&kvm, &image, roles);
            assert!(
                mem == expected_from_file(&bytes, mask),
                "file {i} {platform}: guest memory differs from the IGVM file's page data"
            );
        }
    }
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            a_plain_plan_file_lands_byte_for_byte,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(igvm_page_data_lands_byte_for_byte, Need::SharedGuestMemfd),
    ])
}
