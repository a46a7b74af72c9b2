//! Key layout of the queue's sled trees.
//!
//! The main tree (`q`) holds everything a request's acceptance writes, so that its rows (body,
//! events, dedup keys, deliveries) go to disk in one atomic batch.
//!
//! | prefix | key                          | value                                          |
//! |--------|------------------------------|------------------------------------------------|
//! | `b`    | body seq                     | the payload's JSON text (shared by a request's events) |
//! | `e`    | event seq                    | `EventRow`: byte 2 + body seq + length + JSON + the payload inline (a request's only routed event); older rows: JSON, or byte 1 + length + JSON (body inside) + payload |
//! | `d`    | dedup key (16 bytes)         | accepted-at ms, event seq                      |
//! | `r`    | sink, 0, event seq           | `DeliveryRow`: ready to send                   |
//! | `w`    | sink, 0, due ms, event seq   | `DeliveryRow`: waiting to retry (or parked for its feature changes at a due time that never comes) |
//! | `x`    | sink, 0, event seq           | `DeadLetter` (JSON)                            |
//! | `k`    | event seq, sink              | delivered-at ms                                |
//!
//! Beside it: the tree `history` (event seq, sink, 0, attempt ms → one attempt, for people),
//! the tree `enrich` (fetched feature changes and fetch state, `enrich.rs`), and in the data directory the files
//! `lock` (one process per directory), `reserve` (released when a write fails) and
//! `rollback/*.undo` (the undo of a group whose write failed, applied at the next start).

/// Body rows.
pub const BODY: u8 = b'b';
/// Event rows.
pub const EVENT: u8 = b'e';
/// Dedup rows.
pub const DEDUP: u8 = b'd';
/// Ready deliveries.
pub const READY: u8 = b'r';
/// Deliveries waiting for their retry time.
pub const WAITING: u8 = b'w';
/// Dead letters.
pub const DEAD: u8 = b'x';
/// Delivered records.
pub const DONE: u8 = b'k';

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

/// A ready or dead row's key: prefix, sink, 0, seq.
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

/// A delivered record's key: `k`, seq, sink.
pub fn done_key(seq: u64, sink: &str) -> Vec<u8> {
    let mut k = seq_key(DONE, seq);
    k.extend_from_slice(sink.as_bytes());
    k
}

/// A dedup row's key.
pub fn dedup_key(key: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(DEDUP);
    k.extend_from_slice(key);
    k
}

/// Reads a big-endian u64 at `at`, if the key is long enough.
pub fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    key.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Splits a sink-scoped key (`r`/`w`/`x`) into its sink name and the bytes after the 0.
pub fn split_sink(key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = key.get(1..)?;
    let zero = rest.iter().position(|b| *b == 0)?;
    let sink = std::str::from_utf8(&rest[..zero]).ok()?;
    Some((sink, &rest[zero + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_seq_and_split() {
        assert!(seq_key(EVENT, 2) < seq_key(EVENT, 256));
        let w1 = waiting_key("s", 10, 99);
        let w2 = waiting_key("s", 11, 1);
        assert!(w1 < w2);
        let (sink, rest) = split_sink(&w1).unwrap();
        assert_eq!(sink, "s");
        assert_eq!(u64_at(rest, 0), Some(10));
        assert_eq!(u64_at(rest, 8), Some(99));
        assert!(sink_seq_key(READY, "a", 5).starts_with(&sink_prefix(READY, "a")));
        assert!(!sink_seq_key(READY, "ab", 5).starts_with(&sink_prefix(READY, "a")));
    }
}
