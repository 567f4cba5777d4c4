//! The root README against the program and the crate READMEs: its `ccpop` synopsis names
//! exactly the flags each subcommand's `--help` lists, and its benchmark table copies each
//! crate README's figures of record word for word.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `--flag` in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("--") {
        let at = from + found;
        let name: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let starts_a_word = !text[..at].ends_with(|c: char| c.is_ascii_alphanumeric());
        if starts_a_word && name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            out.insert(format!("--{name}"));
        }
        from = at + 2 + name.len();
    }
    out
}

/// The README's `ccpop` synopsis: the flags of each subcommand (`demo`, `plan`, `measure snp`,
/// ...), over all its lines (a line starting `ccpop` opens an entry, indented ones continue
/// it; a `#` comment is not part of it).
fn synopsis(readme: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = &readme[readme.find("## `ccpop`").expect("a ## `ccpop` section")..];
    let block = &section[section.find("```sh\n").expect("a sh block") + 6..];
    let block = &block[..block.find("```").expect("the block's end")];
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in block.lines() {
        let line = line.split('#').next().unwrap();
        if let Some(cmd) = line.strip_prefix("ccpop ") {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let key = if words[0] == "measure" || words[0] == "check" {
                format!("{} {}", words[0], words[1])
            } else {
                words[0].to_string()
            };
            current = Some(key);
        } else {
            assert!(
                line.starts_with(' ') || line.trim().is_empty(),
                "synopsis line is neither a command nor a continuation: {line:?}"
            );
        }
        let key = current.clone().expect("the block starts with a command");
        out.entry(key).or_default().extend(flags(line));
    }
    out
}

/// The flags `ccpop <sub> --help` lists (aliases included, `--help` left out).
fn help_flags(sub: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ccpop"))
        .args(sub.split(' '))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "ccpop {sub} --help");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut got = BTreeSet::new();
    for line in text.lines() {
        // An option line: `  -h, --help` or `      --name <V>`; descriptions are indented
        // further.
        let opt = line
            .strip_prefix("      --")
            .map(|r| format!("--{r}"))
            .or_else(|| {
                line.strip_prefix("  -")
                    .filter(|r| r.get(1..4) == Some(", -"))
                    .map(|r| r[3..].to_string())
            });
        if let Some(opt) = opt {
            got.extend(flags(opt.split_whitespace().next().unwrap()));
        }
        // Aliases: on the option line in short help, on a line of their own in long help.
        for tag in ["[alias: ", "[aliases: "] {
            if let Some(at) = line.find(tag) {
                let end = line[at..].find(']').unwrap();
                got.extend(flags(&line[at..at + end]));
            }
        }
    }
    got.remove("--help");
    got
}

