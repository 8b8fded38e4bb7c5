//! The stable-AIDL check on this crate's API directory, and the check
//! itself tested with fixture edits of both kinds: each edit is applied to
//! a copy of the sources, `current` is regenerated, and the module's
//! problems must (incompatible) or must not (compatible) name the frozen
//! version. Where Debian's `aidl` is installed, its `--checkapi` and
//! `--dumpapi` must agree with ours on every fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmstack_aidl::api::module::ApiModule;

const IFACE: &str = "vmstack/sysmgr/ISystemManager.aidl";
const LISTENER: &str = "vmstack/sysmgr/IPowerStateListener.aidl";
const GUEST: &str = "vmstack/sysmgr/GuestState.aidl";

/// (name, file, text to find, replacement)
const INCOMPATIBLE: &[(&str, &str, &str, &str)] = &[
    ("method removed", IFACE, "    String dumpState();\n", ""),
    (
        "methods reordered (codes change)",
        IFACE,
        "    void postponeShutdown(int ms);\n",
        "",
    ),
    (
        "argument type changed",
        IFACE,
        "void requestShutdown(int param);",
        "void requestShutdown(long param);",
    ),
    (
        "return type changed",
        IFACE,
        "int[] getApPowerStateReq();",
        "long[] getApPowerStateReq();",
    ),
    (
        "constant value changed",
        IFACE,
        "const int REQ_FINISHED = 3;",
        "const int REQ_FINISHED = 4;",
    ),
    (
        "constant removed",
        IFACE,
        "    const int MAX_POSTPONE_MS = 5000;\n",
        "",
    ),
    (
        "oneway dropped",
        LISTENER,
        "oneway interface IPowerStateListener",
        "interface IPowerStateListener",
    ),
    (
        "parcelable field removed",
        GUEST,
        "    boolean binderConnected;\n",
        "",
    ),
    (
        "parcelable field type changed",
        GUEST,
        "    int state;\n",
        "    long state;\n",
    ),
    (
        "parcelable field inserted in the middle",
        GUEST,
        "    int state;\n",
        "    int state;\n    int extra;\n",
    ),
];

const COMPATIBLE: &[(&str, &str, &str, &str)] = &[
    ("no change", IFACE, "", ""),
    (
        "method appended",
        IFACE,
        "    String dumpState();\n",
        "    String dumpState();\n    int getVersionHint();\n",
    ),
    (
        "constant added",
        IFACE,
        "    const int REQ_FINISHED = 3;\n",
        "    const int REQ_FINISHED = 3;\n    const int REQ_NEW = 4;\n",
    ),
    (
        "field appended",
        GUEST,
        "    boolean binderConnected;\n",
        "    boolean binderConnected;\n    long bootCount;\n",
    ),
    (
        "comments and whitespace",
        IFACE,
        "    SystemState getSystemState();",
        "    // reworded\n    SystemState   getSystemState( );",
    ),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let t = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

/// A copy of this crate's sources and API directory with one edit applied.
fn fixture(tmp: &Path, file: &str, find: &str, replace: &str) -> ApiModule {
    let this = ApiModule::this_crate();
    let m = ApiModule {
        sources: tmp.join("aidl"),
        dir: tmp.join("api").join("vmstack.sysmgr"),
    };
    copy_dir(&this.sources, &m.sources);
    copy_dir(&this.dir, &m.dir);
    let path = m.sources.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(find), "fixture text {find:?} not in {file}");
    std::fs::write(&path, text.replacen(find, replace, 1)).expect("write");
    m.update().expect("update current");
    m
}

fn aidl_tool() -> Option<PathBuf> {
    let ok = Command::new("aidl").arg("--help").output().is_ok();
    if !ok {
        eprintln!("SKIPPED the cross-check with AOSP's aidl --checkapi/--dumpapi: `aidl` is not installed (apt-get install aidl)");
    }
    ok.then(|| PathBuf::from("aidl"))
}

