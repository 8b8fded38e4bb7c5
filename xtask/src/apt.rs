//! A private apt setup under the cache directory.
//!
//! Own `sources.list`, package lists, archive cache and (empty) dpkg status, so the
//! system's apt state is neither used for resolution nor changed. The Debian
//! mirror(s) come from the machine's own apt sources ([`crate::apt_sources`];
//! `$VMSTACK_DEBIAN_MIRROR` overrides them), with our suites.
//! Works without root (no locking, no install): only `update`, `show` and `download`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::apt_sources;
use crate::util::{self, step};

/// Suites in the private `sources.list` (on every mirror).
pub const SUITES: &[&str] = &["bookworm", "bookworm-backports"];

/// One version of a package from the Packages index (`apt-cache show`).
#[derive(Debug, Clone)]
pub struct PkgInfo {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA256 of the .deb from the index.
    pub sha256: String,
    /// Pool path of the .deb (`Filename:`).
    pub filename: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// Raw `Depends:` field (empty if none).
    pub depends: String,
    /// `Section:` (`libs`, `admin`...; empty if none).
    pub section: String,
}

/// The private apt configuration.
pub struct Apt {
    root: PathBuf,
    arch: String,
    updated: std::cell::Cell<bool>,
}

impl Apt {
    /// Sets up (idempotently) the private apt tree under `root` for Debian
    /// architecture `arch` (`amd64`, `arm64`). Each architecture has its own
    /// `root` (its lists dir holds that architecture's indexes only); the
    /// system's dpkg architectures are not touched.
    pub fn new(root: &Path, arch: &str) -> Result<Self> {
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "download",
            "empty",
        ] {
            let p = root.join(d);
            std::fs::create_dir_all(&p)
                .with_context(|| format!("cannot create {}", p.display()))?;
        }
        let override_uris = std::env::var(apt_sources::MIRROR_ENV).ok();
        let mirrors = apt_sources::mirrors(override_uris.as_deref(), Path::new("/etc/apt"))?;
        let mut sources = String::from(
            "# written by cargo xtask (private apt setup): the Debian mirror(s) of\n\
             # /etc/apt/sources.list{,.d} (or $VMSTACK_DEBIAN_MIRROR) with our suites\n",
        );
        for mirror in &mirrors {
            for suite in SUITES {
                sources.push_str(&mirror.line(suite));
                sources.push('\n');
            }
        }
        let list = root.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            util::write_atomic(&list, sources.as_bytes())?;
        }
        let status = root.join("status");
        if !status.exists() {
            std::fs::write(&status, b"")
                .with_context(|| format!("cannot create {}", status.display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            arch: arch.to_string(),
            updated: std::cell::Cell::new(false),
        })
    }

    /// The `-o` options that make apt use only the private tree.
    fn options(&self) -> Vec<String> {
        let r = self.root.display();
        let mut o = vec![
            format!("Dir::Etc::SourceList={r}/sources.list"),
            // An empty directory instead of /nonexistent: same effect, no warnings.
            format!("Dir::Etc::SourceParts={r}/empty"),
            format!("Dir::Etc::Preferences={r}/empty/preferences"),
            format!("Dir::Etc::PreferencesParts={r}/empty"),
            format!("Dir::State::Lists={r}/lists"),
            format!("Dir::State::status={r}/status"),
            format!("Dir::Cache={r}/cache"),
            "Debug::NoLocking=1".into(),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            "Acquire::Languages=none".into(),
            // Only Packages indexes are needed (no AppStream metadata).
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        ];
        if util::is_root() {
            // apt drops to `_apt` for downloads, which cannot write into root's home.
            o.push("APT::Sandbox::User=root".into());
        }
        o
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for o in self.options() {
            c.arg("-o").arg(o);
        }
        c.env("LC_ALL", "C");
        c
    }

    /// Age of the package lists, `None` if there are none.
    pub fn lists_age(&self) -> Option<Duration> {
        let dir = std::fs::read_dir(self.root.join("lists")).ok()?;
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("_Packages"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
            .map(|t| t.elapsed().unwrap_or_default())
    }

    /// Whether `update` already ran in this process.
    pub fn updated(&self) -> bool {
        self.updated.get()
    }

    /// `apt-get update` of the private lists.
    pub fn update(&self) -> Result<()> {
        step!(
            "apt-get update (private lists in {})",
            self.root.join("lists").display()
        );
        let mut c = self.cmd("apt-get");
        // --error-on=any: a failed index download is an error, not a warning
        // (else a network problem would look like packages gone from the archive).
        c.args(["-q", "update", "--error-on=any"]);
        util::run_as(&mut c, "apt-get update").with_context(|| {
            format!(
                "apt-get update of the private package lists ({}) failed: does the mirror \
                     have {}? (set ${}=<URI of a Debian mirror> to use another)",
                self.root.join("sources.list").display(),
                SUITES.join(" and "),
                apt_sources::MIRROR_ENV
            )
        })?;
        if self.lists_age().is_none() {
            bail!(
                "apt-get update left no package lists in {}",
                self.root.join("lists").display()
            );
        }
        self.updated.set(true);
        Ok(())
    }

    /// Updates the lists unless they exist and are younger than `max_age`.
    pub fn ensure_lists(&self, max_age: Duration) -> Result<()> {
        if self.updated() {
            return Ok(());
        }
        match self.lists_age() {
            Some(age) if age <= max_age => Ok(()),
            _ => self.update(),
        }
    }

    /// `apt-cache show NAME=VERSION` (or `NAME` for all versions); empty if unknown.
    pub fn show(&self, name: &str, version: Option<&str>) -> Result<Vec<PkgInfo>> {
        let spec = match version {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        };
        let mut c = self.cmd("apt-cache");
        c.arg("show").arg(&spec);
        let out = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{}`", util::show(&c)))?;
        if !out.status.success() {
            return Ok(Vec::new());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("\n\n")
            .filter(|s| !s.trim().is_empty())
            .map(parse_stanza)
            .collect()
    }

    /// Versions of `name` per suite, from `apt-cache madison`.
    pub fn madison(&self, name: &str) -> Result<Vec<(String, String)>> {
        let mut c = self.cmd("apt-cache");
        c.args(["madison", name]);
        let text = util::output(&mut c)?;
        let mut out = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            if fields.len() < 3 || fields[0] != name {
                continue;
            }
            // "<mirror URI> bookworm-backports/main amd64 Packages"
            let suite = fields[2]
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.split('/').next())
                .unwrap_or_default();
            out.push((fields[1].to_string(), suite.to_string()));
        }
        Ok(out)
    }

    /// Downloads `pkg` into `dest_dir` as the pool file name, verifying its SHA256
    /// against `pkg.sha256`. Returns the path of the verified .deb.
    pub fn download(&self, pkg: &PkgInfo, dest_dir: &Path) -> Result<PathBuf> {
        let base = Path::new(&pkg.filename)
            .file_name()
            .ok_or_else(|| anyhow!("bad Filename {:?} for {}", pkg.filename, pkg.name))?;
        let dest = dest_dir.join(base);
        let work = self.root.join("download");
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("cannot clean {}", work.display()))?;
        }
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        step!(
            "download {} {} ({})",
            pkg.name,
            pkg.version,
            util::human(pkg.size)
        );
        let mut c = self.cmd("apt-get");
        c.args(["-q", "download"])
            .arg(format!("{}={}", pkg.name, pkg.version))
            .current_dir(&work)
            .stdin(Stdio::null());
        util::run_as(&mut c, &format!("apt-get download {}={}", pkg.name, pkg.version)).with_context(|| {
            format!(
                "download of {} {} failed (network down? retry; or delete its lock entry to re-resolve)",
                pkg.name, pkg.version
            )
        })?;
        let mut debs = std::fs::read_dir(&work)
            .with_context(|| format!("cannot read {}", work.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"));
        let Some(got) = debs.next() else {
            bail!(
                "apt-get download of {} {} produced no .deb",
                pkg.name,
                pkg.version
            );
        };
        let sha = util::sha256_file(&got)?;
        if sha != pkg.sha256 {
            let _ = std::fs::remove_file(&got);
            bail!(
                "checksum mismatch for {} {}: got sha256 {sha}, expected {} (file removed)",
                pkg.name,
                pkg.version,
                pkg.sha256
            );
        }
        step!(
            "verified sha256 {} of {}",
            &sha[..16],
            base.to_string_lossy()
        );
        std::fs::create_dir_all(dest_dir)
            .with_context(|| format!("cannot create {}", dest_dir.display()))?;
        std::fs::rename(&got, &dest)
            .with_context(|| format!("cannot move {} to {}", got.display(), dest.display()))?;
        Ok(dest)
    }
}

/// Parses one `apt-cache show` stanza.
fn parse_stanza(stanza: &str) -> Result<PkgInfo> {
    let mut fields = std::collections::HashMap::new();
    let mut last: Option<String> = None;
    for line in stanza.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last {
                if let Some(v) = fields.get_mut(k) {
                    let v: &mut String = v;
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    let get = |k: &str| -> Result<String> {
        fields
            .get(k)
            .cloned()
            .ok_or_else(|| anyhow!("apt-cache show output lacks {k}: in stanza:\n{stanza}"))
    };
    Ok(PkgInfo {
        name: get("Package")?,
        version: get("Version")?,
        sha256: get("SHA256")?,
        filename: get("Filename")?,
        size: get("Size")?.parse().context("bad Size field")?,
        depends: fields.get("Depends").cloned().unwrap_or_default(),
        section: fields.get("Section").cloned().unwrap_or_default(),
    })
}

/// Names in a `Depends:` field (alternatives flattened, versions and arch qualifiers dropped).
pub fn depends_names(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(|n| n.split(':').next().unwrap_or(n).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_and_depends() {
        let s = "Package: linux-headers-6.12.95+deb12-amd64\nSource: linux\nVersion: 6.12.95-1~bpo12+1\n\
                 Depends: linux-base (>= 4.12~), linux-headers-6.12.95+deb12-common (= 6.12.95-1~bpo12+1), \
                 linux-image-a (= 1) | linux-image-b (= 1), linux-kbuild-6.12.95+deb12, gcc-12:amd64\n\
                 Filename: pool/main/l/linux/x.deb\nSize: 3035744\nSHA256: abcd\nDescription-md5: 1\n";
        let p = parse_stanza(s).unwrap();
        assert_eq!(p.name, "linux-headers-6.12.95+deb12-amd64");
        assert_eq!(p.version, "6.12.95-1~bpo12+1");
        assert_eq!(p.size, 3035744);
        assert_eq!(p.sha256, "abcd");
        assert_eq!(p.section, "");
        let libs = parse_stanza(&s.replace("Source: linux\n", "Section: libs\n")).unwrap();
        assert_eq!(libs.section, "libs");
        assert_eq!(
            depends_names(&p.depends),
            vec![
                "linux-base",
                "linux-headers-6.12.95+deb12-common",
                "linux-image-a",
                "linux-image-b",
                "linux-kbuild-6.12.95+deb12",
                "gcc-12"
            ]
        );
    }
}
