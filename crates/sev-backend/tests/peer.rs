//! The whole-launch measurement against `sev-snp-measure` itself (PyPI 0.0.13), run over the
//! matrix in one Python process (`tests/peer/ssm_batch.py`): every combination of 1, 2, 4 and 64
//! vCPUs, every named vCPU type and an explicit family/model/stepping, QEMU/EC2/GCE, guest
//! features 0x1 and 0x21, without and with a kernel, initrd and command line (a real Debian
//! kernel image and a generated initrd), on Debian's OVMF and on an edk2 AmdSev build with a
//! hashes table (sev-snp-measure's fixture `ovmf_AmdSev_suffix.bin`, read from
//! `shared/fixtures/sev-snp-measure/` beside the repository, never copied into it).
//! Expected values are the peer's; where the kernel decides otherwise, the test says so.
//!
//! Setup: `bash crates/sev-backend/tests/peer/setup.sh` (pip, apt-get download). Without it a
//! test is reported ignored with a `SKIPPED [<id>]` line naming what it lacks (gmem::testing's
//! harness); CI fails when the skipped prerequisite is installed (`lab/skipcheck.py`).

mod needs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gmem::testing;
use needs::{amdsev, fixture, peer_dir, DEBIAN_OVMF};
use serde_json::{json, Value};
use sev_backend::{
    measure_snp_launch, parse_ovmf, plan_svsm, svsm_vmsas, vmsa_layout, LaunchMeasurement,
    MeasureError, SevHashes, SnpLaunch, SvsmLaunch, VcpuConfig, VcpuType, VmmType, SVSM_INFO_GUID,
    VCPU_TYPES,
};

/// Runs the peer over `cases` in one process.
fn peer(cases: &[Value]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer/ssm_batch.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = serde_json::to_vec(cases).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "ssm_batch.py failed");
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.len(), cases.len());
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn peer_digest(v: &Value) -> Result<String, String> {
    match (v.get("digest"), v.get("error")) {
        (Some(d), _) => Ok(d.as_str().unwrap().to_string()),
        (_, Some(e)) => Err(e.as_str().unwrap().to_string()),
        _ => panic!("bad peer result {v}"),
    }
}

