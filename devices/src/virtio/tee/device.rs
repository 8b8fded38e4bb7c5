//! The virtio-tee device: what it offers and how its worker starts.

use super::backend::TeeBackend;
use super::worker::TeeWorker;
use super::{Limits, QUEUE_SIZE};
use crate::virtio::{
    device_type, read_config_bytes, ActivateContext, ActivateError, Activation, Lifecycle,
    VirtioDevice,
};

/// A virtio TEE device in front of a TEE service.
pub struct Tee {
    lifecycle: Lifecycle<TeeWorker>,
    limits: Limits,
    config: [u8; 16],
}

impl Tee {
    /// An inactive device with `limits` (its configuration space) in front
    /// of `backend`.
    pub fn new(backend: Box<dyn TeeBackend>, limits: Limits) -> Self {
        Self {
            lifecycle: Lifecycle::new(backend),
            limits,
            config: limits.config_bytes(),
        }
    }
}

impl VirtioDevice for Tee {
    fn device_type(&self) -> u32 {
        device_type::TEE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let limits = self.limits;
        self.lifecycle.activate(
            ctx,
            |act: Activation<1>, mut backend: Box<dyn TeeBackend>| {
                let [queue] = act.queues;
                // A fresh connection: the service forgets the sessions of
                // the last activation. Without one the device still serves
                // (shared memory) and answers the rest SERVICE_ERROR.
                let ok = match backend.restart() {
                    Ok(()) => true,
                    Err(e) => {
                        crate::guest_error!("virtio-tee: cannot connect to the TEE service: {e}");
                        false
                    }
                };
                Ok(TeeWorker::new(
                    act.mem,
                    act.interrupt,
                    queue,
                    limits,
                    backend,
                    ok,
                ))
            },
        )
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod flow_tests;
