//! The daemon's side of the `ISystemManager` binder endpoints
//! (`crate::binder`): answering queries from the arbiter's state, feeding
//! reports and shutdown requests as inputs, and publishing system state
//! changes to the listeners.

use anyhow::Result;
use system_manager::Input;
use tokio::sync::oneshot;

use super::Daemon;
use crate::binder::BinderRequest;

impl Daemon {
    /// Sends the system state to every binder listener when it changed.
    pub(super) fn publish_system(&mut self) {
        let a = &self.arbiter;
        let key = (a.system().to_string(), a.ignition_on(), a.vehicle_in_use());
        if self.system_sent.as_ref() == Some(&key) {
            return;
        }
        self.system_sent = Some(key);
        let parcel = std::sync::Arc::new(self.system_parcel());
        for l in self.binder.all() {
            l.set_system(std::sync::Arc::clone(&parcel));
        }
    }

    pub(super) fn system_parcel(&self) -> vmstack_aidl::vmstack::sysmgr::SystemState::SystemState {
        let connected: Vec<bool> = self
            .binder
            .guests
            .iter()
            .map(|l| l.as_ref().is_some_and(|l| l.count() > 0))
            .collect();
        crate::binder::system_parcel(&self.arbiter, self.clock.now().as_millis(), &connected)
    }

    /// Feeds a binder input and answers whether the arbiter rejected it.
    fn feed_binder(
        &mut self,
        i: usize,
        input: Input,
        reply: oneshot::Sender<Result<(), String>>,
    ) -> Result<()> {
        let outputs = self.feed_from_guest(i, input)?;
        let _ = reply.send(crate::binder::call_answer(&outputs));
        Ok(())
    }

    pub(super) fn on_binder(&mut self, r: BinderRequest) -> Result<()> {
        match r {
            BinderRequest::State(reply) => {
                let _ = reply.send(self.system_parcel());
            }
            BinderRequest::Dump(reply) => {
                let _ = reply.send(crate::cli::format_status(&self.status()));
            }
            BinderRequest::Report {
                guest,
                value,
                param,
                reply,
            } => {
                let name = self.links[guest].name.clone();
                self.feed_binder(
                    guest,
                    Input::ApPowerStateReport {
                        guest: name,
                        value,
                        param,
                    },
                    reply,
                )?;
            }
            BinderRequest::ShutdownRequest {
                guest,
                param,
                reply,
            } => {
                let name = self.links[guest].name.clone();
                self.feed_binder(guest, Input::ShutdownRequest { guest: name, param }, reply)?;
            }
        }
        Ok(())
    }
}
