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

    /// Marks the first `n` bytes of [`Self::rest`] consumed (at most all).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
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
    protocol: PhantomData<P>,
}

impl<P> Default for Decoder<P> {
    fn default() -> Self {
        Self {
            stream: StreamBuffer::default(),
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
}
