//! Runs the VM until the guest powers off, crashes, or the control socket
//! stops it: the VMM's event loop.
//!
//! Everything that can change the VM arrives as a [`VmEvent`] on one
//! channel: guest power requests (from devices and vCPUs), vCPU crashes and
//! control-socket requests (answered with `vmm_protocol` [`Response`]s). Power requests go through the pure
//! [`PowerPolicy`], whose [`Action`]s the loop carries out. A restart
//! (reboot decided by an arbiter, or resuming a virtually-off VM) builds a
//! new VM in the same process, so the control socket and its subscribers
//! stay; events from an earlier boot are ignored.

use std::io::Read;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::legacy::SerialDevice;
use vmm_protocol::{Answer, Event, ExitReason, Request, Response, Status};

use crate::builder::{build_vm, BuildError, BuiltVm};
use crate::config::VmConfig;
use crate::control::{self, ControlError};
use crate::event::{Unwritten, VmEvent};
use crate::outbox::{Flush, OfferError, Outbox};
use crate::power::{Action, PowerPolicy};
use crate::resources::{HostResources, OpenError};
use crate::vstate::vcpu::{install_kick_handler, VcpuError, VcpuHandle};

/// Errors that end the VMM before the guest could.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Building (or rebuilding) the VM failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Starting vCPUs failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A host resource (KVM, a file, a socket) could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The sandbox could not be entered.
    #[error("{0} (or run with --disable-sandbox)")]
    Sandbox(#[from] sandbox::SandboxError),
}

/// How the VMM confines itself (`docs/security.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// Seccomp, capabilities, uid switch and landlock (`--disable-sandbox`
    /// turns them off; socket permissions and peer checks stay).
    pub enabled: bool,
    /// The identity to switch to when started as root (default
    /// [`sandbox::Identity::NOBODY`]).
    pub user: Option<sandbox::Identity>,
    /// Peer uids allowed on the VMM's sockets besides the uid that started
    /// it, the uid it runs as and root.
    pub allow_uids: Vec<u32>,
    /// Group the VMM's socket files are shared with (`0660`); `None`:
    /// owner only (`0600`).
    pub socket_group: Option<u32>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            user: None,
            allow_uids: Vec::new(),
            socket_group: None,
        }
    }
}

impl SandboxOptions {
    /// The identity the VMM will run as, and whether it switches to it.
    fn identity(&self) -> (sandbox::Identity, bool) {
        sandbox::Identity::sandboxed(self.enabled, self.user)
    }

    /// Sets who may use and who owns the VMM's sockets; before any is bound.
    fn configure_sockets(&self) {
        let (runs_as, switches) = self.identity();
        sandbox::socket::configure_standard_for_group(
            runs_as,
            switches,
            &self.allow_uids,
            self.socket_group,
        );
    }

    /// Enters the sandbox once everything is open.
    fn enter(&self, host: &HostResources) -> Result<(), sandbox::SandboxError> {
        if !self.enabled {
            tracing::warn!(
                "sandbox disabled (--disable-sandbox): no seccomp, no privilege drop, no landlock"
            );
            return Ok(());
        }
        // The kernel and initrd mappings of every boot (restarts included)
        // need the SIGBUS guard; its handler cannot be installed later.
        if !crate::arch::file_map::install_guard() {
            tracing::warn!("cannot install the SIGBUS guard: boot files will be copied");
        }
        let (user, switches) = self.identity();
        let entered = sandbox::enter(sandbox::Config {
            policy: &sandbox::policy::vmm::POLICY,
            user: switches.then_some(user),
            groups: Vec::new(),
            relisten: host.listener_fds(),
            fs: sandbox::fs::FsRules {
                remove_in: host.socket_dirs(),
                ..Default::default()
            },
        })?;
        tracing::info!("sandbox: {entered}");
        Ok(())
    }
}

/// How long the end of a boot waits for buffered serial output.
const SERIAL_FLUSH: Duration = Duration::from_secs(2);

/// How long the VMM's exit waits, in all, for control clients to take
/// their last lines (subscribers' queues, plain connections' responses,
/// the answers to requests that came while the VM was ending).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// One pass of that wait: how often it looks for requests that came
/// meanwhile.
const FLUSH_SLICE: Duration = Duration::from_millis(50);

