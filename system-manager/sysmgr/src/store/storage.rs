//! The file operations the decision log needs, as a trait: [`Disk`] does
//! them in the state directory; the tests' crash simulator
//! (`store::sim`) records them and, at a "power loss", keeps only what
//! was made durable. Names are file names inside the state directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One open file.
pub trait StorageFile: Send + Sized + 'static {
    /// Appends (or, for a file from [`Storage::create`], writes) `bytes`.
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file's data and size durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's size.
    fn size(&self) -> io::Result<u64>;
    /// A second handle on the same open file (the background sync's).
    fn try_clone(&self) -> io::Result<Self>;
}

/// A directory of files.
pub trait Storage: Send + Sync + 'static {
    /// The open file type.
    type File: StorageFile;
    /// The whole content of `name`; `None` if there is no such file.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Opens `name` for appending, creating it if need be.
    fn open_append(&self, name: &str) -> io::Result<Self::File>;
    /// Creates `name` empty (truncating an existing one) for writing.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Renames `from` over `to` (atomically: `to` is the old or the new file).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals)
    /// durable: `fsync` of the directory.
    fn sync_dir(&self) -> io::Result<()>;
    /// `name` for messages (its path).
    fn show(&self, name: &str) -> String;
}

/// The state directory on the real file system.
#[derive(Clone, Debug)]
pub struct Disk(pub PathBuf);

impl StorageFile for File {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(self, bytes)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn try_clone(&self) -> io::Result<Self> {
        File::try_clone(self)
    }
}

impl Storage for Disk {
    type File = File;

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match File::open(self.0.join(name)) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn open_append(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.0.join(name))
    }
    fn create(&self, name: &str) -> io::Result<File> {
        File::create(self.0.join(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.0.join(from), self.0.join(to))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.0.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.0)
    }
    fn show(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

/// `fsync` of a directory: makes the creation, renaming or removal of its
/// entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
