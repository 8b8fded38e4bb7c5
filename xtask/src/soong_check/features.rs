//! The Soong check's Cargo-feature part. Soong has no feature unification:
//! a workspace crate's one `rust_library*` module is built once, with the
//! `features` its `Android.bp` lists, for every module that uses it. So that
//! module must list every Cargo feature that any workspace dependent turns
//! on (`features = [...]` on its `[dependencies]` / `[target.*.dependencies]`
//! entry, and on its `[dev-dependencies]` / `[target.*.dev-dependencies]`
//! entry too: a test links that same one library variant, in AOSP as with
//! Cargo, though the tree has no `rust_test` module yet; and the crate's
//! `default` feature unless the entry says `default-features = false`),
//! the features those imply (`[features]`,
//! `name/feature` on a workspace dependency included), and its `rustlibs`
//! must name every optional dependency they turn on (`dep:clap` → `libclap`,
//! a workspace crate → its library module, an external crate → its name in
//! `android/aosp-external-crates.txt`, else `lib<crate with _>`). The
//! features a module lists itself count too, and each must be a Cargo
//! feature of its crate.
//!
//! Binaries and tests (`rust_binary*`, `rust_test*` modules): Soong compiles
//! a module's own crate root with that module's `features` only (`--cfg
//! feature="..."`); a library it links keeps its library module's features.
//! Such a module builds the crate's `[[bin]]` (`[[test]]`) whose `path`
//! (else Cargo's default paths: `src/bin/<name>.rs`, `src/bin/<name>/main.rs`,
//! `src/main.rs` for the package's name; `tests/<name>.rs`,
//! `tests/<name>/main.rs`) is the module's crate root, the first of its
//! `srcs`. Matched by path, not by name: the modules' `name`, `stem` and
//! `crate_name` follow no rule (`vmstack_vmm`, stem `vmm`, crate `vmm_bin`
//! builds `[[bin]] vmm`); a `rust_binary*` whose `name` or `stem` is that of
//! a `[[bin]]` with `required-features` but whose crate root is not its path
//! is reported (its features could not be checked). The target's
//! `required-features` and the module's own `features` resolve as a
//! library's do: the module must list them and what they imply, its
//! `rustlibs` must name the optional dependencies they turn on, and what
//! they ask of other workspace crates (`x/f`) counts for those crates'
//! library modules. A module that links its own crate's library module (in
//! its `rustlibs`) needs that library module built with them too: Cargo
//! builds a package's bins and tests against its library with one feature
//! set, so their code expects the library's feature-gated items.
//!
//! Conservative where Cargo is lazy: an optional dependency's `features`
//! count even when the dependent does not turn that dependency on.
//! `[build-dependencies]` are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

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
    /// `[dev-dependencies]` and every `[target.*.dev-dependencies]`.
    pub dev_deps: Vec<Dep>,
    /// The `[[bin]]` and `[[test]]` entries.
    pub targets: Vec<Target>,
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

/// One `[[bin]]` or `[[test]]` entry of a [`Manifest`].
pub struct Target {
    /// `"bin"` or `"test"`.
    pub kind: &'static str,
    /// `name`.
    pub name: String,
    /// Its crate root: `path`, else each of Cargo's default paths.
    pub paths: Vec<PathBuf>,
    /// `required-features`.
    pub required_features: Vec<String>,
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
    Ok(Manifest {
        dir: dir.to_path_buf(),
        lib,
        features,
        deps: parse_deps(&doc, "dependencies", workspace),
        dev_deps: parse_deps(&doc, "dev-dependencies", workspace),
        targets: parse_targets(&doc, &package),
        package,
    })
}

