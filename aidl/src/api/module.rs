//! One AIDL module's API directory (`api/<package>/`): its frozen
//! versions, `current`, and the checks a build runs on them.

use std::path::{Path, PathBuf};

use super::check::incompatibilities;
use super::dump::{dump_api, read_api, read_tree, version_hash, write_dump, DumpError};
use super::Api;

/// The module this crate freezes.
pub const MODULE: &str = "vmstack.sysmgr";

/// An API directory and the sources it describes.
#[derive(Debug, Clone)]
pub struct ApiModule {
    /// `aidl/aidl` (the `.aidl` sources).
    pub sources: PathBuf,
    /// `aidl/api/vmstack.sysmgr`.
    pub dir: PathBuf,
}

impl ApiModule {
    /// This crate's module, from its manifest directory.
    pub fn this_crate() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        ApiModule {
            sources: root.join("aidl"),
            dir: root.join("api").join(MODULE),
        }
    }

    /// The frozen versions, ascending.
    pub fn versions(&self) -> Result<Vec<u32>, DumpError> {
        let mut v: Vec<u32> = std::fs::read_dir(&self.dir)
            .map_err(|source| DumpError::Io {
                path: self.dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Every problem, one line each: `current` out of date, a frozen
    /// version whose `.hash` does not match its files, or sources that
    /// are not a compatible extension of the newest frozen version (or a
    /// version of the one before it).
    pub fn problems(&self) -> Result<Vec<String>, DumpError> {
        let mut out = Vec::new();
        let sources = read_api(&self.sources)?;
        let current_dir = self.dir.join("current");
        let want = dump_api(&sources);
        let have = if current_dir.exists() {
            read_tree(&current_dir)?
        } else {
            Vec::new()
        };
        if want != have {
            out.push(format!(
                "{} is out of date with the .aidl sources: run `cargo run -p vmstack-aidl --bin aidl-api -- update` (and freeze a new version if this changes a frozen one)",
                current_dir.display()
            ));
        }
        let versions = self.versions()?;
        let mut previous: Option<(u32, Api)> = None;
        for v in &versions {
            let vdir = self.dir.join(v.to_string());
            let files = read_tree(&vdir)?;
            let hash_path = vdir.join(".hash");
            let recorded = std::fs::read_to_string(&hash_path).unwrap_or_default();
            let computed = version_hash(&files, &v.to_string());
            if recorded.trim() != computed {
                out.push(format!(
                    "{}: frozen version {v} was edited (.hash {} != {computed}); frozen versions never change",
                    vdir.display(),
                    recorded.trim()
                ));
            }
            let api = read_api(&vdir)?;
            if let Some((pv, papi)) = &previous {
                for e in incompatibilities(papi, &api) {
                    out.push(format!("version {v} against {pv}: {e}"));
                }
            }
            previous = Some((*v, api));
        }
        if let Some((v, api)) = previous {
            for e in incompatibilities(&api, &sources) {
                out.push(format!("sources against frozen version {v}: {e}"));
            }
        }
        Ok(out)
    }

    /// Rewrites `current` from the sources.
    pub fn update(&self) -> Result<(), DumpError> {
        write_dump(&read_api(&self.sources)?, &self.dir.join("current"))
    }

    /// Freezes the sources as the next version; refuses (returns the
    /// problems) if they are incompatible with the newest frozen one.
    pub fn freeze(&self) -> Result<Result<u32, Vec<String>>, DumpError> {
        let sources = read_api(&self.sources)?;
        let versions = self.versions()?;
        if let Some(last) = versions.last() {
            let errs = incompatibilities(&read_api(&self.dir.join(last.to_string()))?, &sources);
            if !errs.is_empty() {
                return Ok(Err(errs));
            }
        }
        let v = versions.last().map_or(1, |l| l + 1);
        let vdir = self.dir.join(v.to_string());
        write_dump(&sources, &vdir)?;
        let hash = version_hash(&read_tree(&vdir)?, &v.to_string());
        let hash_path = vdir.join(".hash");
        std::fs::write(&hash_path, format!("{hash}\n")).map_err(|source| DumpError::Io {
            path: hash_path,
            source,
        })?;
        self.update()?;
        Ok(Ok(v))
    }
}
