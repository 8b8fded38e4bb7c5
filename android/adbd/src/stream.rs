//! The byte buffer behind the `shell,v2` and `sync:` decoders: stream bytes
//! pushed at the back, decoded messages consumed from the front.

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
        s.consume(10);
        assert_eq!(s.buffered(), 0);
    }
}