/// `p` without `.` components (`./src/main.rs` is `src/main.rs`).
fn normal(p: &str) -> PathBuf {
    Path::new(p)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// The entries of `[section]` and every `[target.*.section]` of `doc`.
fn parse_deps(doc: &toml::Table, section: &str, workspace: &toml::Table) -> Vec<Dep> {
    let targets = doc.get("target").and_then(toml::Value::as_table);
    let tables = std::iter::once(doc.get(section))
        .chain(targets.into_iter().flatten().map(|(_, t)| t.get(section)))
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
    deps
}

/// The `[[bin]]` and `[[test]]` entries of `doc` (package `package`).
fn parse_targets(doc: &toml::Table, package: &str) -> Vec<Target> {
    let mut out = Vec::new();
    for kind in ["bin", "test"] {
        let entries = doc.get(kind).and_then(toml::Value::as_array);
        for t in entries.into_iter().flatten() {
            let Some(name) = t.get("name").and_then(toml::Value::as_str) else {
                continue;
            };
            let paths = match t.get("path").and_then(toml::Value::as_str) {
                Some(p) => vec![normal(p)],
                None => {
                    let dir = if kind == "bin" { "src/bin" } else { "tests" };
                    let mut paths = vec![
                        normal(&format!("{dir}/{name}.rs")),
                        normal(&format!("{dir}/{name}/main.rs")),
                    ];
                    if kind == "bin" && name == package {
                        paths.push(normal("src/main.rs"));
                    }
                    paths
                }
            };
            out.push(Target {
                kind,
                name: name.to_string(),
                paths,
                required_features: t.get("required-features").map(strings).unwrap_or_default(),
            });
        }
    }
    out
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

/// The properties that name the crates a module links.
const LINKS: &[&str] = &["rustlibs", "rlibs", "dylibs", "proc_macros"];

/// The modules of the `Android.bp` in `dir`, with their file.
fn modules_in<'a>(
    files: &'a [BpFile],
    dir: &'a Path,
) -> impl Iterator<Item = (&'a BpFile, &'a Module)> {
    files
        .iter()
        .filter(move |f| f.path.parent() == Some(dir))
        .flat_map(|f| f.modules.iter().map(move |m| (f, m)))
}

/// A module's crate root: the first of its `srcs`.
fn crate_root(m: &Module) -> Option<PathBuf> {
    m.props.get("srcs")?.strings()?.first().map(|s| normal(s))
}

/// `file:line (name)` of a module, for problems.
fn module_at(file: &BpFile, m: &Module) -> String {
    format!(
        "{}:{} ({})",
        file.path.display(),
        m.line,
        m.name().unwrap_or("?")
    )
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

/// Adds the features `cross` asks of workspace crates to `asked`; true if
/// any was new.
fn ask_cross<'a>(
    asked: &mut BTreeMap<&'a str, Why>,
    by_package: &BTreeMap<&str, &'a Manifest>,
    cross: &[(String, String, String)],
) -> bool {
    let mut grew = false;
    for (package, feature, why) in cross {
        if let Some(c) = by_package.get(package.as_str()) {
            let wants = asked.entry(c.package.as_str()).or_default();
            if !wants.contains_key(feature) {
                wants.insert(feature.clone(), why.clone());
                grew = true;
            }
        }
    }
    grew
}

/// Problems of module `m` of crate `c` against the closure `cl` of what it
/// must be built with: features it does not list, optional dependencies its
/// `rustlibs` lacks; `aosp_name`: a crate's module name.
fn check_module(
    c: &Manifest,
    cl: &Closure,
    file: &BpFile,
    m: &Module,
    aosp_name: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let mut problems = Vec::new();
    let cargo = c.dir.join("Cargo.toml");
    let at = module_at(file, m);
    let listed = module_strings(m, &["features"]);
    for (f, why) in cl.features.iter().filter(|(f, _)| *f != "default") {
        if !listed.contains(&f.as_str()) {
            problems.push(format!(
                "{at}: features lacks {f:?}: {why} (Soong has no feature unification)"
            ));
        }
    }
    let rustlibs = module_strings(m, LINKS);
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
    problems
}

/// The features of `cl` that are none of crate `c`.
fn unknown_features(c: &Manifest, cl: &Closure) -> Vec<String> {
    cl.unknown
        .iter()
        .map(|(f, why)| {
            format!(
                "{}: {f:?} is no feature of {} ({why})",
                c.dir.join("Cargo.toml").display(),
                c.package
            )
        })
        .collect()
}

/// A `rust_binary*` / `rust_test*` module of a workspace crate, with the
/// closure of the features it is built with and whether it links its
/// crate's library module.
struct Exec<'a> {
    c: &'a Manifest,
    file: &'a BpFile,
    m: &'a Module,
    closure: Closure,
    links_lib: bool,
}