/// AOSP's verdict on `current` against version 1 (Android 10's `aidl`
/// reads every file of the directories, so it gets the `.aidl` files only,
/// without `.hash`, which came with Android 11).
fn aosp_compatible(aidl: &Path, m: &ApiModule) -> bool {
    let tmp = tempfile::tempdir().expect("tmp");
    for v in ["1", "current"] {
        for (rel, text) in vmstack_aidl::api::dump::read_tree(&m.dir.join(v)).expect("dump") {
            let p = tmp.path().join(v).join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
    }
    Command::new(aidl)
        .arg("--checkapi")
        .arg(tmp.path().join("1"))
        .arg(tmp.path().join("current"))
        .output()
        .expect("run aidl")
        .status
        .success()
}

#[test]
fn this_crates_api_is_current_frozen_and_compatible() {
    let problems = ApiModule::this_crate().problems().expect("readable");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn incompatible_edits_fail_the_check() {
    let aidl = aidl_tool();
    for (name, file, find, replace) in INCOMPATIBLE {
        let tmp = tempfile::tempdir().expect("tmp");
        let m = fixture(tmp.path(), file, find, replace);
        let problems = m.problems().expect("readable");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("against frozen version 1")),
            "{name}: not caught: {problems:?}"
        );
        if let Some(aidl) = &aidl {
            assert!(
                !aosp_compatible(aidl, &m),
                "{name}: AOSP's aidl --checkapi accepts it"
            );
        }
    }
}

#[test]
fn compatible_edits_pass_the_check() {
    let aidl = aidl_tool();
    for (name, file, find, replace) in COMPATIBLE {
        let tmp = tempfile::tempdir().expect("tmp");
        let m = fixture(tmp.path(), file, find, replace);
        let problems = m.problems().expect("readable");
        assert!(problems.is_empty(), "{name}: {problems:?}");
        if let Some(aidl) = &aidl {
            assert!(
                aosp_compatible(aidl, &m),
                "{name}: AOSP's aidl --checkapi refuses it"
            );
        }
    }
}

#[test]
fn stale_current_and_edited_frozen_versions_are_caught() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = fixture(tmp.path(), IFACE, "", "");
    // Sources changed compatibly but `current` not updated.
    let path = m.sources.join(IFACE);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace(
            "String dumpState();",
            "String dumpState();\n    void more();",
        ),
    )
    .expect("write");
    let p = m.problems().expect("readable");
    assert!(p.iter().any(|e| e.contains("out of date")), "{p:?}");
    // A frozen file edited in place.
    m.update().expect("update");
    let frozen = m.dir.join("1").join(GUEST);
    let text = std::fs::read_to_string(&frozen).expect("read");
    std::fs::write(&frozen, text.replace("int state;", "int state2;")).expect("write");
    let p = m.problems().expect("readable");
    assert!(p.iter().any(|e| e.contains("was edited")), "{p:?}");
}

#[test]
fn our_dump_is_aosps_dump() {
    let Some(aidl) = aidl_tool() else { return };
    let this = ApiModule::this_crate();
    let tmp = tempfile::tempdir().expect("tmp");
    let files: Vec<PathBuf> = [IFACE, LISTENER, GUEST, "vmstack/sysmgr/SystemState.aidl"]
        .iter()
        .map(|f| this.sources.join(f))
        .collect();
    let st = Command::new(&aidl)
        .arg("--dumpapi")
        .arg(format!("--out={}", tmp.path().display()))
        .arg("-I")
        .arg(&this.sources)
        .args(&files)
        .status()
        .expect("run aidl");
    assert!(st.success());
    let ours = vmstack_aidl::api::dump::read_tree(&this.dir.join("current")).expect("ours");
    let theirs = vmstack_aidl::api::dump::read_tree(tmp.path()).expect("theirs");
    assert_eq!(ours, theirs);
}
