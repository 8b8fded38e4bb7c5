//! A deterministic `newc` cpio writer for initramfs images.
//!
//! Entries are kept sorted by path (parents first), owned by root, with mtime 0, so
//! the same inputs give byte-identical archives. Device nodes (`/dev/console`) are
//! written directly, without `mknod` on the build machine.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An in-memory initramfs archive.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn norm(path: &str) -> Result<String> {
    let p = path.trim_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("bad archive path {path:?}");
    }
    Ok(p.to_string())
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.entries
                .entry(acc.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<()> {
        let p = norm(path)?;
        self.parents(&p);
        self.entries.insert(p, entry);
        Ok(())
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(path, Entry::Dir { mode })
    }

    /// Adds a regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        self.insert(path, Entry::File { mode, data })
    }

    /// Adds a regular file copied from `src`.
    pub fn file_from(&mut self, path: &str, mode: u32, src: &Path) -> Result<()> {
        let data = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
        self.file(path, mode, data)
    }

    /// Adds a symlink.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, Entry::CharDev { mode, major, minor })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `path` is in the archive.
    #[cfg(test)]
    pub fn contains(&self, path: &str) -> bool {
        norm(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// Writes the archive in `newc` format.
    pub fn write_newc(&self, w: &mut impl Write) -> Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, nlink, rmaj, rmin): (u32, &[u8], u32, u32, u32) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, &[], 2, 0, 0),
                Entry::File { mode, data } => (S_IFREG | mode, data, 1, 0, 0),
                Entry::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes(), 1, 0, 0),
                Entry::CharDev { mode, major, minor } => (S_IFCHR | mode, &[], 1, *major, *minor),
            };
            write_header(w, ino, mode, nlink, data.len(), rmaj, rmin, path)?;
            w.write_all(data)?;
            pad(w, data.len())?;
        }
        write_header(w, 0, 0, 1, 0, 0, 0, "TRAILER!!!")?;
        Ok(())
    }

    /// Writes the archive gzip-compressed to `out` (atomically); returns its size.
    pub fn write_gz(&self, out: &Path) -> Result<u64> {
        let tmp = out.with_extension("tmp-write");
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
        self.write_newc(&mut gz)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut buf = gz
            .finish()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        buf.flush()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        drop(buf);
        std::fs::rename(&tmp, out)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
        Ok(std::fs::metadata(out)?.len())
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rmaj: u32,
    rmin: u32,
    name: &str,
) -> Result<()> {
    let size = u32::try_from(size).context("file too large for cpio newc")?;
    let namesize = u32::try_from(name.len() + 1).context("name too long")?;
    let fields = [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, namesize, 0,
    ];
    let mut h = String::from("070701");
    for f in fields {
        h.push_str(&format!("{f:08X}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, h.len() + name.len() + 1)?;
    Ok(())
}

fn pad(w: &mut impl Write, len: usize) -> Result<()> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..n])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Archive::new();
        a.file("/bin/sh", 0o755, b"abc".to_vec()).unwrap();
        a.char_dev("dev/console", 0o600, 5, 1).unwrap();
        a.symlink("sbin/init", "/bin/sh").unwrap();
        assert!(a.contains("bin") && a.contains("/dev") && a.contains("sbin/init"));
        let mut out = Vec::new();
        a.write_newc(&mut out).unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        let bin = text.find("bin\0").unwrap();
        let sh = text.find("bin/sh\0").unwrap();
        assert!(bin < sh, "parent directory first");
        assert!(text.contains("TRAILER!!!"));
        // Deterministic.
        let mut again = Vec::new();
        a.write_newc(&mut again).unwrap();
        assert_eq!(out, again);
        assert!(a.file("../x", 0o644, vec![]).is_err());
    }

    #[test]
    fn cpio_tool_reads_it() {
        if !crate::util::on_path("cpio") {
            return;
        }
        let mut a = Archive::new();
        a.file("etc/x", 0o644, b"hello".to_vec()).unwrap();
        a.symlink("etc/y", "x").unwrap();
        let mut out = Vec::new();
        a.write_newc(&mut out).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let list = child.wait_with_output().unwrap();
        assert!(list.status.success());
        assert_eq!(String::from_utf8_lossy(&list.stdout), "etc\netc/x\netc/y\n");
    }
}
