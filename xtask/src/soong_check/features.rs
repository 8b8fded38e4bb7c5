//! The Soong check's Cargo-feature part. Soong has no feature unification:
//! a workspace crate's one `rust_library*` module is built once, with the
//! `features` its `Android.bp` lists, for every module that uses it. So that
//! module must list every Cargo feature that any workspace dependent turns
//! on (`features = [...]` on its `[dependencies]` / `[target.*.dependencies]`
//! entry, and the crate's `default` feature unless the entry says
//! `default-features = false`), the features those imply (`[features]`,
//! `name/feature` on a workspace dependency included), and its `rustlibs`
//! must name every optional dependency they turn on (`dep:clap` → `libclap`,
//! a workspace crate → its library module, an external crate → its name in
//! `android/aosp-external-crates.txt`, else `lib<crate with _>`). The
//! features a module lists itself count too, and each must be a Cargo
//! feature of its crate.
//!
//! Conservative where Cargo is lazy: an optional dependency's `features`
//! count even when the dependent does not turn that dependency on.
//! `[dev-dependencies]` and `[build-dependencies]` are not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{visit, BpFile};
use crate::blueprint::{Module, Value};

/// A workspace crate's `Cargo.toml`, as far as the feature check needs it.
pub struct Manifest {
    /// Its directory (where its `Android.bp` is).
    pub dir: PathBuf,
    /// The package name (`vmstack-log`).
    pub package: String,
    /// The library's crate name (`[lib] name`, else the package name with `_`).
    pub lib: String,
    /// `[features]`.
    pub features: BTreeMap<String, Vec<String>>,
    /// `[dependencies]` and every `[target.*.dependencies]`.
    pub deps: Vec<Dep>,
}

/// One dependency entry of a [`Manifest`].
pub struct Dep {
    /// Its key: the name `dep:name` and `name/feature` use.
    pub key: String,
    /// The package it names (`package = "..."`, else the key).
    pub package: String,
    /// `optional = true`.
    pub optional: bool,
    /// `default-features` (true unless set to false here or in the workspace).
    pub default_features: bool,
    /// `features = [...]` (the workspace entry's too, for `workspace = true`).
    pub features: Vec<String>,
}

fn strings(v: &toml::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Reads the `Cargo.toml` of the crate in `dir`; `workspace` is the root's
/// `[workspace.dependencies]` (for `name.workspace = true` entries).
pub fn parse_manifest(dir: &Path, text: &str, workspace: &toml::Table) -> Result<Manifest, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| format!("{}: {e}", dir.display()))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{}: Cargo.toml has no package.name", dir.display()))?
        .to_string();
    let lib = doc
        .get("lib")
        .and_then(|l| l.get("name"))
        .and_then(toml::Value::as_str)
        .map_or_else(|| package.replace('-', "_"), str::to_string);
    let features = doc
        .get("features")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), strings(v)))
        .collect();
    let targets = doc.get("target").and_then(toml::Value::as_table);
    let tables = std::iter::once(doc.get("dependencies"))
        .chain(
            targets
                .into_iter()
                .flatten()
                .map(|(_, t)| t.get("dependencies")),
        )
        .flatten()
        .filter_map(toml::Value::as_table);
    let mut deps = Vec::new();
    for (key, spec) in tables.flatten() {
        let base = (spec.get("workspace").and_then(toml::Value::as_bool) == Some(true))
            .then(|| workspace.get(key))
            .flatten();
        let field = |name: &str| spec.get(name).or_else(|| base.and_then(|b| b.get(name)));
        deps.push(Dep {
            key: key.clone(),
            package: field("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key)
                .to_string(),
            optional: spec.get("optional").and_then(toml::Value::as_bool) == Some(true),
            default_features: field("default-features")
                .or_else(|| field("default_features"))
                .and_then(toml::Value::as_bool)
                != Some(false),
            features: [Some(spec), base]
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("features"))
                .flat_map(strings)
                .collect(),
        });
    }
    Ok(Manifest {
        dir: dir.to_path_buf(),
        package,
        lib,
        features,
        deps,
    })
}

/// The string items of every `key` property of `m`, nested ones (`target:`) included.
fn module_strings<'a>(m: &'a Module, keys: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    visit(&m.props, &mut |k, v| {
        if keys.contains(&k) {
            out.extend(v.strings().unwrap_or_default());
        }
    });
    out
}

