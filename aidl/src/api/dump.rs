//! The API dump: the text AOSP's `aidl --dumpapi` writes (one file per
//! type, types package-qualified, methods then constants), reading and
//! writing dump directories, and the frozen version's `.hash`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::{api_from_sources, AidlParseError, Api, Decl, DeclKind};

/// Errors reading or writing a dump directory.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file does not parse.
    #[error(transparent)]
    Parse(#[from] AidlParseError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DumpError + '_ {
    move |source| DumpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One declaration as `aidl --dumpapi` prints it.
pub fn dump_decl(d: &Decl) -> String {
    let mut s = format!("package {};\n", d.package);
    match &d.kind {
        DeclKind::Interface { methods, constants } => {
            let _ = writeln!(s, "interface {} {{", d.name);
            for m in methods {
                let args: Vec<String> = m
                    .args
                    .iter()
                    .map(|a| match a.direction {
                        Some(dir) => format!("{dir} {} {}", a.ty, a.name),
                        None => format!("{} {}", a.ty, a.name),
                    })
                    .collect();
                let oneway = if m.oneway { "oneway " } else { "" };
                let _ = writeln!(s, "  {oneway}{} {}({});", m.ret, m.name, args.join(", "));
            }
            for c in constants {
                let _ = writeln!(s, "  const {} {} = {};", c.ty, c.name, c.value);
            }
        }
        DeclKind::Parcelable { fields } => {
            let _ = writeln!(s, "parcelable {} {{", d.name);
            for f in fields {
                match &f.default {
                    Some(v) => {
                        let _ = writeln!(s, "  {} {} = {};", f.ty, f.name, v);
                    }
                    None => {
                        let _ = writeln!(s, "  {} {};", f.ty, f.name);
                    }
                }
            }
        }
    }
    s.push_str("}\n");
    s
}

/// The relative path of a declaration's file in a dump (`a/b/Name.aidl`).
pub fn decl_path(d: &Decl) -> PathBuf {
    let mut p: PathBuf = d.package.split('.').collect();
    p.push(format!("{}.aidl", d.name));
    p
}

/// Every `.aidl` file under `dir`, as (path relative to `dir`, text), sorted by path.
pub fn read_tree(dir: &Path) -> Result<Vec<(PathBuf, String)>, DumpError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<(), DumpError> {
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "aidl") {
                let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.push((rel, text));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

/// Parses every `.aidl` file under `dir` (sources or a dump).
pub fn read_api(dir: &Path) -> Result<Api, DumpError> {
    let tree = read_tree(dir)?;
    let named: Vec<(String, &str)> = tree
        .iter()
        .map(|(p, t)| (dir.join(p).display().to_string(), t.as_str()))
        .collect();
    Ok(api_from_sources(
        named.iter().map(|(p, t)| (p.as_str(), *t)),
    )?)
}

/// The dump of `api` as (relative path, text), sorted by path.
pub fn dump_api(api: &Api) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> =
        api.values().map(|d| (decl_path(d), dump_decl(d))).collect();
    out.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    out
}

/// Writes `api`'s dump into `dir`, replacing any `.aidl` files there.
pub fn write_dump(api: &Api, dir: &Path) -> Result<(), DumpError> {
    if dir.exists() {
        for (rel, _) in read_tree(dir)? {
            let p = dir.join(rel);
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    for (rel, text) in dump_api(api) {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&p, text).map_err(io_err(&p))?;
    }
    Ok(())
}

/// The `.hash` of a frozen version, AOSP's recipe:
///
/// ```sh
/// (cd api/vmstack.sysmgr/N && { find ./ -name "*.aidl" -print0 | LC_ALL=C sort -z | xargs -0 sha1sum && echo N; }) | sha1sum
/// ```
///
/// i.e. the SHA-1 of `sha1sum`'s lines for the sorted files followed by
/// the version line.
pub fn version_hash(files: &[(PathBuf, String)], version: &str) -> String {
    let mut listing = String::new();
    let mut files: Vec<&(PathBuf, String)> = files.iter().collect();
    files.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    for (rel, text) in files {
        let digest = hex(&Sha1::digest(text.as_bytes()));
        let _ = writeln!(listing, "{digest}  ./{}", rel.display());
    }
    let _ = writeln!(listing, "{version}");
    hex(&Sha1::digest(listing.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse::parse_file;

    #[test]
    fn dumps_in_aosp_form() {
        let d = parse_file(
            "I.aidl",
            "package p; import q.L; oneway interface I { const int A = 0x10; void f(in L l, int x); }",
        )
        .expect("parses");
        assert_eq!(
            dump_decl(&d),
            "package p;\ninterface I {\n  oneway void f(in q.L l, int x);\n  const int A = 16;\n}\n"
        );
        assert_eq!(decl_path(&d), PathBuf::from("p/I.aidl"));
    }

    #[test]
    fn the_hash_covers_names_contents_and_version() {
        let a = vec![(PathBuf::from("p/I.aidl"), "x".to_string())];
        let b = vec![(PathBuf::from("p/J.aidl"), "x".to_string())];
        let c = vec![(PathBuf::from("p/I.aidl"), "y".to_string())];
        let h = version_hash(&a, "1");
        assert_eq!(h.len(), 40);
        assert_ne!(h, version_hash(&b, "1"));
        assert_ne!(h, version_hash(&c, "1"));
        assert_ne!(h, version_hash(&a, "2"));
    }
}
