//! Boot timer: the guest's `/init` writes a magic byte to one I/O port, and
//! the VMM logs how long after its own start that happened.
//!
//! Benchmarks read this line instead of parsing guest console text.

use std::time::Instant;

use crate::bus::BusDevice;

/// Records the first time the guest writes the magic value.
pub struct BootTimer {
    start: Instant,
    magic: u8,
    reached: Option<Instant>,
}

impl BootTimer {
    /// Creates a timer counting from `start` (the VMM's process start) that
    /// fires when the guest writes `magic`.
    pub fn new(start: Instant, magic: u8) -> Self {
        Self {
            start,
            magic,
            reached: None,
        }
    }

    /// Time from VMM start to the guest's write, once it happened.
    pub fn elapsed(&self) -> Option<std::time::Duration> {
        self.reached.map(|t| t.duration_since(self.start))
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() != Some(&self.magic) || self.reached.is_some() {
            return;
        }
        let now = Instant::now();
        self.reached = Some(now);
        let us = now.duration_since(self.start).as_micros();
        tracing::info!("boot-timer: guest init reached after {us} us");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_the_first_magic_write() {
        let mut timer = BootTimer::new(Instant::now(), 123);
        timer.write(0, &[1]);
        assert!(timer.elapsed().is_none());
        timer.write(0, &[123]);
        let first = timer.elapsed().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        timer.write(0, &[123]);
        assert_eq!(timer.elapsed(), Some(first));
    }
}
