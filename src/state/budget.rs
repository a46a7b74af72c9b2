//! The budget of work being accepted at once: body bytes being read and parsed, and events
//! being built and stored. A request that would pass it is answered 503 with `Retry-After`
//! before it costs more memory, so a burst of maximal deliveries cannot take the daemon's
//! memory with it; the budget is far above what ArcGIS sends (see docs/reliability.md).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a request holds of the budget until it is answered.
#[derive(Debug, Default)]
pub struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: u64,
    events: usize,
}

/// The bytes and events that may be in the ingress at once.
#[derive(Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    events: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `bytes` body bytes and `events` events.
    pub fn new(bytes: u64, events: usize) -> Self {
        let cap = |n: u64| n.min(Semaphore::MAX_PERMITS as u64) as usize;
        Budget {
            bytes: Arc::new(Semaphore::new(cap(bytes))),
            events: Arc::new(Semaphore::new(cap(events as u64))),
        }
    }

    /// Takes `n` more bytes into `held`, or says the budget is spent.
    pub fn take_bytes(&self, held: &mut Held, n: u64) -> bool {
        take(&self.bytes, held, n)
            .then(|| held.bytes += n)
            .is_some()
    }

    /// Takes `n` events into `held`, or says the budget is spent.
    pub fn take_events(&self, held: &mut Held, n: usize) -> bool {
        take(&self.events, held, n as u64)
            .then(|| held.events += n)
            .is_some()
    }
}

/// A request past this many bytes or events leaves memory behind when it is answered: the
/// allocator keeps what it freed, so it is asked to hand it back to the system.
const LARGE: (u64, usize) = (256 * 1024, 1_000);

impl Drop for Held {
    /// Gives the budget back, and after a large request the memory it used.
    fn drop(&mut self) {
        self.permits.clear();
        if self.bytes >= LARGE.0 || self.events >= LARGE.1 {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn_blocking(give_memory_back);
            }
        }
    }
}

/// Asks glibc's allocator to return the free parts of its heaps to the system; one call at a
/// time, since each walks every arena.
fn give_memory_back() {
    static TRIMMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TRIMMING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own heaps; it takes no
    // pointer and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
    TRIMMING.store(false, std::sync::atomic::Ordering::Release);
}

fn take(pool: &Arc<Semaphore>, held: &mut Held, n: u64) -> bool {
    if n == 0 {
        return true;
    }
    let Ok(n) = u32::try_from(n) else {
        return false;
    };
    match pool.clone().try_acquire_many_owned(n) {
        Ok(permit) => {
            held.permits.push(permit);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_given_back_when_a_request_is_answered() {
        let b = Budget::new(100, 10);
        let mut one = Held::default();
        assert!(b.take_bytes(&mut one, 60) && b.take_events(&mut one, 10));
        let mut two = Held::default();
        assert!(!b.take_bytes(&mut two, 60));
        assert!(!b.take_events(&mut two, 1));
        assert_eq!((one.bytes, one.events), (60, 10));
        drop(one);
        assert!(b.take_bytes(&mut two, 60) && b.take_events(&mut two, 10));
    }
}
