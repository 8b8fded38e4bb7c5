//! The one runner of the benchmark scenarios (`bench boot`, `bench boot
//! --arch aarch64`, `bench devices`, `bench devices-profile`): the same
//! set-up and builds as `cargo xtask test`, an optional extra initramfs
//! (host programs with their shared libraries, static tools) appended to
//! the test host's, one test host boot running one scenario, and the
//! helpers each benchmark needs around it (the images manifest, its
//! results file, the final checks).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vmstack_tests::testhost::{self, ScenarioResult, TestHostConfig, TestHostRun};

use crate::cpio::Archive;
use crate::images::Images;
use crate::paths::{self, Arch};
use crate::util::{self, step};

/// Test host time allowed on top of the scenario's own (the outer boot).
const BOOT_ALLOWANCE: Duration = Duration::from_secs(120);

pub use crate::run::prepare;

/// Files added to the test host by a benchmark: an archive appended to its
/// initramfs (the kernel unpacks concatenated archives in order).
pub struct Extra {
    archive: Archive,
}

impl Extra {
    /// An empty extra archive.
    pub fn new() -> Self {
        Self {
            archive: Archive::new(),
        }
    }

    /// Adds `path` (absolute) from this machine; a symlink is kept as a
    /// symlink and its target added as well.
    pub fn host_file(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        add_host_file(&mut self.archive, path, mode)?;
        Ok(self)
    }

    /// Adds the dynamically linked program `path` from this machine with
    /// its shared-library closure (from `ldd`); returns the libraries' count.
    pub fn host_program(&mut self, path: &str) -> Result<usize> {
        Ok(add_host_program(&mut self.archive, path)?.len())
    }

    /// Adds `path` (absolute) of the tree `root` as `path` in the test
    /// host, as [`add_file_under`].
    pub fn file_under(&mut self, root: &Path, path: &str, mode: u32) -> Result<&mut Self> {
        add_file_under(&mut self.archive, root, path, mode)?;
        Ok(self)
    }

    /// Adds `src` as `path` in the test host.
    pub fn file_from(&mut self, path: &str, mode: u32, src: &Path) -> Result<&mut Self> {
        self.archive.file_from(path, mode, src)?;
        Ok(self)
    }

    /// Adds `data` as `path` in the test host.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<&mut Self> {
        self.archive.file(path, mode, data)?;
        Ok(self)
    }
}

/// Adds `path` (absolute) from this machine to `archive` at the same
/// path; a symlink is kept as a symlink and its target added as well.
pub fn add_host_file(archive: &mut Archive, path: &str, mode: u32) -> Result<()> {
    add_file_under(archive, Path::new("/"), path, mode)
}

/// Adds `path` (absolute, as the test host sees it) of the tree `root`
/// (`/`, or an unpacked package root) to `archive` at `path`; a symlink is
/// kept as a symlink and its target (inside `root`) added as well.
pub fn add_file_under(archive: &mut Archive, root: &Path, path: &str, mode: u32) -> Result<()> {
    let src = root.join(path.trim_start_matches('/'));
    let meta =
        std::fs::symlink_metadata(&src).with_context(|| format!("{} is missing", src.display()))?;
    if meta.file_type().is_symlink() {
        let target =
            std::fs::read_link(&src).with_context(|| format!("readlink {}", src.display()))?;
        archive.symlink(path, &target.to_string_lossy())?;
        return add_file_under(archive, root, &symlink_target(path, &target), mode);
    }
    archive.file_from(path, mode, &src)
}

/// The absolute path the symlink at `path` (absolute) pointing to `target` names.
pub fn symlink_target(path: &str, target: &Path) -> String {
    let resolved = if target.is_absolute() {
        target.to_path_buf()
    } else {
        Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .join(target)
    };
    lexical(&resolved)
}

/// `path` with `.` and `..` components resolved lexically
/// (`/usr/bin/../lib/x` is `/usr/lib/x`), as a relative symlink's target
/// is read.
pub fn lexical(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Adds the dynamically linked program `path` from this machine to
/// `archive` with its shared-library closure (from `ldd`); returns the
/// libraries' paths.
pub fn add_host_program(archive: &mut Archive, path: &str) -> Result<Vec<String>> {
    add_host_file(archive, path, 0o755)?;
    let libs = parse_ldd(&util::output(Command::new("ldd").arg(path))?)?;
    for lib in &libs {
        add_host_file(archive, lib, 0o755)?;
    }
    Ok(libs)
}

/// The absolute paths of the shared objects in `ldd` output (the dynamic
/// loader included, the vDSO skipped); an error for any `not found`.
pub fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd: {line}");
        }
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)" or "linux-vdso.so.1 (0x...)".
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    if out.is_empty() {
        bail!("ldd printed no libraries");
    }
    Ok(out)
}

/// Version of an installed Debian package.
pub fn dpkg_version(pkg: &str) -> Result<String> {
    Ok(
        util::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]))?
            .trim()
            .to_string(),
    )
}

/// One benchmark boot of the test host.
pub struct Bench {
    /// The test host's architecture.
    pub arch: Arch,
    /// The scenario (`prebuilts/testhost/scenarios/<name>.sh`).
    pub scenario: &'static str,
    /// Extra kernel command line words (`bench.runs=5`).
    pub append: Vec<String>,
    /// Time the scenario may take in the test host.
    pub scenario_timeout: Duration,
    /// Echo the console live.
    pub stream: bool,
}

