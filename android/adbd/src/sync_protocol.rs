//! The file sync protocol, version 1 (AOSP `SYNC.TXT`,
//! `file_sync_protocol.h`), inside a `sync:` stream. Every request starts
//! with a 4-letter id and a little-endian u32:
//!
//! | request | u32 | then | answer |
//! |---|---|---|---|
//! | `STAT` | path length | path | `STAT` mode, size, mtime (all 0: no such file) |
//! | `LIST` | path length | path | `DENT` mode, size, mtime, name length, name ...; `DONE` + 16 zero bytes |
//! | `SEND` | length | `path,mode` | then `DATA` len + bytes ..., `DONE` mtime; answer `OKAY` 0 or `FAIL` len + text |
//! | `RECV` | path length | path | `DATA` len + bytes ..., `DONE` 0; or `FAIL` len + text |
//! | `QUIT` | 0 | — | the daemon closes the stream |
//!
//! Paths are at most 1024 bytes, `DATA` chunks at most 64 KiB (both ways).
//! [`Decoder`] checks those bounds before buffering anything.

use thiserror::Error;

/// Longest path (or `path,mode`) in a request.
pub const MAX_PATH: usize = 1024;
/// Largest `DATA` chunk.
pub const MAX_DATA: usize = 64 * 1024;
/// Longest file name in a `DENT` (Linux `NAME_MAX`; clients reject more).
pub const MAX_NAME: usize = 255;
/// Length of a request header.
pub const HEADER_LEN: usize = 8;

const fn id(tag: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*tag)
}

/// `STAT` (lstat, version 1).
pub const ID_STAT: u32 = id(b"STAT");
/// `LIST`.
pub const ID_LIST: u32 = id(b"LIST");
/// `SEND`.
pub const ID_SEND: u32 = id(b"SEND");
/// `RECV`.
pub const ID_RECV: u32 = id(b"RECV");
/// `DENT`.
pub const ID_DENT: u32 = id(b"DENT");
/// `DONE`.
pub const ID_DONE: u32 = id(b"DONE");
/// `DATA`.
pub const ID_DATA: u32 = id(b"DATA");
/// `OKAY`.
pub const ID_OKAY: u32 = id(b"OKAY");
/// `FAIL`.
pub const ID_FAIL: u32 = id(b"FAIL");
/// `QUIT`.
pub const ID_QUIT: u32 = id(b"QUIT");

/// Why the client's sync requests were rejected (the stream is closed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncProtocolError {
    /// An id a client does not send (or a version-2 request we did not
    /// advertise).
    #[error("unknown sync request {0:?}")]
    UnknownId([u8; 4]),
    /// A path longer than [`MAX_PATH`].
    #[error("sync path of {0} bytes is too long")]
    PathTooLong(u32),
    /// A `DATA` chunk longer than [`MAX_DATA`].
    #[error("sync DATA of {0} bytes is too long")]
    DataTooLong(u32),
    /// A path with a NUL byte.
    #[error("sync path contains a NUL byte")]
    NulInPath,
}

/// A request from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `STAT path`.
    Stat(Vec<u8>),
    /// `LIST path`.
    List(Vec<u8>),
    /// `SEND path,mode` (the data follows as `Data`/`Done`).
    Send {
        /// Destination path.
        path: Vec<u8>,
        /// File type and permission bits (`st_mode`); 0o644 if absent.
        mode: u32,
    },
    /// `RECV path`.
    Recv(Vec<u8>),
    /// `DATA` bytes (inside a `SEND`).
    Data(Vec<u8>),
    /// `DONE mtime` (ends a `SEND`).
    Done(u32),
    /// `QUIT`.
    Quit,
}

/// Splits a `SEND` argument `path,mode` (the last comma; AOSP's clients
/// write the mode in decimal). No comma or no number: mode 0o644.
pub fn split_path_mode(arg: &[u8]) -> (Vec<u8>, u32) {
    if let Some(comma) = arg.iter().rposition(|&b| b == b',') {
        if let Some(mode) = std::str::from_utf8(&arg[comma + 1..])
            .ok()
            .and_then(|m| m.parse::<u32>().ok())
        {
            return (arg[..comma].to_vec(), mode);
        }
    }
    (arg.to_vec(), 0o644)
}

