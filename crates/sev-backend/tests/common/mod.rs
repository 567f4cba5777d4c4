//! Helpers the model tests share: a model brought to a launch state by raw commands, and a raw
//! `LAUNCH_UPDATE`.

#![allow(dead_code)] // each test file uses its own part

use sev_backend::testing::KernelModel;
use sev_backend::uapi::{kvm_sev_init, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update};
use sev_backend::{KernelVersion, SevCmd, SevIoctl, UpdateSource};

/// A model of `v` after a raw `KVM_SEV_INIT2`.
pub fn initialised(v: KernelVersion) -> KernelModel {
    let mut m = KernelModel::for_version(v);
    m.encrypt_op(SevCmd::Init2(&mut kvm_sev_init::default()))
        .unwrap();
    m
}

/// `LAUNCH_START` with the default policy (SMT, bit 17) on `m`.
pub fn start(m: &mut KernelModel) {
    m.encrypt_op(SevCmd::LaunchStart(&mut kvm_sev_snp_launch_start {
        policy: 0x3_0000,
        ..Default::default()
    }))
    .unwrap();
}

/// A model of `v` after INIT2 and LAUNCH_START with `gpa..+len` private.
pub fn started(v: KernelVersion, gpa: u64, len: u64) -> KernelModel {
    let mut m = initialised(v);
    start(&mut m);
    m.set_private(gpa, len).unwrap();
    m
}

/// A raw `LAUNCH_UPDATE`: the advanced parameters, or (errno, firmware status).
pub fn update(
    m: &mut KernelModel,
    gfn: u64,
    uaddr: u64,
    len: u64,
    type_: u8,
    src: Option<UpdateSource<'_>>,
) -> Result<kvm_sev_snp_launch_update, (i32, u32)> {
    let mut p = kvm_sev_snp_launch_update {
        gfn_start: gfn,
        uaddr,
        len,
        type_,
        ..Default::default()
    };
    m.encrypt_op(SevCmd::LaunchUpdate {
        params: &mut p,
        source: src,
    })
    .map(|()| p)
    .map_err(|e| (e.errno, e.fw_error))
}
