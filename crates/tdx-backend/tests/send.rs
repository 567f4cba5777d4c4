//! Compile-time checks (issue 25): the backend can live in a VMM's VM object, which is shared
//! between threads, and its ioctl layer borrows the VMM's `VmFd` without taking it.

use kvm_ioctls::VmFd;
use tdx_backend::testing::TdxModel;
use tdx_backend::{KvmTdx, TdxBackend};

const fn send<T: Send>() {}
const fn sync<T: Sync>() {}

// Evaluated by the compiler: a type that is not `Send`/`Sync` fails the build of this test.
const _: () = {
    send::<KvmTdx<'static>>();
    sync::<KvmTdx<'static>>();
    send::<TdxBackend<KvmTdx<'static>>>();
    sync::<TdxBackend<KvmTdx<'static>>>();
    send::<TdxBackend<TdxModel>>();
    sync::<TdxBackend<TdxModel>>();
    send::<tdx_backend::Error>();
    sync::<tdx_backend::Error>();
};

/// A VMM's VM object: it owns its `VmFd`; the backend borrows it for the launch.
struct Vmm {
    vm: VmFd,
}

impl Vmm {
    /// Lends the VM fd to the backend, then uses it again: `KvmTdx::new` takes `&VmFd`, so the
    /// VMM never gives it up (this must compile; it is not run, as it needs a TD).
    #[allow(dead_code)]
    fn launch_then_keep_using(&mut self) -> i32 {
        {
            let td = TdxBackend::new(KvmTdx::new(&self.vm));
            // The backend, with its borrow, can cross to another thread for the launch.
            std::thread::scope(|s| {
                s.spawn(move || drop(td));
            });
        }
        self.vm.check_extension_raw(0)
    }
}

#[test]
fn the_backend_is_send_and_sync_and_borrows_the_vm_fd() {
    // The const block above is the check; this names it in the test run.
    let _ = Vmm::launch_then_keep_using;
}
