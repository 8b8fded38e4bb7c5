//! Conformance: Debian's AOSP `aidl` compiler (Android 10) accepts every
//! `.aidl` file of this crate for the java, cpp and ndk backends. Skipped
//! with a message only when the tool is missing (`cargo xtask test`
//! installs the `aidl` package).

use std::path::{Path, PathBuf};
use std::process::Command;

fn aidl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            aidl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "aidl") {
            out.push(p);
        }
    }
}

#[test]
fn debian_aidl_accepts_every_file_for_java_cpp_and_ndk() {
    if Command::new("aidl").arg("--help").output().is_err() {
        eprintln!("SKIPPED: Debian's `aidl` is not installed (apt-get install aidl; cargo xtask test installs it)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("aidl");
    let mut files = Vec::new();
    aidl_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for lang in ["java", "cpp", "ndk"] {
        for f in &files {
            let out = tempfile::tempdir().expect("tmp");
            let mut cmd = Command::new("aidl");
            cmd.arg(format!("--lang={lang}"))
                .arg("--structured")
                .arg("-I")
                .arg(&root)
                .arg("-o")
                .arg(out.path());
            if lang != "java" {
                cmd.arg("-h").arg(out.path().join("include"));
            }
            let o = cmd.arg(f).output().expect("run aidl");
            assert!(
                o.status.success(),
                "aidl --lang={lang} {}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            let produced = std::fs::read_dir(out.path().join("vmstack/sysmgr"))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(
                produced > 0,
                "aidl --lang={lang} {} wrote nothing",
                f.display()
            );
        }
    }
}
