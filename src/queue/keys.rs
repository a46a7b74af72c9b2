//! Key layout of the queue's sled trees.
//!
//! The queue is a log: each accepted request is one row of the tree `log`, and each sink's
//! progress through it is a cursor plus the deliveries that left the ordinary path (waiting
//! for a retry, parked, ready again, dead). A delivery that goes out at its first attempt
//! writes nothing of its own: the cursor moves past it once per batch.
//!
//! | tree    | key                        | value                                              |
//! |---------|----------------------------|----------------------------------------------------|
//! | `log`   | first event seq            | `LogRow` (`log.rs`): accepted-at, per event its JSON and sinks, then the payload once; the row holds the seqs `key .. key + n` |
//! | `dedup` | dedup key (16 bytes)       | accepted-at ms, event seq (0: no route matched, nothing stored) |
//! | `dedup` | hash of sink and feature change id (16 bytes) | when the sink delivered that feature change, epoch ms, then 0 (`changes.rs`: each change once per sink) |
//! | `q`     | `c`, sink                  | the sink's cursor: every seq up to it is settled (sent, or one of the rows below) |
//! | `q`     | `r`, sink, 0, event seq    | `DeliveryRow`: ready again (a retry that came due, a replay, a parked one released) |
//! | `q`     | `w`, sink, 0, due ms, seq  | `DeliveryRow`: waiting to retry (or parked for its feature changes at a due time that never comes) |
//! | `q`     | `x`, sink, 0, event seq    | `DeadLetter` (JSON, with the event and payload: it outlives the log row) |
//! | `q`     | `t`, sink, 0, event seq    | when the sink's batch that ended at that seq was delivered, epoch ms |
//! | `q`     | `s`                        | the seq floor: no seq below it is handed out again after a restart |
//! | `q`     | `v`                        | the layout version (2); absent in stores of earlier releases |
//!
//! Stores of earlier releases held a row per event (`e`), per shared body (`b`), per delivery
//! (`r`) and per delivered record (`k`), and dedup rows (`d`) in `q`; `migrate.rs` turns them
//! into this layout once, at open.
//!
//! Beside them: the tree `history` (event seq, sink, 0, attempt ms → one attempt, for people),
//! the tree `enrich` (fetched feature changes and fetch state per change window, `changes.rs`), and in the data
//! directory the files `lock` (one process per directory), `reserve` (released when a write
//! fails) and `rollback/*.undo` (the undo of a group whose write failed, applied at the next
//! start).

/// Sink cursors.
pub const CURSOR: u8 = b'c';
/// Deliveries ready again.
pub const READY: u8 = b'r';
/// Deliveries waiting for their retry time.
pub const WAITING: u8 = b'w';
/// Dead letters.
pub const DEAD: u8 = b'x';
/// Delivered-at marks.
pub const MARK: u8 = b't';
/// The seq floor row.
pub const FLOOR: &[u8] = b"s";
/// The layout version row.
pub const VERSION: &[u8] = b"v";
/// The layout this build writes.
pub const LAYOUT: u8 = 2;

/// Event rows of earlier releases.
pub const OLD_EVENT: u8 = b'e';
/// Body rows of earlier releases.
pub const OLD_BODY: u8 = b'b';
/// Dedup rows of earlier releases (in `q`).
pub const OLD_DEDUP: u8 = b'd';
/// Delivered records of earlier releases.
pub const OLD_DONE: u8 = b'k';

/// A log row's key: its first seq, big-endian.
pub fn log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// `prefix` + big-endian seq.
pub fn seq_key(prefix: u8, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `prefix` + sink + 0: the range of one sink's rows.
pub fn sink_prefix(prefix: u8, sink: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sink.len() + 2);
    k.push(prefix);
    k.extend_from_slice(sink.as_bytes());
    k.push(0);
    k
}

/// A ready, dead or mark row's key: prefix, sink, 0, seq.
pub fn sink_seq_key(prefix: u8, sink: &str, seq: u64) -> Vec<u8> {
    let mut k = sink_prefix(prefix, sink);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A waiting row's key: `w`, sink, 0, due, seq.
pub fn waiting_key(sink: &str, due_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = sink_prefix(WAITING, sink);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A sink's cursor row key.
pub fn cursor_key(sink: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sink.len() + 1);
    k.push(CURSOR);
    k.extend_from_slice(sink.as_bytes());
    k
}

/// A delivered record's key in earlier releases: `k`, seq, sink.
pub fn old_done_key(seq: u64, sink: &str) -> Vec<u8> {
    let mut k = seq_key(OLD_DONE, seq);
    k.extend_from_slice(sink.as_bytes());
    k
}

/// Reads a big-endian u64 at `at`, if the key is long enough.
pub fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    key.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Splits a sink-scoped key (`r`/`w`/`x`/`t`) into its sink name and the bytes after the 0.
pub fn split_sink(key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = key.get(1..)?;
    let zero = rest.iter().position(|b| *b == 0)?;
    let sink = std::str::from_utf8(&rest[..zero]).ok()?;
    Some((sink, &rest[zero + 1..]))
}

/// The event seq of a sink-scoped row: after the due time in waiting rows, first elsewhere.
pub fn row_seq(prefix: u8, key: &[u8]) -> Option<u64> {
    let (_, rest) = split_sink(key)?;
    u64_at(rest, if prefix == WAITING { 8 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_seq_and_split() {
        assert!(log_key(2) < log_key(256));
        let w1 = waiting_key("s", 10, 99);
        let w2 = waiting_key("s", 11, 1);
        assert!(w1 < w2);
        let (sink, rest) = split_sink(&w1).unwrap();
        assert_eq!(sink, "s");
        assert_eq!(u64_at(rest, 0), Some(10));
        assert_eq!(row_seq(WAITING, &w1), Some(99));
        assert_eq!(row_seq(DEAD, &sink_seq_key(DEAD, "s", 7)), Some(7));
        assert!(sink_seq_key(READY, "a", 5).starts_with(&sink_prefix(READY, "a")));
        assert!(!sink_seq_key(READY, "ab", 5).starts_with(&sink_prefix(READY, "a")));
    }
}
