//! The service: the device secret, and per guest its keys, its storage
//! namespaces and the factories of channels and GP sessions to its TAs.
//!
//! A [`Guest`] is everything one guest can reach. Nothing a guest sends
//! selects another guest: the servers hand each connection the `Guest` of
//! the listener it arrived on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use crate::framing::TEE_MAX_MESSAGE;
use crate::keys::{create_private_dir, DeviceSecret, KeyError};
use crate::ports::TaKind;
use crate::store::{BrokenStore, CommitThrottle, FileStore, Limits, SecureStore};
use crate::ta::echo::{DatasinkChannel, EchoChannel, EchoGp};
use crate::ta::gatekeeper::{Gatekeeper, StoreEnv};
use crate::ta::gp::MessageGp;
use crate::ta::hwkey::{Hwkey, HwkeyChannel};
use crate::ta::storage::{StorageSession, TransactionBudget, MAX_GUEST_TRANSACTION_BYTES};
use crate::ta::{Channel, GpSession};

/// Why the service could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The device secret is unusable.
    #[error(transparent)]
    Secret(#[from] KeyError),
    /// A guest name outside `[A-Za-z0-9_-]{1,64}`.
    #[error("guest name {0:?}: use 1-64 characters of A-Z a-z 0-9 _ -")]
    GuestName(String),
}

/// Whether `name` is a legal guest name (`[A-Za-z0-9_-]{1,64}`).
pub fn is_valid_guest_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Milliseconds since boot, for gatekeeper's throttling.
pub trait Clock: Send + Sync {
    /// Now, in ms since boot (0 if unknown).
    fn now_ms(&self) -> u64;
}

/// `CLOCK_BOOTTIME`: counts suspend, survives a restart of the service.
#[derive(Debug, Default, Clone, Copy)]
pub struct BootClock;

impl Clock for BootClock {
    fn now_ms(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `ts`, which
        // lives for the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
    }
}

/// The service's root: the state directory and the device secret.
pub struct Service {
    state_dir: PathBuf,
    secret: DeviceSecret,
    clock: Arc<dyn Clock>,
    limits: Limits,
    transaction_budget: usize,
}

