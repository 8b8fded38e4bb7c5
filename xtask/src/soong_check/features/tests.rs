//! Tests of the Soong check's Cargo-feature rules: synthetic manifests and
//! `Android.bp` files, and the real tree.

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

/// Fails unless every needle is in `problems`.
fn assert_has(problems: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            problems.contains(needle),
            "missing {needle:?} in:\n{problems}"
        );
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
    assert_has(
    &problems,
    &[
        "(libvmstack_trusty): features lacks \"service\": feature \"default\" (devices takes the default features",
        "(libvmstack_trusty): features lacks \"extra\": feature \"service\"",
        "(libvmstack_trusty): rustlibs lacks \"libuuid\"",
    ],
);
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

/// TRUSTY with the daemon bin and its integration test, as in trusty/Cargo.toml.
fn trusty_with_targets() -> String {
    format!(
        "{TRUSTY}[[bin]]\nname = \"trustyd\"\npath = \"src/bin/trustyd/main.rs\"\nrequired-features = [\"service\"]\n\
         [[test]]\nname = \"daemon\"\nrequired-features = [\"service\"]\n"
    )
}

fn log_good() -> BpFile {
    bp(
        "log",
        r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log", features: ["cli"], rustlibs: ["libclap"] }"#,
    )
}

#[test]
fn manifests_read_bins_tests_and_dev_dependencies() {
    let text = format!(
        "{}[[bin]]\nname = \"trusty\"\n[dev-dependencies]\nlog = {{ package = \"vmstack-log\", path = \"../log\", features = [\"cli\"] }}\n\
         [target.'cfg(unix)'.dev-dependencies]\ntempfile = \"3\"\n",
        trusty_with_targets()
    );
    let m = &manifests(&[("trusty", &text)])[0];
    let targets: Vec<_> = m
        .targets
        .iter()
        .map(|t| {
            (
                t.kind,
                t.name.as_str(),
                t.paths.clone(),
                t.required_features.clone(),
            )
        })
        .collect();
    let p = |s: &str| PathBuf::from(s);
    assert_eq!(
        targets,
        [
            (
                "bin",
                "trustyd",
                vec![p("src/bin/trustyd/main.rs")],
                vec!["service".to_string()]
            ),
            (
                "bin",
                "trusty",
                vec![
                    p("src/bin/trusty.rs"),
                    p("src/bin/trusty/main.rs"),
                    p("src/main.rs")
                ],
                vec![]
            ),
            (
                "test",
                "daemon",
                vec![p("tests/daemon.rs"), p("tests/daemon/main.rs")],
                vec!["service".to_string()]
            ),
        ]
    );
    let dev: Vec<_> = m
        .dev_deps
        .iter()
        .map(|d| (d.key.as_str(), d.package.as_str(), d.features.clone()))
        .collect();
    assert_eq!(
        dev,
        [
            ("log", "vmstack-log", vec!["cli".to_string()]),
            ("tempfile", "tempfile", vec![]),
        ]
    );
    // Dev-dependencies are not normal ones.
    assert!(m.deps.iter().all(|d| d.key != "tempfile"));
}

