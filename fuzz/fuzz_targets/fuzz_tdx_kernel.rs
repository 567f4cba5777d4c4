//! The TDX backend against a kernel whose every `KVM_TDX_INIT_MEM_REGION` answer comes from the
//! fuzzer: pages added, the `struct kvm_tdx_init_mem_region` it writes back (honestly advanced,
//! or any values), the errno and the TDX module's `hw_error`.
//!
//! The backend must read the written-back struct as untrusted: never panic, count exactly the
//! pages a consistent write-back shows (the fake kernel adds exactly those), and stop with a
//! hard error on an impossible one. Driven by `cc_populate::Driver` over a small plan, resumed
//! after every stop and finally against an honest kernel: no page added twice, each region's
//! reported bytes equal the pages the kernel added to it, every source handed to the kernel is
//! page-aligned and as long as the pages asked, and the plan completes.
#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role, RunError, StopCause};
use libfuzzer_sys::fuzz_target;
use tdx_backend::uapi::{kvm_tdx_cmd, kvm_tdx_init_mem_region};
use tdx_backend::{TdxBackend, TdxIoctl, TDX_CAPS};

#[path = "common/kernel.rs"]
#[allow(dead_code)] // `drive` serves the other kernel targets
mod kernel;

const PAGE: u64 = 4096;
const ERRNOS: [i32; 7] = [
    libc::EINTR,
    libc::EAGAIN,
    libc::EBUSY,
    libc::EIO,
    libc::EINVAL,
    libc::ENOTTY,
    libc::EFAULT,
];

/// What the kernel writes back.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum WriteBack {
    /// Advanced by the pages added (what Linux does).
    Honest,
    /// Any values (a broken or hostile kernel); pages count as added only if they happen to
    /// be consistent.
    Raw {
        gpa: u64,
        nr_pages: u64,
        source_addr: u64,
    },
    /// Advanced by `k` more pages than added (claims progress it did not make).
    Overclaim(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Answer {
    /// Pages added (clamped to the request).
    pages: u8,
    write_back: WriteBack,
    /// `None`: success; else an errno from [`ERRNOS`].
    errno: Option<u8>,
    /// The TDX module's status, when non-zero.
    hw_error: Option<u64>,
}

#[derive(Arbitrary, Debug)]
struct RegionIn {
    gap: u8,
    pages: u8,
    role: Role,
    /// A source (else zeros).
    source: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    regions: Vec<RegionIn>,
    rounds: Vec<Vec<Answer>>,
    /// `set_private` errnos, per call (empty: success).
    private: Vec<Option<u8>>,
}

#[derive(Default)]
struct Kernel {
    answers: VecDeque<Answer>,
    private: VecDeque<Option<u8>>,
    /// Pages really added: (gpa, bytes).
    added: Vec<(u64, u64)>,
    /// Write-backs that were impossible (inconsistent).
    impossible: u64,
}

impl TdxIoctl for Kernel {
    fn vm_op(&mut self, _: &mut kvm_tdx_cmd, _: Option<&mut [u8]>) -> Result<(), i32> {
        Ok(())
    }
    fn vcpu_op(&mut self, _: &mut kvm_tdx_cmd, _: Option<&mut [u8]>) -> Result<(), i32> {
        Ok(())
    }
    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        let (gpa0, nr0, src0) = (region.gpa, region.nr_pages, region.source_addr);
        assert_eq!(src0 % PAGE, 0, "source not page-aligned");
        assert_eq!(
            src0,
            source.as_ptr() as u64,
            "source_addr is not the source"
        );
        assert!(
            source.len() as u64 >= nr0 * PAGE,
            "source shorter than the pages asked"
        );
        assert!(nr0 > 0 && gpa0 % PAGE == 0);
        let a = self.answers.pop_front().unwrap_or(Answer {
            pages: u8::MAX,
            write_back: WriteBack::Honest,
            errno: None,
            hw_error: None,
        });
        let k = if a.pages == u8::MAX {
            nr0
        } else {
            (a.pages as u64).min(nr0)
        };
        match a.write_back {
            WriteBack::Honest => {
                region.gpa = gpa0 + k * PAGE;
                region.source_addr = src0 + k * PAGE;
                region.nr_pages = nr0 - k;
            }
            WriteBack::Raw {
                gpa,
                nr_pages,
                source_addr,
            } => {
                region.gpa = gpa;
                region.nr_pages = nr_pages;
                region.source_addr = source_addr;
            }
            WriteBack::Overclaim(extra) => {
                let claimed = k + extra as u64 + 1;
                region.gpa = gpa0.wrapping_add(claimed * PAGE);
                region.source_addr = src0.wrapping_add(claimed * PAGE);
                region.nr_pages = nr0.wrapping_sub(claimed);
            }
        }
        // What the write-back says, judged independently: p pages, all three fields in step.
        let p = nr0.checked_sub(region.nr_pages);
        let consistent = p.is_some_and(|p| {
            region.gpa == gpa0.wrapping_add(p.wrapping_mul(PAGE))
                && region.source_addr == src0.wrapping_add(p.wrapping_mul(PAGE))
        });
        match p {
            Some(p) if consistent && p > 0 => self.added.push((gpa0, p * PAGE)),
            Some(_) if consistent => {}
            _ => self.impossible += 1,
        }
        cmd.hw_error = a.hw_error.unwrap_or(0);
        match a.errno {
            None => Ok(()),
            Some(e) => Err(ERRNOS[e as usize % ERRNOS.len()]),
        }
    }
    fn set_private(&mut self, _: u64, _: u64) -> Result<(), i32> {
        match self.private.pop_front().flatten() {
            None => Ok(()),
            Some(e) => Err(ERRNOS[e as usize % ERRNOS.len()]),
        }
    }
}

