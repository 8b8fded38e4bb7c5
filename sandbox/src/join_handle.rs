//! The handle of a thread started by `thread::spawn`: the same with or
//! without a sandbox, and on targets that have none.

use std::sync::{Arc, Mutex};

/// A thread started by `thread::spawn`; joining returns its body's result.
pub struct JoinHandle<T> {
    thread: std::thread::JoinHandle<()>,
    result: Arc<Mutex<Option<T>>>,
}

impl<T> JoinHandle<T> {
    /// Waits for the thread; `Err` if its body panicked.
    pub fn join(self) -> std::thread::Result<T> {
        self.thread.join()?;
        let taken = self.result.lock().ok().and_then(|mut r| r.take());
        taken.ok_or_else(|| Box::new("the thread returned no result") as Box<_>)
    }

    /// The standard handle (to signal the thread, e.g. a vCPU kick).
    pub fn std_handle(&self) -> &std::thread::JoinHandle<()> {
        &self.thread
    }
}

/// Where a thread body's value waits until the thread is joined.
pub(crate) struct ResultSlot<T>(Arc<Mutex<Option<T>>>);

impl<T: Send + 'static> ResultSlot<T> {
    /// A new slot, and `body` changed to leave its value in it.
    pub(crate) fn wrap<F>(body: F) -> (Self, impl FnOnce() + Send + 'static)
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let result = Arc::new(Mutex::new(None));
        let slot = result.clone();
        let run = move || {
            let value = body();
            if let Ok(mut s) = slot.lock() {
                *s = Some(value);
            }
        };
        (Self(result), run)
    }

    /// The handle of `thread`, which runs the wrapped body.
    pub(crate) fn handle(self, thread: std::thread::JoinHandle<()>) -> JoinHandle<T> {
        JoinHandle {
            thread,
            result: self.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_returns_the_body_value_or_the_panic() {
        let (slot, run) = ResultSlot::wrap(|| 7);
        let handle = slot.handle(std::thread::spawn(run));
        assert_eq!(handle.join().ok(), Some(7));

        let (slot, run) = ResultSlot::<u8>::wrap(|| panic!("boom"));
        let handle = slot.handle(std::thread::spawn(run));
        assert!(handle.join().is_err());
    }
}
