//! `checksum` against the README's definition evaluated by `python3` (arbitrary-precision
//! integers) on random inputs. Without `python3` the test is reported ignored with a
//! `SKIPPED [tool:python3]` line (gmem::testing's harness); CI fails where python3 runs.

use gmem::testing::{self, Need};
use guest_check::checksum;

fn to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Runs the definition in `python3` over `cases` (gpa, words); `None` if python3 is unusable.
fn python(cases: &[(u64, Vec<u64>)]) -> Option<Vec<u64>> {
    let mut script = String::from(
        "M = (1 << 64) - 1\n\
         def mix(x):\n\
         \x20   x ^= x >> 33; x = (x * 0xff51afd7ed558ccd) & M\n\
         \x20   x ^= x >> 33; x = (x * 0xc4ceb9fe1a85ec53) & M\n\
         \x20   return x ^ (x >> 33)\n\
         def cs(gpa, ws):\n\
         \x20   return sum(mix(w ^ (((gpa + 8 * i) & M) * 0x9e3779b97f4a7c15 & M)) for i, w in enumerate(ws)) & M\n",
    );
    for (gpa, words) in cases {
        let list: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        script.push_str(&format!("print(cs({gpa}, [{}]))\n", list.join(",")));
    }
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().ok())
        .collect()
}

fn python_agrees_on_random_ranges() {
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let cases: Vec<(u64, Vec<u64>)> = (0..40)
        .map(|k| {
            let gpa = if k % 4 == 0 {
                next()
            } else {
                next() & 0xff_ffff_fff8
            };
            let n = (next() % 70) as usize;
            (gpa, (0..n).map(|_| next()).collect())
        })
        .collect();
    let want = python(&cases).expect("python3 evaluates the definition");
    assert_eq!(want.len(), cases.len());
    for ((gpa, words), want) in cases.iter().zip(want) {
        assert_eq!(
            checksum(*gpa, &to_bytes(words)).unwrap(),
            want,
            "gpa {gpa:#x}"
        );
    }
}

/// Why `python3 --version` does not run, if it does not.
fn python3() -> Result<(), String> {
    match std::process::Command::new("python3")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("python3 --version: {}", o.status)),
        Err(e) => Err(format!("python3: {e}")),
    }
}

fn main() -> std::process::ExitCode {
    testing::run(vec![gmem::kvm_test!(
        python_agrees_on_random_ranges,
        Need::Tool {
            id: "tool:python3",
            from: "Python 3: apt-get install python3",
            check: python3,
        }
    )])
}