impl Service {
    /// Creates the state directory (`0700`) if needed and loads or creates
    /// the device secret.
    pub fn open(state_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, ServiceError> {
        create_private_dir(state_dir).map_err(|source| ServiceError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Ok(Service {
            state_dir: state_dir.to_path_buf(),
            secret: DeviceSecret::load_or_create(state_dir)?,
            clock,
            limits: Limits::default(),
            transaction_budget: MAX_GUEST_TRANSACTION_BYTES,
        })
    }

    /// Uses `limits` for the guests opened afterwards (tests).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Gives the guests opened afterwards a budget of `bytes` of
    /// uncommitted storage transactions instead of
    /// [`MAX_GUEST_TRANSACTION_BYTES`] (tests).
    pub fn set_transaction_budget(&mut self, bytes: usize) {
        self.transaction_budget = bytes;
    }

    /// Opens guest `name`: derives its keys and opens its namespaces. A
    /// namespace that fails its integrity check is logged and every
    /// operation on it fails (the guest's other TAs keep working).
    pub fn guest(&self, name: &str) -> Result<Arc<Guest>, ServiceError> {
        if !is_valid_guest_name(name) {
            return Err(ServiceError::GuestName(name.to_string()));
        }
        let keys = self.secret.guest_keys(name);
        let dir = self.state_dir.join("guests").join(name);
        let open = |ns: &str, k| -> Box<dyn SecureStore> {
            match FileStore::open(&dir.join(ns), k, self.limits) {
                Ok(s) => Box::new(CommitThrottle::new(Box::new(s))),
                Err(e) => {
                    tracing::error!(guest = name, namespace = ns, "storage unusable: {e}");
                    Box::new(BrokenStore {
                        reason: e.to_string(),
                    })
                }
            }
        };
        let td = open("td", keys.storage_td.clone());
        let gk = open("gk", keys.storage_gk.clone());
        Ok(Arc::new(Guest {
            name: name.to_string(),
            gatekeeper: Gatekeeper::new(
                keys.gatekeeper_password.clone(),
                keys.gatekeeper_auth_token.clone(),
            ),
            hwkey: Hwkey::new(keys.hwkey.clone()),
            td: Mutex::new(td),
            gk: Mutex::new(gk),
            clock: self.clock.clone(),
            limits: self.limits,
            transactions: TransactionBudget::new(self.transaction_budget),
        }))
    }
}

/// One guest: its keys, namespaces and TAs.
pub struct Guest {
    name: String,
    gatekeeper: Gatekeeper,
    hwkey: Hwkey,
    td: Mutex<Box<dyn SecureStore>>,
    gk: Mutex<Box<dyn SecureStore>>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// What the open transactions of all the guest's storage channels may
    /// hold together.
    transactions: Arc<TransactionBudget>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the store consistent (commits
    // are atomic), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guest {
    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new channel to `ta` for messages of at most `max_msg` bytes.
    pub fn channel(self: &Arc<Self>, ta: TaKind, max_msg: usize) -> Box<dyn Channel> {
        match ta {
            TaKind::Echo => Box::new(EchoChannel),
            TaKind::Datasink => Box::new(DatasinkChannel::default()),
            TaKind::StorageTd => Box::new(StorageChannel {
                guest: self.clone(),
                session: StorageSession::with_budget(
                    max_msg,
                    self.limits,
                    self.transactions.clone(),
                ),
            }),
            TaKind::Gatekeeper => Box::new(GatekeeperChannel {
                guest: self.clone(),
            }),
            TaKind::Hwkey => Box::new(HwkeyChannel(self.hwkey.clone())),
        }
    }

    /// A new GP session to `ta` (the TEE path).
    pub fn gp_session(self: &Arc<Self>, ta: TaKind) -> Box<dyn GpSession> {
        match ta {
            TaKind::Echo => Box::new(EchoGp),
            other => Box::new(MessageGp::new(self.channel(other, TEE_MAX_MESSAGE))),
        }
    }
}

/// A storage channel: the core session over the guest's `td` namespace.
struct StorageChannel {
    guest: Arc<Guest>,
    session: StorageSession,
}

impl Channel for StorageChannel {
    fn on_message(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        let mut store = lock(&self.guest.td);
        vec![self.session.on_message(msg, &mut **store)]
    }
}

/// A gatekeeper channel: one message at a time per guest, with the
/// failure records in the guest's `gk` namespace.
struct GatekeeperChannel {
    guest: Arc<Guest>,
}

impl Channel for GatekeeperChannel {
    fn on_message(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        let mut store = lock(&self.guest.gk);
        let mut env = StoreEnv {
            store: &mut **store,
            now_ms: self.guest.clock.now_ms(),
        };
        vec![self.guest.gatekeeper.handle(msg, &mut env)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::storage::proto as sp;

    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    fn open_msg(name: &str, create: bool) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [sp::FILE_OPEN, 0, sp::MSG_FLAG_TRANSACT_COMPLETE, 0, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(&u32::from(create).to_le_bytes());
        m.extend_from_slice(name.as_bytes());
        m
    }

    #[test]
    fn guests_do_not_see_each_others_files() {
        let d = tempfile::tempdir().unwrap();
        let s = Service::open(d.path(), Arc::new(Fixed(1))).unwrap();
        let a = s.guest("a").unwrap();
        let b = s.guest("b").unwrap();
        let r = a
            .channel(TaKind::StorageTd, 4096)
            .on_message(&open_msg("shared", true));
        assert_eq!(sp::Header::parse(&r[0]).unwrap().result, 0);
        let r = b
            .channel(TaKind::StorageTd, 4096)
            .on_message(&open_msg("shared", false));
        assert_eq!(sp::Header::parse(&r[0]).unwrap().result, sp::err::NOT_FOUND);
        assert!(d.path().join("guests/a/td/manifest").exists());
    }

    /// A storage message (no flags: nothing commits).
    fn storage_msg(cmd: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [cmd, 0, 0, 0, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(payload);
        m
    }

    /// The result and payload of a channel's one response.
    fn answer(r: &[Vec<u8>]) -> (i32, &[u8]) {
        assert_eq!(r.len(), 1);
        (
            sp::Header::parse(&r[0]).unwrap().result,
            &r[0][sp::HEADER_LEN..],
        )
    }

    /// Creates `files` files `<prefix><n>` of 1 MiB (the largest) in the
    /// open transaction of `ch`; the first failure's result, else
    /// `NO_ERROR`.
    fn hold_mib_files(ch: &mut dyn Channel, prefix: &str, files: usize) -> i32 {
        for i in 0..files {
            let mut open = sp::OPEN_CREATE.to_le_bytes().to_vec();
            open.extend_from_slice(format!("{prefix}{i}").as_bytes());
            let r = ch.on_message(&storage_msg(sp::FILE_OPEN, &open));
            let (result, fh) = answer(&r);
            if result != sp::err::NO_ERROR {
                return result;
            }
            let mut size = (1u64 << 20).to_le_bytes().to_vec();
            size.extend_from_slice(&fh[..4]);
            size.extend_from_slice(&0u32.to_le_bytes());
            let r = ch.on_message(&storage_msg(sp::FILE_SET_SIZE, &size));
            if answer(&r).0 != sp::err::NO_ERROR {
                return answer(&r).0;
            }
        }
        sp::err::NO_ERROR
    }

    #[test]
    fn a_guests_channels_share_its_transaction_budget() {
        let d = tempfile::tempdir().unwrap();
        let s = Service::open(d.path(), Arc::new(Fixed(1))).unwrap();
        let a = s.guest("a").unwrap();
        let b = s.guest("b").unwrap();
        // Channels of guest a holding 3 MiB each (within a transaction's
        // 4 MiB): the 22nd would take a over its 64 MiB.
        assert_eq!(MAX_GUEST_TRANSACTION_BYTES, 64 << 20);
        let mut held = Vec::new();
        let refused = (0..32).find_map(|i| {
            let mut ch = a.channel(TaKind::StorageTd, 4096);
            let r = hold_mib_files(&mut *ch, &format!("f{i}-"), 3);
            held.push(ch);
            (r != sp::err::NO_ERROR).then_some((i, r))
        });
        assert_eq!(refused, Some((21, sp::err::GENERIC)));
        assert!(a.transactions.held() <= MAX_GUEST_TRANSACTION_BYTES);
        // Guest b is not refused.
        let mut other = b.channel(TaKind::StorageTd, 4096);
        assert_eq!(hold_mib_files(&mut *other, "g", 3), sp::err::NO_ERROR);
        // An abort (END_TRANSACTION without TRANSACT_COMPLETE) gives one
        // channel's bytes back: the refused channel, once it ended its
        // failed transaction, fits.
        let end = storage_msg(sp::END_TRANSACTION, &[]);
        assert_eq!(answer(&held[0].on_message(&end)).0, sp::err::NO_ERROR);
        assert_eq!(answer(&held[21].on_message(&end)).0, sp::err::NO_ERROR);
        assert_eq!(hold_mib_files(&mut *held[21], "h", 3), sp::err::NO_ERROR);
        // So does closing a channel.
        let mut late = a.channel(TaKind::StorageTd, 4096);
        assert_eq!(hold_mib_files(&mut *late, "l", 3), sp::err::GENERIC);
        assert_eq!(answer(&late.on_message(&end)).0, sp::err::NO_ERROR);
        drop(held.remove(1));
        assert_eq!(hold_mib_files(&mut *late, "l", 3), sp::err::NO_ERROR);
        // Nothing was committed.
        assert_eq!(
            answer(
                &b.channel(TaKind::StorageTd, 4096)
                    .on_message(&open_msg("g0", false))
            )
            .0,
            sp::err::NOT_FOUND
        );
    }

    #[test]
    fn bad_guest_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = Service::open(d.path(), Arc::new(BootClock)).unwrap();
        for bad in ["", "../x", "a/b", "a.b", &"x".repeat(65)] {
            assert!(
                matches!(s.guest(bad), Err(ServiceError::GuestName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_broken_namespace_fails_only_its_operations() {
        let d = tempfile::tempdir().unwrap();
        let s = Service::open(d.path(), Arc::new(Fixed(1))).unwrap();
        {
            let g = s.guest("g").unwrap();
            g.channel(TaKind::StorageTd, 4096)
                .on_message(&open_msg("f", true));
        }
        let m = d.path().join("guests/g/td/manifest");
        let mut bytes = std::fs::read(&m).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&m, bytes).unwrap();
        let g = s.guest("g").unwrap();
        let r = g
            .channel(TaKind::StorageTd, 4096)
            .on_message(&open_msg("f", false));
        assert_eq!(sp::Header::parse(&r[0]).unwrap().result, sp::err::CORRUPTED);
        // Echo and hwkey still answer.
        assert_eq!(
            g.channel(TaKind::Echo, 4096).on_message(b"x"),
            vec![b"x".to_vec()]
        );
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = BootClock.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(BootClock.now_ms() > a);
    }
}
