//! vCPU threads: run KVM_RUN, route port I/O and MMIO exits to the buses, and
//! turn the guest's final power steps into events.
//!
//! ```text
//!            spawn()                 KVM_RUN exits
//!   Created ─────────► Running ◄──────────────────┐
//!                        │  │  I/O / MMIO ─► bus ──┘
//!                        │  └─ system event ─► VmEvent::Power (triple fault: crash)
//!   pause(): state + kick│  resume()
//!                        ▼     ▲
//!                      Paused ─┘   (parked on a condvar, outside KVM_RUN)
//!         stop(): state +│
//!         kick signal ───┴─► Stopped (thread returns)
//! ```
//!
//! On aarch64 a guest's PSCI SYSTEM_SUSPEND (`KVM_SYSTEM_EVENT_SUSPEND`)
//! becomes [`PowerEvent::Suspend`]; the calling vCPU then stays out of the
//! guest (asleep, like parked) until [`VcpuHandle::wake`], and re-enters at
//! the entry point the guest passed to SYSTEM_SUSPEND. (x86 guests suspend
//! through the ACPI sleep registers instead and keep running while held.)
//!
//! A vCPU blocked in the kernel (a halted guest CPU) is woken by a real-time
//! signal whose handler sets `kvm_run.immediate_exit`, so a kick can never be
//! lost between checking the stop flag and entering KVM_RUN.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use devices::{Bus, PowerEvent, PowerEventSink};
#[cfg(target_arch = "aarch64")]
use kvm_bindings::KVM_SYSTEM_EVENT_SUSPEND;
use kvm_bindings::{
    kvm_run, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// Errors setting up or running vCPUs.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// Creating or configuring the vCPU failed.
    #[error("cannot set up vCPU {id}: {what}: {source}")]
    Setup {
        /// vCPU index.
        id: u8,
        /// Which step failed.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// Installing the kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// Spawning the vCPU thread failed.
    #[error("cannot spawn the vCPU thread: {0}")]
    Spawn(std::io::Error),
}

/// A vCPU hit an error the guest cannot recover from (its thread ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuCrash {
    /// vCPU index.
    pub id: u8,
    /// What happened.
    pub reason: String,
    /// It was a triple fault (`KVM_EXIT_SHUTDOWN`), which the power policy
    /// judges: the tail of a held reboot, or a crash.
    pub triple_fault: bool,
}

/// The marker reason of a triple fault.
const TRIPLE_FAULT: &str = "triple fault (KVM_EXIT_SHUTDOWN)";

thread_local! {
    /// The running vCPU's `kvm_run` page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used to kick vCPUs out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is set by this thread to its own vCPU's mmapped
        // kvm_run page and cleared before the vCPU is dropped; writing a byte
        // with a volatile store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler; call once before spawning vCPUs.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::Signal)
}

/// Everything a vCPU thread needs.
pub struct Vcpu {
    /// vCPU index (also its APIC ID).
    pub id: u8,
    /// The configured KVM vCPU.
    pub fd: VcpuFd,
    /// Port I/O devices.
    pub pio: Bus,
    /// MMIO devices.
    pub mmio: Bus,
    /// Where guest power steps that KVM reports (triple fault, system
    /// events) are delivered.
    pub power: PowerEventSink,
    /// Called once if the vCPU fails.
    pub on_crash: Arc<dyn Fn(VcpuCrash) + Send + Sync>,
    /// VMM start, for the first-entry log line.
    pub start: Instant,
    /// The `KVM_ARM_VCPU_INIT` argument, to reset the vCPU when it wakes
    /// from PSCI SYSTEM_SUSPEND.
    #[cfg(target_arch = "aarch64")]
    pub init: kvm_bindings::kvm_vcpu_init,
}

/// Where a vCPU that called PSCI SYSTEM_SUSPEND re-enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspendPoint {
    /// The guest's resume entry point (PSCI `entry_point_address`).
    pub entry: u64,
    /// Handed back to the guest in x0 (PSCI `context_id`).
    pub context: u64,
}

