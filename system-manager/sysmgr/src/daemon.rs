//! `sysmgr run`: the daemon around the arbiter core.
//!
//! One task (this module's [`Daemon`]) owns the [`Arbiter`] and is its only
//! caller. Every fact arrives as an [`Event`] on one channel: VMM lines and
//! disconnections, VHAL reports, MCU messages, status queries. A fact that
//! is an arbiter input is stamped with the clock, handled, **appended to the
//! decision log**, and only then are the outputs carried out, in the order
//! of their inputs. Events that are already queued are handled as one
//! batch. How the log reaches the disk is [`LogSync`]: by default a
//! background thread `fdatasync`s each batch and only commands to the MCU
//! wait for it; with `--log-sync every-decision` every batch is fsynced
//! before any of its outputs (group commit).
//!
//! After a restart (even `kill -9`) the daemon replays and verifies the
//! log, attaches to the VMMs again (they re-publish their state and pending
//! requests), re-sends a logged decision the VMM has not received, repairs
//! a pause/resume/stop that was logged but not delivered, sends the MCU its
//! last command and the Android guest its current `AP_POWER_STATE_REQ`, and
//! carries on with the pending timer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;
use system_manager::{
    Arbiter, Decision, GuestState, Input, LogRecord, Output, Policy, Repair, SystemState, VmmAsked,
    WakeReason,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use vmm_protocol::{Event as VmmEvent, Request, Response, ServerLine, VmState};

use crate::binder::{BinderEndpoints, BinderRequest};
use crate::guest_line;
use crate::guest_log::GuestLines;
use crate::mcu::McuReport;
use crate::proto::mcu::{mcu_to_soc, soc_to_mcu, McuToSoc, PowerOff, PowerOn, SocToMcu, Suspend};
use crate::store::{self, Clock, CommitStep, Decided, DecisionLog, LogSync, StateDir};
use crate::vhal::{VhalCmd, VhalConfig, VhalReport};
mod binder_calls;
mod control;
mod incoming;

use crate::vmm::{VmmCmd, VmmConfig, VmmReport};

/// Everything the core loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// From guest `idx`'s VMM link.
    Vmm(usize, VmmReport),
    /// From guest `idx`'s VHAL channel.
    Vhal(usize, VhalReport),
    /// From the MCU link.
    Mcu(McuReport),
    /// An input the daemon derived itself.
    Input(Input),
    /// `status` on the daemon's control socket.
    Status(oneshot::Sender<serde_json::Value>),
    /// A call on an `ISystemManager` binder endpoint.
    Binder(BinderRequest),
}

/// What the daemon knows about one guest's VMM and channel.
struct GuestLink {
    name: String,
    vmm: UnboundedSender<VmmCmd>,
    vhal: Option<UnboundedSender<VhalCmd>>,
    attached: bool,
    /// A `Start` or `Attach` was sent and its answer (attached, start
    /// failed, absent) is not handled yet.
    connecting: bool,
    /// A `Stop` was sent with no VMM attached or being attached, and the
    /// link's report of that VMM's end (`Gone`) is not handled yet.
    stopping: bool,
    /// The VMM's last reported state (`event state`).
    vmm_state: Option<VmState>,
    /// The next state event is the first after an attach.
    fresh: bool,
    pid: Option<u32>,
    /// What was asked of the VMM process since `StartVm`.
    asked: VmmAsked,
    vhal_wanted: bool,
    vhal_connected: bool,
    /// The budget of the log lines this guest can trigger.
    lines: GuestLines,
}

impl GuestLink {
    /// Attached to its VMM (process `pid` when known); the next state event
    /// is the first of this attachment.
    fn attach(&mut self, pid: Option<u32>) {
        self.attached = true;
        self.connecting = false;
        self.fresh = true;
        self.pid = pid;
    }

    /// The VMM is gone: neither its process nor its state are known.
    fn detach(&mut self) {
        self.attached = false;
        self.stopping = false;
        self.vmm_state = None;
        self.pid = None;
    }
}