/// How the vCPU signature is given.
#[derive(Clone, Copy, Debug)]
enum Sig {
    Type(&'static str),
    Fms(u32, u32, u32),
}

impl Sig {
    fn all() -> Vec<Sig> {
        let mut v: Vec<Sig> = VCPU_TYPES.iter().map(|t| Sig::Type(t.name)).collect();
        v.push(Sig::Fms(26, 0x11, 3));
        v
    }
    fn ours(self) -> u32 {
        match self {
            Sig::Type(n) => VcpuType::by_name(n).unwrap().signature(),
            Sig::Fms(f, m, s) => sev_backend::cpu_signature(f, m, s).unwrap(),
        }
    }
    fn json(self, case: &mut Value) {
        match self {
            Sig::Type(n) => case["type"] = json!(n),
            Sig::Fms(f, m, s) => case["fms"] = json!([f, m, s]),
        }
    }
}

const VMMS: [(VmmType, &str); 3] = [
    (VmmType::Qemu, "QEMU"),
    (VmmType::Ec2, "ec2"),
    (VmmType::Gce, "gce"),
];

/// A kernel/initrd/command line combination.
#[derive(Clone, Copy, Debug)]
struct Boot {
    kernel: bool,
    initrd: bool,
    append: Option<&'static str>,
}

const BOOTS: [Boot; 5] = [
    Boot {
        kernel: false,
        initrd: false,
        append: None,
    },
    Boot {
        kernel: true,
        initrd: false,
        append: None,
    },
    Boot {
        kernel: true,
        initrd: true,
        append: None,
    },
    Boot {
        kernel: true,
        initrd: false,
        append: Some("console=ttyS0 loglevel=7 root=/dev/vda1 ro"),
    },
    Boot {
        kernel: true,
        initrd: true,
        append: Some(" console=ttyS0 earlyprintk=serial  "),
    },
];

struct Inputs {
    dir: PathBuf,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
}

impl Inputs {
    fn load(dir: PathBuf) -> Inputs {
        Inputs {
            kernel: std::fs::read(dir.join("vmlinuz")).unwrap(),
            initrd: std::fs::read(dir.join("initrd.img")).unwrap(),
            dir,
        }
    }
    fn hashes(&self, b: Boot) -> Option<SevHashes> {
        b.kernel
            .then(|| SevHashes::new(&self.kernel, b.initrd.then_some(&self.initrd[..]), b.append))
    }
    fn json(&self, b: Boot, case: &mut Value) {
        if b.kernel {
            case["kernel"] = json!(self.dir.join("vmlinuz"));
        }
        if b.initrd {
            case["initrd"] = json!(self.dir.join("initrd.img"));
        }
        if let Some(a) = b.append {
            case["append"] = json!(a);
        }
    }
}

struct Case {
    ovmf: PathBuf,
    vcpus: u32,
    sig: Sig,
    vmm: (VmmType, &'static str),
    features: u64,
    boot: Boot,
}

fn ours(
    c: &Case,
    firmware: &[u8],
    seed: Option<[u8; 48]>,
    hashes: Option<SevHashes>,
) -> Result<LaunchMeasurement, MeasureError> {
    measure_snp_launch(&SnpLaunch {
        firmware,
        firmware_digest: seed,
        vcpus: Some(VcpuConfig {
            count: c.vcpus,
            signature: c.sig.ours(),
            vmm: c.vmm.0,
            guest_features: c.features,
        }),
        kernel: hashes,
        ..SnpLaunch::default()
    })
}

fn case_json(c: &Case, inputs: &Inputs, seed: bool) -> Value {
    let mut v = json!({
        "ovmf": c.ovmf, "vcpus": c.vcpus, "vmm": c.vmm.1, "features": c.features, "seed": seed,
    });
    c.sig.json(&mut v);
    inputs.json(c.boot, &mut v);
    v
}

fn launch_digests_match_sev_snp_measure_over_the_matrix() {
    let dir = peer_dir();
    let inputs = Inputs::load(dir);
    let ovmfs = [amdsev(), PathBuf::from(DEBIAN_OVMF)];
    let images: Vec<Vec<u8>> = ovmfs.iter().map(|p| std::fs::read(p).unwrap()).collect();

    // The firmware pages' digest, ours against the peer's (`--mode snp:ovmf-hash`); the matrix
    // then starts from it on both sides (`--snp-ovmf-hash`), as a debug build would otherwise
    // hash the same 2 MiB thousands of times. Whole launches without the seed follow below.
    let seeds: Vec<[u8; 48]> = images
        .iter()
        .map(|img| {
            measure_snp_launch(&SnpLaunch {
                firmware: img,
                ..SnpLaunch::default()
            })
            .unwrap()
            .firmware_digest
        })
        .collect();
    let seed_cases: Vec<Value> = ovmfs
        .iter()
        .map(|p| json!({"ovmf": p, "ovmf_only": true}))
        .collect();
    for (s, p) in seeds.iter().zip(peer(&seed_cases)) {
        assert_eq!(Ok(hex(s)), peer_digest(&p));
    }

    let hashes: Vec<Option<SevHashes>> = BOOTS.iter().map(|b| inputs.hashes(*b)).collect();
    let mut cases = Vec::new();
    for (oi, ovmf) in ovmfs.iter().enumerate() {
        for vcpus in [1, 2, 4, 64] {
            for sig in Sig::all() {
                for vmm in VMMS {
                    for features in [0x1, 0x21] {
                        for (bi, boot) in BOOTS.iter().enumerate() {
                            // Debian's OVMF has no hashes section: one boot case checks the
                            // refusal, per VMM.
                            if oi == 1 && bi > 1 {
                                continue;
                            }
                            let c = Case {
                                ovmf: ovmf.clone(),
                                vcpus,
                                sig,
                                vmm,
                                features,
                                boot: *boot,
                            };
                            cases.push((oi, bi, c));
                        }
                    }
                }
            }
        }
    }
    let json: Vec<Value> = cases
        .iter()
        .map(|(_, _, c)| case_json(c, &inputs, true))
        .collect();
    let expected = peer(&json);
    let (mut compared, mut refused) = (0, 0);
    for ((oi, bi, c), want) in cases.iter().zip(&expected) {
        let got = ours(c, &images[*oi], Some(seeds[*oi]), hashes[*bi]);
        match (got, peer_digest(want)) {
            (Ok(m), Ok(w)) => {
                assert_eq!(
                    hex(&m.digest),
                    w,
                    "{} vCPUs {:?} {:?} features {:#x} {:?} on {}",
                    c.vcpus,
                    c.sig,
                    c.vmm.0,
                    c.features,
                    c.boot,
                    c.ovmf.display()
                );
                compared += 1;
            }
            (Err(e), Err(pe)) => {
                // Both refuse a kernel on a firmware without an SNP_KERNEL_HASHES section.
                assert!(matches!(e, MeasureError::Hashes(_)), "{e}");
                assert!(pe.contains("SNP_KERNEL_HASHES"), "{pe}");
                refused += 1;
            }
            (got, want) => panic!("ours {got:?}, peer {want:?}"),
        }
    }
    eprintln!("{compared} launch digests equal to sev-snp-measure's, {refused} refused by both");
    assert_eq!(compared, 4 * 17 * 3 * 2 * (5 + 1));
    assert_eq!(refused, 4 * 17 * 3 * 2);
}

fn whole_launches_without_a_seed_and_vmsa_bytes() {
    let dir = peer_dir();
    let inputs = Inputs::load(dir);
    let ovmf = amdsev();
    let image = std::fs::read(&ovmf).unwrap();
    let mut cases = Vec::new();
    for vmm in VMMS {
        for (vcpus, features) in [(1, 0x1), (2, 0x21), (64, 0x21)] {
            cases.push(Case {
                ovmf: ovmf.clone(),
                vcpus,
                sig: Sig::Type("EPYC-Milan"),
                vmm,
                features,
                boot: BOOTS[4],
            });
        }
    }
    cases.push(Case {
        ovmf: DEBIAN_OVMF.into(),
        vcpus: 4,
        sig: Sig::Fms(25, 0xa0, 2),
        vmm: VMMS[0],
        features: 0x1,
        boot: BOOTS[0],
    });
    let json: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut v = case_json(c, &inputs, false);
            v["vmsas"] = json!(true);
            v
        })
        .collect();
    let expected = peer(&json);
    for (c, want) in cases.iter().zip(&expected) {
        let img = if c.ovmf == ovmf {
            image.clone()
        } else {
            std::fs::read(&c.ovmf).unwrap()
        };
        let m = ours(c, &img, None, inputs.hashes(c.boot)).unwrap();
        assert_eq!(Ok(hex(&m.digest)), peer_digest(want), "{:?}", c.vmm.0);
        // Every VMSA page, byte for byte.
        let pages: Vec<String> = m.vmsas.as_ref().unwrap().iter().map(|p| hex(p)).collect();
        let want_pages: Vec<String> = want["vmsas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(pages, want_pages, "{:?} {} vCPUs", c.vmm.0, c.vcpus);
    }
}

fn guest_features_without_snp_active_follow_the_kernel() {
    // __sev_guest_init (arch/x86/kvm/svm/sev.c, Linux 6.18) ORs SVM_SEV_FEAT_SNP_ACTIVE into
    // every SNP VM's vmsa_features, and sev_es_sync_vmsa writes that into each VMSA: features
    // 0x20 asked of KVM are 0x21 in the VMSA. sev-snp-measure writes 0x20 as given, which no
    // KVM launch produces; the kernel decides, so ours equals the peer's digest for 0x21.
    let dir = peer_dir();
    let inputs = Inputs::load(dir);
    let image = std::fs::read(amdsev()).unwrap();
    let case = |features| Case {
        ovmf: amdsev(),
        vcpus: 2,
        sig: Sig::Type("EPYC-v4"),
        vmm: VMMS[0],
        features,
        boot: BOOTS[0],
    };
    let want = peer(&[
        case_json(&case(0x21), &inputs, false),
        case_json(&case(0x20), &inputs, false),
    ]);
    let got = ours(&case(0x20), &image, None, None).unwrap();
    assert_eq!(Ok(hex(&got.digest)), peer_digest(&want[0]));
    assert_ne!(Ok(hex(&got.digest)), peer_digest(&want[1]));
}

/// A synthetic COCONUT-SVSM image: `pages` pages, its GUIDed table with the SVSM information
/// entry (entry point `entry` from the image base) and SEV metadata with `sections`.
fn svsm_image(pages: usize, entry: u32, sections: &[(u32, u32, u32)]) -> Vec<u8> {
    fn efi(s: &str) -> [u8; 16] {
        let h: Vec<u8> = unhex(&s.replace('-', ""));
        let mut g = [0u8; 16];
        g[..4].copy_from_slice(&[h[3], h[2], h[1], h[0]]);
        g[4..6].copy_from_slice(&[h[5], h[4]]);
        g[6..8].copy_from_slice(&[h[7], h[6]]);
        g[8..].copy_from_slice(&h[8..]);
        g
    }
    let size = pages * 4096;
    let mut img: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    // SEV metadata 0x1000 bytes before the end: "ASEV", length, version 1, count, sections.
    let meta_at = size - 0x1000;
    let mut meta = b"ASEV".to_vec();
    meta.extend((16 + 12 * sections.len() as u32).to_le_bytes());
    meta.extend(1u32.to_le_bytes());
    meta.extend((sections.len() as u32).to_le_bytes());
    for (b, l, t) in sections {
        meta.extend(b.to_le_bytes());
        meta.extend(l.to_le_bytes());
        meta.extend(t.to_le_bytes());
    }
    img[meta_at..meta_at + meta.len()].copy_from_slice(&meta);
    // The GUIDed table, entries back to front before its length and the footer GUID.
    let entries: Vec<(Vec<u8>, [u8; 16])> = vec![
        (
            ((size - meta_at) as u32).to_le_bytes().to_vec(),
            efi("dc886566-984a-4798-a75e-5585a7bf67cc"),
        ),
        (entry.to_le_bytes().to_vec(), SVSM_INFO_GUID),
    ];
    let mut table = Vec::new();
    for (data, guid) in entries {
        table.extend(&data);
        table.extend(((data.len() + 18) as u16).to_le_bytes());
        table.extend(guid);
    }
    table.extend(((table.len() + 18) as u16).to_le_bytes());
    table.extend(efi("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let end = size - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

fn svsm_launches_match_sev_snp_measure_but_for_the_kernels_fcw() {
    let dir = peer_dir();
    let ovmf = std::fs::read(DEBIAN_OVMF).unwrap();
    let vars_size = 0x84000u64;
    // The SVSM ends at 4 GiB - 2 MiB (OVMF) - vars: base 0xffd7c000 - 64 pages.
    let base = 0x1_0000_0000 - ovmf.len() as u64 - vars_size - 64 * 4096;
    let svsm = svsm_image(
        64,
        0x1040,
        &[
            (0x80_0000, 0x9000, 1),
            (0x80_d000, 0x1000, 2),
            (0x80_e000, 0x1000, 3),
            (0x80_f000, 0x1000, 4),
        ],
    );
    let svsm_path = dir.join("svsm-synthetic.bin");
    std::fs::write(&svsm_path, &svsm).unwrap();
    let plan = plan_svsm(&ovmf, &svsm, vars_size).unwrap();
    assert_eq!(u64::from(plan.entry), base + 0x1040);
    assert!(parse_ovmf(&svsm).unwrap().sev_metadata.is_some());

    let mk = |vcpus: u32, fix: bool| {
        json!({"ovmf": DEBIAN_OVMF, "vcpus": vcpus, "type": "EPYC-Genoa", "vmm": "QEMU",
               "svsm": svsm_path, "vars_size": vars_size, "vmsas": true, "svsm_fcw_fix": fix})
    };
    // The peer unchanged first, then with the kernel's X87_FCW (the fix stays on).
    let cases: Vec<Value> = [1, 4, 64]
        .iter()
        .map(|&n| mk(n, false))
        .chain([1, 4, 64].iter().map(|&n| mk(n, true)))
        .collect();
    let want = peer(&cases);
    for (i, n) in [1u32, 4, 64].into_iter().enumerate() {
        let m = measure_snp_launch(&SnpLaunch {
            firmware: &ovmf,
            vcpus: Some(VcpuConfig {
                count: n,
                signature: VcpuType::by_name("EPYC-Genoa").unwrap().signature(),
                ..VcpuConfig::default()
            }),
            svsm: Some(SvsmLaunch {
                image: &svsm,
                vars_size,
            }),
            ..SnpLaunch::default()
        })
        .unwrap();
        // The kernel writes the guest FPU's control word into every SNP VMSA
        // (sev_es_sync_vmsa, Linux 6.18: `save->x87_fcw = xsave->i387.cwd` for every VM type
        // but KVM_X86_DEFAULT_VM), and QEMU's reset state sets it to 0x37f, as the peer's own
        // SVSM code means to (it passes `fcw=fcw`, a keyword naming no field, so its page
        // keeps 0). Ours follows the kernel: the pages differ in those two bytes only ...
        let peer_page = unhex(want[i]["vmsas"][0].as_str().unwrap());
        let ours_page = m.vmsas.as_ref().unwrap().page(0).unwrap();
        let diff: Vec<usize> = (0..4096)
            .filter(|&k| peer_page[k] != ours_page[k])
            .collect();
        assert_eq!(diff, vec![vmsa_layout::X87_FCW, vmsa_layout::X87_FCW + 1]);
        assert_eq!(ours_page[vmsa_layout::X87_FCW..][..2], [0x7f, 0x03]);
        assert_ne!(Ok(hex(&m.digest)), peer_digest(&want[i]));
        // ... and with that one field set as the kernel sets it, the digests are equal.
        assert_eq!(Ok(hex(&m.digest)), peer_digest(&want[3 + i]), "{n} vCPUs");
        let fixed_page = unhex(want[3 + i]["vmsas"][0].as_str().unwrap());
        assert_eq!(&fixed_page[..], &ours_page[..]);
        assert_eq!(
            svsm_vmsas(n, 0, plan.entry).unwrap().count(),
            n,
            "every vCPU starts in the SVSM"
        );
    }
}

fn a_vmms_own_plan_plus_its_vcpus_is_the_launch_digest() {
    // measure_with_vcpus (a plan a VMM populates through SnpBackend, then KVM's VMSAs) equals
    // the whole-launch call for the same launch, which the matrix pins to sev-snp-measure.
    use cc_populate::{MemoryLayout, PlanBuilder};
    let image = std::fs::read(amdsev()).unwrap();
    let hashes = SevHashes::new(b"kernel", Some(b"initrd"), Some("console=ttyS0"));
    let (_, section) =
        sev_backend::kernel_hashes_section(&parse_ovmf(&image).unwrap(), &hashes).unwrap();
    let mut b = PlanBuilder::new();
    for r in sev_backend::plan_ovmf_with(&image, sev_backend::SectionPolicy::QEMU, Some(&section))
        .unwrap()
    {
        b.push(r.to_spec());
    }
    let plan = b
        .build(&sev_backend::verifier_caps(), &MemoryLayout::unbounded())
        .unwrap();
    let vcpus = VcpuConfig {
        count: 4,
        signature: VcpuType::by_name("EPYC-Genoa").unwrap().signature(),
        vmm: VmmType::Qemu,
        guest_features: 0x21,
    };
    let eip = parse_ovmf(&image).unwrap().sev_es_reset_eip();
    let vmm = sev_backend::measure_with_vcpus(&plan, &vcpus, eip).unwrap();
    let whole = measure_snp_launch(&SnpLaunch {
        firmware: &image,
        vcpus: Some(vcpus),
        kernel: Some(hashes),
        ..SnpLaunch::default()
    })
    .unwrap();
    assert_eq!(vmm, whole.digest);
}

fn main() -> std::process::ExitCode {
    let peer = needs::peer;
    testing::run(vec![
        testing::Test::new(
            "launch_digests_match_sev_snp_measure_over_the_matrix",
            peer(),
            launch_digests_match_sev_snp_measure_over_the_matrix,
        ),
        testing::Test::new(
            "whole_launches_without_a_seed_and_vmsa_bytes",
            peer(),
            whole_launches_without_a_seed_and_vmsa_bytes,
        ),
        testing::Test::new(
            "guest_features_without_snp_active_follow_the_kernel",
            peer(),
            guest_features_without_snp_active_follow_the_kernel,
        ),
        testing::Test::new(
            "svsm_launches_match_sev_snp_measure_but_for_the_kernels_fcw",
            peer(),
            svsm_launches_match_sev_snp_measure_but_for_the_kernels_fcw,
        ),
        gmem::kvm_test!(
            a_vmms_own_plan_plus_its_vcpus_is_the_launch_digest,
            fixture(amdsev)
        ),
    ])
}