/// What a vCPU thread should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running the guest.
    Running,
    /// Parked outside KVM_RUN until resumed or stopped.
    Paused,
    /// Leaving its thread.
    Stopped,
}

#[derive(Debug)]
struct ControlState {
    run: RunState,
    /// The thread saw `Paused` and is parked.
    parked: bool,
    /// How many wake-ups from suspend were requested so far.
    wakes: u64,
}

/// The run state shared between a vCPU thread and its handle.
#[derive(Debug)]
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl VcpuControl {
    fn new() -> Self {
        Self {
            state: Mutex::new(ControlState {
                run: RunState::Running,
                parked: false,
                wakes: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: RunState) {
        self.lock().run = state;
        self.changed.notify_all();
    }

    /// Wake-ups requested so far; a vCPU going to sleep remembers this.
    fn wakes(&self) -> u64 {
        self.lock().wakes
    }

    /// Requests a wake-up of a vCPU asleep in suspend.
    fn wake(&self) {
        self.lock().wakes += 1;
        self.changed.notify_all();
    }

    /// Called by the vCPU thread between exits: parks while paused (and,
    /// with `asleep_since = Some(n)`, until a wake-up after the `n`-th) and
    /// returns `false` once the vCPU must stop.
    fn wait_runnable(&self, asleep_since: Option<u64>) -> bool {
        let mut guard = self.lock();
        loop {
            let asleep = asleep_since == Some(guard.wakes);
            match guard.run {
                RunState::Stopped => return false,
                RunState::Running if !asleep => {
                    guard.parked = false;
                    return true;
                }
                RunState::Running => {}
                RunState::Paused => {
                    if !guard.parked {
                        guard.parked = true;
                        self.changed.notify_all();
                    }
                }
            }
            guard = self.changed.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until the thread has parked (after [`RunState::Paused`]) or
    /// `timeout` passed; returns whether it parked.
    fn wait_parked(&self, timeout: std::time::Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.run == RunState::Paused && !s.parked)
            .unwrap_or_else(|p| p.into_inner());
        guard.parked
    }
}

/// A running vCPU thread.
pub struct VcpuHandle {
    thread: sandbox::thread::JoinHandle<()>,
    control: Arc<VcpuControl>,
}

impl VcpuHandle {
    fn kick(&self) {
        if let Err(e) = self.thread.std_handle().kill(kick_signal()) {
            tracing::warn!("cannot kick vCPU thread: {e}");
        }
    }

    /// Asks the vCPU to leave the guest and end its thread.
    pub fn request_stop(&self) {
        self.control.set(RunState::Stopped);
        self.kick();
    }

    /// Takes the vCPU out of the guest and parks it; returns once it is
    /// parked (or after a second, with a warning).
    pub fn pause(&self) {
        self.control.set(RunState::Paused);
        self.kick();
        if !self.control.wait_parked(std::time::Duration::from_secs(1)) {
            tracing::warn!("a vCPU did not park within 1 s");
        }
    }

    /// Lets a paused vCPU run the guest again.
    pub fn resume(&self) {
        self.control.set(RunState::Running);
    }

    /// Wakes the vCPU if it is asleep in PSCI SYSTEM_SUSPEND: it re-enters
    /// the guest at its resume entry point (once also resumed, if paused).
    /// A vCPU that is not asleep ignores it.
    pub fn wake(&self) {
        self.control.wake();
    }

    /// Waits for the thread to end.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("a vCPU thread panicked");
        }
    }
}

impl Vcpu {
    /// Starts the vCPU's thread.
    pub fn spawn(self) -> Result<VcpuHandle, VcpuError> {
        let control = Arc::new(VcpuControl::new());
        let thread_control = control.clone();
        // Through the sandbox: the thread is confined to the vCPU class's
        // seccomp filter before it first enters the guest.
        let thread = sandbox::thread::spawn(format!("vcpu{}", self.id), move || {
            self.run(&thread_control)
        })
        .map_err(VcpuError::Spawn)?;
        Ok(VcpuHandle { thread, control })
    }

    fn run(mut self, control: &VcpuControl) {
        KVM_RUN.with(|p| p.set(self.fd.get_kvm_run()));
        if self.id == 0 {
            tracing::info!(
                "vcpu0: entering guest after {} us",
                self.start.elapsed().as_micros()
            );
        }
        // Set while the guest sleeps in SYSTEM_SUSPEND: the wake-up count
        // at the time, and where to re-enter.
        let mut asleep: Option<(u64, SuspendPoint)> = None;
        while control.wait_runnable(asleep.map(|(wakes, _)| wakes)) {
            let result = match asleep.take() {
                Some((_, point)) => self.enter_resume_point(point),
                None => Ok(()),
            };
            let result = result.and_then(|()| self.run_once());
            match result {
                Ok(None) => {}
                Ok(Some(point)) => {
                    tracing::info!(
                        "vcpu{}: guest suspended (resume at {:#x})",
                        self.id,
                        point.entry
                    );
                    // Read the count before announcing the suspend, so a
                    // wake-up decided right away is not missed.
                    asleep = Some((control.wakes(), point));
                    self.power.send(PowerEvent::Suspend);
                }
                Err(reason) => {
                    (self.on_crash)(VcpuCrash {
                        id: self.id,
                        triple_fault: reason == TRIPLE_FAULT,
                        reason,
                    });
                    break;
                }
            }
        }
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    }

    /// Puts the vCPU at the guest's resume entry point after a suspend.
    #[cfg(target_arch = "aarch64")]
    fn enter_resume_point(&self, point: SuspendPoint) -> Result<(), String> {
        tracing::info!("vcpu{}: waking the guest at {:#x}", self.id, point.entry);
        crate::arch::aarch64::kvm::wake_at(&self.fd, &self.init, point.entry, point.context)
            .map_err(|e| format!("cannot wake from suspend: {e}"))
    }

    /// x86 guests never sleep in a vCPU (ACPI S3 is a register write).
    #[cfg(not(target_arch = "aarch64"))]
    fn enter_resume_point(&self, _point: SuspendPoint) -> Result<(), String> {
        Err("no suspend resume point on this architecture".into())
    }

    /// The arguments of the guest's PSCI SYSTEM_SUSPEND call.
    #[cfg(target_arch = "aarch64")]
    fn suspend_point(&self) -> Result<SuspendPoint, String> {
        crate::arch::aarch64::kvm::suspend_args(&self.fd)
            .map(|(entry, context)| SuspendPoint { entry, context })
            .map_err(|e| format!("cannot read the SYSTEM_SUSPEND arguments: {e}"))
    }

    /// Runs the guest until one exit is handled; `Err` means the VM is dead,
    /// `Ok(Some(_))` that the guest suspended (PSCI SYSTEM_SUSPEND).
    fn run_once(&mut self) -> Result<Option<SuspendPoint>, String> {
        match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    if !self.pio.read(u64::from(port), data) {
                        devices::guest_debug!("vcpu{}: unhandled port read {port:#x}", self.id);
                        data.fill(0xff);
                    }
                }
                VcpuExit::IoOut(port, data) => {
                    if !self.pio.write(u64::from(port), data) {
                        devices::guest_debug!(
                            "vcpu{}: unhandled port write {port:#x} {data:02x?}",
                            self.id
                        );
                    }
                }
                VcpuExit::MmioRead(addr, data) => {
                    if !self.mmio.read(addr, data) {
                        devices::guest_warn!("vcpu{}: unhandled MMIO read {addr:#x}", self.id);
                        data.fill(0);
                    }
                }
                VcpuExit::MmioWrite(addr, data) => {
                    if !self.mmio.write(addr, data) {
                        devices::guest_warn!("vcpu{}: unhandled MMIO write {addr:#x}", self.id);
                    }
                }
                VcpuExit::Shutdown => {
                    // A triple fault. A PC would reset, but a guest that
                    // faults in its fault handlers is broken, and a reset
                    // that faults again would be a stream of reboot
                    // requests. The vCPU leaves the guest for good; the
                    // power policy calls it a crash unless a reboot is
                    // held (Linux's last reboot fallback is a triple
                    // fault).
                    return Err(TRIPLE_FAULT.into());
                }
                VcpuExit::SystemEvent(kind, _) => match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => self.power.send(PowerEvent::Poweroff),
                    KVM_SYSTEM_EVENT_RESET => self.power.send(PowerEvent::Reboot),
                    #[cfg(target_arch = "aarch64")]
                    KVM_SYSTEM_EVENT_SUSPEND => return self.suspend_point().map(Some),
                    KVM_SYSTEM_EVENT_CRASH => return Err("guest reported a crash".into()),
                    other => return Err(format!("unknown KVM system event {other}")),
                },
                VcpuExit::Hlt => {
                    // With the in-kernel irqchip HLT never reaches userspace;
                    // if it does, nothing can wake this vCPU again.
                    return Err("guest halted with interrupts disabled".into());
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    return Err(format!(
                        "KVM_EXIT_FAIL_ENTRY: hardware reason {reason:#x} on cpu {cpu}"
                    ));
                }
                VcpuExit::InternalError => return Err("KVM_EXIT_INTERNAL_ERROR".into()),
                other => return Err(format!("unexpected vCPU exit {other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // Kicked: clear the flag and let the caller check `stop`.
                self.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => return Err(format!("KVM_RUN failed: {e}")),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_parks_resumes_and_stops() {
        let control = Arc::new(VcpuControl::new());
        let thread_control = control.clone();
        let loops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread_loops = loops.clone();
        let t = std::thread::spawn(move || {
            while thread_control.wait_runnable(None) {
                thread_loops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        control.set(RunState::Paused);
        assert!(control.wait_parked(Duration::from_secs(5)));
        let parked_at = loops.load(std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(loops.load(std::sync::atomic::Ordering::SeqCst), parked_at);
        control.set(RunState::Running);
        std::thread::sleep(Duration::from_millis(20));
        assert!(loops.load(std::sync::atomic::Ordering::SeqCst) > parked_at);
        control.set(RunState::Stopped);
        t.join().unwrap();
    }

    #[test]
    fn stop_wakes_a_parked_thread() {
        let control = Arc::new(VcpuControl::new());
        control.set(RunState::Paused);
        let thread_control = control.clone();
        let t = std::thread::spawn(move || thread_control.wait_runnable(None));
        assert!(control.wait_parked(Duration::from_secs(5)));
        control.set(RunState::Stopped);
        assert!(!t.join().unwrap());
    }

    #[test]
    fn asleep_vcpu_waits_for_a_wake_even_when_running() {
        let control = Arc::new(VcpuControl::new());
        let slept_at = control.wakes();
        let thread_control = control.clone();
        let t = std::thread::spawn(move || thread_control.wait_runnable(Some(slept_at)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!t.is_finished(), "an asleep vCPU must not run");
        // Pause and resume do not wake it; a pause while asleep still parks.
        control.set(RunState::Paused);
        assert!(control.wait_parked(Duration::from_secs(5)));
        control.set(RunState::Running);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!t.is_finished());
        control.wake();
        assert!(t.join().unwrap());
        // A wake that came before the wait is not lost.
        let control = VcpuControl::new();
        let slept_at = control.wakes();
        control.wake();
        assert!(control.wait_runnable(Some(slept_at)));
    }

    #[test]
    fn stop_ends_an_asleep_vcpu() {
        let control = Arc::new(VcpuControl::new());
        let thread_control = control.clone();
        let t = std::thread::spawn(move || thread_control.wait_runnable(Some(0)));
        std::thread::sleep(Duration::from_millis(10));
        control.set(RunState::Stopped);
        assert!(!t.join().unwrap());
    }
}