/// The `sysmgr run` options.
pub struct RunArgs {
    /// Policy file.
    pub policy: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// MCU socket.
    pub mcu_socket: PathBuf,
    /// When the decision log is made durable.
    pub log_sync: LogSync,
    /// The log size that triggers a compaction.
    pub log_compact_bytes: u64,
}

/// Reads and validates the policy; errors are one line.
pub fn load_policy(path: &std::path::Path) -> Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    let policy =
        Policy::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (n, g) in policy.guests().iter().enumerate() {
        if g.vmm.control_socket.is_none() {
            bail!(
                "{}: guest[{}] `{}`: no control_socket: sysmgr needs the VMM's control socket (vmm run --socket)",
                path.display(),
                n + 1,
                g.name
            );
        }
    }
    Ok(policy)
}

/// The core loop's state.
pub struct Daemon {
    arbiter: Arbiter,
    log: DecisionLog,
    decided: Decided,
    clock: Clock,
    links: Vec<GuestLink>,
    mcu: UnboundedSender<SocToMcu>,
    mcu_connected: bool,
    /// A power-off for the MCU that waits until every VMM is gone.
    held_poweroff: Option<(SocToMcu, tokio::time::Instant)>,
    events: UnboundedSender<Event>,
    started_at: u64,
    /// Records written whose outputs are not carried out yet.
    pending: Vec<LogRecord>,
    /// Outputs of idle inputs (refusals) to carry out after `pending`'s.
    idle_outputs: Vec<Output>,
    log_sync: LogSync,
    /// The RPC binder endpoints and their listeners.
    binder: BinderEndpoints,
    /// The system state last sent to the listeners (description,
    /// ignition, vehicle in use).
    system_sent: Option<(String, bool, bool)>,
}

/// Most events handled as one batch.
const MAX_BATCH: usize = 256;

fn system_word(s: &SystemState) -> String {
    s.to_string()
}

impl Daemon {
    /// Loads the state, starts the links and returns the daemon and its
    /// event receiver.
    pub fn start(args: &RunArgs) -> Result<(Daemon, UnboundedReceiver<Event>)> {
        let policy = load_policy(&args.policy)?;
        store::ensure_dir(&args.state_dir)?;
        let dir = StateDir(args.state_dir.clone());
        let disk = std::sync::Arc::new(dir.disk());
        let loaded = store::load(&*disk, true)?;
        let (arbiter, decided) = loaded.restore(policy.clone())?;
        let last = loaded.last_at();
        let clock = Clock::open(&dir, last)?;
        if loaded.inputs() == 0 {
            tracing::info!("fresh start: system {}", arbiter.system());
        } else {
            tracing::info!(
                "resumed from {} logged inputs ({} in the snapshot, {} in the log; last at {last}, now {}): system {}",
                loaded.inputs(),
                loaded.snapshot_seq(),
                loaded.records.len(),
                clock.now(),
                arbiter.system()
            );
        }
        let mut log = DecisionLog::open(disk)?.compact_at(args.log_compact_bytes);
        if args.log_sync == LogSync::BeforeMcu {
            log.start_background_sync()?;
        }
        let (tx, rx) = unbounded_channel();

        let (mcu_tx, mcu_rx) = unbounded_channel();
        let etx = tx.clone();
        let mcu_socket = args.mcu_socket.clone();
        tokio::spawn(async move {
            crate::mcu::run(mcu_socket, mcu_rx, move |r| {
                let _ = etx.send(Event::Mcu(r));
            })
            .await
        });

        let mut links = Vec::new();
        for (idx, g) in policy.guests().iter().enumerate() {
            let (vtx, vrx) = unbounded_channel();
            let cfg = VmmConfig {
                guest: g.name.clone(),
                socket: PathBuf::from(g.vmm.control_socket.clone().unwrap_or_default()),
                launch: g.vmm.launch.clone(),
                log: dir.vmm_log(&g.name),
                pid_file: dir.pid_file(&g.name),
                vmm_uid: g.vmm.vmm_user.map(|u| u.uid),
            };
            let etx = tx.clone();
            tokio::spawn(async move {
                crate::vmm::run(cfg, vrx, move |r| {
                    let _ = etx.send(Event::Vmm(idx, r));
                })
                .await
            });
            let lines = g.vmm.android_channel == system_manager::AndroidChannel::VhalLines;
            let vhal = g.vmm.vsock_socket.as_ref().filter(|_| lines).map(|sock| {
                let (htx, hrx) = unbounded_channel();
                let cfg = VhalConfig {
                    guest: g.name.clone(),
                    socket: PathBuf::from(sock),
                    port: g.vmm.vhal_port,
                    vmm_uid: g.vmm.vmm_user.map(|u| u.uid),
                };
                let etx = tx.clone();
                tokio::spawn(async move {
                    crate::vhal::run(cfg, hrx, move |r| {
                        let _ = etx.send(Event::Vhal(idx, r));
                    })
                    .await
                });
                htx
            });
            links.push(GuestLink {
                name: g.name.clone(),
                vmm: vtx,
                vhal,
                attached: false,
                connecting: false,
                stopping: false,
                vmm_state: None,
                fresh: false,
                pid: None,
                asked: VmmAsked::default(),
                vhal_wanted: false,
                vhal_connected: false,
                lines: GuestLines::default(),
            });
        }

        let binder = crate::binder::start(&policy, &args.state_dir, &tx)?;
        let mut d = Daemon {
            arbiter,
            log,
            decided,
            clock,
            links,
            mcu: mcu_tx,
            mcu_connected: false,
            held_poweroff: None,
            events: tx,
            started_at: store::boottime_ms(),
            pending: Vec::new(),
            idle_outputs: Vec::new(),
            log_sync: args.log_sync,
            binder,
            system_sent: None,
        };
        d.resume_links();
        d.publish_system();
        Ok((d, rx))
    }

