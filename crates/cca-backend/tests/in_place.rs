//! Arm CCA refuses in-place content (issue 23): delegating a granule destroys its contents for
//! the host and `RMI_DATA_CREATE` copies from a separate source, so content written in place
//! cannot be populated where it lies, whatever guest_memfd's conversion path. The refusal is a
//! typed error naming the region and saying why, before anything is issued; a chunk that
//! reaches the backend anyway is refused the same way, with no populate ioctl.

use cc_populate::{
    Backend, BackendCaps, ChunkRequest, ChunkSource, ErrorKind, InPlacePopulate, MemoryLayout,
    PlanBuilder, Role,
};
use cca_backend::testing::{KernelModel, MODEL_HOST_DFR0};
use cca_backend::{
    CcaBackend, Error, HashAlgo, RealmParams, UapiVersion, CCA_CAPS, IN_PLACE_REFUSED,
};

const M: u64 = 1 << 20;

fn model(version: UapiVersion) -> (KernelModel, RealmParams) {
    let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    realm.set_debug_from_id_aa64dfr0(MODEL_HOST_DFR0);
    let mut m = KernelModel::new(version, realm.clone());
    m.add_memslot(0, 0, 64 * M, true);
    m.add_vcpus(1, false);
    (m, realm)
}

/// Caps that let in-place content through validation (a verifier's, or a VMM's shared plan), so
/// the backend's own refusal is what is tested.
fn permissive() -> BackendCaps {
    BackendCaps {
        in_place: true,
        ..CCA_CAPS
    }
}

#[test]
fn a_plan_with_in_place_content_is_refused_naming_the_region_and_why() {
    for v in [UapiVersion::V12, UapiVersion::V13, UapiVersion::V14] {
        let (m, _) = model(v);
        let b = CcaBackend::with_version(m, v, v.series_cap());
        let data = vec![0x5a_u8; 0x2000];
        let plan = PlanBuilder::new()
            .source(2 * M, Role::Measured, &data)
            .in_place(8 * M, 2 * M, Role::Measured)
            .in_place(16 * M, 0x1000, Role::Unmeasured)
            .build(&permissive(), &MemoryLayout::unbounded())
            .unwrap();
        let e = b.refuse_in_place(&plan).unwrap_err();
        assert_eq!(
            e,
            Error::InPlaceRefused {
                region: 1,
                gpa: 8 * M,
                len: 2 * M,
                reason: IN_PLACE_REFUSED,
            }
        );
        let msg = e.to_string();
        for word in [
            "[0x800000..+0x200000)",
            "RMI_GRANULE_DELEGATE",
            "destroys its contents",
            "separate source",
        ] {
            assert!(msg.contains(word), "{word}: {msg}");
        }
        // The caps it declares keep such plans out at validation too.
        assert!(!b.caps().in_place);
        // Nothing was issued to decide this.
        assert!(b.state() == cca_backend::RealmState::NotCreated);
    }
}

#[test]
fn plans_without_in_place_content_or_with_staging_are_not_refused() {
    let (m, _) = model(UapiVersion::V14);
    let data = vec![1u8; 0x1000];
    let sources = PlanBuilder::new()
        .source(2 * M, Role::Measured, &data)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let b = CcaBackend::with_version(m, UapiVersion::V14, UapiVersion::V14.series_cap());
    assert!(b.refuse_in_place(&sources).is_ok());
    // Staged: the backend copies the content into its own source first (its documented opt-in).
    let (m, _) = model(UapiVersion::V14);
    let staged = CcaBackend::with_version(m, UapiVersion::V14, UapiVersion::V14.series_cap())
        .stage_in_place(Box::new(|_, buf: &mut [u8]| {
            buf.fill(7);
            Ok(())
        }));
    let in_place = PlanBuilder::new()
        .in_place(2 * M, 0x1000, Role::Measured)
        .build(&permissive(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(staged.refuse_in_place(&in_place).is_ok());
    // CCA never asks the kernel to populate in place.
    assert_eq!(staged.in_place_populate(), InPlacePopulate::Backend);
}

#[test]
fn an_in_place_chunk_reaching_the_backend_is_refused_with_no_populate_ioctl() {
    let (mut m, realm) = model(UapiVersion::V14);
    let mut b = CcaBackend::with_version(&mut m, UapiVersion::V14, UapiVersion::V14.series_cap());
    b.configure(&realm).unwrap();
    let chunk = ChunkRequest {
        region: 0,
        gpa: 2 * M,
        len: 0x2000,
        role: Role::Measured,
        source: ChunkSource::InPlace,
    };
    let p = b.populate(&chunk);
    assert_eq!(p.done, 0);
    let e = p.result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.detail.contains("0x200000+0x2000"), "{}", e.detail);
    assert!(e.detail.contains(IN_PLACE_REFUSED), "{}", e.detail);
    drop(b);
    let populate_calls = m.calls.iter().filter(|c| c.request & 0xff == 0xd7).count();
    assert_eq!(populate_calls, 0, "{:x?}", m.calls);
    assert_eq!(m.populated_bytes(), 0);
}
