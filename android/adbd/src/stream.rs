//! The byte buffer behind the `shell,v2` and `sync:` decoders: stream bytes
//! pushed at the back, decoded messages consumed from the front.

use std::marker::PhantomData;

/// Stream bytes not decoded yet. The consumed prefix is dropped on the next
/// push, so a decoder that decodes all it can before pushing more holds at
/// most one partial message plus one pushed chunk.
#[derive(Debug, Default)]
pub(crate) struct StreamBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl StreamBuffer {
    /// Appends stream bytes, first dropping those already consumed.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The first `len` bytes of [`Self::rest`] (a message's header) and all
    /// of it; `None` while fewer are held.
    pub(crate) fn header(&self, len: usize) -> Option<(&[u8], &[u8])> {
        let rest = self.rest();
        Some((rest.get(..len)?, rest))
    }

    /// The bytes not consumed yet.
    pub(crate) fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Appends stream bytes given by value: when nothing is held (the
    /// usual case between a push's `WRTE`s) they become the buffer without
    /// a copy. Returns the buffer no longer needed (the old one, or `data`
    /// after its bytes were copied), for reuse.
    pub(crate) fn push_owned(&mut self, data: Vec<u8>) -> Vec<u8> {
        if self.buffered() == 0 {
            self.start = 0;
            std::mem::replace(&mut self.buf, data)
        } else {
            self.push(&data);
            data
        }
    }

    /// Marks the first `n` bytes of [`Self::rest`] consumed (at most all).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Consumes the first `n` bytes of [`Self::rest`] (at most all) and
    /// returns them.
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        let from = self.start;
        self.consume(n);
        &self.buf[from..self.start]
    }

    /// Bytes held (not consumed yet).
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Marks [`Decoder`] as the decoder of `shell,v2` packets.
#[derive(Debug)]
pub enum ShellProtocol {}

/// Marks [`Decoder`] as the decoder of `sync:` requests.
#[derive(Debug)]
pub enum SyncProtocol {}

/// The decoder of protocol `P`: the stream bytes not decoded yet. Each
/// protocol module adds the method that takes its next message
/// (`shell_protocol::Decoder::next_packet`, `sync_protocol::Decoder::next_request`).
#[derive(Debug)]
pub struct Decoder<P> {
    pub(crate) stream: StreamBuffer,
    /// Bytes of the current message's body still to come as pieces (the
    /// sync decoder's streamed `DATA`, `sync_protocol::Decoder::next_send_piece`).
    pub(crate) body_left: usize,
    protocol: PhantomData<P>,
}

impl<P> Default for Decoder<P> {
    fn default() -> Self {
        Self {
            stream: StreamBuffer::default(),
            body_left: 0,
            protocol: PhantomData,
        }
    }
}

impl<P> Decoder<P> {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends stream bytes; take every complete message out before
    /// pushing more.
    pub fn push(&mut self, data: &[u8]) {
        self.stream.push(data);
    }

    /// [`Self::push`] by value: no copy when nothing is held. Returns a
    /// buffer the decoder no longer needs (for reuse).
    pub fn push_owned(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.stream.push_owned(data)
    }

    /// Bytes held (for the bound checks of the tests and the fuzz targets).
    pub fn buffered(&self) -> usize {
        self.stream.buffered()
    }
}

/// Pushes `wire` in chunks of `chunk` bytes into a new decoder and takes
/// every message out with `next` after each push (tests of both protocols);
/// returns the messages and the bytes still held.
#[cfg(test)]
pub(crate) fn decode_in_chunks<P, T, E: std::fmt::Debug>(
    wire: &[u8],
    chunk: usize,
    mut next: impl FnMut(&mut Decoder<P>) -> Result<Option<T>, E>,
) -> (Vec<T>, usize) {
    let mut d = Decoder::new();
    let mut got = Vec::new();
    for c in wire.chunks(chunk) {
        d.push(c);
        while let Some(m) = next(&mut d).unwrap() {
            got.push(m);
        }
    }
    (got, d.buffered())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_bytes_are_dropped_on_the_next_push() {
        let mut s = StreamBuffer::default();
        s.push(b"abcd");
        s.consume(3);
        assert_eq!(s.rest(), b"d");
        s.push(b"ef");
        assert_eq!((s.rest(), s.buffered(), s.buf.len()), (&b"def"[..], 3, 3));
        assert_eq!(s.header(2), Some((&b"de"[..], &b"def"[..])));
        assert_eq!(s.header(4), None);
        s.consume(10);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn owned_pushes_are_kept_or_appended() {
        let mut s = StreamBuffer::default();
        assert!(s.push_owned(b"abc".to_vec()).is_empty());
        assert_eq!(s.take(2), b"ab");
        assert_eq!(s.push_owned(b"de".to_vec()), b"de", "copied, given back");
        assert_eq!(s.rest(), b"cde");
        assert_eq!(s.take(9), b"cde");
        assert_eq!(s.push_owned(b"f".to_vec()), b"cde", "the old buffer back");
        assert_eq!((s.rest(), s.buf.len()), (&b"f"[..], 1));
    }
}
