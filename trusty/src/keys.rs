//! The device secret and every key derived from it.
//!
//! `DIR/device-secret` holds 32 random bytes, created `0600` with
//! `O_EXCL` on first start. Every key is HKDF-SHA256 of it with salt
//! [`HKDF_SALT`] and an info string naming the purpose, the guest and
//! (for storage) the namespace, so no two guests or purposes share a key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the device secret and of every derived key.
pub const KEY_LEN: usize = 32;
/// HKDF salt of every derivation.
pub const HKDF_SALT: &[u8] = b"vmstack-trusty v1";
/// The device secret's file name in the state directory.
pub const SECRET_FILE: &str = "device-secret";

/// Why the device secret could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Reading or creating the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The secret's path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The file is not 32 bytes.
    #[error("{path} holds {len} bytes, not {KEY_LEN}: restore the right file or move the state directory away to start fresh (every stored file is lost)")]
    WrongSize {
        /// The secret's path.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Group or others may read the file.
    #[error("{path} has mode {mode:o}: group and others must have no access (chmod 600 {path})")]
    Permissions {
        /// The secret's path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// A 32-byte key, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key(pub [u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The device secret: the root of every key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DeviceSecret([u8; KEY_LEN]);

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

impl DeviceSecret {
    /// A secret from known bytes (tests).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        DeviceSecret(bytes)
    }

    /// Loads `dir/device-secret`, creating it (32 bytes from `getrandom`,
    /// mode `0600`, fsynced with its directory) if it does not exist.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(SECRET_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match File::open(&path) {
            Ok(mut f) => {
                let meta = f.metadata().map_err(io)?;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions { path, mode });
                }
                if meta.len() != KEY_LEN as u64 {
                    return Err(KeyError::WrongSize {
                        path,
                        len: meta.len(),
                    });
                }
                let mut s = [0u8; KEY_LEN];
                f.read_exact(&mut s).map_err(io)?;
                Ok(DeviceSecret(s))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut s = [0u8; KEY_LEN];
                getrandom::fill(&mut s).map_err(|e| io(io::Error::other(e)))?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.write_all(&s).map_err(io)?;
                f.sync_all().map_err(io)?;
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                tracing::info!(path = %path.display(), "created a new device secret");
                Ok(DeviceSecret(s))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// HKDF-SHA256 of the secret with `info` = the parts joined by NUL.
    pub fn derive(&self, parts: &[&str]) -> Key {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.0);
        let info = parts.join("\0");
        let mut out = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        if hk.expand(info.as_bytes(), &mut out).is_err() {
            unreachable!("HKDF-SHA256 expands 32 bytes");
        }
        Key(out)
    }

    /// Every key of one guest.
    pub fn guest_keys(&self, guest: &str) -> GuestKeys {
        GuestKeys {
            storage_td: NamespaceKeys::derive(self, guest, "td"),
            storage_gk: NamespaceKeys::derive(self, guest, "gk"),
            gatekeeper_password: self.derive(&["gatekeeper-password", guest]),
            gatekeeper_auth_token: self.derive(&["gatekeeper-auth-token", guest]),
            hwkey: self.derive(&["hwkey", guest]),
        }
    }
}

/// The keys of one storage namespace.
#[derive(Debug, Clone)]
pub struct NamespaceKeys {
    /// XChaCha20-Poly1305 key of the manifest and the file blobs.
    pub aead: Key,
    /// HMAC-SHA256 key that turns file names into blob names.
    pub name: Key,
    /// The namespace's identity (`guest/namespace`), bound into every
    /// ciphertext as associated data.
    pub id: String,
}

impl NamespaceKeys {
    /// The keys of `guest`'s namespace `ns`.
    pub fn derive(secret: &DeviceSecret, guest: &str, ns: &str) -> Self {
        NamespaceKeys {
            aead: secret.derive(&["storage-aead", guest, ns]),
            name: secret.derive(&["storage-name", guest, ns]),
            id: format!("{guest}/{ns}"),
        }
    }
}

/// Every key of one guest.
#[derive(Debug, Clone)]
pub struct GuestKeys {
    /// The storage TA's namespace.
    pub storage_td: NamespaceKeys,
    /// Gatekeeper's failure records.
    pub storage_gk: NamespaceKeys,
    /// Signs password handles.
    pub gatekeeper_password: Key,
    /// Signs auth tokens.
    pub gatekeeper_auth_token: Key,
    /// hwkey's derivation key.
    pub hwkey: Key,
}

/// Creates `dir` (and parents) with mode `0700` where missing.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = DeviceSecret::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = DeviceSecret::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, [0; KEY_LEN]);
    }

    #[test]
    fn bad_secrets_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SECRET_FILE);
        fs::write(&p, [1u8; 31]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let e = DeviceSecret::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, KeyError::WrongSize { len: 31, .. }), "{e}");
        fs::write(&p, [1u8; 32]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = DeviceSecret::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn keys_differ_per_guest_and_purpose() {
        let s = DeviceSecret::from_bytes([7; KEY_LEN]);
        let a = s.guest_keys("a");
        let b = s.guest_keys("b");
        assert_ne!(a.hwkey.0, b.hwkey.0);
        assert_ne!(a.storage_td.aead.0, b.storage_td.aead.0);
        assert_ne!(a.storage_td.aead.0, a.storage_gk.aead.0);
        assert_ne!(a.storage_td.aead.0, a.storage_td.name.0);
        assert_ne!(a.gatekeeper_password.0, a.gatekeeper_auth_token.0);
        // Deterministic.
        assert_eq!(s.guest_keys("a").hwkey.0, a.hwkey.0);
        // Joining with NUL keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(s.derive(&["a", "bc"]).0, s.derive(&["ab", "c"]).0);
    }
}