/// Splits the sync stream into requests, holding at most one request
/// ([`HEADER_LEN`] + [`MAX_DATA`] bytes) plus one pushed chunk.
pub type Decoder = crate::stream::Decoder<crate::stream::SyncProtocol>;

/// What comes next inside a `SEND` ([`Decoder::next_send_piece`]).
#[derive(Debug, PartialEq, Eq)]
pub enum SendPiece<'a> {
    /// Bytes of a `DATA` chunk's body, as many as have arrived (a chunk
    /// split across pushes comes in several pieces).
    Data(&'a [u8]),
    /// `DONE mtime`: the file is complete.
    Done(u32),
    /// Any other request: a protocol error inside a `SEND`.
    Other(Request),
}

impl Decoder {
    /// Inside a `SEND`: the next piece of file data, straight from the
    /// pushed bytes (no copy: a push writes the client's `WRTE` payloads
    /// to the file in place), or the request that ends the data;
    /// `Ok(None)` if more bytes are needed. A `DATA` header's length is
    /// checked against [`MAX_DATA`] as in [`Self::next_request`].
    pub fn next_send_piece(&mut self) -> Result<Option<SendPiece<'_>>, SyncProtocolError> {
        if self.body_left == 0 {
            let Some((head, _)) = self.stream.header(HEADER_LEN) else {
                return Ok(None);
            };
            let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let arg = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            match id {
                ID_DATA if arg as usize > MAX_DATA => {
                    return Err(SyncProtocolError::DataTooLong(arg))
                }
                ID_DATA => {
                    self.stream.consume(HEADER_LEN);
                    self.body_left = arg as usize;
                }
                ID_DONE => {
                    self.stream.consume(HEADER_LEN);
                    return Ok(Some(SendPiece::Done(arg)));
                }
                _ => return Ok(self.next_request()?.map(SendPiece::Other)),
            }
        }
        let n = self.body_left.min(self.stream.buffered());
        if n == 0 && self.body_left > 0 {
            return Ok(None);
        }
        self.body_left -= n;
        Ok(Some(SendPiece::Data(self.stream.take(n))))
    }

    /// The next complete request, `Ok(None)` if more bytes are needed.
    /// Inside a `DATA` body begun by [`Self::next_send_piece`], the rest
    /// of that body that has arrived, as `Data`.
    pub fn next_request(&mut self) -> Result<Option<Request>, SyncProtocolError> {
        if self.body_left > 0 {
            let n = self.body_left.min(self.stream.buffered());
            if n == 0 {
                return Ok(None);
            }
            self.body_left -= n;
            return Ok(Some(Request::Data(self.stream.take(n).to_vec())));
        }
        let Some((head, rest)) = self.stream.header(HEADER_LEN) else {
            return Ok(None);
        };
        let tag = [head[0], head[1], head[2], head[3]];
        let id = u32::from_le_bytes(tag);
        let arg = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        // Requests without a body.
        let bodyless = match id {
            ID_DONE => Some(Request::Done(arg)),
            ID_QUIT => Some(Request::Quit),
            _ => None,
        };
        if let Some(r) = bodyless {
            self.stream.consume(HEADER_LEN);
            return Ok(Some(r));
        }
        let len = arg as usize;
        match id {
            ID_DATA if len > MAX_DATA => return Err(SyncProtocolError::DataTooLong(arg)),
            ID_DATA => {}
            ID_STAT | ID_LIST | ID_SEND | ID_RECV if len > MAX_PATH => {
                return Err(SyncProtocolError::PathTooLong(arg))
            }
            ID_STAT | ID_LIST | ID_SEND | ID_RECV => {}
            _ => return Err(SyncProtocolError::UnknownId(tag)),
        }
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        if id != ID_DATA && body.contains(&0) {
            return Err(SyncProtocolError::NulInPath);
        }
        let body = body.to_vec();
        self.stream.consume(HEADER_LEN + len);
        Ok(Some(match id {
            ID_DATA => Request::Data(body),
            ID_STAT => Request::Stat(body),
            ID_LIST => Request::List(body),
            ID_RECV => Request::Recv(body),
            _ => {
                let (path, mode) = split_path_mode(&body);
                Request::Send { path, mode }
            }
        }))
    }
}