#[test]
fn a_binary_module_needs_its_bins_required_features_and_their_dependencies() {
    let trusty = trusty_with_targets();
    let texts = [("log", LOG), ("trusty", trusty.as_str())];
    let binary = |name: &str, props: &str| {
        bp(
            "trusty",
            &format!(
                r#"rust_library {{ name: "libvmstack_trusty", crate_name: "trusty" }}
rust_binary {{ name: "{name}", {props} }}"#
            ),
        )
    };
    let log_bare = || {
        bp(
            "log",
            r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log" }"#,
        )
    };
    let problems = run(
        &texts,
        &[
            log_bare(),
            binary("trustyd", r#"srcs: ["src/bin/trustyd/main.rs"]"#),
        ],
    );
    assert_has(
    &problems,
    &[
        "trusty/Android.bp:2 (trustyd): features lacks \"service\": [[bin]] trustyd requires it in trusty/Cargo.toml, trustyd builds it",
        "trusty/Android.bp:2 (trustyd): features lacks \"extra\": feature \"service\"",
        "trusty/Android.bp:2 (trustyd): rustlibs lacks \"libuuid\" (optional dependency uuid)",
        // `service` asks `cli` of vmstack-log (`log/cli`): its one library variant.
        "(libvmstack_log): features lacks \"cli\": feature \"service\" ([[bin]] trustyd requires it",
    ],
);
    // The bin does not link the crate's library: that one needs nothing.
    assert!(!problems.contains("(libvmstack_trusty)"), "{problems}");
    assert!(
        problems.contains("(libvmstack_log): rustlibs lacks \"libclap\""),
        "{problems}"
    );
    assert_eq!(problems.lines().count(), 5, "{problems}");

    let good = r#"srcs: ["./src/bin/trustyd/main.rs"], features: ["service", "extra"], rustlibs: ["libuuid", "libvmstack_log"]"#;
    assert_eq!(run(&texts, &[log_good(), binary("trustyd", good)]), "");

    // Another crate root (an auto-discovered bin): no required-features.
    assert_eq!(
        run(
            &texts,
            &[
                log_bare(),
                binary("tool", r#"stem: "tool", srcs: ["src/bin/tool.rs"]"#)
            ]
        ),
        ""
    );
    // ... but named like the [[bin]]: it escapes the check, reported.
    let problems = run(
        &texts,
        &[log_bare(), binary("trustyd", r#"srcs: ["src/main.rs"]"#)],
    );
    assert!(
        problems.contains("(trustyd): named like [[bin]] trustyd of trusty/Cargo.toml (required-features [\"service\"]), but its crate root \"src/main.rs\" is not that bin's"),
        "{problems}"
    );
    // A binary's own features must be Cargo features too.
    let problems = run(
        &texts,
        &[
            log_good(),
            binary("tool", r#"srcs: ["src/bin/tool.rs"], features: ["servic"]"#),
        ],
    );
    assert_eq!(
        problems,
        "trusty/Cargo.toml: \"servic\" is no feature of trusty (listed by tool)"
    );
}

#[test]
fn a_binary_that_links_its_crates_library_needs_the_library_built_with_its_features() {
    let trusty = trusty_with_targets();
    let texts = [("log", LOG), ("trusty", trusty.as_str())];
    let files = |lib_props: &str| {
        [
            log_good(),
            bp(
                "trusty",
                &format!(
                    r#"rust_library {{ name: "libvmstack_trusty", crate_name: "trusty"{lib_props} }}
rust_binary {{
name: "trustyd",
srcs: ["src/bin/trustyd/main.rs"],
features: ["service", "extra"],
rustlibs: ["libuuid", "libvmstack_log"],
target: {{ android: {{ rustlibs: ["libvmstack_trusty"] }} }},
}}"#
                ),
            ),
        ]
    };
    let problems = run(&texts, &files(""));
    assert_has(
    &problems,
    &[
        "trusty/Android.bp:1 (libvmstack_trusty): features lacks \"service\": trustyd links it and is built with it: [[bin]] trustyd requires it",
        "trusty/Android.bp:1 (libvmstack_trusty): features lacks \"extra\"",
        "trusty/Android.bp:1 (libvmstack_trusty): rustlibs lacks \"libuuid\"",
    ],
);
    assert!(!problems.contains("(trustyd)"), "{problems}");
    assert_eq!(
        run(
            &texts,
            &files(r#", features: ["service", "extra"], rustlibs: ["libuuid", "libvmstack_log"]"#)
        ),
        ""
    );
}

#[test]
fn a_test_module_needs_its_tests_required_features() {
    let trusty = trusty_with_targets();
    let texts = [("log", LOG), ("trusty", trusty.as_str())];
    let test = |props: &str| {
        bp(
            "trusty",
            &format!(
                r#"rust_test_host {{ name: "trusty_daemon_test", srcs: ["tests/daemon.rs"]{props} }}"#
            ),
        )
    };
    let problems = run(&texts, &[log_good(), test("")]);
    assert!(
        problems.contains(
            "(trusty_daemon_test): features lacks \"service\": [[test]] daemon requires it"
        ),
        "{problems}"
    );
    assert_eq!(
        run(
            &texts,
            &[
                log_good(),
                test(
                    r#", features: ["service", "extra"], rustlibs: ["libuuid", "libvmstack_log"]"#
                )
            ]
        ),
        ""
    );
}

#[test]
fn dev_dependency_features_count_for_the_library_module() {
    let devices = "[package]\nname = \"devices\"\n[dev-dependencies]\nvmstack-log = { path = \"../log\", features = [\"cli\"] }\ntrusty = { path = \"../trusty\" }\n";
    let log_bare = bp(
        "log",
        r#"rust_library { name: "libvmstack_log", crate_name: "vmstack_log" }"#,
    );
    let trusty_bare = bp(
        "trusty",
        r#"rust_library { name: "libvmstack_trusty", crate_name: "trusty" }"#,
    );
    let problems = run(
        &[("log", LOG), ("trusty", TRUSTY), ("devices", devices)],
        &[log_bare, trusty_bare],
    );
    assert_has(
    &problems,
    &[
        "(libvmstack_log): features lacks \"cli\": devices enables it in [dev-dependencies] devices/Cargo.toml",
        "(libvmstack_log): rustlibs lacks \"libclap\"",
        "(libvmstack_trusty): features lacks \"service\": feature \"default\" (devices takes the default features (no default-features = false in [dev-dependencies] devices/Cargo.toml)) implies it",
    ],
);
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