impl Bench {
    /// Boots the test host of `images` with this scenario, `extra`
    /// appended to its initramfs (written beside the images as
    /// `<scenario>-extra.cpio.gz` and `<scenario>-initramfs.cpio.gz`).
    pub fn boot(&self, images: &Images, extra: Option<&Extra>) -> Result<TestHostRun> {
        let mut cfg = TestHostConfig::for_arch(
            self.arch,
            &images.dir,
            &[self.scenario],
            &vmstack_tests::log_dir(),
        )?;
        if let Some(extra) = extra {
            let extra_path = images.dir.join(format!("{}-extra.cpio.gz", self.scenario));
            let size = extra.archive.write_gz(&extra_path)?;
            step!(
                "built {} ({} entries, {})",
                extra_path.display(),
                extra.archive.len(),
                util::human(size)
            );
            let initrd = images
                .dir
                .join(format!("{}-initramfs.cpio.gz", self.scenario));
            concat(
                &images.dir.join(testhost::TESTHOST_INITRD),
                &extra_path,
                &initrd,
            )?;
            cfg.initrd = initrd;
        }
        cfg.extra_append = self.append.clone();
        cfg.scenario_timeout = self.scenario_timeout;
        cfg.timeout = self.scenario_timeout + BOOT_ALLOWANCE;
        cfg.stream = self.stream;
        step!(
            "booting the {} test host for {} (timeout {} s); console {}",
            self.arch,
            self.scenario,
            cfg.timeout.as_secs(),
            cfg.log_path.display()
        );
        Ok(testhost::run(&cfg)?)
    }
}

/// The section of `scenario` in `run`; an error with the console tail if
/// the scenario never started.
pub fn section<'a>(run: &'a TestHostRun, scenario: &str) -> Result<&'a ScenarioResult> {
    run.scenario(scenario).with_context(|| {
        run.failure_report(&format!("no @@BEGIN {scenario} section in the console"))
    })
}

/// Fails unless the scenario ended with rc 0 (called after its
/// measurements were checked, which explain most failures better).
pub fn check_rc(run: &TestHostRun, section: &ScenarioResult) -> Result<()> {
    if section.rc != Some(0) {
        bail!(
            "scenario {} ended with rc={:?} although every value was measured; console {}",
            section.name,
            section.rc,
            run.log_path.display()
        );
    }
    Ok(())
}

/// Fails with the list of `problems` (missing or failed measurements, one
/// a line) unless it is empty.
pub fn check_measured(problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "missing or failed measurements:\n  {}",
        problems.join("\n  ")
    )
}

/// Fails with `measured`'s error (with the scenario's rc and console) if
/// the measurements are incomplete, else as [`check_rc`].
pub fn check_run(run: &TestHostRun, section: &ScenarioResult, measured: Result<()>) -> Result<()> {
    if let Err(e) = measured {
        bail!(
            "{e:#}\n(scenario rc={:?}; console {})",
            section.rc,
            run.log_path.display()
        );
    }
    check_rc(run, section)
}

/// The images' `manifest.json` (an empty object if unreadable).
pub struct Manifest(serde_json::Value);

impl Manifest {
    /// Reads the manifest of `images`.
    pub fn read(images: &Images) -> Self {
        let path = images.dir.join(testhost::MANIFEST);
        Self(
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
        )
    }

    /// The string at JSON `pointer` (`/kernel/release`), `?` if absent.
    pub fn get(&self, pointer: &str) -> String {
        self.0
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    }
}

/// Writes `results` to `<target dir>/bench/<name>.json`; returns the path.
pub fn write_results(name: &str, results: &serde_json::Value) -> Result<PathBuf> {
    let dir = paths::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    util::write_atomic(
        &path,
        (serde_json::to_string_pretty(results)? + "\n").as_bytes(),
    )?;
    Ok(path)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `first` followed by `second` (4-byte aligned) to `out`: the kernel
/// unpacks concatenated initramfs archives in order.
fn concat(first: &Path, second: &Path, out: &Path) -> Result<()> {
    let mut data =
        std::fs::read(first).with_context(|| format!("cannot read {}", first.display()))?;
    data.resize(data.len().next_multiple_of(4), 0);
    data.extend(
        std::fs::read(second).with_context(|| format!("cannot read {}", second.display()))?,
    );
    util::write_atomic(out, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\
\tlinux-vdso.so.1 (0x00007ffc0a1f3000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f544a0f4000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5448db8000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f544b3cc000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f544a0f4000)
";

    #[test]
    fn ldd_closure() {
        assert_eq!(
            parse_ldd(LDD).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").is_err());
    }

    #[test]
    fn relative_symlink_targets_resolve_lexically() {
        assert_eq!(
            lexical(Path::new("/usr/bin/../lib/android-sdk/./adb")),
            "/usr/lib/android-sdk/adb"
        );
        assert_eq!(lexical(Path::new("/a/../../b")), "/b");
    }

    #[test]
    fn concatenated_archives_are_aligned() {
        let dir = std::env::temp_dir().join(format!("vmstack-concat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), b"12345").unwrap();
        std::fs::write(dir.join("b"), b"xy").unwrap();
        concat(&dir.join("a"), &dir.join("b"), &dir.join("out")).unwrap();
        assert_eq!(std::fs::read(dir.join("out")).unwrap(), b"12345\0\0\0xy");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