/// The serial console host input currently goes to (it changes on restart).
type SerialSlot = Arc<Mutex<Option<Arc<Mutex<SerialDevice>>>>>;

/// Feeds host stdin to whichever serial console is current, until EOF.
fn spawn_stdin_reader(slot: SerialSlot) {
    let spawned = sandbox::thread::spawn("serial-stdin", move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut pending = &buf[..n];
            while !pending.is_empty() {
                let serial = slot.lock().ok().and_then(|s| s.clone());
                let taken = serial
                    .and_then(|s| s.lock().ok().map(|mut s| s.enqueue_input(pending)))
                    .unwrap_or(pending.len());
                pending = &pending[taken..];
                if !pending.is_empty() {
                    // The guest has not drained its receive FIFO yet.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("no serial input: cannot spawn stdin reader: {e}");
    }
}

/// A control connection that receives events.
struct Subscriber {
    connection: u64,
    outbox: Outbox,
    arbiter: bool,
}

/// How one boot of the VM ended.
enum BootOutcome {
    Exit(ExitReason),
    Restart,
}

/// The event loop's state across boots.
struct Runner {
    events_tx: Sender<VmEvent>,
    events_rx: Receiver<VmEvent>,
    policy: PowerPolicy,
    subscribers: Vec<Subscriber>,
    /// Responses handed to connections that have not subscribed, perhaps
    /// not yet written (waited for before the VMM exits).
    unwritten: Vec<Unwritten>,
    boot: u64,
}

/// Runs the VM described by `config` until it ends. With `arbitrated`,
/// guest power requests are held for an arbiter from the first boot.
///
/// Everything on the host is opened first ([`HostResources`]), then the
/// sandbox is entered (`sandbox`), and only then does any other thread
/// start: every boot, the first included, is built inside the sandbox.
pub fn run_vmm(
    config: &VmConfig,
    start: Instant,
    arbitrated: bool,
    confinement: &SandboxOptions,
) -> Result<ExitReason, RunError> {
    install_kick_handler()?;
    crate::rlimit::raise_fd_limit_or_warn();
    confinement.configure_sockets();
    let mut host = HostResources::open(config)?;
    confinement.enter(&host)?;
    let (events_tx, events_rx) = channel();
    if let Some(listener) = host.take_control() {
        control::serve(listener, events_tx.clone())?;
    }
    let mut runner = Runner {
        events_tx,
        events_rx,
        policy: PowerPolicy::new(arbitrated),
        subscribers: Vec::new(),
        unwritten: Vec::new(),
        boot: 0,
    };
    let serial_slot: SerialSlot = Arc::default();
    let outcome = runner.boot_until_exit(config, &host, start, &serial_slot);
    // No new client from here on; also after a failed rebuild, the last
    // events and answers reach the clients.
    host.remove_sockets();
    runner.flush_clients();
    let suppressed = devices::log_limit::suppressed_total();
    if suppressed > 0 {
        tracing::info!("{suppressed} guest-triggered log lines were suppressed by rate limiting");
    }
    outcome
}

impl Runner {
    /// Builds and runs the VM, again after every restart, until it exits.
    fn boot_until_exit(
        &mut self,
        config: &VmConfig,
        host: &HostResources,
        start: Instant,
        serial_slot: &SerialSlot,
    ) -> Result<ExitReason, RunError> {
        let mut stdin_reader_started = false;
        loop {
            self.boot += 1;
            let built = build_vm(config, host, start, self.events_tx.clone(), self.boot)?;
            if built.serial_reads_stdin {
                if let Ok(mut slot) = serial_slot.lock() {
                    *slot = Some(built.serial.clone());
                }
                if !stdin_reader_started {
                    spawn_stdin_reader(serial_slot.clone());
                    stdin_reader_started = true;
                }
            }
            if self.boot > 1 {
                let actions = self.policy.restarted();
                self.publish_all(&actions);
            }
            match self.run_boot(built)? {
                BootOutcome::Exit(reason) => return Ok(reason),
                BootOutcome::Restart => tracing::info!("restarting the VM"),
            }
        }
    }

    /// Runs one boot of the VM until it exits or must restart.
    fn run_boot(&mut self, built: BuiltVm) -> Result<BootOutcome, RunError> {
        let handles: Vec<VcpuHandle> = built
            .vcpus
            .into_iter()
            .map(|vcpu| vcpu.spawn())
            .collect::<Result<_, _>>()?;
        let vm = Booted {
            handles,
            acpi_pm: built.acpi_pm,
            power_button: built.power_button,
        };
        let outcome = self.event_loop(&vm);
        for handle in &vm.handles {
            handle.request_stop();
        }
        for handle in vm.handles {
            handle.join();
        }
        // The guest's last serial lines (its poweroff messages) are still
        // in the buffer of a slow output: give them a bounded time.
        if let Ok(serial) = built.serial.lock() {
            if !serial.flush_output(SERIAL_FLUSH) {
                tracing::warn!(
                    "serial output not written within {} ms; the rest is dropped",
                    SERIAL_FLUSH.as_millis()
                );
            }
        }
        // Guest memory (owned by `built.vm`) is released only after every
        // vCPU thread has left KVM_RUN.
        drop(built.vm);
        Ok(outcome)
    }

    fn event_loop(&mut self, vm: &Booted) -> BootOutcome {
        loop {
            // Requests held back by the power policy's rate limit are
            // published when it allows.
            let event = match self.policy.next_release() {
                Some(at) => match self
                    .events_rx
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return all_closed(),
                },
                None => match self.events_rx.recv() {
                    Ok(event) => Some(event),
                    Err(_) => return all_closed(),
                },
            };
            let Some(event) = event else {
                let actions = self.policy.tick(Instant::now());
                if let Some(outcome) = self.apply(&actions, vm) {
                    return outcome;
                }
                continue;
            };
            let actions = match event {
                VmEvent::Power { boot, event, gate } if boot == self.boot => {
                    gate.release(event);
                    self.policy.guest_request(event, Instant::now())
                }
                VmEvent::Vcpu { boot, crash } if boot == self.boot && crash.triple_fault => {
                    tracing::info!("vcpu{}: {}", crash.id, crash.reason);
                    self.policy
                        .triple_fault()
                        .into_iter()
                        .map(|action| match action {
                            Action::Exit(ExitReason::Crash(reason)) => Action::Exit(
                                ExitReason::Crash(format!("vcpu{}: {reason}", crash.id)),
                            ),
                            other => other,
                        })
                        .collect()
                }
                VmEvent::Vcpu { boot, crash } if boot == self.boot => {
                    return BootOutcome::Exit(ExitReason::Crash(format!(
                        "vcpu{}: {}",
                        crash.id, crash.reason
                    )));
                }
                VmEvent::Power { .. } | VmEvent::Vcpu { .. } => {
                    tracing::debug!("ignoring an event from an earlier boot");
                    continue;
                }
                VmEvent::Control { request, reply } => {
                    let (answer, actions) = self.control(request, vm);
                    if let Some(unwritten) = reply.send(answer) {
                        // At most one per connection stays: the cap bounds it.
                        self.unwritten.retain_mut(|u| !u.is_done());
                        self.unwritten.push(unwritten);
                    }
                    actions
                }
                VmEvent::Subscribe {
                    connection,
                    outbox,
                    arbiter,
                    queued,
                } => {
                    let ok = Response::Ok(if arbiter {
                        Answer::Attached
                    } else {
                        Answer::Subscribed
                    });
                    let ok_queued = outbox.offer(ok).is_ok();
                    let _ = queued.send(ok_queued);
                    if !ok_queued {
                        continue;
                    }
                    self.subscribers.push(Subscriber {
                        connection,
                        outbox,
                        arbiter,
                    });
                    if arbiter {
                        tracing::info!("power arbiter attached (connection {connection})");
                        self.policy.arbiter_attached()
                    } else {
                        continue;
                    }
                }
                VmEvent::Unsubscribe { connection } => {
                    self.subscribers.retain(|s| s.connection != connection);
                    continue;
                }
            };
            if let Some(outcome) = self.apply(&actions, vm) {
                return outcome;
            }
        }
    }

    /// Answers a control request and returns the actions it causes.
    fn control(&mut self, request: Request, vm: &Booted) -> (Response, Vec<Action>) {
        let result = match request {
            Request::Status => {
                let status = Status {
                    state: self.policy.state(),
                    arbitrated: self.policy.arbitrated(),
                    pending: self.policy.held() as u64,
                    boots: self.boot,
                    arbiters: self.subscribers.iter().filter(|s| s.arbiter).count() as u64,
                };
                Ok((Answer::Status(status), Vec::new()))
            }
            Request::Stop => Ok((Answer::Stopping, vec![Action::Exit(ExitReason::Stopped)])),
            Request::PowerButton => {
                let Some(button) = &vm.power_button else {
                    return (
                        Response::error("no power button on this architecture"),
                        Vec::new(),
                    );
                };
                button.press();
                Ok((Answer::Pressed, Vec::new()))
            }
            Request::Pause => self.policy.pause().map(|a| (Answer::Paused, a)),
            Request::Resume => self.policy.resume().map(|a| (Answer::Resumed, a)),
            Request::Decide { id, decision } => self
                .policy
                .decide(id, decision)
                .map(|a| (Answer::Decided, a)),
            // Subscriptions never reach here (see control.rs).
            Request::Attach | Request::Events => {
                return (Response::error("use a dedicated connection"), Vec::new())
            }
        };
        match result {
            Ok((answer, actions)) => (Response::Ok(answer), actions),
            Err(e) => (Response::error(e), Vec::new()),
        }
    }

    /// Carries out `actions`; returns how the boot ends, if it does.
    fn apply(&mut self, actions: &[Action], vm: &Booted) -> Option<BootOutcome> {
        for action in actions {
            match action {
                Action::Exit(reason) => return Some(BootOutcome::Exit(reason.clone())),
                Action::Restart => return Some(BootOutcome::Restart),
                Action::Pause => vm.handles.iter().for_each(VcpuHandle::pause),
                Action::Resume => vm.handles.iter().for_each(VcpuHandle::resume),
                Action::Wake => {
                    // x86: the guest polls the ACPI wake status; arm64: the
                    // vCPU asleep in PSCI SYSTEM_SUSPEND re-enters the guest.
                    if let Some(Ok(mut pm)) = vm.acpi_pm.as_ref().map(|pm| pm.lock()) {
                        pm.set_woken();
                    }
                    vm.handles.iter().for_each(VcpuHandle::wake);
                    vm.handles.iter().for_each(VcpuHandle::resume);
                }
                Action::Publish(event) => self.publish(event),
            }
        }
        None
    }

    fn publish_all(&mut self, actions: &[Action]) {
        for action in actions {
            if let Action::Publish(event) = action {
                self.publish(event);
            }
        }
    }

    /// Gives every subscriber's writer and every connection thread with a
    /// response in hand a moment (at most [`FLUSH_TIMEOUT`] in all) to
    /// write it, so that the last events and answers (the `ok` of the
    /// request that ends the VMM too) reach the clients before the process
    /// exits.
    ///
    /// Requests that reach the channel meanwhile (sent while the VM was
    /// ending, by open connections or ones accepted from the backlog) are
    /// answered `error VMM is exiting` and waited for the same way, until
    /// a pass finds nothing new and nothing pending, or the deadline.
    fn flush_clients(&mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut outboxes: Vec<Outbox> = self.subscribers.drain(..).map(|s| s.outbox).collect();
        loop {
            let late = self.answer_late_requests(&mut outboxes);
            let slice_end = (Instant::now() + FLUSH_SLICE).min(deadline);
            self.unwritten.retain_mut(|u| !u.wait(slice_end));
            // An outbox written (again: a late answer may come) or given
            // up on is done with; one pending is waited for in the next
            // pass.
            let pending = outboxes
                .iter()
                .filter(|o| o.flush(slice_end) == Flush::Pending)
                .count();
            if late == 0 && self.unwritten.is_empty() && pending == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::debug!(
                    "control clients not flushed before exit: {} responses, {pending} subscribers",
                    self.unwritten.len()
                );
                return;
            }
        }
    }

    /// Answers the requests in the channel `error VMM is exiting` (keeping
    /// what to wait for in `self.unwritten` and `outboxes`); returns how
    /// many there were.
    fn answer_late_requests(&mut self, outboxes: &mut Vec<Outbox>) -> usize {
        let mut late = 0;
        while let Ok(event) = self.events_rx.try_recv() {
            match event {
                VmEvent::Control { reply, .. } => {
                    late += 1;
                    if let Some(outbox) = reply.outbox() {
                        outboxes.push(outbox.clone());
                    }
                    if let Some(unwritten) = reply.send(control::exiting()) {
                        self.unwritten.push(unwritten);
                    }
                }
                VmEvent::Subscribe { outbox, queued, .. } => {
                    late += 1;
                    let _ = outbox.offer(control::exiting());
                    let _ = queued.send(false);
                    outboxes.push(outbox);
                }
                VmEvent::Power { .. } | VmEvent::Vcpu { .. } | VmEvent::Unsubscribe { .. } => {}
            }
        }
        late
    }

    /// Queues an event line for every subscriber (never waiting for one),
    /// dropping those that are gone or do not read.
    fn publish(&mut self, event: &Event) {
        tracing::info!("{event}");
        self.subscribers.retain(|s| match s.outbox.offer(event) {
            Ok(()) => true,
            Err(OfferError::Closed) => false,
            Err(e @ OfferError::Full) => {
                tracing::warn!("control connection {}: {e}", s.connection);
                false
            }
        });
    }
}

