//! The per-guest_memfd conversion path (`KVM_SET_MEMORY_ATTRIBUTES2`, in-place conversion
//! series v8) against `gmem::testing::SeriesModel`. No kernel carries the series, so these run
//! everywhere, without KVM. Expected values are written out from the v8 patches (cited at each
//! test), not taken from the code under test.

use std::os::fd::BorrowedFd;
use std::os::raw::c_ulong;

use gmem::testing::SeriesModel;
use gmem::uapi::kvm_memory_attributes2;
use gmem::{
    AttributesIoctl, ConversionPath, Error, GmemFlags, GmemSeries, GuestMemfd, MemoryState,
};
use vmm_sys_util::errno;

const P: u64 = 4096;
const PRIVATE: u64 = 8; // KVM_MEMORY_ATTRIBUTE_PRIVATE, 1 << 3

fn handle(model: &SeriesModel, pages: u64, flags: GmemFlags) -> GuestMemfd {
    GuestMemfd::with_model(pages * P, flags, GmemSeries::V8, Box::new(model.clone())).unwrap()
}

#[test]
fn a_file_without_init_shared_starts_private_and_maps_only_what_was_made_shared() {
    // v8 patch 01/46 kvm_gmem_init_inode: no INIT_SHARED, every page private.
    let model = SeriesModel::new(GmemSeries::V8, 4 * P, false);
    let mut g = handle(&model, 4, GmemFlags::MMAP);
    assert_eq!(
        g.conversion_path(),
        Some(ConversionPath::GuestMemfdAttributes(GmemSeries::V8))
    );
    assert_eq!(g.private_ranges(), vec![(0, 4 * P)]);
    assert!(matches!(
        g.map_shared(0, P),
        Err(Error::Private {
            first_private: 0,
            ..
        })
    ));
    g.convert(P, 2 * P, MemoryState::Shared).unwrap();
    assert_eq!(model.calls(), vec![(P, 2 * P, 0)]);
    assert_eq!(g.private_ranges(), vec![(0, P), (3 * P, 4 * P)]);
    // Only the shared pages map; a view that would reach a private one is refused.
    {
        let view = g.map_shared(P, 2 * P).unwrap();
        view.write_at(0, b"kernel").unwrap();
    }
    assert!(matches!(
        g.map_shared(P, 3 * P),
        Err(Error::Private { first_private, .. }) if first_private == 3 * P
    ));
    // Back to private: the view is gone (convert needs &mut), and no new one maps it.
    g.convert(P, P, MemoryState::Private).unwrap();
    assert!(g.map_shared(P, P).is_err());
    assert!(model.is_private(P) && !model.is_private(2 * P));
    // A file without MMAP never maps, shared or not.
    let model = SeriesModel::new(GmemSeries::V8, P, true);
    let g = handle(&model, 1, GmemFlags::INIT_SHARED);
    assert!(matches!(g.map_shared(0, P), Err(Error::NotMappable { .. })));
}

#[test]
fn an_init_shared_file_starts_shared_and_maps() {
    let model = SeriesModel::new(GmemSeries::V8, 2 * P, true);
    let g = handle(&model, 2, GmemFlags::MMAP | GmemFlags::INIT_SHARED);
    assert!(g.private_ranges().is_empty());
    g.map_shared(0, 2 * P).unwrap().write_at(0, b"x").unwrap();
}

#[test]
fn only_runs_whose_state_changes_are_sent_so_v8_data_loss_cannot_happen() {
    // The v8 data-loss case: converting to private a range that is partly private already
    // destroyed the private part's data. First show the model reproduces it on a raw call.
    let raw = SeriesModel::new(GmemSeries::V8, 4 * P, true);
    let mut raw_seam = raw.clone();
    let fd = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsFd::as_fd(&fd);
    let mut call = |offset: u64, size: u64, attributes: u64| {
        let mut arg = kvm_memory_attributes2 {
            offset,
            size,
            attributes,
            ..Default::default()
        };
        raw_seam.set_memory_attributes2(fd, GmemSeries::V8.set_memory_attributes2(), &mut arg)
    };
    call(P, P, PRIVATE).unwrap();
    call(0, 4 * P, PRIVATE).unwrap();
    assert_eq!(raw.lost_pages(), vec![P]);

    // Through gmem: the same two conversions send only the shared runs; nothing is lost.
    let model = SeriesModel::new(GmemSeries::V8, 4 * P, true);
    let mut g = handle(&model, 4, GmemFlags::MMAP | GmemFlags::INIT_SHARED);
    g.convert(P, P, MemoryState::Private).unwrap();
    g.convert(0, 4 * P, MemoryState::Private).unwrap();
    assert_eq!(
        model.calls(),
        vec![(P, P, PRIVATE), (0, P, PRIVATE), (2 * P, 2 * P, PRIVATE)]
    );
    assert!(model.lost_pages().is_empty());
    assert_eq!(g.private_ranges(), vec![(0, 4 * P)]);
    // Converting what is already private sends nothing at all.
    g.convert(0, 4 * P, MemoryState::Private).unwrap();
    assert_eq!(model.calls().len(), 3);
    // And to shared, only the private runs.
    g.convert(0, P, MemoryState::Shared).unwrap();
    g.convert(0, 2 * P, MemoryState::Shared).unwrap();
    assert_eq!(model.calls()[3..], [(0, P, 0), (P, P, 0)]);
}