/// Why a feature or dependency is on.
type Why = BTreeMap<String, String>;

/// A crate's features and optional dependencies that `seeds` turn on, with
/// the reason of each; features asked of other workspace crates (`x/f`) go
/// to `cross` as (package, feature, reason); features that are none go to
/// `unknown`.
struct Closure {
    features: Why,
    deps: Why,
    cross: Vec<(String, String, String)>,
    unknown: Why,
}

fn closure(c: &Manifest, seeds: &Why) -> Closure {
    let mut out = Closure {
        features: Why::new(),
        deps: Why::new(),
        cross: Vec::new(),
        unknown: Why::new(),
    };
    let mut weak = Vec::new();
    let mut work: Vec<(String, String)> =
        seeds.iter().map(|(f, w)| (f.clone(), w.clone())).collect();
    let dep_named = |key: &str| c.deps.iter().find(|d| d.key == key);
    while let Some((item, why)) = work.pop() {
        if let Some(key) = item.strip_prefix("dep:") {
            out.deps.entry(key.to_string()).or_insert(why);
        } else if let Some((key, feature)) = item.split_once('/') {
            if let Some(key) = key.strip_suffix('?') {
                weak.push((key.to_string(), feature.to_string(), why));
            } else if let Some(d) = dep_named(key) {
                if d.optional {
                    out.deps.entry(key.to_string()).or_insert(why.clone());
                }
                out.cross
                    .push((d.package.clone(), feature.to_string(), why));
            }
        } else if out.features.contains_key(&item) {
            continue;
        } else if let Some(implied) = c.features.get(&item) {
            let next = format!("feature {item:?} ({why}) implies it");
            work.extend(implied.iter().map(|i| (i.clone(), next.clone())));
            out.features.insert(item, why);
        } else if dep_named(&item).is_some_and(|d| d.optional) {
            out.deps.insert(
                item.clone(),
                format!("its implicit feature {item:?} ({why})"),
            );
            out.features.insert(item, why);
        } else {
            out.unknown.insert(item, why);
        }
    }
    for (key, feature, why) in weak {
        if let (true, Some(d)) = (out.deps.contains_key(&key), dep_named(&key)) {
            out.cross.push((d.package.clone(), feature, why));
        }
    }
    out
}

