//! The `/dev/sev` fd the kernel remembers: `SNP_LAUNCH_START` keeps the number of the fd it was
//! issued on, and `SNP_LAUNCH_FINISH` and every guest request for the VM's life go through that
//! number (`arch/x86/kvm/svm/sev.c: snp_launch_start`, `snp_launch_finish`,
//! `snp_handle_guest_req`; Linux 6.12, 6.18.2, 7.3.4), as sev-backend's kernel model checks it.
//! A plain file stands in for the device: the kernel looks the number up at each use, so what
//! matters is whether the VMM still has it open.

use std::os::fd::AsRawFd;

use sev_backend::testing::KernelModel;
use sev_backend::{Error, FinishParams, InitParams, LaunchConfig, SnpBackend, StartParams};

/// A stand-in for an open `/dev/sev`: a file of this test's own.
fn device(name: &str) -> std::fs::File {
    let p = std::env::temp_dir().join(format!("sev-fd-{}-{name}", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    f
}

/// A backend over the model, the VMM's `/dev/sev` fd being `fd`, started (INIT2, one vCPU
/// with a VMSA, LAUNCH_START).
fn started(fd: i32) -> SnpBackend<KernelModel> {
    let mut model = KernelModel::new();
    model.sev_device = Some(fd);
    model.vmsas = vec![vec![0x5a; 4096]];
    let mut b = SnpBackend::with_ioctl(model, LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    b.start(&StartParams::default()).unwrap();
    b
}

#[test]
fn guest_requests_need_the_fd_launch_start_was_given() {
    let dev = device("a");
    let mut b = started(dev.as_raw_fd());
    b.finish(&FinishParams::default()).unwrap();
    assert_eq!(b.ioctl_mut().guest_request(), Ok(()));
    // The VMM closes it (for example by dropping a backend that owned it): every later guest
    // request of the VM fails, though the launch succeeded.
    drop(dev);
    assert_eq!(b.ioctl_mut().guest_request(), Err(libc::EBADF));
}

#[test]
fn finish_goes_through_the_remembered_fd_not_the_current_one() {
    let (first, second) = (device("first"), device("second"));
    let mut b = started(first.as_raw_fd());
    // The VMM's layer now passes another open fd: the VMSAs go through it, LAUNCH_FINISH
    // through the remembered one, which is still open, so the launch finishes.
    b.ioctl_mut().sev_device = Some(second.as_raw_fd());
    b.finish(&FinishParams::default()).unwrap();
    // Only the remembered fd counts for guest requests.
    drop(first);
    assert_eq!(b.ioctl_mut().guest_request(), Err(libc::EBADF));
    drop(second);
}

#[test]
fn finish_fails_when_the_remembered_fd_was_closed() {
    let (first, second) = (device("gone"), device("kept"));
    let mut b = started(first.as_raw_fd());
    b.ioctl_mut().sev_device = Some(second.as_raw_fd());
    drop(first);
    // The VMSAs went through the open fd first (they were measured), so the launch cannot be
    // finished again: the backend says the VM must go.
    let e = b.finish(&FinishParams::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unrecoverable {
                cmd: "KVM_SEV_SNP_LAUNCH_FINISH",
                errno: libc::EBADF,
                ..
            }
        ),
        "{e}"
    );
    assert!(b.ioctl().vmsas_measured());
}

#[test]
fn launch_start_on_a_closed_fd_is_enotty() {
    let dev = device("closed");
    let fd = dev.as_raw_fd();
    drop(dev);
    let mut model = KernelModel::new();
    model.sev_device = Some(fd);
    let mut b = SnpBackend::with_ioctl(model, LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    // snp_context_create's SNP_GCTX_CREATE fails on the bad fd, and snp_launch_start answers
    // -ENOTTY for any failure to create the context.
    let e = b.start(&StartParams::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Command {
                errno: libc::ENOTTY,
                ..
            }
        ),
        "{e}"
    );
}
