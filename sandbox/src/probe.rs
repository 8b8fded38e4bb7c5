//! The forbidden-syscall probe, for tests only.
//!
//! With `VMSTACK_SANDBOX_PROBE=<class>` in its environment, a sandboxed
//! program makes one system call no class allows (`execve`) from the first
//! thread of that class, right after the thread's filter is installed: the
//! process must then die with the report line naming `execve` and exit
//! status 159. The variable is read only by debug builds and by builds with
//! the `test-hooks` feature (the nested test images); a production build
//! ignores it, so nothing outside a test can make a sandboxed program probe
//! itself.

/// The environment variable that names the class to probe.
pub const ENV: &str = "VMSTACK_SANDBOX_PROBE";

/// The class to probe, in builds that have the probe.
#[cfg(target_os = "linux")]
pub(crate) fn from_env() -> Option<String> {
    if cfg!(any(debug_assertions, feature = "test-hooks")) {
        std::env::var(ENV).ok().filter(|c| !c.is_empty())
    } else {
        None
    }
}

/// Whether this build reads [`ENV`].
pub const fn available() -> bool {
    cfg!(any(debug_assertions, feature = "test-hooks"))
}

/// Makes the forbidden call from class `class`'s thread (Linux: the
/// filters exist only there).
#[cfg(target_os = "linux")]
pub(crate) fn fire(class: &str) {
    eprintln!("sandbox: probe: a forbidden system call (execve) from class {class}");
    crate::seccomp::forbidden_call();
}