/// Problems with the Cargo features of the library modules in `files`
/// (empty: all good). `manifests`: the workspace crates Soong builds (their
/// dependents count, host tooling's do not); `external`: crate → AOSP module
/// (`android/aosp-external-crates.txt`).
pub fn check(
    manifests: &[Manifest],
    files: &[BpFile],
    external: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let by_package: BTreeMap<&str, &Manifest> =
        manifests.iter().map(|m| (m.package.as_str(), m)).collect();
    // Each crate's library modules (rust_library*, crate_name = its lib name).
    let libs: BTreeMap<&str, Vec<(&BpFile, &Module)>> = manifests
        .iter()
        .map(|c| {
            let modules = files
                .iter()
                .filter(|f| f.path.parent() == Some(c.dir.as_path()))
                .flat_map(|f| f.modules.iter().map(move |m| (f, m)))
                .filter(|(_, m)| {
                    m.kind.starts_with("rust_library")
                        && matches!(m.props.get("crate_name"), Some(Value::String(n)) if *n == c.lib)
                })
                .collect();
            (c.package.as_str(), modules)
        })
        .collect();

    // What each crate is asked for: by its dependents, and by its own modules.
    let mut asked: BTreeMap<&str, Why> = BTreeMap::new();
    for d in manifests {
        for dep in &d.deps {
            let Some(c) = by_package.get(dep.package.as_str()) else {
                continue;
            };
            let cargo = d.dir.join("Cargo.toml");
            let wants = asked.entry(c.package.as_str()).or_default();
            for f in &dep.features {
                wants
                    .entry(f.clone())
                    .or_insert_with(|| format!("{} enables it in {}", d.package, cargo.display()));
            }
            if dep.default_features && c.features.contains_key("default") {
                wants.entry("default".into()).or_insert_with(|| {
                    format!(
                        "{} takes the default features (no default-features = false in {})",
                        d.package,
                        cargo.display()
                    )
                });
            }
        }
    }
    for (package, modules) in &libs {
        for (_, m) in modules {
            for f in module_strings(m, &["features"]) {
                asked
                    .entry(package)
                    .or_default()
                    .entry(f.to_string())
                    .or_insert_with(|| format!("listed by {}", m.name().unwrap_or("?")));
            }
        }
    }
    // Features asked across crates (`x/f`) until nothing new comes.
    let closures = loop {
        let closures: BTreeMap<&str, Closure> = manifests
            .iter()
            .map(|c| {
                let seeds = asked.get(c.package.as_str()).cloned().unwrap_or_default();
                (c.package.as_str(), closure(c, &seeds))
            })
            .collect();
        let mut grew = false;
        for (package, feature, why) in closures.values().flat_map(|c| &c.cross) {
            if let Some(c) = by_package.get(package.as_str()) {
                let wants = asked.entry(c.package.as_str()).or_default();
                if !wants.contains_key(feature) {
                    wants.insert(feature.clone(), why.clone());
                    grew = true;
                }
            }
        }
        if !grew {
            break closures;
        }
    };

    let aosp_name = |package: &str| -> String {
        if let Some((_, m)) = libs.get(package).and_then(|ms| ms.first()) {
            return m.name().unwrap_or("?").to_string();
        }
        external
            .get(package)
            .cloned()
            .unwrap_or_else(|| format!("lib{}", package.replace('-', "_")))
    };
    for c in manifests {
        let Some(cl) = closures.get(c.package.as_str()) else {
            continue;
        };
        let cargo = c.dir.join("Cargo.toml");
        for (f, why) in &cl.unknown {
            problems.push(format!(
                "{}: {:?} is no feature of {} ({why})",
                cargo.display(),
                f,
                c.package
            ));
        }
        for (file, m) in libs.get(c.package.as_str()).into_iter().flatten() {
            let at = format!(
                "{}:{} ({})",
                file.path.display(),
                m.line,
                m.name().unwrap_or("?")
            );
            let listed = module_strings(m, &["features"]);
            for (f, why) in cl.features.iter().filter(|(f, _)| *f != "default") {
                if !listed.contains(&f.as_str()) {
                    problems.push(format!(
                        "{at}: features lacks {f:?}: {why} (Soong has no feature unification)"
                    ));
                }
            }
            let rustlibs = module_strings(m, &["rustlibs", "rlibs", "dylibs", "proc_macros"]);
            for (key, why) in &cl.deps {
                let Some(dep) = c.deps.iter().find(|d| d.key == *key) else {
                    problems.push(format!(
                        "{}: dep:{key} ({why}) is no dependency of {}",
                        cargo.display(),
                        c.package
                    ));
                    continue;
                };
                let want = aosp_name(&dep.package);
                if !rustlibs.contains(&want.as_str()) {
                    problems.push(format!(
                        "{at}: rustlibs lacks {want:?} (optional dependency {key}): {why}"
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint;

    const LOG: &str = r#"
[package]
name = "vmstack-log"
[features]
cli = ["dep:clap"]
[dependencies]
tracing.workspace = true
clap = { workspace = true, optional = true }
"#;
    const SYSMGR: &str = r#"
[package]
name = "sysmgr"
[dependencies]
vmstack-log = { path = "../log", features = ["cli"] }
"#;
    const TRUSTY: &str = r#"
[package]
name = "trusty"
[features]
default = ["service"]
service = ["dep:uuid", "extra", "log/cli"]
extra = []
[dependencies]
uuid = { version = "1", optional = true }
log = { package = "vmstack-log", path = "../log" }
"#;

    fn manifests(texts: &[(&str, &str)]) -> Vec<Manifest> {
        let ws: toml::Table =
            toml::from_str("clap = { version = \"4\", features = [\"derive\"] }").unwrap();
        texts
            .iter()
            .map(|(dir, text)| parse_manifest(Path::new(dir), text, &ws).unwrap())
            .collect()
    }

    fn bp(dir: &str, text: &str) -> BpFile {
        BpFile {
            path: Path::new(dir).join("Android.bp"),
            modules: blueprint::parse(text).unwrap(),
        }
    }

    fn run(texts: &[(&str, &str)], files: &[BpFile]) -> String {
        let external = BTreeMap::from([("clap".to_string(), "libclap".to_string())]);
        check(&manifests(texts), files, &external).join("\n")
    }

    #[test]
    fn manifests_read_inherited_and_target_dependencies() {
        let m = &manifests(&[(
            "log",
            &format!("{LOG}[target.'cfg(unix)'.dependencies]\nx = {{ version = \"1\", default-features = false }}\n"),
        )])[0];
        assert_eq!(
            (m.package.as_str(), m.lib.as_str()),
            ("vmstack-log", "vmstack_log")
        );
        let clap = m.deps.iter().find(|d| d.key == "clap").unwrap();
        assert!(clap.optional && clap.default_features);
        assert_eq!(clap.features, ["derive"]);
        let x = m.deps.iter().find(|d| d.key == "x").unwrap();
        assert!(!x.optional && !x.default_features);
    }

    #[test]
    fn a_feature_a_dependent_enables_must_be_on_the_module() {
        let texts = [("log", LOG), ("sysmgr", SYSMGR)];
        let without = bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log", rustlibs: ["libtracing"] }"#,
        );
        let problems = run(&texts, &[without]);
        assert!(
            problems.contains("log/Android.bp:1 (libvmstack_log): features lacks \"cli\": sysmgr enables it in sysmgr/Cargo.toml"),
            "{problems}"
        );
        assert!(
            problems.contains("rustlibs lacks \"libclap\" (optional dependency clap): feature \"cli\" (sysmgr enables it"),
            "{problems}"
        );

        let with_feature_only = bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log", features: ["cli"] }"#,
        );
        let problems = run(&texts, &[with_feature_only]);
        assert!(!problems.contains("features lacks"), "{problems}");
        assert!(
            problems.contains("rustlibs lacks \"libclap\""),
            "{problems}"
        );

        let good = bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log", features: ["cli"], target: { host: { rustlibs: ["libclap"] } } }"#,
        );
        assert_eq!(run(&texts, &[good]), "");
        // Without a dependent asking for it, nothing is needed.
        let bare = bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log" }"#,
        );
        assert_eq!(run(&[("log", LOG)], &[bare]), "");
    }

    #[test]
    fn default_features_implied_features_and_cross_crate_features_count() {
        let devices_default =
            "[package]\nname = \"devices\"\n[dependencies]\ntrusty = { path = \"../trusty\" }\n";
        let devices_plain = "[package]\nname = \"devices\"\n[dependencies]\ntrusty = { path = \"../trusty\", default-features = false }\n";
        let log_good = || {
            bp(
                "log",
                r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log", features: ["cli"], rustlibs: ["libclap"] }"#,
            )
        };
        let trusty_bare = || {
            bp(
                "trusty",
                r#"rust_library { name: "libvmstack_trusty", crate_name: "trusty" }"#,
            )
        };

        let problems = run(
            &[
                ("log", LOG),
                ("trusty", TRUSTY),
                ("devices", devices_default),
            ],
            &[log_good(), trusty_bare()],
        );
        for needle in [
            "(libvmstack_trusty): features lacks \"service\": feature \"default\" (devices takes the default features",
            "(libvmstack_trusty): features lacks \"extra\": feature \"service\"",
            "(libvmstack_trusty): rustlibs lacks \"libuuid\"",
        ] {
            assert!(problems.contains(needle), "missing {needle:?} in:\n{problems}");
        }
        // default-features = false: nothing asked of trusty.
        assert_eq!(
            run(
                &[("log", LOG), ("trusty", TRUSTY), ("devices", devices_plain)],
                &[log_good(), trusty_bare()]
            ),
            ""
        );

        // trusty's own `service` asks `cli` of vmstack-log (`log/cli`).
        let log_bare = bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log" }"#,
        );
        let trusty_good = bp(
            "trusty",
            r#"rust_library { name: "libvmstack_trusty", crate_name: "trusty", features: ["service", "extra"], rustlibs: ["libuuid", "libvmstack_log"] }"#,
        );
        let problems = run(
            &[("log", LOG), ("trusty", TRUSTY)],
            &[log_bare, trusty_good],
        );
        assert!(problems.contains("(libvmstack_log): features lacks \"cli\": feature \"service\" (listed by libvmstack_trusty) implies it"), "{problems}");
        assert_eq!(problems.lines().count(), 2, "{problems}");
    }

    #[test]
    fn a_module_feature_that_cargo_lacks_is_reported() {
        let typo = bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log", features: ["clii"] }"#,
        );
        let problems = run(&[("log", LOG)], &[typo]);
        assert_eq!(
            problems,
            "log/Cargo.toml: \"clii\" is no feature of vmstack-log (listed by libvmstack_log)"
        );
    }
}
