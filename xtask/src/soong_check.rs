//! The Soong check (a test): every `Android.bp` in the tree parses
//! ([`crate::blueprint`], and Debian's `bpfmt` from google/blueprint when
//! installed, which must find each file parseable and formatted); module
//! names are unique; every file reference (`srcs`, `src`, `protos`, ...)
//! exists beside its `Android.bp` or names a module (`:name`); every module
//! reference (`rustlibs`, `shared_libs`, `required`, `tools`, ...) is a
//! module of the tree, a backend of one of its `aidl_interface`s, or a crate
//! listed in `android/aosp-external-crates.txt`; every workspace crate but
//! those in [`NOT_IN_AOSP`] has an `Android.bp`; every init `.rc` service runs
//! a binary that a module builds; and ([`features`]) every workspace crate's
//! `rust_library*` module lists every Cargo feature its workspace dependents
//! (their dev-dependencies too) turn on (Soong has no feature unification),
//! with the optional dependencies those features turn on in its `rustlibs`,
//! and each `rust_binary*`/`rust_test*` module the `required-features` of
//! the `[[bin]]`/`[[test]]` it builds.

mod features;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::blueprint::{self, Module, Value};

/// Workspace members without an Android.bp: host-only tooling (QEMU test
/// hosts, Debian images, benchmarks) and the Linux test guests' adbd (an
/// Android guest has its own adbd).
pub const NOT_IN_AOSP: &[&str] = &["xtask", "tests", "tests/bootbench", "android/adbd"];

/// Properties that hold paths relative to the `Android.bp` (or `:module`).
const PATH_PROPS: &[&str] = &["srcs", "src", "protos", "init_rc", "exclude_srcs"];
/// Properties that hold module names.
const MODULE_PROPS: &[&str] = &[
    "rustlibs",
    "rlibs",
    "dylibs",
    "proc_macros",
    "static_libs",
    "shared_libs",
    "whole_static_libs",
    "libs",
    "required",
    "tools",
];

/// One parsed file.
pub struct BpFile {
    /// Its path.
    pub path: PathBuf,
    /// Its modules.
    pub modules: Vec<Module>,
}

/// Every `Android.bp` under `root` (not in `target/`, `.git/`, `fuzz/`).
pub fn find_bp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                if !matches!(name.to_str(), Some("target" | ".git" | "fuzz")) {
                    stack.push(p);
                }
            } else if name == "Android.bp" {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The (module, crate) lines of the external-crates file.
fn external_lines(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next()))
        })
}

/// The module names listed in the external-crates file.
pub fn external_modules(text: &str) -> BTreeSet<String> {
    external_lines(text).map(|(m, _)| m.to_string()).collect()
}

/// Crate → AOSP module name, from the external-crates file.
pub fn external_crates(text: &str) -> BTreeMap<String, String> {
    external_lines(text)
        .filter_map(|(m, c)| Some((c?.to_string(), m.to_string())))
        .collect()
}

/// Problems found in `files` (empty: all good).
pub fn check(files: &[BpFile], external: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut aidl_interfaces = Vec::new();
    for f in files {
        for m in &f.modules {
            let Some(name) = m.name() else {
                problems.push(format!(
                    "{}:{}: {} has no name",
                    f.path.display(),
                    m.line,
                    m.kind
                ));
                continue;
            };
            if let Some(first) = names.insert(name, &f.path) {
                problems.push(format!(
                    "{}:{}: module {name:?} already defined in {}",
                    f.path.display(),
                    m.line,
                    first.display()
                ));
            }
            if m.kind == "aidl_interface" {
                aidl_interfaces.push(name);
            }
        }
    }
    let known = |r: &str| {
        names.contains_key(r)
            || external.contains(r)
            || aidl_interfaces.iter().any(|i| {
                r.strip_prefix(i)
                    .and_then(|s| s.strip_prefix('-'))
                    .is_some_and(|rest| {
                        let backend = rest.split_once('-').map_or(rest, |(v, b)| {
                            if v.starts_with('V') {
                                b
                            } else {
                                rest
                            }
                        });
                        matches!(backend, "java" | "ndk" | "cpp" | "rust")
                    })
            })
    };
    for f in files {
        let dir = f.path.parent().unwrap_or(Path::new("."));
        for m in &f.modules {
            let at = format!(
                "{}:{} ({})",
                f.path.display(),
                m.line,
                m.name().unwrap_or("?")
            );
            visit(&m.props, &mut |key, value| {
                let Some(items) = value.strings().or_else(|| match value {
                    Value::String(s) => Some(vec![s.as_str()]),
                    _ => None,
                }) else {
                    return;
                };
                if PATH_PROPS.contains(&key) {
                    for item in items {
                        if let Some(module) = item.strip_prefix(':') {
                            if !names.contains_key(module) {
                                problems.push(format!("{at}: {key} names unknown module {item:?}"));
                            }
                        } else if item.contains('*') {
                            problems.push(format!("{at}: {key} {item:?}: list files, not globs"));
                        } else if !dir.join(item).exists() {
                            problems.push(format!("{at}: {key} {item:?} does not exist"));
                        }
                    }
                } else if MODULE_PROPS.contains(&key) {
                    for item in items {
                        if !known(item) {
                            problems.push(format!(
                                "{at}: {key} {item:?} is neither a module here nor listed in android/aosp-external-crates.txt"
                            ));
                        }
                    }
                } else if key == "local_include_dir" {
                    for item in items {
                        if !dir.join(item).is_dir() {
                            problems.push(format!("{at}: {key} {item:?} is not a directory"));
                        }
                    }
                }
            });
        }
    }
    problems
}