    /// After start-up: attach to every VMM (launch one still being started),
    /// and restore the state-like outputs (MCU command, VHAL request).
    fn resume_links(&mut self) {
        for (i, g) in self.arbiter.guests().iter().enumerate() {
            let cmd = if g.state == GuestState::Starting {
                VmmCmd::Start
            } else {
                VmmCmd::Attach
            };
            self.links[i].connecting = true;
            let _ = self.links[i].vmm.send(cmd);
            if let (Some(v), Some(req)) = (&self.links[i].vhal, g.vhal_req) {
                let _ = v.send(VhalCmd::Req(req.vhal()));
            }
            if let (Some(Some(l)), Some(req)) = (self.binder.guests.get(i), g.vhal_req) {
                l.set_req(req.vhal());
            }
        }
        let last = match self.arbiter.system() {
            SystemState::Off => None,
            SystemState::PoweringOff => {
                Some(mcu_cmd_off(None, "resumed: the system is powering off"))
            }
            SystemState::Suspended => {
                Some(mcu_cmd_suspend(None, "resumed: the system is suspended"))
            }
            _ => Some(mcu_cmd_on("resumed: the system is on")),
        };
        if let Some(c) = last {
            let _ = self.mcu.send(c);
        }
    }

    /// Runs until the event channel closes (never, in practice).
    pub async fn run(mut self, mut rx: UnboundedReceiver<Event>) -> Result<()> {
        loop {
            let due = self.arbiter.next_timer().map(|at| {
                let now = self.clock.now();
                Duration::from_millis(at.as_millis().saturating_sub(now.as_millis()))
            });
            let held = self.held_poweroff.as_ref().map(|(_, t)| *t);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        self.on_event(ev)?;
                        // What is already queued is one batch (one fsync
                        // with `every-decision`).
                        for _ in 1..MAX_BATCH {
                            match rx.try_recv() {
                                Ok(ev) => self.on_event(ev)?,
                                Err(_) => break,
                            }
                        }
                        self.commit()?;
                    }
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => {
                    self.feed(Input::Tick)?;
                    self.commit()?;
                }
                _ = tokio::time::sleep_until(held.unwrap_or_else(tokio::time::Instant::now)), if held.is_some() => {
                    tracing::warn!("VMMs still attached after the power-off wait; killing them and powering off");
                    for l in &self.links {
                        if l.attached {
                            let _ = l.vmm.send(VmmCmd::Stop { report_gone: false });
                        }
                    }
                    self.release_poweroff(true);
                }
            }
        }
    }

    /// Hands one input to the arbiter and writes its record; the outputs
    /// are carried out by [`Daemon::commit`].
    fn feed(&mut self, input: Input) -> Result<()> {
        let now = self.clock.now();
        let record = self.arbiter.step(now, input);
        self.write(record)
    }

    fn write(&mut self, record: LogRecord) -> Result<()> {
        self.log.write(&record).context("decision log")?;
        self.decided.note(&record.input, &record.outputs);
        self.pending.push(record);
        Ok(())
    }

    /// Feeds an input a guest sent (a VHAL report, a `SHUTDOWN_REQUEST`,
    /// a power request) and returns its outputs. One that changes nothing
    /// (`Arbiter::step_unless_idle`: a pointless report, a repeated
    /// shutdown request while the head unit must stay on, a power request
    /// that is refused) is not a log record: it is journalled on one line
    /// within the guest's log budget, and a refusal is sent to the VMM
    /// with the batch's other outputs. So a guest that repeats itself
    /// grows neither the decision log nor the journal.
    fn feed_from_guest(&mut self, i: usize, input: Input) -> Result<Vec<Output>> {
        let now = self.clock.now();
        match self.arbiter.step_unless_idle(now, input.clone()) {
            system_manager::Stepped::Logged(record) => {
                let outputs = record.outputs.clone();
                self.write(record)?;
                Ok(outputs)
            }
            system_manager::Stepped::Idle(outputs) => {
                // Formatted only when the guest's budget admits the line.
                guest_line!(
                    self.links[i].lines,
                    info,
                    "{input}: changes nothing (not a log record): {}",
                    outputs
                        .iter()
                        .map(Output::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                self.idle_outputs
                    .extend(outputs.iter().filter(|o| !o.is_log_only()).cloned());
                Ok(outputs)
            }
        }
    }

    /// Carries out the written records' outputs in order, each once the
    /// log is as durable as [`LogSync`] asks ([`LogSync::commit_plan`]):
    /// nothing is done before its record is in the log, so a daemon crash
    /// after the write replays it and one before it re-derives the input
    /// from the VMMs, the MCU and the guest. Then compacts the log if it
    /// has grown past its size.
    fn commit(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            // Refusals change nothing: nothing to make durable first.
            for o in std::mem::take(&mut self.idle_outputs) {
                self.execute(&o);
            }
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        for step in self.log_sync.commit_plan(&records) {
            match step {
                CommitStep::Sync => self.log.sync(),
                CommitStep::SyncSoon => self.log.sync_soon(),
                CommitStep::Announce(r) => {
                    self.print_record(&records[r]);
                    Ok(())
                }
                CommitStep::Execute(r, o) => {
                    self.execute(&records[r].outputs[o]);
                    Ok(())
                }
            }
            .context("decision log")?;
        }
        for o in std::mem::take(&mut self.idle_outputs) {
            self.execute(&o);
        }
        if self.log.wants_compaction() {
            let snapshot = store::Snapshot::of(&self.arbiter, &self.decided);
            self.log.compact(&snapshot).context("decision log")?;
        }
        self.update_vhal_wants();
        self.publish_system();
        Ok(())
    }

    fn idx(&self, guest: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == guest)
    }

    /// The journal: one line per input, one indented line per output. A
    /// record about a guest (its requests, reports, VM starts and exits:
    /// a rebooting guest makes them) is within that guest's log budget,
    /// unless one of its outputs reaches beyond that guest (an MCU
    /// command, another guest's VM or handshake): those are always shown.
    fn print_record(&mut self, r: &LogRecord) {
        let note = match crate::guest_log::budget_of(r).and_then(|g| self.idx(g)) {
            Some(i) => match self.links[i].lines.admit() {
                Some(n) => crate::guest_log::suppressed_note(n),
                None => return,
            },
            None => String::new(),
        };
        tracing::info!(
            "#{} {} {} -> system {}{note}",
            r.seq,
            r.at,
            r.input,
            r.system
        );
        for o in &r.outputs {
            if !matches!(o, Output::SetTimer { .. }) {
                tracing::info!("    {o}");
            }
        }
    }

    fn send_vmm(&self, i: usize, request: Request) {
        let _ = self.links[i].vmm.send(VmmCmd::Send(request));
    }

    fn execute(&mut self, o: &Output) {
        let i = o.guest().and_then(|g| self.idx(g));
        match (o, i) {
            (Output::ApPowerStateReq { state, .. }, Some(i)) => {
                if let Some(v) = &self.links[i].vhal {
                    let _ = v.send(VhalCmd::Req(state.vhal()));
                }
                if let Some(Some(l)) = self.binder.guests.get(i) {
                    l.set_req(state.vhal());
                }
            }
            (
                Output::Decide {
                    request_id,
                    decision,
                    ..
                },
                Some(i),
            ) => {
                if *decision == Decision::Allow {
                    self.links[i].asked.allowed = true;
                }
                self.send_vmm(
                    i,
                    Request::Decide {
                        id: *request_id,
                        decision: *decision,
                    },
                );
            }
            (Output::PauseVm { .. }, Some(i)) => self.send_vmm(i, Request::Pause),
            (Output::ResumeVm { .. }, Some(i)) => self.send_vmm(i, Request::Resume),
            (Output::HardStopVm { .. }, Some(i)) => {
                let l = &mut self.links[i];
                l.asked.stop_sent = true;
                // No VMM attached and none being attached: no closing
                // connection will report this VMM gone, yet the arbiter
                // waits for that (a stopping guest is off only once its
                // VMM is gone). The link reports it instead, once the
                // process it kills has ended, never before: a start that
                // follows must not meet the old VMM. Asked once: a second
                // report could be taken for a later VMM's end.
                let report_gone = !l.attached && !l.connecting && !l.stopping;
                l.stopping |= report_gone;
                let _ = l.vmm.send(VmmCmd::Stop { report_gone });
            }
            (Output::StartVm { guest, .. }, Some(i)) => {
                let l = &mut self.links[i];
                l.asked = VmmAsked::default();
                if l.attached && l.vmm_state == Some(VmState::Running) {
                    // Already there (started outside the daemon): say so.
                    let _ = self.events.send(Event::Input(Input::VmStarted {
                        guest: guest.clone(),
                    }));
                } else {
                    l.connecting = true;
                    let _ = l.vmm.send(VmmCmd::Start);
                }
            }
            (Output::SystemOn { reason }, _) => {
                self.held_poweroff = None;
                let _ = self.mcu.send(mcu_cmd_on(reason));
            }
            (
                Output::SystemSuspend {
                    wake_after_s,
                    reason,
                },
                _,
            ) => {
                let _ = self.mcu.send(mcu_cmd_suspend(*wake_after_s, reason));
            }
            (
                Output::SystemPowerOff {
                    wake_after_s,
                    reason,
                },
                _,
            ) => {
                let cmd = mcu_cmd_off(*wake_after_s, reason);
                let hold = Duration::from_millis(self.arbiter.policy().system().poweroff_hold_ms);
                self.held_poweroff = Some((cmd, tokio::time::Instant::now() + hold));
                self.release_poweroff(false);
            }
            _ => {}
        }
    }

    /// Sends the held power-off to the MCU once no VMM is attached (or
    /// anyway, when `force`).
    fn release_poweroff(&mut self, force: bool) {
        if self.held_poweroff.is_none() {
            return;
        }
        let waiting: Vec<&str> = self
            .links
            .iter()
            .filter(|l| l.attached)
            .map(|l| l.name.as_str())
            .collect();
        if !waiting.is_empty() && !force {
            tracing::info!(
                "power-off for the MCU waits until these VMMs are gone: {}",
                waiting.join(", ")
            );
            return;
        }
        if let Some((cmd, _)) = self.held_poweroff.take() {
            let _ = self.mcu.send(cmd);
        }
    }

    fn update_vhal_wants(&mut self) {
        for (i, g) in self.arbiter.guests().iter().enumerate() {
            let l = &mut self.links[i];
            let want = l.attached && g.state.is_live();
            if let Some(v) = &l.vhal {
                if want != l.vhal_wanted {
                    l.vhal_wanted = want;
                    let _ = v.send(VhalCmd::Want(want));
                }
            }
        }
    }

    fn guest_state(&self, i: usize) -> GuestState {
        self.arbiter.guests()[i].state
    }

    /// The daemon's view for `sysmgr status`.
    fn status(&self) -> serde_json::Value {
        let a = &self.arbiter;
        let guests: Vec<_> = a
            .guests()
            .iter()
            .zip(&self.links)
            .enumerate()
            .map(|(i, (g, l))| {
                let binder = self.binder.guests.get(i).and_then(|b| b.as_ref());
                json!({
                    "name": g.name,
                    "role": g.role.to_string(),
                    "state": g.state.to_string(),
                    "vhal_req": g.vhal_req.map(|r| r.to_string()),
                    "release_at": g.release_at.map(|t| t.as_millis()),
                    "vmm": {
                        "attached": l.attached,
                        "state": l.vmm_state.map(VmState::word),
                        "pid": l.pid,
                    },
                    "vhal_connected": match binder {
                        Some(b) => Some(b.count() > 0),
                        None => l.vhal.as_ref().map(|_| l.vhal_connected),
                    },
                })
            })
            .collect();
        json!({
            "daemon_pid": std::process::id(),
            "uptime_ms": store::boottime_ms().saturating_sub(self.started_at),
            "now": self.clock.now().as_millis(),
            "inputs": a.inputs_handled(),
            "system": system_word(a.system()),
            "ignition_on": a.ignition_on(),
            "vehicle_in_use": a.vehicle_in_use(),
            "next_timer": a.next_timer().map(|t| t.as_millis()),
            "mcu_connected": self.mcu_connected,
            "guests": guests,
        })
    }
}

