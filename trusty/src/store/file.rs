//! The on-disk store: one directory per namespace, an encrypted and
//! authenticated manifest, one encrypted blob per file version, atomic
//! commits (`docs/trusty.md`, "Storage security model").
//!
//! ```text
//! manifest                     "VTM1" | nonce[24] | XChaCha20-Poly1305(json), aad "manifest\0<ns id>"
//! <hmac(name)[..16]>-<ver>.blob "VTF1" | nonce[24] | XChaCha20-Poly1305(data), aad "file\0<ns id>\0<name>\0<ver>"
//! *.tmp                        a write in progress (removed at open)
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vmstack_log::guest_warn;

use super::{check_limits, is_valid_name, Change, FileMeta, Limits, SecureStore, StoreError};
use crate::keys::{create_private_dir, NamespaceKeys};

const MANIFEST: &str = "manifest";
const MANIFEST_MAGIC: &[u8; 4] = b"VTM1";
const BLOB_MAGIC: &[u8; 4] = b"VTF1";
const BLOB_SUFFIX: &str = ".blob";
const TMP_SUFFIX: &str = ".tmp";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Magic, nonce and tag around every ciphertext.
const OVERHEAD: u64 = (4 + NONCE_LEN + TAG_LEN) as u64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    version: u64,
    size: u64,
    blob: String,
}

/// A namespace directory (see the module docs).
pub struct FileStore {
    dir: PathBuf,
    keys: NamespaceKeys,
    limits: Limits,
    manifest: Manifest,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.dir)
            .field("id", &self.keys.id)
            .field("generation", &self.manifest.generation)
            .field("files", &self.manifest.files.len())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn integrity(msg: impl Into<String>) -> StoreError {
    StoreError::Integrity(msg.into())
}

