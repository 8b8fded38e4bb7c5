//! A guest's own power step (ACPI sleep/reset on x86, PSCI OFF/RESET/
//! SUSPEND on arm64) as a request the arbiter decides, and the Android
//! guest's final step after its VHAL handshake.

use super::*;

impl Arbiter {
    pub(super) fn power_request(
        &mut self,
        name: &str,
        request_id: u64,
        kind: PowerRequestKind,
        out: &mut Vec<Output>,
    ) {
        let Some(i) = self.index(name) else {
            Self::reject(
                out,
                format!("{kind} request {request_id} from unknown guest `{name}`: no such guest in the policy"),
            );
            return;
        };
        let state = self.state.guests[i].state;
        let refusal = match state {
            GuestState::Off => Some(format!(
                "{name}'s VM is off as far as the arbiter knows: stale {kind} request"
            )),
            GuestState::Stopping { .. } => Some(format!("{name}'s VM is already being stopped")),
            GuestState::VirtuallyOff { .. } => Some(format!(
                "{name}'s VM is paused ({state}); a paused VM cannot ask"
            )),
            GuestState::Starting | GuestState::Restarting => {
                Arc::make_mut(&mut self.state.guests)[i].state = GuestState::Running;
                Self::note(
                    out,
                    format!("{name} made a power request, so its VM is running"),
                );
                None
            }
            _ => None,
        };
        if let Some(why) = refusal {
            return self.decide(i, request_id, Decision::Refuse, why, out);
        }
        let role = self.state.guests[i].role;
        match (kind, role) {
            (PowerRequestKind::Reboot, _) => self.restart(
                i,
                request_id,
                format!("{name} asked to reboot: restart its VM only"),
                out,
            ),
            (_, Role::Android) => self.android_final(i, request_id, kind, out),
            (_, Role::Cluster) => match self.cluster_need() {
                Some(need) if kind == PowerRequestKind::Poweroff => self.restart(
                    i,
                    request_id,
                    format!("the cluster must stay up ({need}): restart it instead of powering it off"),
                    out,
                ),
                Some(need) => self.decide(
                    i,
                    request_id,
                    Decision::Refuse,
                    format!("the cluster must stay up ({need}): its suspend fails"),
                    out,
                ),
                None => self.allow_final(
                    i,
                    request_id,
                    kind,
                    format!("the cluster is not needed (ignition off, vehicle not in use): allow its {kind}"),
                    out,
                ),
            },
            (_, Role::Other) => self.allow_final(
                i,
                request_id,
                kind,
                format!("{name} may {kind} itself"),
                out,
            ),
        }
    }

    /// The Android guest's final power-off or suspend request.
    pub(super) fn android_final(
        &mut self,
        i: usize,
        request_id: u64,
        kind: PowerRequestKind,
        out: &mut Vec<Output>,
    ) {
        let (name, state) = self.name_and_state(i);
        let in_handshake = matches!(
            state,
            GuestState::Preparing { .. } | GuestState::ShutdownStarted { .. }
        );
        match self.state.system {
            SystemState::On => {
                if let GuestState::ShutdownStarted {
                    origin: ShutdownOrigin::Cancelled,
                    ..
                } = state
                {
                    return self.restart(
                        i,
                        request_id,
                        format!("the system is on again but {name} was past the point of cancelling: restart it"),
                        out,
                    );
                }
                let need = self.cluster_need();
                if let Some(need) = need {
                    if kind == PowerRequestKind::Poweroff {
                        self.hold(
                            i,
                            request_id,
                            format!("the system stays on ({need}): hold {name} virtually off until the next power-on"),
                            out,
                        );
                    } else {
                        self.allow_final(
                            i,
                            request_id,
                            kind,
                            format!("the system stays on ({need}): {name} sleeps until the next power-on"),
                            out,
                        );
                    }
                } else {
                    self.allow_final(
                        i,
                        request_id,
                        kind,
                        format!("{name} is the power master and nothing else needs the system: allow its {kind}"),
                        out,
                    );
                }
                if in_handshake {
                    self.set_req(
                        i,
                        ApPowerStateReq::Finished,
                        format!("{name}'s final {kind} is done"),
                        out,
                    );
                }
                if need.is_none() {
                    self.state.wake_hold_until = None;
                    self.begin_shutdown(&format!("{name} chose to {kind}"), out);
                }
            }
            SystemState::ShutdownPrepare { .. } | SystemState::GarageMode { .. } => {
                if kind == PowerRequestKind::Poweroff && self.cluster_blocks() {
                    self.hold(
                        i,
                        request_id,
                        format!("the vehicle is in use, so the real system stays on for the cluster: hold {name} virtually off"),
                        out,
                    );
                } else {
                    self.allow_final(
                        i,
                        request_id,
                        kind,
                        format!("shutdown under way: allow {name}'s {kind}"),
                        out,
                    );
                }
                self.set_req(
                    i,
                    ApPowerStateReq::Finished,
                    format!("{name}'s final {kind} is done"),
                    out,
                );
            }
            s => self.allow_final(
                i,
                request_id,
                kind,
                format!("the system is {s}: allow {name}'s {kind}"),
                out,
            ),
        }
    }
}