#[test]
fn readme_synopsis_and_help_name_the_same_flags() {
    let readme = read("README.md");
    let syn = synopsis(&readme);
    let subs = [
        "demo",
        "plan",
        "measure snp",
        "measure tdx",
        "measure cca",
        "diff",
        "check snp",
        "check tdx",
        "check cca",
        "id-block",
    ];
    assert_eq!(
        syn.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut s = subs.to_vec();
            s.sort();
            s
        },
        "the synopsis covers every subcommand"
    );
    // ... and every subcommand `ccpop --help` and `ccpop measure --help` list is in `subs`.
    let listed = |args: &[&str]| -> Vec<String> {
        let out = Command::new(env!("CARGO_BIN_EXE_ccpop"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let commands = &text[text.find("Commands:\n").expect("a Commands: list") + 10..];
        commands
            .lines()
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(|c| format!("{} {c}", args.join(" ")).trim().to_string())
            .collect()
    };
    let mut all: Vec<String> = listed(&[])
        .into_iter()
        .filter(|c| c != "measure" && c != "check")
        .chain(listed(&["measure"]))
        .chain(listed(&["check"]))
        .collect();
    all.sort();
    let mut want: Vec<String> = subs.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(all, want, "the subcommands ccpop lists");
    let mut wrong = Vec::new();
    for sub in subs {
        let help = help_flags(sub);
        // `diff` takes two files and no flags.
        assert_eq!(
            help.is_empty(),
            sub == "diff",
            "ccpop {sub} --help: {help:?}"
        );
        let documented = &syn[sub];
        let undocumented: Vec<_> = help.difference(documented).collect();
        let unknown: Vec<_> = documented.difference(&help).collect();
        if !undocumented.is_empty() {
            wrong.push(format!(
                "ccpop {sub}: --help has {undocumented:?}, the README synopsis does not"
            ));
        }
        if !unknown.is_empty() {
            wrong.push(format!(
                "ccpop {sub}: the README synopsis has {unknown:?}, --help does not"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `--igvm-policy`'s choices: in the README's synopsis (`--igvm-policy a|b|c`, on every line it
/// stands) and in each `--help` that lists it, where each choice is defined as `` `name`: ``.
#[test]
fn readme_synopsis_and_help_name_the_same_igvm_policies() {
    let readme = read("README.md");
    let section = &readme[readme.find("## `ccpop`").unwrap()..];
    let mut in_synopsis = BTreeSet::new();
    for at in section.match_indices("[--igvm-policy ").map(|(i, _)| i) {
        let rest = &section[at + "[--igvm-policy ".len()..];
        let choices = &rest[..rest.find(']').unwrap()];
        let set: BTreeSet<String> = choices.split('|').map(str::to_string).collect();
        if !in_synopsis.is_empty() {
            assert_eq!(set, in_synopsis, "the synopsis lines differ");
        }
        in_synopsis = set;
    }
    assert!(in_synopsis.contains("cloud-hypervisor"), "{in_synopsis:?}");
    for sub in ["plan", "measure snp", "measure tdx"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ccpop"))
            .args(sub.split(' '))
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // The option's line and its description (on the lines after it in long help), up to
        // the next option.
        let mut lines = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--igvm-policy"));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("ccpop {sub} --help lists no --igvm-policy"));
        let rest: Vec<&str> = lines
            .take_while(|l| !l.trim_start().starts_with('-'))
            .collect();
        let described = format!("{first} {}", rest.join(" "));
        let defined: BTreeSet<String> = described
            .split('`')
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[1].starts_with(':'))
            .map(|w| w[0].to_string())
            .collect();
        assert_eq!(defined, in_synopsis, "ccpop {sub} --help");
    }
}

#[test]
fn flag_parsing_of_the_check_itself() {
    assert_eq!(
        flags("[--dump-vmsa [DIR]] --firmware|--ovmf X -- --2 a--b"),
        ["--dump-vmsa", "--firmware", "--ovmf", "--2"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let s =
        synopsis("## `ccpop`\n\n```sh\nccpop plan --a\n    --b # --c\nccpop measure x --d\n```\n");
    assert_eq!(s.len(), 2);
    assert_eq!(s["plan"], flags("--a --b"));
    assert_eq!(s["measure x"], flags("--d"));
}

/// The rows of the markdown table whose header line is `header`: the cells of each.
fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
    let Some(at) = text.find(header) else {
        return Vec::new();
    };
    text[at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn readme_benchmark_figures_are_the_crate_readmes_figures_of_record() {
    let top = read("README.md");
    let bench = &top[top.find("## Benchmarks").expect("a Benchmarks section")..];
    let top_rows = table_rows(
        bench,
        "| crate | what is measured | reference | result (target) | limit | reproduce |",
    );
    assert!(top_rows.len() >= 8, "{top_rows:?}");
    let mut records = Vec::new();
    for crate_dir in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap() {
        let p = crate_dir.unwrap().path().join("README.md");
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for r in table_rows(&text, "| crate | what is measured | result (target) |") {
            assert_eq!(r.len(), 3, "{}: {r:?}", p.display());
            records.push((p.display().to_string(), r));
        }
    }
    let recorded: BTreeSet<&str> = records.iter().map(|(_, r)| r[0].as_str()).collect();
    for needed in ["sev-backend", "tdx-backend", "cca-backend", "ccpop"] {
        assert!(
            recorded.contains(needed),
            "no figure of record for {needed}"
        );
    }
    for (file, r) in &records {
        let top_row = top_rows
            .iter()
            .find(|t| t[0] == r[0] && t[1] == r[1])
            .unwrap_or_else(|| panic!("{file}: the root README has no row {} | {}", r[0], r[1]));
        assert_eq!(top_row[3], r[2], "{file}: {} {}", r[0], r[1]);
    }
    // Every root README row of a recorded crate is one of its records.
    for t in &top_rows {
        if recorded.contains(t[0].as_str()) {
            assert!(
                records.iter().any(|(_, r)| r[0] == t[0] && r[1] == t[1]),
                "the root README's row {} | {} is no crate README's figure of record",
                t[0],
                t[1]
            );
        }
    }
}