fn words(out: &mut Vec<u8>, id: u32, rest: &[u32]) {
    out.extend_from_slice(&id.to_le_bytes());
    for w in rest {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// A `STAT` answer (all zero: the path does not exist).
pub fn stat_reply(out: &mut Vec<u8>, mode: u32, size: u32, mtime: u32) {
    words(out, ID_STAT, &[mode, size, mtime]);
}

/// A `DENT` of a `LIST` answer; `false` (nothing written) for a name
/// longer than [`MAX_NAME`], which clients reject.
pub fn dent(out: &mut Vec<u8>, mode: u32, size: u32, mtime: u32, name: &[u8]) -> bool {
    if name.len() > MAX_NAME {
        return false;
    }
    words(out, ID_DENT, &[mode, size, mtime, name.len() as u32]);
    out.extend_from_slice(name);
    true
}

/// The `DONE` that ends a `LIST` answer (the size of a `DENT` header).
pub fn list_done(out: &mut Vec<u8>) {
    words(out, ID_DONE, &[0, 0, 0, 0]);
}

/// A `DATA` chunk (at most [`MAX_DATA`] bytes: the caller splits).
pub fn data(out: &mut Vec<u8>, chunk: &[u8]) {
    words(out, ID_DATA, &[chunk.len().min(MAX_DATA) as u32]);
    out.extend_from_slice(&chunk[..chunk.len().min(MAX_DATA)]);
}

/// The `DONE` that ends a `RECV` answer.
pub fn recv_done(out: &mut Vec<u8>) {
    words(out, ID_DONE, &[0]);
}

/// `OKAY` after a `SEND`.
pub fn okay(out: &mut Vec<u8>) {
    words(out, ID_OKAY, &[0]);
}

/// `FAIL` with a message (cut to [`MAX_DATA`] bytes).
pub fn fail(out: &mut Vec<u8>, message: &str) {
    let m = &message.as_bytes()[..message.len().min(MAX_DATA)];
    words(out, ID_FAIL, &[m.len() as u32]);
    out.extend_from_slice(m);
}

/// A request as a client writes it (the tag, `arg` little-endian, the
/// body), the inverse of [`Decoder`]: for tests and fuzz seeds.
pub fn encode_request(tag: &[u8; 4], arg: u32, body: &[u8]) -> Vec<u8> {
    let mut v = tag.to_vec();
    v.extend_from_slice(&arg.to_le_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::encode_request as req;

    /// A decoder holding one request, as [`encode_request`] writes it.
    fn decoder_with(tag: &[u8; 4], arg: u32, body: &[u8]) -> Decoder {
        let mut d = Decoder::new();
        d.push(&req(tag, arg, body));
        d
    }

    #[test]
    fn a_push_as_the_client_sends_it() {
        let mut wire = req(b"STAT", 9, b"/data/big");
        wire.extend(req(b"SEND", 15, b"/data/big,33188"));
        wire.extend(req(b"DATA", 3, b"abc"));
        wire.extend(req(b"DONE", 1_700_000_000, b""));
        wire.extend(req(b"QUIT", 0, b""));
        let (got, left) = crate::stream::decode_in_chunks(&wire, 5, Decoder::next_request);
        assert_eq!(
            got,
            vec![
                Request::Stat(b"/data/big".to_vec()),
                Request::Send {
                    path: b"/data/big".to_vec(),
                    mode: 0o100644
                },
                Request::Data(b"abc".to_vec()),
                Request::Done(1_700_000_000),
                Request::Quit,
            ]
        );
        assert_eq!(left, 0);
    }

    /// The pieces of a `SEND` decoded from `wire` pushed in `chunk`-byte
    /// pieces: the file bytes, the `DONE` mtime, any other request.
    fn send_pieces(wire: &[u8], chunk: usize) -> (Vec<u8>, Option<u32>, Vec<Request>) {
        let (mut data, mut done, mut other) = (Vec::new(), None, Vec::new());
        let mut d = Decoder::new();
        for c in wire.chunks(chunk) {
            d.push_owned(c.to_vec());
            while let Some(p) = d.next_send_piece().unwrap() {
                match p {
                    SendPiece::Data(b) => data.extend_from_slice(b),
                    SendPiece::Done(m) => done = Some(m),
                    SendPiece::Other(r) => other.push(r),
                }
            }
            assert!(d.buffered() < HEADER_LEN + MAX_PATH + chunk);
        }
        (data, done, other)
    }

    #[test]
    fn send_data_streams_in_pieces_at_any_split() {
        let file: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut wire = Vec::new();
        for c in file.chunks(MAX_DATA) {
            wire.extend(req(b"DATA", c.len() as u32, c));
        }
        wire.extend(req(b"DATA", 0, b""));
        wire.extend(req(b"DONE", 77, b""));
        wire.extend(req(b"QUIT", 0, b""));
        for chunk in [1, 3, 8, 4096, 65_544, 65_545, 1 << 20] {
            let (data, done, other) = send_pieces(&wire, chunk);
            assert!(data == file, "chunk {chunk}: the file bytes in order");
            assert_eq!(
                (done, other),
                (Some(77), vec![Request::Quit]),
                "chunk {chunk}"
            );
        }
        // After a piece, next_request yields the rest of that body as Data.
        let mut d = decoder_with(b"DATA", 4, b"ab");
        assert_eq!(d.next_send_piece(), Ok(Some(SendPiece::Data(b"ab"))));
        d.push(b"cd");
        assert_eq!(d.next_request(), Ok(Some(Request::Data(b"cd".to_vec()))));
        assert_eq!(d.next_request(), Ok(None));
    }

    #[test]
    fn send_pieces_check_bounds_and_pass_other_requests() {
        let mut d = decoder_with(b"DATA", MAX_DATA as u32 + 1, b"");
        assert_eq!(
            d.next_send_piece(),
            Err(SyncProtocolError::DataTooLong(MAX_DATA as u32 + 1))
        );
        let mut d = decoder_with(b"STAT", 2, b"/d");
        assert_eq!(
            d.next_send_piece(),
            Ok(Some(SendPiece::Other(Request::Stat(b"/d".to_vec()))))
        );
        let mut d = decoder_with(b"XXXX", 0, b"");
        assert_eq!(
            d.next_send_piece(),
            Err(SyncProtocolError::UnknownId(*b"XXXX"))
        );
    }

    #[test]
    fn bounds_are_checked_before_buffering() {
        let too_long = MAX_DATA as u32 + 1;
        let cases: [(&[u8; 4], u32, &[u8], SyncProtocolError); 4] = [
            (
                b"DATA",
                too_long,
                b"",
                SyncProtocolError::DataTooLong(too_long),
            ),
            (b"RECV", 4096, b"", SyncProtocolError::PathTooLong(4096)),
            (b"STA2", 1, b"/", SyncProtocolError::UnknownId(*b"STA2")),
            (b"STAT", 3, b"a\0b", SyncProtocolError::NulInPath),
        ];
        for (tag, arg, body, e) in cases {
            let mut d = decoder_with(tag, arg, body);
            assert_eq!(d.next_request(), Err(e), "{tag:?}");
        }
    }

    #[test]
    fn send_argument_split() {
        assert_eq!(split_path_mode(b"/a,b/c,420"), (b"/a,b/c".to_vec(), 420));
        assert_eq!(split_path_mode(b"/a"), (b"/a".to_vec(), 0o644));
        assert_eq!(split_path_mode(b"/a,x"), (b"/a,x".to_vec(), 0o644));
    }

    #[test]
    fn answers_have_the_client_layouts() {
        let mut out = Vec::new();
        stat_reply(&mut out, 0o100644, 5, 7);
        assert_eq!(out.len(), 16);
        out.clear();
        assert!(dent(&mut out, 0o40755, 0, 0, b"dir"));
        assert_eq!(out.len(), 20 + 3);
        assert!(!dent(&mut out, 0, 0, 0, &[b'x'; 256]));
        out.clear();
        list_done(&mut out);
        assert_eq!(out, req(b"DONE", 0, &[0; 12]));
        out.clear();
        fail(&mut out, "no");
        assert_eq!(out, req(b"FAIL", 2, b"no"));
    }
}
