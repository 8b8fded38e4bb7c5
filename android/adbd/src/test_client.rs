//! A minimal adb client over a socket pair for the daemon's tests: it
//! connects, opens one stream, writes with flow control and collects what
//! the service sends until its `CLSE`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use adbd::packet::{decode, Command, Packet, HEADER_LEN, MAX_PAYLOAD, VERSION};

use crate::conn;

/// The client end of a served connection.
pub struct Client {
    sock: UnixStream,
    local: u32,
    remote: u32,
    /// The daemon closed the stream (its command may end before the
    /// client's last write is answered).
    closed: bool,
    /// `WRTE`s received from the daemon.
    pub wrtes: usize,
}

/// Client id of the one stream.
const ID: u32 = 9;

impl Client {
    /// Starts `conn::serve` with the daemon's real services (`/bin/sh`)
    /// on a socket pair and opens `service` (`None` if it was refused).
    pub fn open(service: &str) -> Option<Self> {
        Self::open_with(service, MAX_PAYLOAD)
    }

    /// [`Self::open`] by a client whose `CNXN` has `max_payload`.
    pub fn open_with(service: &str, max_payload: u32) -> Option<Self> {
        let (a, b) = UnixStream::pair().expect("socket pair");
        // A daemon that hangs fails the test instead of hanging it.
        a.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        std::thread::spawn(move || {
            let shell: Arc<str> = Arc::from("/bin/sh");
            conn::serve(
                b.into(),
                "device::features=shell_v2",
                Box::new(()),
                &move |s, io| crate::start_service(s, io, Arc::clone(&shell), false),
            )
        });
        let mut c = Self {
            sock: a,
            local: ID,
            remote: 0,
            closed: false,
            wrtes: 0,
        };
        c.send(Command::Cnxn, VERSION, max_payload, b"host::".to_vec());
        assert_eq!(c.recv()?.command, Command::Cnxn);
        let mut name = service.as_bytes().to_vec();
        name.push(0);
        c.send(Command::Open, ID, 0, name);
        let p = c.recv()?;
        if p.command != Command::Okay {
            return None;
        }
        c.remote = p.arg0;
        Some(c)
    }

    fn send(&mut self, c: Command, a0: u32, a1: u32, data: Vec<u8>) {
        self.sock
            .write_all(&Packet::new(c, a0, a1, data).encode())
            .expect("write to the daemon");
    }

    fn recv(&mut self) -> Option<Packet> {
        let mut head = [0u8; HEADER_LEN];
        self.sock.read_exact(&mut head).ok()?;
        let len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
        let mut all = head.to_vec();
        all.resize(HEADER_LEN + len, 0);
        self.sock.read_exact(&mut all[HEADER_LEN..]).ok()?;
        Some(decode(&all, MAX_PAYLOAD, false).expect("a valid packet").0)
    }

    /// Writes `data` in packets of at most 64 KiB, each after the
    /// daemon's `OKAY` for the one before; what the daemon writes
    /// meanwhile is acknowledged and returned. A `CLSE` instead of the
    /// `OKAY` (the command ended first) ends the writing and the stream.
    pub fn write(&mut self, data: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        for chunk in data.chunks(64 * 1024) {
            if self.closed {
                break;
            }
            self.send(Command::Wrte, self.local, self.remote, chunk.to_vec());
            loop {
                let p = self.recv().expect("the daemon answers a WRTE");
                match p.command {
                    Command::Okay => break,
                    Command::Wrte => {
                        self.wrtes += 1;
                        got.extend_from_slice(&p.payload);
                        self.send(Command::Okay, self.local, self.remote, Vec::new());
                    }
                    Command::Clse => {
                        self.closed = true;
                        break;
                    }
                    other => panic!("{other:?} while writing"),
                }
            }
        }
        got
    }

    /// Sends `data` as one `WRTE` (at most 1 MiB) and does not wait for
    /// the daemon's `OKAY`.
    pub fn write_unacknowledged(&mut self, data: &[u8]) {
        self.send(Command::Wrte, self.local, self.remote, data.to_vec());
    }

    /// How long a read waits for the daemon before the test fails.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.sock
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    /// Closes the stream from the client's side (`CLSE`); the connection
    /// stays open.
    pub fn close(&mut self) {
        self.send(Command::Clse, self.local, self.remote, Vec::new());
        self.closed = true;
    }

    /// Everything the daemon writes until it closes the stream (or the
    /// connection ends).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        if self.closed {
            return got;
        }
        while let Some(p) = self.recv() {
            match p.command {
                Command::Wrte => {
                    self.wrtes += 1;
                    got.extend_from_slice(&p.payload);
                    self.send(Command::Okay, self.local, self.remote, Vec::new());
                }
                Command::Clse => break,
                _ => {}
            }
        }
        got
    }
}
