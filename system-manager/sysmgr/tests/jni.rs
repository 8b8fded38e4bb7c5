//! The JNI library on the real JVM against a live `sysmgr`: javac compiles
//! `android/jni/java` and the driver `android/jni/tests/java/SystemManagerSmoke.java`,
//! `java` runs it with `libvmstack_jni.so` (built as this test's dev
//! dependency) on the host tools' socket and the android guest's endpoint,
//! and this test checks every line it prints against what `sysmgr` must
//! answer. Needs a JDK (`cargo xtask test` installs openjdk-17-jdk-headless).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use support::*;

/// `libvmstack_jni.so` next to this test binary (cargo builds the
/// dev-dependency's cdylib into the same `deps/` directory).
fn jni_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libvmstack_jni.so");
        if p.is_file() {
            return p;
        }
    }
    panic!("libvmstack_jni.so not found next to {}", exe.display());
}

fn jdk_tool(name: &str) -> String {
    let ok = Command::new(name)
        .arg("-version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{name} not found: install a JDK (apt-get install openjdk-17-jdk-headless; cargo xtask test does)"
    );
    name.to_string()
}

fn compile_java(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../android/jni");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("java/vmstack/jni"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "java"))
        .collect();
    sources.push(root.join("tests/java/SystemManagerSmoke.java"));
    let classes = dir.join("classes");
    let out = Command::new(jdk_tool("javac"))
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&classes)
        .args(&sources)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    classes
}

/// The driver's stdout lines, as they come.
fn lines(stdout: std::process::ChildStdout) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn next(rx: &Receiver<String>, seen: &mut Vec<String>) -> String {
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => {
            seen.push(line.clone());
            line
        }
        Err(_) => panic!("the Java driver stopped; it printed {seen:#?} (stderr in java.err)"),
    }
}

#[test]
fn java_system_manager_over_rpc_binder_on_the_jvm() {
    let dir = tmpdir("jni");
    write_android_cluster_policy(&dir);
    let classes = compile_java(&dir);
    let mut mcu = Mcu::start(&dir);
    let _d = daemon(&dir);
    let host = dir.join("state/binder/sysmgr.sock");
    let guest = dir.join("android.vsock_4200");
    wait_until("the endpoints", 10, || host.exists() && guest.exists());

    let mut java = Command::new(jdk_tool("java"))
        .arg("-Xcheck:jni")
        .arg(format!("-Dvmstack.jni.library={}", jni_library().display()))
        .arg("-cp")
        .arg(&classes)
        .arg("SystemManagerSmoke")
        .arg(&host)
        .arg(&guest)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("java.err")).unwrap())
        .spawn()
        .unwrap();
    let rx = lines(java.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut expect = |want: &str| {
        let got = next(&rx, &mut seen);
        assert_eq!(got, want, "Java printed {seen:#?}");
    };

    expect("state 0 off ignition=false guests=android:android,cluster:cluster");
    expect("nobody exception=-3"); // EX_ILLEGAL_ARGUMENT
    expect("report on host exception=-8 error=2"); // ERROR_NOT_A_GUEST
    expect("first system 0 off ignition=false guests=2 daemon=true main=false");
    expect("READY");
    // Boot: ignition on, both VMMs attach; the callback says ON.
    let (av, cv) = start_android_and_cluster(&mut mcu, &dir, "ignition on");
    expect("then system 1 on ignition=true guests=2 daemon=true main=false");
    // The guest endpoint: WAIT_FOR_VHAL is answered with REQ_ON.
    expect("guest req 0 0 daemon=true main=false");
    expect("guest req [0, 0]");
    expect("report 99 exception=-8 error=1 mentions99=true"); // ERROR_REJECTED
    expect("android binderConnected=true hasReq=true req=0");
    expect("dump mentions android=true");
    expect("unregister twice exception");
    expect("after close: SystemManager is closed");
    expect("DONE");
    let status = java.wait().unwrap();
    let stderr = std::fs::read_to_string(dir.join("java.err")).unwrap();
    assert!(status.success(), "java exited with {status}: {stderr}");
    // -Xcheck:jni reports misuse (unchecked exceptions, bad refs) as warnings.
    assert!(
        !stderr.contains("WARNING") && !stderr.contains("FATAL"),
        "the JVM complained:\n{stderr}"
    );
    assert!(
        log_lines(&dir)
            .iter()
            .any(|l| l.contains(r#""type":"ap_power_state_report","guest":"android","value":1"#)),
        "the Java client's report reached the arbiter's log"
    );
    drop((av, cv));
}
