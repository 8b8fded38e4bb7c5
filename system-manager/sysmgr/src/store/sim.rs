//! Tests: a [`Storage`] that loses power.
//!
//! It keeps, per file, the content last made durable (`sync`) and the
//! operations since (appends, cuts), and for the directory the entries
//! last made durable (`sync_dir`) and the creations, renames and removals
//! since. Every operation counts; at operation `crash_at` the power goes
//! (that operation and every later one fail). [`SimDisk::after_power_loss`]
//! then gives the disk a restarted machine finds: for each file its
//! durable content plus a random prefix of the operations that followed
//! (the last append of which may be cut anywhere, a torn write), and for
//! the directory its durable entries plus a random prefix of the entry
//! operations that followed. That is the ordering a journalling file
//! system such as ext4 (`data=ordered`) gives: what was not synced may or
//! may not be there, in order, but nothing synced is lost and no byte
//! appears that was not written.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::storage::{Storage, StorageFile};

/// A small, seeded random generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Clone, Debug)]
enum FileOp {
    Append(Vec<u8>),
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    since: Vec<FileOp>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, usize),
    Unlink(String),
    Rename(String, String),
}

#[derive(Debug, Default)]
struct Fs {
    inodes: Vec<Inode>,
    dir: BTreeMap<String, usize>,
    durable_dir: BTreeMap<String, usize>,
    dir_since: Vec<DirOp>,
    ops: u64,
    crash_at: Option<u64>,
}

impl Fs {
    /// Counts one operation; fails from the crash point on.
    fn tick(&mut self) -> io::Result<()> {
        self.ops += 1;
        match self.crash_at {
            Some(at) if self.ops >= at => Err(io::Error::other("simulated power loss")),
            _ => Ok(()),
        }
    }
    fn link(&mut self, name: &str, ino: usize) {
        self.dir.insert(name.to_string(), ino);
        self.dir_since.push(DirOp::Link(name.to_string(), ino));
    }
}

fn apply_dir(dir: &mut BTreeMap<String, usize>, op: &DirOp) {
    match op {
        DirOp::Link(n, i) => {
            dir.insert(n.clone(), *i);
        }
        DirOp::Unlink(n) => {
            dir.remove(n);
        }
        DirOp::Rename(from, to) => {
            if let Some(i) = dir.remove(from) {
                dir.insert(to.clone(), i);
            }
        }
    }
}

/// The simulated state directory (cheap to clone: one shared disk).
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<Fs>>);

/// An open file of a [`SimDisk`].
#[derive(Debug)]
pub struct SimFile {
    fs: SimDisk,
    ino: usize,
}

impl SimDisk {
    fn fs(&self) -> std::sync::MutexGuard<'_, Fs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.fs().ops
    }

    /// The power goes at operation number `at` (counted from the start).
    pub fn crash_at(&self, at: u64) {
        self.fs().crash_at = Some(at);
    }

    /// Whether the power went.
    pub fn crashed(&self) -> bool {
        let fs = self.fs();
        fs.crash_at.is_some_and(|at| fs.ops >= at)
    }

    /// The disk a restarted machine finds (see the module documentation).
    pub fn after_power_loss(&self, rng: &mut Rng) -> SimDisk {
        let fs = self.fs();
        let mut dir = fs.durable_dir.clone();
        let keep = rng.below(fs.dir_since.len() as u64 + 1) as usize;
        for op in &fs.dir_since[..keep] {
            apply_dir(&mut dir, op);
        }
        let inodes = fs
            .inodes
            .iter()
            .map(|ino| {
                let mut content = ino.durable.clone();
                let keep = rng.below(ino.since.len() as u64 + 1) as usize;
                for op in &ino.since[..keep] {
                    match op {
                        FileOp::Append(b) => content.extend_from_slice(b),
                        FileOp::SetLen(n) => content.resize(*n as usize, 0),
                    }
                }
                // The next append, if any, may be torn.
                if let Some(FileOp::Append(b)) = ino.since.get(keep) {
                    let part = rng.below(b.len() as u64 + 1) as usize;
                    content.extend_from_slice(&b[..part]);
                }
                Inode {
                    durable: content.clone(),
                    current: content,
                    since: Vec::new(),
                }
            })
            .collect();
        SimDisk(Arc::new(Mutex::new(Fs {
            inodes,
            durable_dir: dir.clone(),
            dir,
            ..Fs::default()
        })))
    }

    /// A file's current content (tests' eyes).
    pub fn content(&self, name: &str) -> Option<Vec<u8>> {
        let fs = self.fs();
        fs.dir.get(name).map(|i| fs.inodes[*i].current.clone())
    }
}

