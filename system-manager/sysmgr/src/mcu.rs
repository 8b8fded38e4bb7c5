//! The MCU link (daemon side): protobuf messages (`proto/mcu.proto`) over a
//! unix stream socket, length-delimited.
//!
//! The MCU listens; the daemon connects and reconnects every 500 ms when
//! the link is down. On every connection it first sends the last command it
//! had for the MCU (the real power state is state, not an event), and the
//! MCU first sends its `VehicleState`. A frame that is not a valid
//! `McuToSoc` is logged and skipped (the framing is intact); a bad length
//! prefix resets the connection.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::sleep;

use crate::proto::{self, mcu::McuToSoc, mcu::SocToMcu, FrameDecoder};

/// Pause between connection attempts.
const RETRY: Duration = Duration::from_millis(500);

/// What the link tells the core.
#[derive(Debug)]
pub enum McuReport {
    /// Connected to the MCU.
    Connected,
    /// The link broke.
    Disconnected,
    /// A message.
    Message(McuToSoc),
    /// A frame that is not an `McuToSoc` (skipped), or a broken stream
    /// (reset).
    Malformed(String),
}

/// Runs the link until the command channel closes.
pub async fn run(
    socket: PathBuf,
    mut cmds: UnboundedReceiver<SocToMcu>,
    report: impl Fn(McuReport),
) {
    let mut last: Option<SocToMcu> = None;
    let mut attempts = 0u32;
    loop {
        let mut stream = loop {
            let connected = match UnixStream::connect(&socket).await {
                Ok(s) => sandbox::socket::check_peer(&s)
                    .map(|_| s)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e)),
                Err(e) => Err(e),
            };
            match connected {
                Ok(s) => break s,
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 || attempts % 120 == 0 {
                        tracing::info!(
                            "MCU: cannot connect to {}: {e}; retrying",
                            socket.display()
                        );
                    }
                }
            }
            tokio::select! {
                _ = sleep(RETRY) => {}
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(c) => last = Some(c),
                }
            }
        };
        attempts = 0;
        report(McuReport::Connected);
        if let Some(c) = &last {
            if stream.write_all(&proto::encode(c)).await.is_err() {
                report(McuReport::Disconnected);
                continue;
            }
        }
        let mut dec = FrameDecoder::default();
        let mut buf = [0u8; 1024];
        'conn: loop {
            tokio::select! {
                n = stream.read(&mut buf) => {
                    let n = match n {
                        Ok(0) | Err(_) => break 'conn,
                        Ok(n) => n,
                    };
                    dec.push(&buf[..n]);
                    loop {
                        match dec.next_frame() {
                            Ok(None) => break,
                            Ok(Some(frame)) => match proto::decode::<McuToSoc>(&frame) {
                                Ok(m) => report(McuReport::Message(m)),
                                Err(e) => report(McuReport::Malformed(format!(
                                    "{}-byte frame is not an McuToSoc message ({e}); skipped",
                                    frame.len()
                                ))),
                            },
                            Err(e) => {
                                report(McuReport::Malformed(format!("{e}; resetting the link")));
                                break 'conn;
                            }
                        }
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(c) => {
                        let bytes = proto::encode(&c);
                        last = Some(c);
                        if stream.write_all(&bytes).await.is_err() {
                            break 'conn;
                        }
                    }
                }
            }
        }
        report(McuReport::Disconnected);
        sleep(RETRY).await;
    }
}