/// Calls `f(key, value)` for every property, nested maps included.
fn visit<'a>(v: &'a Value, f: &mut impl FnMut(&'a str, &'a Value)) {
    if let Value::Map(props) = v {
        for (k, v) in props {
            f(k, v);
            visit(v, f);
        }
    }
}

/// The binaries the init `.rc` services run (basename of each `service` path).
pub fn rc_service_binaries(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("service")).then(|| w.nth(1))?
        })
        .filter_map(|p| Path::new(p).file_name()?.to_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn parse_tree() -> Vec<BpFile> {
        find_bp_files(&root())
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let modules =
                    blueprint::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                BpFile { path, modules }
            })
            .collect()
    }

    #[test]
    fn every_android_bp_parses_and_its_references_exist() {
        let files = parse_tree();
        assert!(
            files.len() >= 10,
            "found only {} Android.bp files",
            files.len()
        );
        let external = external_modules(
            &std::fs::read_to_string(root().join("android/aosp-external-crates.txt")).unwrap(),
        );
        let problems = check(&files, &external);
        assert!(problems.is_empty(), "{}", problems.join("\n"));

        // Every workspace crate but the host tooling has an Android.bp.
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
        for member in manifest["workspace"]["members"].as_array().unwrap() {
            let member = member.as_str().unwrap();
            if !NOT_IN_AOSP.contains(&member) {
                assert!(
                    root().join(member).join("Android.bp").is_file(),
                    "{member} has no Android.bp (or add it to NOT_IN_AOSP with a reason)"
                );
            }
        }

        // Init services run binaries built here (by name or stem).
        let built: BTreeSet<&str> = files
            .iter()
            .flat_map(|f| &f.modules)
            .filter(|m| m.kind.ends_with("_binary"))
            .flat_map(|m| {
                let stem = match m.props.get("stem") {
                    Some(Value::String(s)) => Some(s.as_str()),
                    _ => None,
                };
                m.name().into_iter().chain(stem)
            })
            .collect();
        let rc = std::fs::read_to_string(root().join("android/init/sysmgr-binderd.rc")).unwrap();
        let services = rc_service_binaries(&rc);
        assert_eq!(services, ["sysmgr-binderd"]);
        for s in &services {
            assert!(
                built.contains(s.as_str()),
                "init runs {s}, which no module builds"
            );
        }
    }

    #[test]
    fn every_cargo_feature_a_dependent_needs_is_on_the_module() {
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
        let workspace_deps = manifest["workspace"]["dependencies"].as_table().unwrap();
        let manifests: Vec<_> = manifest["workspace"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.as_str())
            .filter(|m| !NOT_IN_AOSP.contains(m))
            .map(|m| {
                let dir = root().join(m);
                let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
                features::parse_manifest(&dir, &text, workspace_deps).unwrap()
            })
            .collect();
        assert!(
            manifests.iter().any(|m| m.package == "vmstack-log"),
            "no vmstack-log among the members"
        );
        let external = external_crates(
            &std::fs::read_to_string(root().join("android/aosp-external-crates.txt")).unwrap(),
        );
        assert_eq!(external.get("log").map(String::as_str), Some("liblog_rust"));
        let problems = features::check(&manifests, &parse_tree(), &external);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn debian_bpfmt_agrees() {
        let files = find_bp_files(&root());
        let Ok(out) = Command::new("bpfmt").arg("-l").args(&files).output() else {
            eprintln!("SKIPPED: bpfmt not installed (apt-get install blueprint-tools; cargo xtask test does)");
            return;
        };
        assert!(
            out.status.success(),
            "bpfmt cannot parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let unformatted = String::from_utf8_lossy(&out.stdout);
        assert!(
            unformatted.trim().is_empty(),
            "not in bpfmt's format (run bpfmt -w): {unformatted}"
        );
    }

    #[test]
    fn the_check_catches_what_it_should() {
        let dir = std::env::temp_dir().join(format!("soong-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.rs"), "").unwrap();
        let text = r#"
rust_library { name: "liba", srcs: ["a.rs"], rustlibs: ["libanyhow", "libnope"] }
rust_library { name: "liba", srcs: ["missing.rs", ":gen"], target: { android: { rustlibs: ["libb"] } } }
aidl_interface { name: "x.y", srcs: ["a.rs"] }
rust_binary { name: "c", srcs: ["a.rs"], rustlibs: ["x.y-V1-rust", "x.y-V1-go"] }
"#;
        let files = [BpFile {
            path: dir.join("Android.bp"),
            modules: blueprint::parse(text).unwrap(),
        }];
        let external = external_modules("# c\nlibanyhow anyhow external\n");
        let problems = check(&files, &external).join("\n");
        for needle in [
            "\"libnope\" is neither",
            "module \"liba\" already defined",
            "\"missing.rs\" does not exist",
            "unknown module \":gen\"",
            "\"libb\" is neither",
            "\"x.y-V1-go\" is neither",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle:?} in:\n{problems}"
            );
        }
        assert!(!problems.contains("x.y-V1-rust"), "{problems}");
        assert!(!problems.contains("libanyhow"), "{problems}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
