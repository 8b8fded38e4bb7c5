//! The binaries' one-line errors: a kernel without binder, bad options,
//! nothing listening.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(bin).args(args).output().expect("run");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn one_line_error(bin: &str, args: &[&str], needle: &str) {
    let (ok, err) = run(bin, args);
    assert!(!ok, "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn a_kernel_without_binder_is_a_one_line_error() {
    let dev = "/nonexistent/binder";
    one_line_error(
        env!("CARGO_BIN_EXE_sysmgr-binderd"),
        &["--device", dev],
        "no binder driver",
    );
    one_line_error(
        env!("CARGO_BIN_EXE_vmbinder"),
        &["--device", dev, "list"],
        "no binder driver",
    );
    one_line_error(
        env!("CARGO_BIN_EXE_vhal-binder-test"),
        &["--device", dev],
        "no binder driver",
    );
}

#[test]
fn bad_options_and_absent_peers() {
    let vmbinder = env!("CARGO_BIN_EXE_vmbinder");
    one_line_error(
        vmbinder,
        &["--rpc", "tcp:1", "list"],
        "use unix:PATH or vsock:CID:PORT",
    );
    one_line_error(
        vmbinder,
        &["--rpc", "unix:/nonexistent/sock", "list"],
        "is sysmgr running?",
    );
    one_line_error(
        env!("CARGO_BIN_EXE_sysmgr-binderd"),
        &["--bogus"],
        "unknown option",
    );
}
