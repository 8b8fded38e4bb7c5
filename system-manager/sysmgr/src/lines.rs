//! Bounded line reading for the daemon's line protocols (VMM control
//! socket, VHAL channel): a peer that sends an endless line is cut off
//! instead of growing a buffer without limit.

use tokio::io::{AsyncRead, AsyncReadExt};

/// What [`LineReader::next_line`] returns besides a line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEnd {
    /// The peer closed the stream (a partial last line is dropped).
    Eof,
    /// A line was longer than the limit.
    TooLong,
}

/// Reads `\n`-terminated lines of at most `max` bytes.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader of lines up to `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            max,
        }
    }

    /// The next line without its `\n` (and `\r`). Cancel-safe: bytes read
    /// before a cancellation stay buffered.
    pub async fn next_line(&mut self) -> Result<String, LineEnd> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max {
                    return Err(LineEnd::TooLong);
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            // `max` bytes and the `\r` of a `\r\n` may wait for the `\n`.
            if self.buf.len() > self.max + 1 {
                return Err(LineEnd::TooLong);
            }
            let mut chunk = [0u8; 512];
            match self.inner.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(LineEnd::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn lines_and_limits() {
        let data: &[u8] = b"one\r\ntwo\nthree";
        let mut r = LineReader::new(data, 16);
        assert_eq!(r.next_line().await.as_deref(), Ok("one"));
        assert_eq!(r.next_line().await.as_deref(), Ok("two"));
        assert_eq!(r.next_line().await, Err(LineEnd::Eof));
        let long = [b'x'; 100];
        let mut r = LineReader::new(&long[..], 16);
        assert_eq!(r.next_line().await, Err(LineEnd::TooLong));
    }

    /// A reader whose reads end after the `\r` of a full-length line:
    /// found by the `vhal_lines` fuzz target (the line was refused as too
    /// long when the `\n` came in the next read).
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_length_crlf_line_split_after_the_cr_is_accepted() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let line = [b'y'; 16];
        let mut r = LineReader::new(rx, 16);
        tokio::io::AsyncWriteExt::write_all(&mut tx, &line)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"\r")
            .await
            .unwrap();
        let read = tokio::spawn(async move { r.next_line().await });
        tokio::task::yield_now().await;
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"\n")
            .await
            .unwrap();
        assert_eq!(read.await.unwrap().as_deref(), Ok("yyyyyyyyyyyyyyyy"));
    }
}
