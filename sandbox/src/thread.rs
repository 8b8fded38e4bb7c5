//! Starting threads inside the sandbox.
//!
//! A seccomp filter is inherited by the threads a thread creates, and a
//! thread can only add filters, never loosen them: a thread's effective
//! allowlist is the intersection of its own and its creator's. So that a
//! vCPU (which starts device workers when the guest activates a device)
//! does not need every worker's calls, plus `clone`, in its own list, every
//! thread of a [`PerThread`](crate::policy::Confinement::PerThread) program
//! is started by one **launcher** thread: [`spawn`] hands it the body, the
//! launcher creates the thread, and the new thread installs its class's
//! filter (looked up by its name) before running the body. The launcher's
//! own filter is the union of every class plus thread creation; it runs no
//! code that handles outside input.
//!
//! Without an entered sandbox (`--disable-sandbox`, tests), [`spawn`] is a
//! plain `std::thread::Builder::spawn`.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, OnceLock};

use crate::join_handle::ResultSlot;
use crate::policy::{Confinement, ProcessPolicy, LAUNCHER};
use crate::seccomp::{self, ClassFilters};

/// A job for the launcher: a named thread body and where to send its
/// handle.
struct Job {
    name: String,
    body: Box<dyn FnOnce() + Send>,
    reply: SyncSender<io::Result<std::thread::JoinHandle<()>>>,
}

/// The entered sandbox's thread state.
struct Active {
    policy: &'static ProcessPolicy,
    filters: Vec<ClassFilters>,
    launcher: Option<Mutex<Sender<Job>>>,
    probe: Option<String>,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();

pub use crate::join_handle::JoinHandle;

/// Installs the filter of `name`'s class on the calling thread, then runs
/// the probe if it names that class. Exits the process if the filter
/// cannot be installed: a thread never runs unconfined in a sandboxed
/// process.
fn confine(active: &Active, name: &str, class: &'static str) {
    let Some(filters) = active.filters.iter().find(|f| f.class == class) else {
        fatal(&format!("no compiled filter for class {class}"));
    };
    if let Err(e) = seccomp::install_current(name, filters) {
        fatal(&e.to_string());
    }
    if active.probe.as_deref() == Some(class) {
        crate::probe::fire(class);
    }
}

fn fatal(message: &str) -> ! {
    eprintln!("sandbox: {message}; exiting");
    std::process::exit(1);
}

/// Starts a thread called `name` running `body`. In a sandboxed program
/// the thread is created by the launcher and confined to its class's
/// filter before `body` runs; a name no class covers is an error (every
/// thread needs a policy: add its class to `sandbox/src/policy/`).
pub fn spawn<T, F>(name: impl Into<String>, body: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = name.into();
    let (slot, body) = ResultSlot::wrap(body);
    let active = ACTIVE
        .get()
        .filter(|a| a.policy.confinement == Confinement::PerThread);
    let Some(active) = active else {
        // No sandbox, or a process-wide filter every thread inherits.
        let thread = std::thread::Builder::new().name(name).spawn(body)?;
        return Ok(slot.handle(thread));
    };
    let class = active.policy.class_for_thread(&name).ok_or_else(|| {
        io::Error::other(format!(
            "no seccomp policy for thread {name:?} of {}: add it to a class in sandbox/src/policy/",
            active.policy.process
        ))
    })?;
    let thread_name = name.clone();
    let run = move || {
        if let Some(active) = ACTIVE.get() {
            confine(active, &thread_name, class.name);
        }
        body();
    };
    let thread = match &active.launcher {
        None => std::thread::Builder::new().name(name).spawn(run)?,
        Some(launcher) => {
            let (reply, handle) = mpsc::sync_channel(1);
            let job = Job {
                name,
                body: Box::new(run),
                reply,
            };
            launcher
                .lock()
                .map_err(|_| io::Error::other("the launcher thread's lock is poisoned"))?
                .send(job)
                .map_err(|_| io::Error::other("the launcher thread is gone"))?;
            handle
                .recv()
                .map_err(|_| io::Error::other("the launcher thread is gone"))??
        }
    };
    Ok(slot.handle(thread))
}

/// The launcher's loop: start each job's thread, hand back its handle.
fn launcher_loop(jobs: Receiver<Job>) {
    for job in jobs {
        let spawned = std::thread::Builder::new().name(job.name).spawn(job.body);
        let _ = job.reply.send(spawned);
    }
}

/// Activates per-thread confinement: remembers the compiled filters and,
/// for a per-thread program, starts the launcher (confined to its own
/// filter). Called once by [`crate::enter`], while the process has a
/// single thread.
pub(crate) fn activate(
    policy: &'static ProcessPolicy,
    filters: Vec<ClassFilters>,
    probe: Option<String>,
) -> io::Result<()> {
    let launcher = match policy.confinement {
        Confinement::ProcessWide => {
            // glibc installs its SIGSETXID handler (`rt_sigaction`) when the
            // process creates its first thread; a process-wide filter does
            // not allow that call, so create (and end) one thread now.
            std::thread::Builder::new()
                .name("sandbox-first-thread".into())
                .spawn(|| {})?
                .join()
                .map_err(|_| io::Error::other("the first thread panicked"))?;
            None
        }
        Confinement::PerThread => {
            let (tx, rx) = mpsc::channel::<Job>();
            let launcher_filters = filters
                .iter()
                .find(|f| f.class == LAUNCHER)
                .cloned()
                .ok_or_else(|| io::Error::other("the policy has no launcher class"))?;
            let probe_here = probe.as_deref() == Some(LAUNCHER);
            std::thread::Builder::new()
                .name(LAUNCHER.into())
                .spawn(move || {
                    if let Err(e) = seccomp::install_current(LAUNCHER, &launcher_filters) {
                        fatal(&e.to_string());
                    }
                    if probe_here {
                        crate::probe::fire(LAUNCHER);
                    }
                    launcher_loop(rx);
                })?;
            Some(Mutex::new(tx))
        }
    };
    ACTIVE
        .set(Active {
            policy,
            filters,
            launcher,
            probe,
        })
        .map_err(|_| io::Error::other("the sandbox was entered twice"))
}

/// Installs the filter of `class` on the calling thread (the main thread,
/// once it has started what it needs; a process-wide program's only
/// filter).
pub fn confine_current_thread(class: &'static str) -> io::Result<()> {
    let active = ACTIVE
        .get()
        .ok_or_else(|| io::Error::other("the sandbox was not entered"))?;
    let filters = active
        .filters
        .iter()
        .find(|f| f.class == class)
        .ok_or_else(|| io::Error::other(format!("no class {class}")))?;
    let name = std::thread::current()
        .name()
        .unwrap_or(active.policy.main)
        .to_string();
    seccomp::install_current(&name, filters).map_err(io::Error::other)?;
    if active.probe.as_deref() == Some(class) {
        crate::probe::fire(class);
    }
    Ok(())
}

/// Whether a sandbox was entered in this process.
pub fn sandboxed() -> bool {
    ACTIVE.get().is_some()
}
