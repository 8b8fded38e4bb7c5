//! Programs from Debian's arm64 packages that a benchmark runs in the arm64
//! test host, each with every shared object it loads, taken from the
//! packages of its on-demand group of `prebuilts/aarch64.lock` (resolved,
//! locked and downloaded by [`lock::ensure_group`]): the QEMU peer of `cargo
//! xtask bench boot --arch aarch64` (`qemu-system-aarch64`, group
//! `qemu-peer`) and the adb client of `cargo xtask bench adb --arch aarch64`
//! (`adb`, group `adb-client`).
//!
//! What goes into the test host is the ELF closure of the binary, not the
//! packages' whole contents: its program interpreter and, recursively, each
//! `NEEDED` library, looked up in the object's `RUNPATH`/`RPATH` and the
//! loader's default multiarch directories inside the unpacked packages
//! (read with `readelf`). A library the packages do not have is an error
//! that names it and who needs it. Files keep their Debian paths (the
//! loader finds them without an `ld.so.cache`); symlinks stay symlinks.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench_host::{self, Extra};
use crate::images;
use crate::lock::{self, LockedPackage};
use crate::paths::{self, Arch};
use crate::util::{self, step};

/// The QEMU peer's emulator, as installed by its package.
pub const QEMU_PEER_PROGRAM: &str = "/usr/bin/qemu-system-aarch64";
/// Where the arm64 dynamic loader looks without an `ld.so.cache` (glibc's
/// system directories with Debian's multiarch ones first).
const DEFAULT_DIRS: &[&str] = &[
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/lib",
];
/// Longest chain of symlinks followed inside the package root.
const MAX_LINKS: usize = 16;

/// The dynamic-linking facts of one ELF file (`readelf -h -l -d -W`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElfDeps {
    /// `Machine:` of the ELF header (`AArch64`).
    pub machine: String,
    /// The program interpreter (executables only).
    pub interp: Option<String>,
    /// `NEEDED` sonames, in order.
    pub needed: Vec<String>,
    /// `RUNPATH` and `RPATH` directories, in order (`$ORIGIN` not expanded).
    pub search: Vec<String>,
}

/// The text between the first `[` and the following `]` of `line`.
fn bracketed(line: &str) -> Option<&str> {
    let start = line.find('[')? + 1;
    let len = line[start..].find(']')?;
    Some(&line[start..start + len])
}

