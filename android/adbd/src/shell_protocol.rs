//! The shell protocol (`shell_v2`, AOSP `shell_protocol.h`): inside a
//! `shell,v2` stream every message is `[id: u8][length: u32 le][data]`.
//! The client sends stdin, close-stdin and window-size packets; the daemon
//! sends stdout, stderr and one exit packet (one byte: the exit status).

use thiserror::Error;

/// Client → daemon: bytes for the command's stdin.
pub const ID_STDIN: u8 = 0;
/// Daemon → client: bytes the command wrote to stdout.
pub const ID_STDOUT: u8 = 1;
/// Daemon → client: bytes the command wrote to stderr.
pub const ID_STDERR: u8 = 2;
/// Daemon → client: the exit status (one byte), the last packet.
pub const ID_EXIT: u8 = 3;
/// Client → daemon: stdin reached its end.
pub const ID_CLOSE_STDIN: u8 = 4;
/// Client → daemon: the terminal's new size (`ROWSxCOLS,XPIXxYPIX`).
pub const ID_WINDOW_SIZE_CHANGE: u8 = 5;
/// Length of a packet header.
pub const HEADER_LEN: usize = 5;
/// Largest packet data accepted from a client (AOSP clients send at most
/// a few KiB).
pub const MAX_DATA: usize = 256 * 1024;

/// Why the client's shell packets were rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShellProtocolError {
    /// A packet longer than [`MAX_DATA`].
    #[error("shell packet of {0} bytes is too long")]
    TooLong(u32),
    /// An id a client does not send.
    #[error("unexpected shell packet id {0}")]
    BadId(u8),
}

/// A packet from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    /// Stdin bytes.
    Stdin(Vec<u8>),
    /// Stdin ended.
    CloseStdin,
    /// The terminal's size; `None` if the text did not parse (ignored).
    WindowSize(Option<WindowSize>),
}

/// A terminal size (`struct winsize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Width in pixels.
    pub x_pixels: u16,
    /// Height in pixels.
    pub y_pixels: u16,
}

impl WindowSize {
    /// Parses `ROWSxCOLS,XPIXxYPIX`.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let text = text.trim_end_matches('\0');
        let (chars, pixels) = text.split_once(',')?;
        let pair = |s: &str| -> Option<(u16, u16)> {
            let (a, b) = s.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        let (rows, cols) = pair(chars)?;
        let (x_pixels, y_pixels) = pair(pixels)?;
        Some(Self {
            rows,
            cols,
            x_pixels,
            y_pixels,
        })
    }
}

/// One packet for the client.
pub fn encode(id: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.push(id);
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Splits the client's stream into packets; holds at most one partial
/// packet ([`HEADER_LEN`] + [`MAX_DATA`] bytes) plus one pushed chunk.
pub type Decoder = crate::stream::Decoder<crate::stream::ShellProtocol>;

impl Decoder {
    /// The next complete packet, `Ok(None)` if more bytes are needed.
    pub fn next_packet(&mut self) -> Result<Option<ClientPacket>, ShellProtocolError> {
        let Some((head, rest)) = self.stream.header(HEADER_LEN) else {
            return Ok(None);
        };
        let id = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len as usize > MAX_DATA {
            return Err(ShellProtocolError::TooLong(len));
        }
        if !matches!(id, ID_STDIN | ID_CLOSE_STDIN | ID_WINDOW_SIZE_CHANGE) {
            return Err(ShellProtocolError::BadId(id));
        }
        let Some(data) = rest.get(HEADER_LEN..HEADER_LEN + len as usize) else {
            return Ok(None);
        };
        let packet = match id {
            ID_STDIN => ClientPacket::Stdin(data.to_vec()),
            ID_CLOSE_STDIN => ClientPacket::CloseStdin,
            _ => ClientPacket::WindowSize(WindowSize::parse(data)),
        };
        self.stream.consume(HEADER_LEN + len as usize);
        Ok(Some(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_split_across_and_within_chunks() {
        let mut wire = encode(ID_STDIN, b"hello");
        wire.extend(encode(ID_WINDOW_SIZE_CHANGE, b"24x80,0x0\0"));
        wire.extend(encode(ID_CLOSE_STDIN, b""));
        let (got, left) = crate::stream::decode_in_chunks(&wire, 3, Decoder::next_packet);
        assert_eq!(
            got,
            vec![
                ClientPacket::Stdin(b"hello".to_vec()),
                ClientPacket::WindowSize(Some(WindowSize {
                    rows: 24,
                    cols: 80,
                    x_pixels: 0,
                    y_pixels: 0
                })),
                ClientPacket::CloseStdin,
            ]
        );
        assert_eq!(left, 0);
    }

    #[test]
    fn hostile_packets_are_rejected() {
        let mut d = Decoder::new();
        d.push(&encode(ID_EXIT, &[0]));
        assert_eq!(d.next_packet(), Err(ShellProtocolError::BadId(ID_EXIT)));
        let mut d = Decoder::new();
        d.push(&[ID_STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_packet(), Err(ShellProtocolError::TooLong(u32::MAX)));
        let mut d = Decoder::new();
        d.push(&encode(ID_WINDOW_SIZE_CHANGE, b"axb"));
        assert_eq!(d.next_packet(), Ok(Some(ClientPacket::WindowSize(None))));
    }

    #[test]
    fn exit_packet_is_one_byte() {
        assert_eq!(encode(ID_EXIT, &[3]), vec![3, 1, 0, 0, 0, 3]);
    }
}
