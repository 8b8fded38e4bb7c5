//! The facts that reach the daemon: each [`Event`] from the MCU, the VMMs
//! and the VHAL links, turned into arbiter inputs (or answered directly),
//! and the after-restart reconciliation with a VMM's reported state.

use super::*;

impl Daemon {
    pub(super) fn on_event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Input(input) => self.feed(input)?,
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Event::Vmm(i, r) => self.on_vmm(i, r)?,
            Event::Vhal(i, r) => match r {
                VhalReport::Connected => self.links[i].vhal_connected = true,
                VhalReport::Disconnected => self.links[i].vhal_connected = false,
                VhalReport::Report(value, param) => {
                    let guest = self.links[i].name.clone();
                    self.feed_from_guest(
                        i,
                        Input::ApPowerStateReport {
                            guest,
                            value,
                            param,
                        },
                    )?;
                }
                VhalReport::Garbage(line) => {
                    let l = &mut self.links[i];
                    guest_line!(
                        l.lines,
                        warn,
                        "{}: VHAL channel: not a report, ignored: {line:?}",
                        l.name
                    )
                }
            },
            Event::Mcu(r) => self.on_mcu(r)?,
            Event::Binder(r) => self.on_binder(r)?,
        }
        Ok(())
    }

    pub(super) fn on_mcu(&mut self, r: McuReport) -> Result<()> {
        let m: McuToSoc = match r {
            McuReport::Connected => {
                tracing::info!("MCU: connected");
                self.mcu_connected = true;
                return Ok(());
            }
            McuReport::Disconnected => {
                tracing::warn!("MCU: link down");
                self.mcu_connected = false;
                return Ok(());
            }
            McuReport::Malformed(why) => {
                tracing::warn!("MCU: malformed message: {why}");
                return Ok(());
            }
            McuReport::Message(m) => m,
        };
        match m.signal {
            Some(mcu_to_soc::Signal::State(s)) => {
                tracing::info!(
                    "MCU: vehicle state: ignition {}, in use {}",
                    onoff(s.ignition_on),
                    s.vehicle_in_use
                );
                if s.ignition_on != self.arbiter.ignition_on() {
                    self.feed(if s.ignition_on {
                        Input::IgnitionOn
                    } else {
                        Input::IgnitionOff
                    })?;
                }
                if s.vehicle_in_use != self.arbiter.vehicle_in_use() {
                    self.feed(Input::VehicleInUse {
                        in_use: s.vehicle_in_use,
                    })?;
                }
            }
            Some(mcu_to_soc::Signal::Ignition(ig)) => self.feed(if ig.on {
                Input::IgnitionOn
            } else {
                Input::IgnitionOff
            })?,
            Some(mcu_to_soc::Signal::VehicleInUse(u)) => {
                self.feed(Input::VehicleInUse { in_use: u.in_use })?
            }
            Some(mcu_to_soc::Signal::Wake(w)) => match WakeReason::from_vhal(w.reason.value()) {
                Ok(reason) => self.feed(Input::WakeRequest { reason })?,
                Err(e) => tracing::warn!("MCU: wake request ignored: {e}"),
            },
            None => tracing::warn!("MCU: message without a signal (unknown field?); ignored"),
        }
        Ok(())
    }

    pub(super) fn on_vmm(&mut self, i: usize, r: VmmReport) -> Result<()> {
        let name = self.links[i].name.clone();
        match r {
            VmmReport::Attached { pid } => {
                // Formatted only if the line is admitted (guest_line!).
                guest_line!(
                    self.links[i].lines,
                    info,
                    "{name}: attached to its VMM{}",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                );
                self.links[i].attach(pid);
                self.update_vhal_wants();
            }
            VmmReport::Line(line) => self.on_vmm_line(i, line)?,
            VmmReport::Absent => {
                self.links[i].connecting = false;
                if self.guest_state(i) != GuestState::Off {
                    tracing::warn!("{name}: no VMM on its control socket");
                    let input = system_manager::vm_gone_input(&name, None, self.links[i].asked);
                    self.feed(input)?;
                }
            }
            VmmReport::Gone { exit } => {
                guest_line!(
                    self.links[i].lines,
                    info,
                    "{name}: VMM gone{}",
                    exit.map(|e| format!(" ({e:?})")).unwrap_or_default()
                );
                let l = &mut self.links[i];
                l.detach();
                let input = system_manager::vm_gone_input(&name, exit, l.asked);
                self.feed(input)?;
                self.release_poweroff(false);
            }
            VmmReport::StartFailed { why, failure } => {
                tracing::error!("{name}: cannot start the VM: {why}");
                self.links[i].attached = false;
                self.links[i].connecting = false;
                if self.guest_state(i) != GuestState::Off {
                    self.feed(system_manager::start_failed_input(&name, failure))?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_vmm_line(&mut self, i: usize, line: ServerLine) -> Result<()> {
        let name = self.links[i].name.clone();
        match line {
            ServerLine::Event(VmmEvent::State(state)) => {
                guest_line!(self.links[i].lines, info, "{name}: VMM state {state}");
                self.links[i].vmm_state = Some(state);
                if std::mem::take(&mut self.links[i].fresh) {
                    self.reconcile(i, state);
                }
                let s = self.guest_state(i);
                if state == VmState::Running
                    && matches!(
                        s,
                        GuestState::Starting | GuestState::Restarting | GuestState::Off
                    )
                {
                    self.feed(Input::VmStarted { guest: name })?;
                }
            }
            ServerLine::Event(VmmEvent::PowerRequest { id, kind }) => {
                if let Some(decision) = self.decided.get(&name, id) {
                    guest_line!(
                        self.links[i].lines,
                        info,
                        "{name}: request {id} was decided before the restart ({decision}); sending it again"
                    );
                    if decision == Decision::Allow {
                        self.links[i].asked.allowed = true;
                    }
                    self.send_vmm(i, Request::Decide { id, decision });
                } else {
                    self.feed_from_guest(
                        i,
                        Input::GuestPowerRequest {
                            guest: name,
                            request_id: id,
                            kind,
                        },
                    )?;
                }
            }
            ServerLine::Response(Response::Error(e)) => {
                guest_line!(self.links[i].lines, warn, "{name}: VMM answered: error {e}");
            }
            ServerLine::Response(ok) => tracing::debug!("{name}: VMM answered: {ok}"),
        }
        Ok(())
    }

    /// Repairs a command that was logged but not delivered before the
    /// daemon died (decided by `system_manager::repair_after_attach`).
    pub(super) fn reconcile(&mut self, i: usize, vmm_state: VmState) {
        let name = self.links[i].name.clone();
        let guest = self.guest_state(i);
        match system_manager::repair_after_attach(guest, vmm_state) {
            Some(Repair::Pause) => {
                tracing::info!("{name}: should be paused; pausing");
                self.send_vmm(i, Request::Pause);
            }
            Some(Repair::Resume) => {
                tracing::info!("{name}: should be running but the VMM is {vmm_state}; resuming");
                self.send_vmm(i, Request::Resume);
            }
            Some(Repair::Stop) => {
                tracing::info!("{name}: should be stopping; stopping");
                self.links[i].asked.stop_sent = true;
                let _ = self.links[i].vmm.send(VmmCmd::Stop { report_gone: false });
            }
            None => {}
        }
    }
}