/// The event channel closed: nothing can end the VM any more.
fn all_closed() -> BootOutcome {
    BootOutcome::Exit(ExitReason::Crash("all event sources closed".into()))
}

/// What the event loop needs of a running boot.
struct Booted {
    handles: Vec<VcpuHandle>,
    acpi_pm: Option<Arc<Mutex<devices::legacy::AcpiPmDevice>>>,
    power_button: Option<devices::legacy::PowerButton>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Reply;
    use std::os::unix::net::UnixStream;

    fn runner() -> Runner {
        let (events_tx, events_rx) = channel();
        Runner {
            events_tx,
            events_rx,
            policy: PowerPolicy::new(false),
            subscribers: Vec::new(),
            unwritten: Vec::new(),
            boot: 0,
        }
    }

    /// A `status` request from a connection whose response goes to `reply`.
    fn send_status(runner: &Runner, reply: Reply) {
        let request = Request::Status;
        let event = VmEvent::Control { request, reply };
        runner.events_tx.send(event).unwrap();
    }

    #[test]
    fn requests_left_in_the_channel_are_answered_before_the_exit() {
        let mut runner = runner();
        // A plain connection's request: its thread writes the response,
        // then says so.
        let (response_tx, response_rx) = channel();
        let (written_tx, written_rx) = channel();
        let reply = Reply::Direct {
            response: response_tx,
            written: written_rx,
        };
        send_status(&runner, reply);
        // A subscription that came too late.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::open(&ours, ()).unwrap();
        let (queued_tx, queued_rx) = channel();
        runner
            .events_tx
            .send(VmEvent::Subscribe {
                connection: 1,
                outbox,
                arbiter: false,
                queued: queued_tx,
            })
            .unwrap();
        // A subscribed connection's request: its response goes into its
        // outbox.
        let (sub_ours, mut sub_theirs) = UnixStream::pair().unwrap();
        let (sub_queued_tx, sub_queued_rx) = channel();
        let reply = Reply::Outbox {
            outbox: Outbox::open(&sub_ours, ()).unwrap(),
            queued: sub_queued_tx,
        };
        send_status(&runner, reply);
        let connection = std::thread::spawn(move || {
            let response = response_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            written_tx.send(()).unwrap();
            response
        });
        let started = Instant::now();
        runner.flush_clients();
        // It waited for the plain connection's write...
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            connection.join().unwrap().to_string(),
            "error VMM is exiting"
        );
        assert!(!queued_rx.recv_timeout(Duration::from_secs(5)).unwrap());
        // ... and for the outboxes' lines: they are in the sockets.
        assert!(sub_queued_rx.recv_timeout(Duration::from_secs(5)).unwrap());
        for socket in [&mut theirs, &mut sub_theirs] {
            socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let n = socket.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"error VMM is exiting\n");
        }
    }
}