fuzz_target!(|input: Input| {
    let source = vec![0xc3u8; 64 * PAGE as usize];
    let mut builder = PlanBuilder::new();
    let mut cursor = 0x10_0000u64;
    let mut specs = Vec::new();
    for r in input.regions.iter().take(6) {
        let role = match r.role {
            Role::Measured | Role::Unmeasured | Role::Zero => r.role,
            _ => Role::Measured,
        };
        let len = (r.pages % 64 + 1) as u64 * PAGE;
        let gpa = cursor + r.gap as u64 * PAGE;
        cursor = gpa + len;
        builder = if r.source && role != Role::Zero {
            builder.source(gpa, role, &source[..len as usize])
        } else {
            builder.zeros(gpa, len, role)
        };
        specs.push((gpa, len));
    }
    let plan = builder
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .expect("valid by construction");
    let mut kernel = Kernel {
        private: input.private.iter().take(16).copied().collect(),
        ..Kernel::default()
    };
    let mut backend = TdxBackend::new(&mut kernel);
    let mut report = None;
    let mut rounds: Vec<Option<&Vec<Answer>>> = input.rounds.iter().take(6).map(Some).collect();
    rounds.push(None);
    for round in rounds {
        let impossible_before;
        {
            let k = backend_kernel(&mut backend);
            match round {
                Some(r) => k.answers.extend(r.iter().take(32).copied()),
                None => {
                    k.answers.clear();
                    k.private.clear();
                }
            }
            impossible_before = k.impossible;
        }
        let mut driver = Driver::new(&mut backend);
        let result = match &report {
            None => driver.run(&plan),
            Some(r) => driver.resume(&plan, r),
        };
        let k = backend_kernel(&mut backend);
        let r = match result {
            Ok(r) => {
                assert_eq!(
                    k.impossible, impossible_before,
                    "an impossible write-back went unnoticed"
                );
                assert!(r.is_complete());
                r
            }
            Err(RunError::Stopped(r)) => {
                assert!(
                    round.is_some(),
                    "an honest kernel did not complete the plan: {r}"
                );
                if k.impossible > impossible_before {
                    let stop = r.stop.as_ref().expect("stop");
                    assert!(
                        matches!(&stop.cause, StopCause::Backend(e) if e.kind == cc_populate::ErrorKind::Failed),
                        "an impossible write-back must stop the run hard: {stop}"
                    );
                }
                *r
            }
            Err(e) => panic!("unexpected: {e}"),
        };
        // Per region, the report equals what the kernel really added (as a prefix), never twice.
        for (i, (rr, &(gpa, len))) in r.regions.iter().zip(&specs).enumerate() {
            let added = kernel::prefix(&k.added, gpa, len, &format!("region {i}"));
            assert_eq!(
                added, rr.populated,
                "region {i}: kernel added {added:#x}, report says {:#x}",
                rr.populated
            );
        }
        kernel::assert_disjoint(&k.added, "added");
        let done = r.is_complete();
        report = Some(r);
        if done {
            break;
        }
    }
    assert!(report.is_some_and(|r| r.is_complete()));
});

/// The fake kernel inside the backend.
fn backend_kernel<'a>(b: &'a mut TdxBackend<&mut Kernel>) -> &'a mut Kernel {
    b.ioctl_mut()
}