fn onoff(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A command to the MCU with the arbiter's reason.
fn mcu_cmd(command: soc_to_mcu::Command, reason: &str) -> SocToMcu {
    SocToMcu {
        command: Some(command),
        reason: reason.to_string(),
        ..Default::default()
    }
}

fn mcu_cmd_on(reason: &str) -> SocToMcu {
    mcu_cmd(soc_to_mcu::Command::PowerOn(PowerOn::new()), reason)
}

fn mcu_cmd_off(wake_after_s: Option<u32>, reason: &str) -> SocToMcu {
    let off = PowerOff {
        wake_after_s: wake_after_s.unwrap_or(0),
        ..Default::default()
    };
    mcu_cmd(soc_to_mcu::Command::PowerOff(off), reason)
}

fn mcu_cmd_suspend(wake_after_s: Option<u32>, reason: &str) -> SocToMcu {
    let suspend = Suspend {
        wake_after_s: wake_after_s.unwrap_or(0),
        ..Default::default()
    };
    mcu_cmd(soc_to_mcu::Command::Suspend(suspend), reason)
}

/// `sysmgr run`, once [`prepare`](crate::confine::prepare)d.
pub async fn run(args: RunArgs, prepared: crate::confine::Prepared) -> Result<()> {
    prepared.listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(prepared.listener)?;
    if let Some(sock) = prepared.launcher {
        crate::launcher::install(crate::launcher::Launcher::start(sock)?);
    }
    let _lock = prepared.lock;
    let (daemon, rx) = Daemon::start(&args)?;
    control::serve(listener, daemon.events.clone());
    tracing::info!(
        "sysmgr running: policy {}, state {}, MCU {}",
        args.policy.display(),
        args.state_dir.display(),
        args.mcu_socket.display()
    );
    daemon.run(rx).await
}