/// Writes `bytes` to `path.tmp`, fsynced, and returns that path (the
/// caller renames it into place).
fn write_tmp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Writes `bytes` to `path` through `path.tmp`, fsynced before the rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_tmp(path, bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
thread_local! {
    /// Test hook: how many more directory fsyncs of this thread succeed
    /// before one fails (`None`: none fails).
    static SYNC_DIR_FAILS_AFTER: std::cell::Cell<Option<u32>> =
        const { std::cell::Cell::new(None) };
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = SYNC_DIR_FAILS_AFTER.get() {
        if n == 0 {
            SYNC_DIR_FAILS_AFTER.set(None);
            return Err(io::Error::other("injected directory fsync failure"));
        }
        SYNC_DIR_FAILS_AFTER.set(Some(n - 1));
    }
    File::open(dir)?.sync_all()
}

impl FileStore {
    /// Opens (or creates, `0700`) the namespace directory `dir`: removes
    /// leftovers of an interrupted commit and authenticates the manifest.
    /// A manifest that fails authentication, or blobs without a manifest,
    /// are integrity errors (nothing is removed then).
    ///
    /// A directory with neither a manifest nor blobs (new, or made by an
    /// older version before its first commit) gets a sealed, fsynced
    /// generation-0 manifest before anything else is written, so that a
    /// crash in the first commit leaves that manifest (and unreferenced
    /// blobs, removed here) and a missing manifest always means tampering.
    pub fn open(dir: &Path, keys: NamespaceKeys, limits: Limits) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let mut store = FileStore {
            dir: dir.to_path_buf(),
            keys,
            limits,
            manifest: Manifest::default(),
        };
        let mut blobs = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                fs::remove_file(dir.join(name.as_ref()))?;
            } else if name.ends_with(BLOB_SUFFIX) {
                blobs.push(name.into_owned());
            }
        }
        match fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => store.manifest = store.decrypt_manifest(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !blobs.is_empty() {
                    return Err(integrity(format!(
                        "{}: the manifest is missing but {} file blobs are present",
                        dir.display(),
                        blobs.len()
                    )));
                }
                store.write_manifest(&Manifest::default())?;
                sync_dir(dir)?;
            }
            Err(e) => return Err(e.into()),
        }
        for blob in blobs {
            if !store.manifest.files.values().any(|e| e.blob == blob) {
                tracing::info!(dir = %dir.display(), blob, "removing a blob no commit refers to");
                fs::remove_file(dir.join(&blob))?;
            }
        }
        Ok(store)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.keys.aead.0).into())
    }

    fn seal(&self, magic: &[u8; 4], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Io(io::Error::other(e)))?;
        let ct = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| StoreError::Io(io::Error::other("encryption failed")))?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + ct.len());
        out.extend_from_slice(magic);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open_sealed(
        &self,
        magic: &[u8; 4],
        aad: &[u8],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, StoreError> {
        if (sealed.len() as u64) < OVERHEAD || &sealed[..4] != magic {
            return Err(integrity(format!(
                "{what}: not a sealed {}",
                String::from_utf8_lossy(magic)
            )));
        }
        let nonce = XNonce::from_slice(&sealed[4..4 + NONCE_LEN]);
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[4 + NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| {
                integrity(format!(
                    "{what} failed authentication (changed, or an older copy)"
                ))
            })
    }

    /// Seals `m` and puts it in place (fsynced file, atomic rename; the
    /// caller fsyncs the directory).
    fn write_manifest(&self, m: &Manifest) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(MANIFEST), &self.sealed_manifest(m)?)?;
        Ok(())
    }

    /// `m` as the sealed bytes of the manifest file.
    fn sealed_manifest(&self, m: &Manifest) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(m).map_err(|e| StoreError::Io(io::Error::other(e)))?;
        self.seal(MANIFEST_MAGIC, &self.manifest_aad(), &json)
    }

    fn manifest_aad(&self) -> Vec<u8> {
        format!("manifest\0{}", self.keys.id).into_bytes()
    }

    fn blob_aad(&self, name: &str, version: u64) -> Vec<u8> {
        format!("file\0{}\0{name}\0{version}", self.keys.id).into_bytes()
    }

    /// The blob file name of `name` at `version`.
    fn blob_name(&self, name: &str, version: u64) -> String {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.keys.name.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        };
        mac.update(name.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{}-{version:016x}{BLOB_SUFFIX}", hex(&tag[..16]))
    }

    fn decrypt_manifest(&self, bytes: &[u8]) -> Result<Manifest, StoreError> {
        let plain =
            self.open_sealed(MANIFEST_MAGIC, &self.manifest_aad(), bytes, "the manifest")?;
        let m: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| integrity(format!("the manifest does not parse: {e}")))?;
        for (name, e) in &m.files {
            if !is_valid_name(name.as_bytes())
                || e.version > m.generation
                || e.blob != self.blob_name(name, e.version)
                || e.size > self.limits.max_file_size
            {
                return Err(integrity(format!(
                    "the manifest's entry for {name:?} is inconsistent"
                )));
            }
        }
        Ok(m)
    }

    /// The namespace's commit counter (for tests and logs).
    pub fn generation(&self) -> u64 {
        self.manifest.generation
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The on-disk path of `name`'s current blob (tests that tamper).
    pub fn blob_path(&self, name: &str) -> Option<PathBuf> {
        self.manifest
            .files
            .get(name)
            .map(|e| self.dir.join(&e.blob))
    }
}