#[test]
fn eagain_is_retried_a_bounded_number_of_times_then_reported_with_error_offset() {
    // v8 patch 14/46 kvm_gmem_is_safe_for_conversion: a page still referenced makes the call
    // EAGAIN with error_offset naming it; nothing changed.
    let model = SeriesModel::new(GmemSeries::V8, 4 * P, true);
    let mut g = handle(&model, 4, GmemFlags::MMAP | GmemFlags::INIT_SHARED);
    model.pin(2 * P, None);
    let e = g.convert(0, 4 * P, MemoryState::Private).unwrap_err();
    match &e {
        Error::Conversion {
            call_offset: 0,
            call_len,
            error_offset: Some(at),
            attempts: 4,
            done: 0,
            recorded_private,
            source,
            ..
        } => {
            assert_eq!((*call_len, *at), (4 * P, 2 * P));
            assert!(recorded_private.is_empty());
            assert_eq!(source.errno(), libc::EAGAIN);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.errno(), libc::EAGAIN);
    assert_eq!(model.calls().len(), 4, "bounded: four attempts, no more");
    assert!(g.private_ranges().is_empty() && !model.is_private(0));
    let msg = e.to_string();
    assert!(
        msg.contains("at offset 0x2000") && msg.contains("in the request: none"),
        "{msg}"
    );
    // A reference that goes away after two calls: the third attempt converts.
    model.unpin(2 * P);
    model.pin(2 * P, Some(2));
    g.convert(0, 4 * P, MemoryState::Private).unwrap();
    assert_eq!(model.calls().len(), 4 + 3);
    assert_eq!(g.private_ranges(), vec![(0, 4 * P)]);
}

#[test]
fn a_failure_part_way_says_what_the_handle_now_records() {
    let model = SeriesModel::new(GmemSeries::V8, 4 * P, true);
    let mut g = handle(&model, 4, GmemFlags::MMAP | GmemFlags::INIT_SHARED);
    g.convert(P, P, MemoryState::Private).unwrap();
    // Runs [0, P) and [2P, 4P): the first converts, the second meets a pinned page at 3P.
    model.pin(3 * P, None);
    let e = g.convert(0, 4 * P, MemoryState::Private).unwrap_err();
    match &e {
        Error::Conversion {
            call_offset,
            error_offset,
            done,
            recorded_private,
            ..
        } => {
            assert_eq!(*call_offset, 2 * P);
            assert_eq!(*error_offset, Some(3 * P));
            assert_eq!(*done, P);
            assert_eq!(recorded_private, &vec![(0, 2 * P)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.private_ranges(), vec![(0, 2 * P)]);
    assert!(model.is_private(P) && !model.is_private(2 * P));
    assert!(e.to_string().contains("[0x0, 0x2000)"), "{e}");
}

#[test]
fn enomem_names_the_call_start_and_changes_nothing() {
    // v8 patch 14/46: kvm_gmem_mas_preallocate failing sets err_index = start.
    let model = SeriesModel::new(GmemSeries::V8, 2 * P, false);
    let mut g = handle(&model, 2, GmemFlags::MMAP);
    model.fail_next_with_enomem();
    let e = g.convert(P, P, MemoryState::Shared).unwrap_err();
    assert!(matches!(
        e,
        Error::Conversion { error_offset: Some(o), attempts: 1, .. } if o == P
    ));
    assert_eq!(e.errno(), libc::ENOMEM);
    assert_eq!(g.private_ranges(), vec![(0, 2 * P)]);
}

#[test]
fn module_parameter_off_offers_no_per_file_path_and_its_ioctl_is_enotty() {
    // v8 patch 17/46: with kvm.gmem_in_place_conversion off the per-file capability answers 0
    // and (with CONFIG_KVM_VM_MEMORY_ATTRIBUTES) the VM-wide one PRIVATE.
    let on = SeriesModel::new(GmemSeries::V8, P, false);
    assert_eq!(
        on.capabilities().conversion_path(),
        Some(ConversionPath::GuestMemfdAttributes(GmemSeries::V8))
    );
    let off = SeriesModel::new(GmemSeries::V8, P, false).module_param(false, true);
    assert_eq!(off.check_extension(250), 0);
    assert_eq!(off.check_extension(233), 8);
    assert_eq!(
        off.capabilities().conversion_path(),
        Some(ConversionPath::VmAttributes)
    );
    // Without CONFIG_KVM_VM_MEMORY_ATTRIBUTES nothing converts at all.
    let none = SeriesModel::new(GmemSeries::V8, P, false).module_param(false, false);
    assert_eq!(none.capabilities().conversion_path(), None);
    // A handle that used the path anyway gets the kernel's ENOTTY (patch 13/46
    // kvm_gmem_ioctl), typed, without an error_offset, and records nothing new.
    let mut g = handle(&off, 1, GmemFlags::MMAP);
    let e = g.convert(0, P, MemoryState::Shared).unwrap_err();
    assert!(matches!(
        &e,
        Error::Conversion { error_offset: None, attempts: 1, source, .. }
            if source.errno() == libc::ENOTTY
    ));
    assert_eq!(g.private_ranges(), vec![(0, P)]);
}

#[test]
fn the_model_refuses_what_v8_refuses_with_einval() {
    // v8 patch 13/46 kvm_gmem_set_attributes: each of these is EINVAL, error_offset untouched.
    let mut m = SeriesModel::new(GmemSeries::V8, 4 * P, true);
    let f = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsFd::as_fd(&f);
    let req = GmemSeries::V8.set_memory_attributes2();
    let bad = [
        (0, P, PRIVATE, 1, 0),                // flags
        (0, P, PRIVATE, 0, 1),                // reserved[0]
        (0, P, 0x10, 0, 0),                   // an attribute other than PRIVATE
        (0, 0, PRIVATE, 0, 0),                // size 0
        (1, P, PRIVATE, 0, 0),                // unaligned offset
        (0, P + 1, PRIVATE, 0, 0),            // unaligned size
        (4 * P, P, PRIVATE, 0, 0),            // offset at the end
        (3 * P, 2 * P, PRIVATE, 0, 0),        // past the end
        (u64::MAX - P + 1, P, PRIVATE, 0, 0), // wraps
    ];
    for (offset, size, attributes, flags, r0) in bad {
        let mut arg = kvm_memory_attributes2 {
            offset,
            size,
            attributes,
            flags,
            error_offset: 0xdead,
            ..Default::default()
        };
        arg.reserved[0] = r0;
        let e = m.set_memory_attributes2(fd, req, &mut arg).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{offset:#x} {size:#x}");
        assert_eq!(arg.error_offset, 0xdead);
    }
    // Another request number is ENOTTY; a VM without private memory EINVAL.
    let mut arg = kvm_memory_attributes2 {
        offset: 0,
        size: P,
        attributes: PRIVATE,
        ..Default::default()
    };
    let vm_ioctl = gmem::uapi::KVM_SET_MEMORY_ATTRIBUTES;
    assert_eq!(
        m.set_memory_attributes2(fd, vm_ioctl, &mut arg)
            .unwrap_err()
            .errno(),
        libc::ENOTTY
    );
    let mut plain = SeriesModel::new(GmemSeries::V8, P, true).private_mem(false);
    assert_eq!(
        plain
            .set_memory_attributes2(fd, req, &mut arg)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert!(!m.is_private(0));
}

/// A kernel that answers EAGAIN with an error_offset outside the call's range.
#[derive(Debug)]
struct Liar;

impl AttributesIoctl for Liar {
    fn set_memory_attributes2(
        &mut self,
        _: BorrowedFd<'_>,
        _: c_ulong,
        arg: &mut kvm_memory_attributes2,
    ) -> Result<(), errno::Error> {
        arg.error_offset = arg.offset + arg.size;
        Err(errno::Error::new(libc::EAGAIN))
    }
}

#[test]
fn an_error_offset_outside_the_call_is_not_reported() {
    let mut g =
        GuestMemfd::with_model(2 * P, GmemFlags::MMAP, GmemSeries::V8, Box::new(Liar)).unwrap();
    let e = g.convert(0, P, MemoryState::Shared).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Conversion {
                error_offset: None,
                attempts: 4,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn the_backends_gpa_entry_point_takes_the_per_file_path() {
    // What sev/tdx/cca-backend call: gmem::convert_gpa_range by guest-physical address. With a
    // memslot the VMM made (recorded, no ioctl), the range becomes file offsets and goes to
    // KVM_SET_MEMORY_ATTRIBUTES2 on the file.
    let model = SeriesModel::new(GmemSeries::V8, 4 * P, true);
    let mut g = handle(&model, 4, GmemFlags::MMAP | GmemFlags::INIT_SHARED);
    g.record_memslot(1, 0x10_0000, 0, 4 * P).unwrap();
    gmem::convert_gpa_range(&mut [&mut g], 0x10_1000, 2 * P, MemoryState::Private).unwrap();
    assert_eq!(model.calls(), vec![(P, 2 * P, PRIVATE)]);
    assert_eq!(g.private_ranges(), vec![(P, 3 * P)]);
    // A failure there is the same typed error, with its errno for the backend's ioctl layer.
    model.pin(3 * P, None);
    let e =
        gmem::convert_gpa_range(&mut [&mut g], 0x10_0000, 4 * P, MemoryState::Private).unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);
    assert_eq!(g.private_ranges(), vec![(0, 3 * P)]);
}
