//! Injected write failures, for tests: the Nth write of the commit path fails with an I/O error.
//!
//! Compiled in only for unit tests and with the `fault-injection` feature (which the
//! integration tests turn on); elsewhere every check is a no-op. The daemon reads the plan from
//! `HOOKBRIDGE_FAULT_WRITE=N` (count from 1: the apply of each chunk of a group, then its
//! fsync, then the next group's chunks, ...). `HOOKBRIDGE_FAULT_UNPRICED=1` skips the price check of deliveries, so
//! that a test can make sled meet a real full disk. `HOOKBRIDGE_FAULT_STALL_CLOSE=1` makes the
//! final flush block for good, as sled's does on a store that met an I/O error.

#[cfg(any(test, feature = "fault-injection"))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Which write of the commit path fails (0: none), and how many have been made.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(any(test, feature = "fault-injection"))]
    fail_at: AtomicU64,
    #[cfg(any(test, feature = "fault-injection"))]
    count: AtomicU64,
    #[cfg(any(test, feature = "fault-injection"))]
    unpriced: bool,
    #[cfg(any(test, feature = "fault-injection"))]
    stall_close: bool,
}

impl Faults {
    /// The plan from `HOOKBRIDGE_FAULT_WRITE`, when fault injection is compiled in.
    pub fn from_env() -> Faults {
        #[cfg(any(test, feature = "fault-injection"))]
        let faults = Faults {
            unpriced: std::env::var("HOOKBRIDGE_FAULT_UNPRICED").is_ok_and(|v| v == "1"),
            stall_close: std::env::var("HOOKBRIDGE_FAULT_STALL_CLOSE").is_ok_and(|v| v == "1"),
            ..Faults::default()
        };
        #[cfg(not(any(test, feature = "fault-injection")))]
        let faults = Faults::default();
        #[cfg(any(test, feature = "fault-injection"))]
        if let Some(n) = std::env::var("HOOKBRIDGE_FAULT_WRITE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            tracing::warn!(
                write = n,
                "fault injection: this write of the commit path will fail"
            );
            faults.fail_at.store(n, Ordering::SeqCst);
        }
        faults
    }

    /// Whether deliveries go unpriced (the free-space check of each delivery is skipped).
    pub fn unpriced(&self) -> bool {
        #[cfg(any(test, feature = "fault-injection"))]
        return self.unpriced;
        #[cfg(not(any(test, feature = "fault-injection")))]
        false
    }

    /// Blocks for good when the final flush is to stall.
    pub fn stall_close(&self) {
        #[cfg(any(test, feature = "fault-injection"))]
        if self.stall_close {
            loop {
                std::thread::park();
            }
        }
    }

    /// Makes the `n`th write from now fail (unit tests).
    #[cfg(test)]
    pub fn fail_in(&self, n: u64) {
        let done = self.count.load(Ordering::SeqCst);
        self.fail_at.store(done + n, Ordering::SeqCst);
    }

    /// Counts one write of the commit path (`what` names it in the error), failing the planned one.
    #[cfg_attr(not(any(test, feature = "fault-injection")), inline(always))]
    pub fn check(&self, what: &str) -> Result<(), sled::Error> {
        #[cfg(any(test, feature = "fault-injection"))]
        {
            let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.fail_at.load(Ordering::SeqCst) {
                return Err(sled::Error::Io(std::io::Error::other(format!(
                    "injected failure of write {n} ({what})"
                ))));
            }
        }
        #[cfg(not(any(test, feature = "fault-injection")))]
        let _ = what;
        Ok(())
    }
}
