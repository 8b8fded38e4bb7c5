//! Runs a built VM until the guest powers off, reboots, crashes, or the
//! control socket stops it, and reports why.

use std::io::Read;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::legacy::SerialDevice;
use devices::PowerEvent;

use crate::builder::BuiltVm;
use crate::vstate::vcpu::{install_kick_handler, VcpuCrash, VcpuError, VcpuHandle};

/// Something the VMM's main loop must react to.
#[derive(Debug)]
pub enum VmEvent {
    /// The guest asked for a power transition.
    Power(PowerEvent),
    /// A vCPU failed.
    Vcpu(VcpuCrash),
    /// The control socket asked the VM to stop.
    Stop,
}

/// Why the VM ended; decides the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off.
    Poweroff,
    /// The guest asked for a reset; the launcher may start it again.
    Reboot,
    /// Stopped through the control socket.
    Stopped,
    /// A vCPU failed.
    Crash(String),
}

impl ExitReason {
    /// Process exit code, following crosvm: 0 stop/poweroff, 32 reset,
    /// 33 crash.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::Poweroff | ExitReason::Stopped => 0,
            ExitReason::Reboot => 32,
            ExitReason::Crash(_) => 33,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Poweroff => f.write_str("poweroff"),
            ExitReason::Reboot => f.write_str("reboot"),
            ExitReason::Stopped => f.write_str("stopped"),
            ExitReason::Crash(why) => write!(f, "crash ({why})"),
        }
    }
}

/// Feeds host stdin to the serial console until EOF.
fn spawn_stdin_reader(serial: Arc<Mutex<SerialDevice>>) {
    let spawned = std::thread::Builder::new()
        .name("serial-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 64];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = serial
                        .lock()
                        .map(|mut s| s.enqueue_input(pending))
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

/// Runs `built` until it ends; `events` is the receiving side of the channel
/// given to the builder.
pub fn run(built: BuiltVm, events: Receiver<VmEvent>) -> Result<ExitReason, VcpuError> {
    install_kick_handler()?;
    if built.serial_reads_stdin {
        spawn_stdin_reader(built.serial.clone());
    }
    let handles: Vec<VcpuHandle> = built
        .vcpus
        .into_iter()
        .map(|vcpu| vcpu.spawn())
        .collect::<Result<_, _>>()?;

    let reason = loop {
        let Ok(event) = events.recv() else {
            break ExitReason::Crash("all event sources closed".into());
        };
        match event {
            VmEvent::Power(PowerEvent::Poweroff) => break ExitReason::Poweroff,
            VmEvent::Power(PowerEvent::Reboot) => break ExitReason::Reboot,
            VmEvent::Power(PowerEvent::Suspend) => {
                // Without an arbiter there is nobody to decide a sleep and
                // nothing to wake the guest: report it woken at once, as a
                // machine whose wake button is held down would.
                tracing::info!(
                    "guest requested S3 suspend; no arbiter attached, waking it at once"
                );
                if let Ok(mut pm) = built.acpi_pm.lock() {
                    pm.set_woken();
                }
            }
            VmEvent::Vcpu(VcpuCrash { id, reason }) => {
                break ExitReason::Crash(format!("vcpu{id}: {reason}"))
            }
            VmEvent::Stop => break ExitReason::Stopped,
        }
    };

    for handle in &handles {
        handle.request_stop();
    }
    for handle in handles {
        handle.join();
    }
    // Guest memory (owned by `built.vm`) is released only after every vCPU
    // thread has left KVM_RUN.
    drop(built.vm);
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_crosvm() {
        assert_eq!(ExitReason::Poweroff.exit_code(), 0);
        assert_eq!(ExitReason::Stopped.exit_code(), 0);
        assert_eq!(ExitReason::Reboot.exit_code(), 32);
        assert_eq!(ExitReason::Crash("x".into()).exit_code(), 33);
        assert_eq!(ExitReason::Crash("x".into()).to_string(), "crash (x)");
    }
}