/// Parses `readelf -h -l -d -W` output.
pub fn parse_readelf(text: &str) -> ElfDeps {
    let mut d = ElfDeps::default();
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("Machine:") {
            d.machine = m.trim().to_string();
        } else if line.contains("Requesting program interpreter:") {
            d.interp = bracketed(line)
                .and_then(|b| b.split_once(": "))
                .map(|(_, p)| p.to_string());
        } else if line.contains("(NEEDED)") {
            d.needed.extend(bracketed(line).map(str::to_string));
        } else if line.contains("(RUNPATH)") || line.contains("(RPATH)") {
            d.search.extend(
                bracketed(line)
                    .into_iter()
                    .flat_map(|b| b.split(':'))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    d
}

/// Runs `readelf` on `file`.
fn readelf(file: &Path) -> Result<ElfDeps> {
    let text = util::output(
        Command::new("readelf")
            .args(["-h", "-l", "-d", "-W"])
            .arg(file),
    )
    .with_context(|| format!("readelf {} (install binutils)", file.display()))?;
    Ok(parse_readelf(&text))
}

/// The path `path` (absolute, inside `root`) names once its symlinks are
/// followed inside `root`.
pub fn real_path(root: &Path, path: &str) -> Result<String> {
    let mut p = path.to_string();
    for _ in 0..MAX_LINKS {
        let src = root.join(p.trim_start_matches('/'));
        let meta = std::fs::symlink_metadata(&src)
            .with_context(|| format!("{p} is not in {}", root.display()))?;
        if !meta.file_type().is_symlink() {
            return Ok(p);
        }
        let target =
            std::fs::read_link(&src).with_context(|| format!("readlink {}", src.display()))?;
        p = bench_host::symlink_target(&p, &target);
    }
    bail!(
        "{path}: more than {MAX_LINKS} symlinks in {}",
        root.display()
    )
}

/// The shared objects `program` loads, as absolute paths inside `root`
/// (the interpreter first, then breadth-first `NEEDED`), each ELF file
/// read with `inspect`; an error naming every soname not found.
pub fn closure(
    root: &Path,
    program: &str,
    mut inspect: impl FnMut(&Path) -> Result<ElfDeps>,
) -> Result<Vec<String>> {
    let mut files: Vec<String> = Vec::new();
    let mut queue = std::collections::VecDeque::from([program.to_string()]);
    let mut inspected = HashSet::new();
    let mut missing = Vec::new();
    while let Some(path) = queue.pop_front() {
        let real = real_path(root, &path)?;
        if !inspected.insert(real.clone()) {
            continue;
        }
        let deps = inspect(&root.join(real.trim_start_matches('/')))?;
        let origin = Path::new(&real)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let dirs: Vec<String> = deps
            .search
            .iter()
            .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
            .chain(DEFAULT_DIRS.iter().map(|d| d.to_string()))
            .collect();
        let mut found = Vec::new();
        if let Some(interp) = deps.interp {
            found.push(interp);
        }
        for soname in &deps.needed {
            let hit = dirs
                .iter()
                .map(|d| bench_host::lexical(&Path::new(d).join(soname)))
                .find(|p| std::fs::symlink_metadata(root.join(p.trim_start_matches('/'))).is_ok());
            match hit {
                Some(p) => found.push(p),
                None => missing.push(format!("{soname} (needed by {path})")),
            }
        }
        for p in found {
            if !files.contains(&p) {
                files.push(p.clone());
                queue.push_back(p);
            }
        }
    }
    if !missing.is_empty() {
        bail!("shared objects missing: {}", missing.join(", "));
    }
    Ok(files)
}

/// What [`add_to`] put into the test host.
pub struct Added {
    /// `<package> <version>`, e.g. `qemu-system-arm 1:7.2+dfsg-7+deb12u18`.
    pub package: String,
    /// Packages locked for it (the program's and its libraries').
    pub packages: usize,
    /// Shared objects copied (the interpreter included).
    pub libraries: usize,
}

/// Locks, downloads and unpacks the packages of the on-demand group `g`
/// and adds `program` (a path its package installs) with its
/// shared-object closure to `extra`.
pub fn add_to(extra: &mut Extra, g: &lock::ProgramGroup, program: &str) -> Result<Added> {
    let cache = paths::cache_dir();
    let debs = lock::ensure_group(&paths::lock_file(Arch::Aarch64), &cache, "arm64", g)?;
    let refs: Vec<(&LockedPackage, &Path)> = debs.iter().map(|(p, d)| (p, d.as_path())).collect();
    let root = images::unpack(&cache, &format!("{}-arm64", g.group), &refs)?;
    let real = real_path(&root, program)?;
    let main = readelf(&root.join(real.trim_start_matches('/')))?;
    if main.machine != "AArch64" {
        bail!(
            "{program} of the {} packages is for {:?}, not AArch64",
            g.group,
            main.machine
        );
    }
    let libs =
        closure(&root, program, readelf).with_context(|| format!("the {} packages", g.group))?;
    extra.file_under(&root, program, 0o755)?;
    for lib in &libs {
        extra.file_under(&root, lib, 0o755)?;
    }
    let version = debs
        .iter()
        .find(|(p, _)| p.name == g.package)
        .map(|(p, _)| p.version.clone())
        .unwrap_or_default();
    step!(
        "{program} ({} {version}, arm64) with {} shared objects from {} packages",
        g.package,
        libs.len(),
        debs.len()
    );
    Ok(Added {
        package: format!("{} {version}", g.package),
        packages: debs.len(),
        libraries: libs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const READELF: &str = "\
ELF Header:
  Class:                             ELF64
  Machine:                           AArch64
Program Headers:
  INTERP         0x000238 0x0000000000000238 0x0000000000000238 0x00001b 0x00001b R   0x1
      [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]
Dynamic section at offset 0x9d5d28 contains 64 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libpixman-1.so.0]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x000000000000001d (RUNPATH)            Library runpath: [/usr/lib/aarch64-linux-gnu/pulseaudio:$ORIGIN/x]
 0x000000000000000c (INIT)               0x1a2f0
";

    #[test]
    fn readelf_output_is_parsed() {
        let d = parse_readelf(READELF);
        assert_eq!(d.machine, "AArch64");
        assert_eq!(d.interp.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(d.needed, ["libpixman-1.so.0", "libc.so.6"]);
        assert_eq!(
            d.search,
            ["/usr/lib/aarch64-linux-gnu/pulseaudio", "$ORIGIN/x"]
        );
        assert_eq!(parse_readelf("not an ELF"), ElfDeps::default());
    }

    /// A fake package root: the program needs libA (through a symlink
    /// chain) and libB (in a RUNPATH directory); libA needs libc; the
    /// interpreter is an absolute symlink.
    #[test]
    fn the_closure_follows_needed_runpath_and_symlinks() {
        let root = std::env::temp_dir().join(format!("vmstack-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mk = |p: &str| {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, p).unwrap();
        };
        let ln = |p: &str, target: &str| {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, f).unwrap();
        };
        mk("usr/bin/qemu");
        mk("usr/lib/aarch64-linux-gnu/libA.so.1.2.3");
        ln("usr/lib/aarch64-linux-gnu/libA.so.1", "libA.so.1.2");
        ln("usr/lib/aarch64-linux-gnu/libA.so.1.2", "./libA.so.1.2.3");
        mk("usr/lib/aarch64-linux-gnu/pulse/libB.so");
        mk("lib/aarch64-linux-gnu/libc.so.6");
        mk("lib/aarch64-linux-gnu/ld-linux-aarch64.so.1");
        ln(
            "lib/ld-linux-aarch64.so.1",
            "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
        );
        let r = root.clone();
        let inspect = |f: &Path| -> Result<ElfDeps> {
            let name = f.strip_prefix(&r).unwrap().to_string_lossy().into_owned();
            let mut d = ElfDeps::default();
            match name.as_str() {
                "usr/bin/qemu" => {
                    d.interp = Some("/lib/ld-linux-aarch64.so.1".into());
                    d.needed = vec!["libA.so.1".into(), "libB.so".into(), "libc.so.6".into()];
                    d.search = vec!["$ORIGIN/../lib/aarch64-linux-gnu/pulse".into()];
                }
                "usr/lib/aarch64-linux-gnu/libA.so.1.2.3" => d.needed = vec!["libc.so.6".into()],
                _ => {}
            }
            Ok(d)
        };
        let libs = closure(&root, "/usr/bin/qemu", inspect).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/ld-linux-aarch64.so.1",
                "/usr/lib/aarch64-linux-gnu/libA.so.1",
                "/usr/lib/aarch64-linux-gnu/pulse/libB.so",
                "/lib/aarch64-linux-gnu/libc.so.6",
            ]
        );
        assert_eq!(
            real_path(&root, "/usr/lib/aarch64-linux-gnu/libA.so.1").unwrap(),
            "/usr/lib/aarch64-linux-gnu/libA.so.1.2.3"
        );
        assert_eq!(
            real_path(&root, "/lib/ld-linux-aarch64.so.1").unwrap(),
            "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"
        );
        // A soname no package has is an error naming it and its user.
        let err = closure(&root, "/usr/bin/qemu", |f: &Path| {
            let mut d = inspect(f)?;
            d.needed.push("libgone.so.9".into());
            Ok(d)
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("libgone.so.9 (needed by /usr/bin/qemu)"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