/// Problems with the Cargo features of the library, binary and test modules
/// in `files` (empty: all good). `manifests`: the workspace crates Soong
/// builds (their dependents count, host tooling's do not); `external`: crate
/// → AOSP module (`android/aosp-external-crates.txt`).
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
            let modules = modules_in(files, &c.dir)
                .filter(|(_, m)| {
                    m.kind.starts_with("rust_library")
                        && matches!(m.props.get("crate_name"), Some(Value::String(n)) if *n == c.lib)
                })
                .collect();
            (c.package.as_str(), modules)
        })
        .collect();

    // What each crate is asked for: by its dependents (tests' too), and by
    // its own modules.
    let mut asked: BTreeMap<&str, Why> = BTreeMap::new();
    for d in manifests {
        let cargo = d.dir.join("Cargo.toml");
        let all = d.deps.iter().map(|dep| (dep, ""));
        for (dep, section) in all.chain(d.dev_deps.iter().map(|dep| (dep, " [dev-dependencies]"))) {
            let Some(c) = by_package.get(dep.package.as_str()) else {
                continue;
            };
            let wants = asked.entry(c.package.as_str()).or_default();
            for f in &dep.features {
                wants.entry(f.clone()).or_insert_with(|| {
                    format!("{} enables it in{section} {}", d.package, cargo.display())
                });
            }
            if dep.default_features && c.features.contains_key("default") {
                wants.entry("default".into()).or_insert_with(|| {
                    format!(
                        "{} takes the default features (no default-features = false in{section} {})",
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
    // Binaries and tests: their [[bin]]/[[test]]'s required-features and
    // their own features; their crate's library module's too if they link it.
    let mut execs = Vec::new();
    for c in manifests {
        let cargo = c.dir.join("Cargo.toml");
        let lib_modules: Vec<&str> = libs
            .get(c.package.as_str())
            .into_iter()
            .flatten()
            .filter_map(|(_, m)| m.name())
            .collect();
        for (file, m) in modules_in(files, &c.dir) {
            let kind = if m.kind.starts_with("rust_binary") {
                "bin"
            } else if m.kind.starts_with("rust_test") {
                "test"
            } else {
                continue;
            };
            let name = m.name().unwrap_or("?");
            let root = crate_root(m);
            let mut seeds = Why::new();
            for t in c
                .targets
                .iter()
                .filter(|t| t.kind == kind && root.as_ref().is_some_and(|r| t.paths.contains(r)))
            {
                for f in &t.required_features {
                    seeds.entry(f.clone()).or_insert_with(|| {
                        format!(
                            "[[{kind}]] {} requires it in {}, {name} builds it",
                            t.name,
                            cargo.display()
                        )
                    });
                }
            }
            for f in module_strings(m, &["features"]) {
                seeds
                    .entry(f.to_string())
                    .or_insert_with(|| format!("listed by {name}"));
            }
            let links_lib = module_strings(m, LINKS)
                .iter()
                .any(|l| lib_modules.contains(l));
            if links_lib {
                let wants = asked.entry(c.package.as_str()).or_default();
                for (f, why) in &seeds {
                    wants
                        .entry(f.clone())
                        .or_insert_with(|| format!("{name} links it and is built with it: {why}"));
                }
            }
            let closure = closure(c, &seeds);
            ask_cross(&mut asked, &by_package, &closure.cross);
            execs.push(Exec {
                c,
                file,
                m,
                closure,
                links_lib,
            });
        }
        // A binary named like a [[bin]] with required-features but built
        // from another crate root escapes the rule above.
        for t in c
            .targets
            .iter()
            .filter(|t| t.kind == "bin" && !t.required_features.is_empty())
        {
            for (file, m) in modules_in(files, &c.dir) {
                let stem = match m.props.get("stem") {
                    Some(Value::String(s)) => Some(s.as_str()),
                    _ => None,
                };
                let root = crate_root(m);
                if m.kind.starts_with("rust_binary")
                    && [m.name(), stem].contains(&Some(t.name.as_str()))
                    && !root.as_ref().is_some_and(|r| t.paths.contains(r))
                {
                    problems.push(format!(
                        "{}: named like [[bin]] {} of {} (required-features {:?}), but its crate root {:?} is not that bin's ({:?}); build it from the bin's path or rename it",
                        module_at(file, m),
                        t.name,
                        cargo.display(),
                        t.required_features,
                        root.unwrap_or_default(),
                        t.paths
                    ));
                }
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
        let cross: Vec<_> = closures.values().flat_map(|c| c.cross.clone()).collect();
        if !ask_cross(&mut asked, &by_package, &cross) {
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
        problems.extend(unknown_features(c, cl));
        for (file, m) in libs.get(c.package.as_str()).into_iter().flatten() {
            problems.extend(check_module(c, cl, file, m, &aosp_name));
        }
    }
    for e in &execs {
        // A linked library's closure has reported these already.
        if !e.links_lib {
            problems.extend(unknown_features(e.c, &e.closure));
        }
        problems.extend(check_module(e.c, &e.closure, e.file, e.m, &aosp_name));
    }
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    problems
}

#[cfg(test)]
mod tests;