impl StorageFile for SimFile {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut fs = self.fs.fs();
        fs.tick()?;
        let ino = &mut fs.inodes[self.ino];
        ino.current.extend_from_slice(bytes);
        ino.since.push(FileOp::Append(bytes.to_vec()));
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        let mut fs = self.fs.fs();
        fs.tick()?;
        let ino = &mut fs.inodes[self.ino];
        ino.durable = ino.current.clone();
        ino.since.clear();
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut fs = self.fs.fs();
        fs.tick()?;
        let ino = &mut fs.inodes[self.ino];
        ino.current.resize(len as usize, 0);
        ino.since.push(FileOp::SetLen(len));
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.fs.fs().inodes[self.ino].current.len() as u64)
    }
    fn try_clone(&self) -> io::Result<Self> {
        Ok(SimFile {
            fs: self.fs.clone(),
            ino: self.ino,
        })
    }
}

impl Storage for SimDisk {
    type File = SimFile;

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let mut fs = self.fs();
        fs.tick()?;
        Ok(fs.dir.get(name).map(|i| fs.inodes[*i].current.clone()))
    }
    fn open_append(&self, name: &str) -> io::Result<SimFile> {
        let mut fs = self.fs();
        fs.tick()?;
        let ino = match fs.dir.get(name) {
            Some(i) => *i,
            None => {
                fs.inodes.push(Inode::default());
                let i = fs.inodes.len() - 1;
                fs.link(name, i);
                i
            }
        };
        Ok(SimFile {
            fs: self.clone(),
            ino,
        })
    }
    fn create(&self, name: &str) -> io::Result<SimFile> {
        let f = self.open_append(name)?;
        f.set_len(0)?;
        Ok(f)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut fs = self.fs();
        fs.tick()?;
        let Some(i) = fs.dir.remove(from) else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        fs.dir.insert(to.to_string(), i);
        fs.dir_since
            .push(DirOp::Rename(from.to_string(), to.to_string()));
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut fs = self.fs();
        fs.tick()?;
        if fs.dir.remove(name).is_some() {
            fs.dir_since.push(DirOp::Unlink(name.to_string()));
        }
        Ok(())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut fs = self.fs();
        fs.tick()?;
        fs.durable_dir = fs.dir.clone();
        fs.dir_since.clear();
        Ok(())
    }
    fn show(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_entries_may_be_lost_synced_ones_never() {
        for seed in 0..200 {
            let d = SimDisk::default();
            let mut f = d.open_append("a").unwrap();
            f.write_bytes(b"one\n").unwrap();
            f.sync().unwrap();
            d.sync_dir().unwrap();
            f.write_bytes(b"two\n").unwrap();
            let mut g = d.create("b").unwrap();
            g.write_bytes(b"x").unwrap();
            g.sync().unwrap();
            let after = d.after_power_loss(&mut Rng(seed));
            let a = after.content("a").expect("a's entry was synced");
            assert!(
                a.starts_with(b"one\n") && b"one\ntwo\n".starts_with(&a),
                "{a:?}"
            );
            // b's data was synced, its entry was not.
            if let Some(b) = after.content("b") {
                assert_eq!(b, b"x");
            }
        }
    }

    #[test]
    fn the_power_goes_at_the_chosen_operation() {
        let d = SimDisk::default();
        d.crash_at(3);
        let mut f = d.open_append("a").unwrap();
        f.write_bytes(b"1").unwrap();
        assert!(f.sync().is_err());
        assert!(f.write_bytes(b"2").is_err());
        assert!(d.crashed());
    }
}
