//! Compile-time checks (issue 25): the backend can live in a VMM's VM object, which is shared
//! between threads, and its ioctl layer borrows the VMM's fds without taking them. And at run
//! time: a backend attached to a realm the VMM set up, moved to another thread.

use cca_backend::testing::KernelModel;
use cca_backend::{CcaBackend, KvmCcaIoctl};

const fn send<T: Send>() {}
const fn sync<T: Sync>() {}

// Evaluated by the compiler: a type that is not `Send`/`Sync` fails the build of this test.
const _: () = {
    send::<KvmCcaIoctl<'static>>();
    sync::<KvmCcaIoctl<'static>>();
    send::<CcaBackend<'static, KvmCcaIoctl<'static>>>();
    sync::<CcaBackend<'static, KvmCcaIoctl<'static>>>();
    send::<CcaBackend<'static, KernelModel>>();
    sync::<CcaBackend<'static, KernelModel>>();
    send::<cca_backend::Error>();
    sync::<cca_backend::Error>();
    send::<cca_backend::RimDigest>();
    sync::<cca_backend::RimDigest>();
};

use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role, SourceBuf};
use cca_backend::testing::MODEL_HOST_DFR0;
use cca_backend::{Error, HashAlgo, RealmParams, RealmState, UapiVersion};

/// A VMM's VM object: it owns its (here, modelled) KVM, and lends it to a backend.
struct Vmm {
    kvm: KernelModel,
}

/// The VMM configured its vCPUs and populated the first page itself (the kernel created the
/// realm then); a backend attached in `RealmState::New` is moved to another thread, populates
/// the rest there without replaying anything, and the VMM keeps using its KVM afterwards.
#[test]
fn attached_backend_moves_between_threads() {
    let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    realm.set_debug_from_id_aa64dfr0(MODEL_HOST_DFR0);
    let mut vmm = Vmm {
        kvm: KernelModel::new(UapiVersion::V14, realm.clone()),
    };
    vmm.kvm.add_memslot(0, 0, 1 << 30, true);
    vmm.kvm.add_vcpus(1, false);
    let data = SourceBuf::new(2 * 4096).unwrap();
    let layout = MemoryLayout::unbounded();
    {
        let mut first = CcaBackend::with_version(&mut vmm.kvm, UapiVersion::V14, 249);
        first.configure(&realm).unwrap();
        let plan = PlanBuilder::new()
            .source(0x20_0000, Role::Measured, &data.as_slice()[..4096])
            .build(&cca_backend::CCA_CAPS, &layout)
            .unwrap();
        assert!(Driver::new(&mut first).run(&plan).unwrap().is_complete());
    }
    let calls_before = vmm.kvm.calls.len();
    let mut be =
        CcaBackend::attach(&mut vmm.kvm, UapiVersion::V14, 249, RealmState::New, &realm).unwrap();
    assert_eq!(be.state(), RealmState::New);
    let plan = PlanBuilder::new()
        .source(0x20_1000, Role::Measured, &data.as_slice()[4096..])
        .build(&cca_backend::CCA_CAPS, &layout)
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            assert!(Driver::new(&mut be).run(&plan).unwrap().is_complete());
            // configure after attaching is refused: nothing is replayed.
            assert!(matches!(
                be.configure(&realm),
                Err(Error::WrongState {
                    op: "configure",
                    ..
                })
            ));
        });
    });
    // The VMM's KVM saw the one page converted and populated, and no register access.
    assert_eq!(vmm.kvm.populated_bytes(), 2 * 4096);
    let requests: Vec<u64> = vmm.kvm.calls[calls_before..]
        .iter()
        .map(|c| c.request)
        .collect();
    // KVM_SET_MEMORY_ATTRIBUTES (_IOW(KVMIO, 0xd2, 32 bytes)), then KVM_ARM_RMI_POPULATE
    // (v14: _IOWR(KVMIO, 0xd7, 32 bytes)).
    assert_eq!(requests, vec![0x4020_aed2, 0xc020_aed7]);
}

#[test]
fn attaching_to_an_active_realm_is_refused() {
    let realm = RealmParams::new(HashAlgo::Sha256, 40);
    let model = KernelModel::new(UapiVersion::V13, realm.clone());
    let e = CcaBackend::attach(model, UapiVersion::V13, 248, RealmState::Active, &realm)
        .err()
        .unwrap();
    assert!(matches!(e, Error::WrongState { op: "attach", .. }), "{e}");
    let mut sha512 = realm.clone();
    sha512.hash = HashAlgo::Sha512;
    let model = KernelModel::new(UapiVersion::V13, realm);
    assert!(matches!(
        CcaBackend::attach(model, UapiVersion::V13, 248, RealmState::New, &sha512),
        Err(Error::NotOffered { .. })
    ));
}