impl SecureStore for FileStore {
    fn files(&self) -> Result<Vec<(String, FileMeta)>, StoreError> {
        Ok(self
            .manifest
            .files
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    FileMeta {
                        version: e.version,
                        size: e.size,
                    },
                )
            })
            .collect())
    }

    fn meta(&self, name: &str) -> Result<Option<FileMeta>, StoreError> {
        Ok(self.manifest.files.get(name).map(|e| FileMeta {
            version: e.version,
            size: e.size,
        }))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let e = self
            .manifest
            .files
            .get(name)
            .ok_or_else(|| integrity(format!("{name} is not in the manifest")))?;
        let path = self.dir.join(&e.blob);
        let what = format!("file {name} (version {})", e.version);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(integrity(format!("{what}: its blob is missing")))
            }
            Err(err) => return Err(err.into()),
        };
        // Bound the read by what the manifest allows before reading.
        let len = f.metadata()?.len();
        if len != e.size + OVERHEAD {
            return Err(integrity(format!(
                "{what}: blob of {len} bytes, expected {}",
                e.size + OVERHEAD
            )));
        }
        let mut sealed = Vec::with_capacity(len as usize);
        io::Read::read_to_end(&mut f, &mut sealed)?;
        let plain =
            self.open_sealed(BLOB_MAGIC, &self.blob_aad(name, e.version), &sealed, &what)?;
        if plain.len() as u64 != e.size {
            return Err(integrity(format!("{what}: size differs from the manifest")));
        }
        Ok(plain)
    }

    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        // The last change of a name wins.
        let changes: BTreeMap<String, Option<Vec<u8>>> =
            changes.into_iter().map(|c| (c.name, c.data)).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let list: Vec<Change> = changes
            .iter()
            .map(|(n, d)| Change {
                name: n.clone(),
                data: d.clone(),
            })
            .collect();
        let current = self.files()?.into_iter().collect();
        check_limits(&current, &list, &self.limits)?;

        let generation = self.manifest.generation + 1;
        let mut next = self.manifest.clone();
        next.generation = generation;
        // Every attempt uses up its generation, so that no later commit
        // writes blobs under names a failed one may have left behind.
        self.manifest.generation = generation;
        let mut written = Vec::new();
        // Up to the manifest's rename (the commit point): a failure leaves
        // the committed state as it was, and the new blobs are removed.
        let result = (|| -> Result<(), StoreError> {
            for (name, data) in &changes {
                match data {
                    Some(d) => {
                        let blob = self.blob_name(name, generation);
                        let sealed = self.seal(BLOB_MAGIC, &self.blob_aad(name, generation), d)?;
                        let path = self.dir.join(&blob);
                        write_atomic(&path, &sealed)?;
                        written.push(path);
                        next.files.insert(
                            name.clone(),
                            Entry {
                                version: generation,
                                size: d.len() as u64,
                                blob,
                            },
                        );
                    }
                    None => {
                        next.files.remove(name);
                    }
                }
            }
            sync_dir(&self.dir)?;
            let sealed = self.sealed_manifest(&next)?;
            let path = self.dir.join(MANIFEST);
            let tmp = write_tmp(&path, &sealed)?;
            // The commit point: the manifest's rename.
            fs::rename(&tmp, &path)?;
            Ok(())
        })();
        if let Err(e) = result {
            for p in written {
                let _ = fs::remove_file(p);
            }
            return Err(e);
        }
        // The new manifest is live: its blobs stay, and it is the state
        // from now on, even if making the rename durable fails.
        let old = std::mem::replace(&mut self.manifest, next);
        if let Err(e) = sync_dir(&self.dir) {
            // After a crash either manifest may be found, so the old one's
            // blobs are kept too (the next open removes the ones the
            // surviving manifest does not name). The caller is told the
            // commit failed: whether it survives a crash is unknown.
            guest_warn!("commit: the directory fsync after the manifest's rename failed: {e}");
            return Err(e.into());
        }
        for (name, e) in old.files {
            if changes.contains_key(&name) {
                if let Err(err) = fs::remove_file(self.dir.join(&e.blob)) {
                    guest_warn!("could not remove a superseded blob {}: {err}", e.blob);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DeviceSecret;

    fn keys(guest: &str) -> NamespaceKeys {
        NamespaceKeys::derive(&DeviceSecret::from_bytes([9; 32]), guest, "td")
    }

    /// The store of `guest` in `dir`, with the default limits.
    fn open(dir: &Path, guest: &str) -> Result<FileStore, StoreError> {
        FileStore::open(dir, keys(guest), Limits::default())
    }

    fn put(s: &mut FileStore, name: &str, data: &[u8]) {
        s.commit(vec![Change {
            name: name.into(),
            data: Some(data.to_vec()),
        }])
        .unwrap();
    }

    /// A fresh directory with `guest`'s store in it, holding `name` =
    /// `data` (one commit).
    fn store_with(guest: &str, name: &str, data: &[u8]) -> (tempfile::TempDir, FileStore) {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), guest).unwrap();
        put(&mut s, name, data);
        (d, s)
    }

    #[test]
    fn survives_reopen_and_hides_names() {
        let (d, mut s) = store_with("g", "secret.name", b"hello");
        put(&mut s, "other", b"");
        drop(s);
        let s = open(d.path(), "g").unwrap();
        assert_eq!(s.read("secret.name").unwrap(), b"hello");
        assert_eq!(s.read("other").unwrap(), b"");
        assert_eq!(s.generation(), 2);
        for e in fs::read_dir(d.path()).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(!n.contains("secret"), "{n}");
            let bytes = fs::read(d.path().join(&n)).unwrap();
            assert!(!bytes.windows(5).any(|w| w == b"hello"), "plaintext in {n}");
        }
    }

    #[test]
    fn a_flipped_byte_is_an_integrity_error() {
        let (_d, s) = store_with("g", "f", b"some contents");
        let p = s.blob_path("f").unwrap();
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 20;
        bytes[last] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(s.read("f"), Err(StoreError::Integrity(_))));
    }

    #[test]
    fn an_old_copy_put_back_is_detected() {
        let (_d, mut s) = store_with("g", "f", b"version one");
        let old_path = s.blob_path("f").unwrap();
        let old = fs::read(&old_path).unwrap();
        put(&mut s, "f", b"version two");
        assert!(!old_path.exists(), "superseded blob removed");
        // The attacker copies the old blob over the current one.
        let cur = s.blob_path("f").unwrap();
        fs::write(&cur, &old).unwrap();
        let e = s.read("f").unwrap_err();
        assert!(matches!(e, StoreError::Integrity(_)), "{e}");
        // An old manifest put back with the newer blobs present: the blob
        // it names is gone.
        let (d2, mut s) = store_with("g", "f", b"one");
        let old_manifest = fs::read(d2.path().join(MANIFEST)).unwrap();
        put(&mut s, "f", b"two");
        fs::write(d2.path().join(MANIFEST), old_manifest).unwrap();
        let s = open(d2.path(), "g").unwrap();
        assert!(matches!(s.read("f"), Err(StoreError::Integrity(_))));
    }

    #[test]
    fn another_guests_blobs_and_manifest_do_not_authenticate() {
        let (a, _s) = store_with("a", "f", b"a's data");
        // The whole directory moved under guest b's keys.
        let e = open(a.path(), "b").unwrap_err();
        assert!(matches!(e, StoreError::Integrity(_)), "{e}");
    }

    #[test]
    fn tampered_or_missing_manifests_are_errors_and_nothing_is_removed() {
        let (d, _s) = store_with("g", "f", b"x");
        let m = d.path().join(MANIFEST);
        let mut bytes = fs::read(&m).unwrap();
        bytes[30] ^= 0x80;
        fs::write(&m, &bytes).unwrap();
        assert!(matches!(open(d.path(), "g"), Err(StoreError::Integrity(_))));
        fs::remove_file(&m).unwrap();
        let e = open(d.path(), "g").unwrap_err();
        assert!(e.to_string().contains("manifest is missing"), "{e}");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "the blob is kept as evidence"
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_commit_are_removed() {
        let (d, s) = store_with("g", "f", b"committed");
        // A crash after writing the next blob but before the manifest.
        let next = s.blob_name("f", 99);
        fs::write(d.path().join(&next), b"junk").unwrap();
        fs::write(d.path().join("manifest.tmp"), b"junk").unwrap();
        drop(s);
        let s = open(d.path(), "g").unwrap();
        assert_eq!(s.read("f").unwrap(), b"committed");
        assert!(!d.path().join(next).exists());
        assert!(!d.path().join("manifest.tmp").exists());
    }

    #[test]
    fn a_crash_in_the_first_commit_leaves_the_empty_store() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path(), "g").unwrap();
        assert!(d.path().join(MANIFEST).exists(), "generation 0 is sealed");
        // The first commit crashed after its blob's rename (and the
        // directory fsync), before the manifest's rename.
        let blob = s.blob_name("f", 1);
        let sealed = s.seal(BLOB_MAGIC, &s.blob_aad("f", 1), b"new").unwrap();
        fs::write(d.path().join(&blob), sealed).unwrap();
        fs::write(d.path().join("manifest.tmp"), b"partial").unwrap();
        drop(s);
        let mut s = open(d.path(), "g").unwrap();
        assert_eq!(s.generation(), 0);
        assert_eq!(s.files().unwrap(), vec![]);
        assert!(!d.path().join(&blob).exists());
        put(&mut s, "f", b"again");
        drop(s);
        assert_eq!(open(d.path(), "g").unwrap().read("f").unwrap(), b"again");
    }

    #[test]
    fn a_directory_without_manifest_or_blobs_still_opens() {
        // A store an older version created but never committed to.
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path(), "g").unwrap();
        fs::remove_file(d.path().join(MANIFEST)).unwrap();
        drop(s);
        s = open(d.path(), "g").unwrap();
        assert_eq!(s.generation(), 0);
        put(&mut s, "f", b"x");
        assert_eq!(open(d.path(), "g").unwrap().read("f").unwrap(), b"x");
    }

    #[test]
    fn a_failed_fsync_after_the_manifest_rename_keeps_the_new_blobs() {
        let (d, mut s) = store_with("g", "f", b"one");
        // The fsync after the blobs succeeds, the one after the rename
        // fails.
        SYNC_DIR_FAILS_AFTER.set(Some(1));
        let r = s.commit(vec![Change {
            name: "f".into(),
            data: Some(b"two".to_vec()),
        }]);
        assert!(matches!(r, Err(StoreError::Io(_))), "{r:?}");
        // The live manifest is adopted: memory and disk agree.
        assert_eq!(s.generation(), 2);
        assert_eq!(s.read("f").unwrap(), b"two");
        assert_eq!(open(d.path(), "g").unwrap().read("f").unwrap(), b"two");
        // The next commit uses a new generation.
        put(&mut s, "f", b"three");
        assert_eq!(s.generation(), 3);
        drop(s);
        let s = open(d.path(), "g").unwrap();
        assert_eq!(s.read("f").unwrap(), b"three");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "manifest and one blob"
        );
    }

    #[test]
    fn a_failure_before_the_manifest_rename_still_uses_up_the_generation() {
        let (d, mut s) = store_with("g", "f", b"one");
        SYNC_DIR_FAILS_AFTER.set(Some(0));
        let r = s.commit(vec![Change {
            name: "f".into(),
            data: Some(b"two".to_vec()),
        }]);
        assert!(matches!(r, Err(StoreError::Io(_))), "{r:?}");
        assert_eq!(s.read("f").unwrap(), b"one");
        assert_eq!(s.generation(), 2);
        assert!(!d.path().join(s.blob_name("f", 2)).exists());
        put(&mut s, "f", b"three");
        assert_eq!(s.meta("f").unwrap().unwrap().version, 3);
        assert_eq!(open(d.path(), "g").unwrap().read("f").unwrap(), b"three");
    }

    #[test]
    fn an_oversized_blob_is_not_read() {
        let (_d, s) = store_with("g", "f", b"small");
        let p = s.blob_path("f").unwrap();
        fs::write(&p, vec![0u8; 10 << 20]).unwrap();
        let e = s.read("f").unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
    }

    #[test]
    fn deletes_commit_and_limits_hold() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_file_size: 8,
            max_files: 4,
            max_total: 16,
        };
        let mut s = FileStore::open(d.path(), keys("g"), limits).unwrap();
        put(&mut s, "a", b"1");
        s.commit(vec![Change {
            name: "a".into(),
            data: None,
        }])
        .unwrap();
        assert_eq!(s.meta("a").unwrap(), None);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "only the manifest"
        );
        let e = s
            .commit(vec![Change {
                name: "big".into(),
                data: Some(vec![0; 9]),
            }])
            .unwrap_err();
        assert!(matches!(e, StoreError::Quota(_)));
    }
}
