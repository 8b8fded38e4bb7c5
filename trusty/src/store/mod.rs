//! Committed state of a storage namespace behind a small trait.
//!
//! A [`SecureStore`] holds named files and changes them only by atomic
//! commits of whole file contents. The storage TA keeps its transactions
//! above it; gatekeeper keeps its failure records in one. [`FileStore`] is
//! the encrypted, authenticated on-disk store (`docs/trusty.md`, "Storage
//! security model"); [`MemStore`] is the same contract in memory, for
//! tests of the cores above. [`CommitThrottle`] caps how fast a guest
//! commits to a namespace.

mod file;
pub mod throttle;

use std::collections::BTreeMap;
use std::io;

use thiserror::Error;

pub use file::FileStore;
pub use throttle::CommitThrottle;

/// A committed file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Changes on every commit that writes the file; never reused.
    pub version: u64,
    /// Size in bytes.
    pub size: u64,
}

/// One file's new state in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file name.
    pub name: String,
    /// The new contents, or `None` to delete the file.
    pub data: Option<Vec<u8>>,
}

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Data on disk failed authentication, is missing or is an older
    /// copy: tampering or rollback.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The file system failed.
    #[error("storage i/o: {0}")]
    Io(#[from] io::Error),
    /// A namespace limit would be exceeded.
    #[error("storage quota: {0}")]
    Quota(String),
}

/// Size limits of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file.
    pub max_file_size: u64,
    /// Most files.
    pub max_files: usize,
    /// Most bytes in all files.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 1 << 20,
            max_files: 512,
            max_total: 64 << 20,
        }
    }
}

/// Longest file name.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a legal file name: 1-64 bytes of `[A-Za-z0-9._-]`
/// (Trusty's character set).
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// The committed files of one namespace.
pub trait SecureStore: Send {
    /// Every committed file, sorted by name.
    fn files(&self) -> Result<Vec<(String, FileMeta)>, StoreError>;
    /// One file's metadata, `None` if it does not exist.
    fn meta(&self, name: &str) -> Result<Option<FileMeta>, StoreError>;
    /// A file's verified contents.
    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// Applies all `changes` or none.
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StoreError>;
}

/// Checks `changes` against `limits` given the current files.
pub(crate) fn check_limits(
    current: &BTreeMap<String, FileMeta>,
    changes: &[Change],
    limits: &Limits,
) -> Result<(), StoreError> {
    let mut sizes: BTreeMap<&str, u64> =
        current.iter().map(|(n, m)| (n.as_str(), m.size)).collect();
    for c in changes {
        if !is_valid_name(c.name.as_bytes()) {
            return Err(StoreError::Quota(format!("invalid file name {:?}", c.name)));
        }
        match &c.data {
            Some(d) if d.len() as u64 > limits.max_file_size => {
                return Err(StoreError::Quota(format!(
                    "{} would be {} bytes, over {}",
                    c.name,
                    d.len(),
                    limits.max_file_size
                )))
            }
            Some(d) => {
                sizes.insert(&c.name, d.len() as u64);
            }
            None => {
                sizes.remove(c.name.as_str());
            }
        }
    }
    if sizes.len() > limits.max_files {
        return Err(StoreError::Quota(format!(
            "{} files, over {}",
            sizes.len(),
            limits.max_files
        )));
    }
    let total: u64 = sizes.values().sum();
    if total > limits.max_total {
        return Err(StoreError::Quota(format!(
            "{total} bytes in all files, over {}",
            limits.max_total
        )));
    }
    Ok(())
}

/// A namespace that could not be opened (its manifest failed
/// authentication, say): every operation fails with the reason, and
/// nothing on disk is touched.
#[derive(Debug)]
pub struct BrokenStore {
    /// Why the namespace is unusable.
    pub reason: String,
}

impl SecureStore for BrokenStore {
    fn files(&self) -> Result<Vec<(String, FileMeta)>, StoreError> {
        Err(StoreError::Integrity(self.reason.clone()))
    }
    fn meta(&self, _name: &str) -> Result<Option<FileMeta>, StoreError> {
        Err(StoreError::Integrity(self.reason.clone()))
    }
    fn read(&self, _name: &str) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Integrity(self.reason.clone()))
    }
    fn commit(&mut self, _changes: Vec<Change>) -> Result<(), StoreError> {
        Err(StoreError::Integrity(self.reason.clone()))
    }
}

/// A store in memory with the same contract (and the same limits) as
/// [`FileStore`], for unit tests of the layers above.
#[derive(Debug, Default)]
pub struct MemStore {
    files: BTreeMap<String, (FileMeta, Vec<u8>)>,
    generation: u64,
    limits: Limits,
    /// Names whose next reads fail with an integrity error (tests of the
    /// error paths above the store).
    pub corrupt: Vec<String>,
    /// When set, commits fail with an i/o error.
    pub fail_commits: bool,
}

impl MemStore {
    /// An empty store with default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        MemStore {
            limits,
            ..Self::default()
        }
    }
}

impl SecureStore for MemStore {
    fn files(&self) -> Result<Vec<(String, FileMeta)>, StoreError> {
        Ok(self
            .files
            .iter()
            .map(|(n, (m, _))| (n.clone(), *m))
            .collect())
    }

    fn meta(&self, name: &str) -> Result<Option<FileMeta>, StoreError> {
        Ok(self.files.get(name).map(|(m, _)| *m))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if self.corrupt.iter().any(|n| n == name) {
            return Err(StoreError::Integrity(format!("{name} (test corruption)")));
        }
        self.files
            .get(name)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| StoreError::Integrity(format!("{name} is not in the store")))
    }

    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        if self.fail_commits {
            return Err(StoreError::Io(io::Error::other("test failure")));
        }
        let current = self
            .files
            .iter()
            .map(|(n, (m, _))| (n.clone(), *m))
            .collect();
        check_limits(&current, &changes, &self.limits)?;
        self.generation += 1;
        for c in changes {
            match c.data {
                Some(d) => {
                    let meta = FileMeta {
                        version: self.generation,
                        size: d.len() as u64,
                    };
                    self.files.insert(c.name, (meta, d));
                }
                None => {
                    self.files.remove(&c.name);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_trustys_character_set() {
        assert!(is_valid_name(b"a.B-c_9"));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"a/b"));
        assert!(!is_valid_name(b"a b"));
        assert!(!is_valid_name(&[b'a'; 65]));
        assert!(is_valid_name(&[b'a'; 64]));
    }

    #[test]
    fn mem_store_commits_atomically_within_limits() {
        let mut s = MemStore::with_limits(Limits {
            max_file_size: 4,
            max_files: 2,
            max_total: 6,
        });
        s.commit(vec![Change {
            name: "a".into(),
            data: Some(b"1234".to_vec()),
        }])
        .unwrap();
        let v1 = s.meta("a").unwrap().unwrap().version;
        // Over the total: nothing applied.
        let e = s
            .commit(vec![
                Change {
                    name: "a".into(),
                    data: Some(b"xx".to_vec()),
                },
                Change {
                    name: "b".into(),
                    data: Some(b"12345".to_vec()),
                },
            ])
            .unwrap_err();
        assert!(matches!(e, StoreError::Quota(_)));
        assert_eq!(s.read("a").unwrap(), b"1234");
        s.commit(vec![Change {
            name: "a".into(),
            data: None,
        }])
        .unwrap();
        assert_eq!(s.meta("a").unwrap(), None);
        s.commit(vec![Change {
            name: "a".into(),
            data: Some(vec![]),
        }])
        .unwrap();
        assert!(s.meta("a").unwrap().unwrap().version > v1);
    }
}
