//! tracefs instances: private ring buffers for the two KVM tracepoints.
//!
//! Each [`Instance`] is a directory under `/sys/kernel/tracing/instances/` with
//! its own buffer, clock, options and event switches, so the benchmark neither
//! disturbs nor depends on the global trace buffer.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where tracefs is (or gets) mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at [`TRACEFS`] unless it is already there; returns its path.
pub fn mount() -> Result<PathBuf> {
    let root = PathBuf::from(TRACEFS);
    if root.join("instances").is_dir() {
        return Ok(root);
    }
    if !root.is_dir() {
        bail!("{TRACEFS} does not exist: this kernel has no tracefs (CONFIG_TRACING)");
    }
    let target = CString::new(TRACEFS).context("tracefs path")?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call;
    // the data argument may be null for tracefs.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("mount -t tracefs nodev {TRACEFS}: {err}");
    }
    if !root.join("instances").is_dir() {
        bail!("tracefs mounted at {TRACEFS} but has no instances/ directory");
    }
    Ok(root)
}

/// One tracefs instance with a single event enabled.
#[derive(Debug)]
pub struct Instance {
    dir: PathBuf,
    event: String,
}

impl Instance {
    /// Creates (or reuses) instance `name` for `event` (`system/name`, e.g.
    /// `kvm/kvm_entry`), with clock `mono`, the given per-CPU buffer size,
    /// `overwrite` as given (0 keeps the first events when the buffer fills)
    /// and `pause-on-trace` off (reading `trace` must not drop events).
    /// The event starts disabled.
    pub fn create(
        root: &Path,
        name: &str,
        event: &str,
        filter: Option<&str>,
        buffer_kb: u32,
        overwrite: bool,
    ) -> Result<Self> {
        if !root.join("events").join(event).is_dir() {
            bail!(
                "tracepoint {event} not found under {}/events: is kvm.ko loaded?",
                root.display()
            );
        }
        let dir = root.join("instances").join(name);
        if !dir.is_dir() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create tracefs instance {}", dir.display()))?;
        }
        let inst = Self {
            dir,
            event: event.to_string(),
        };
        inst.set_enabled(false)?;
        inst.write("tracing_on", "0")?;
        inst.write("trace_clock", "mono")?;
        inst.write("buffer_size_kb", &buffer_kb.to_string())?;
        inst.write("options/overwrite", if overwrite { "1" } else { "0" })?;
        if inst.dir.join("options/pause-on-trace").exists() {
            inst.write("options/pause-on-trace", "0")?;
        }
        let filter_path = format!("events/{event}/filter");
        inst.write(&filter_path, filter.unwrap_or("0"))?;
        inst.clear()?;
        inst.write("tracing_on", "1")?;
        Ok(inst)
    }

    /// Writes `value` to the instance's file `rel`.
    fn write(&self, rel: &str, value: &str) -> Result<()> {
        let path = self.dir.join(rel);
        std::fs::write(&path, value)
            .with_context(|| format!("cannot write {value:?} to {}", path.display()))
    }

    /// Enables or disables the event.
    pub fn set_enabled(&self, on: bool) -> Result<()> {
        self.write(
            &format!("events/{}/enable", self.event),
            if on { "1" } else { "0" },
        )
    }

    /// Empties the ring buffer (opening `trace` with `O_TRUNC`).
    pub fn clear(&self) -> Result<()> {
        let path = self.dir.join("trace");
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map(drop)
            .with_context(|| format!("cannot clear {}", path.display()))
    }

    /// The current `trace` text (non-consuming).
    pub fn read(&self) -> Result<String> {
        let path = self.dir.join("trace");
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.set_enabled(false);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
