//! The one place that reads how a run ended into what becomes of the delivery: exit 0
//! delivered (its status and run time kept), a status of `retry_exit_codes` or the timeout retried, any other status or a
//! signal dead-lettered, each with the status, how long it ran and the tail of stderr (never
//! stdout); a program that cannot be started makes the sink unavailable as a whole.

use std::path::Path;
use std::time::Duration;

use super::encode::Refusal;
use super::run::{Ended, Finished};
use crate::sinks::Outcome;

/// Most characters of stderr a reason quotes (after escaping), from its end.
pub(super) const QUOTED_CHARS: usize = 500;

/// What a run that ended means for its delivery.
pub(super) fn finished(
    program: &Path,
    f: &Finished,
    retry_exit_codes: &[i32],
    timeout: Duration,
) -> Outcome {
    let program = program.display();
    let took = took(f.took);
    let stderr = stderr_tail(&f.stderr, f.stderr_cut);
    match f.ended {
        Ended::Exited(0) => {
            Outcome::DeliveredWith(format!("{program} exited with status 0 after {took}"))
        }
        Ended::Exited(code) if retry_exit_codes.contains(&code) => Outcome::Retry(format!(
            "{program} exited with status {code} after {took} (retried: it is in retry_exit_codes); {stderr}"
        )),
        Ended::Exited(code) => Outcome::Reject(format!(
            "{program} exited with status {code} after {took}; {stderr}"
        )),
        Ended::Signaled(signal) => Outcome::Reject(format!(
            "{program} was killed by signal {signal}{} after {took}; {stderr}",
            signal_name(signal)
        )),
        Ended::TimedOut => Outcome::Retry(format!(
            "{program} did not finish within {}; its process group was killed; {stderr}",
            humantime::format_duration(timeout)
        )),
    }
}

/// A delivery whose arguments or stdin cannot be made will not make them on a retry either:
/// a dead letter, the program never run.
pub(super) fn refused(refusal: &Refusal) -> Outcome {
    Outcome::Reject(refusal.to_string())
}

/// Why the program could not be started (gone, no longer executable, no process left to fork):
/// the sink as a whole is unavailable until it can be, and no attempt is spent, as for a broker
/// that is down; the event is not at fault.
pub(super) fn start_failed(program: &Path, e: &std::io::Error) -> String {
    format!("cannot start {}: {e}", program.display())
}

/// The `hookbridge_sink_errors_total` kind of a run's end, `None` for a delivery.
pub(super) fn error_kind(ended: Ended) -> Option<&'static str> {
    match ended {
        Ended::Exited(0) => None,
        Ended::Exited(_) => Some("exit"),
        Ended::Signaled(_) => Some("signal"),
        Ended::TimedOut => Some("timeout"),
    }
}

/// `1.25 s`, `40 ms`.
fn took(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// ` (SIGKILL)` for the signals a program usually dies of.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGQUIT => " (SIGQUIT)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

/// `stderr: <its last characters>`, control characters escaped (a line break as `\n`), `…`
/// where earlier ones were left out; or `nothing on stderr`.
pub(super) fn stderr_tail(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.trim_start().is_empty() {
        return "nothing on stderr".into();
    }
    let mut pieces: Vec<String> = Vec::new();
    let mut len = 0;
    let mut more = cut;
    for c in text.chars().rev() {
        let piece = escaped(c);
        if len + piece.chars().count() > QUOTED_CHARS {
            more = true;
            break;
        }
        len += piece.chars().count();
        pieces.push(piece);
    }
    let shown: String = pieces.into_iter().rev().collect();
    let more = if more { "…" } else { "" };
    format!("stderr: {more}{shown}")
}

/// A character as a reason shows it: control characters, and those that reorder or hide
/// text (bidirectional overrides, zero-width ones), escaped.
fn escaped(c: char) -> String {
    let hiding = matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
    if c.is_control() || hiding {
        c.escape_default().collect()
    } else {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(ended: Ended, stderr: &[u8]) -> Outcome {
        let f = Finished {
            ended,
            took: Duration::from_millis(42),
            stderr: stderr.to_vec(),
            stderr_cut: false,
        };
        finished(
            Path::new("/usr/local/bin/restore"),
            &f,
            &[75],
            Duration::from_secs(30),
        )
    }

    #[test]
    fn every_end_of_a_run() {
        assert_eq!(
            ran(Ended::Exited(0), b"chatter"),
            Outcome::DeliveredWith(
                "/usr/local/bin/restore exited with status 0 after 42 ms".into()
            ),
            "a delivery keeps its status and run time, never stderr"
        );
        assert_eq!(
            ran(Ended::Exited(75), b"portal busy\n"),
            Outcome::Retry(
                "/usr/local/bin/restore exited with status 75 after 42 ms (retried: it is in retry_exit_codes); stderr: portal busy".into()
            )
        );
        assert_eq!(
            ran(Ended::Exited(3), b""),
            Outcome::Reject(
                "/usr/local/bin/restore exited with status 3 after 42 ms; nothing on stderr".into()
            )
        );
        assert!(matches!(
            ran(Ended::Signaled(libc::SIGSEGV), b""),
            Outcome::Reject(r) if r.contains("killed by signal 11 (SIGSEGV)")
        ));
        assert!(matches!(
            ran(Ended::TimedOut, b"half"),
            Outcome::Retry(r) if r.contains("did not finish within 30s") && r.ends_with("stderr: half")
        ));
        assert_eq!(error_kind(Ended::Exited(0)), None);
        assert_eq!(error_kind(Ended::TimedOut), Some("timeout"));
        assert_eq!(took(Duration::from_millis(1250)), "1.25 s");
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_escaped() {
        assert_eq!(
            stderr_tail(b"line one\r\nline\ttwo\x1b[31m red\n", false),
            "stderr: line one\\r\\nline\\ttwo\\u{1b}[31m red"
        );
        assert_eq!(
            stderr_tail("evil \u{202E}txt.exe".as_bytes(), false),
            "stderr: evil \\u{202e}txt.exe"
        );
        let mut long = "early ".repeat(200).into_bytes();
        long.extend_from_slice(b"the reason\n");
        let t = stderr_tail(&long, false);
        assert!(
            t.starts_with("stderr: …") && t.ends_with("the reason"),
            "{t}"
        );
        assert!(t.chars().count() <= QUOTED_CHARS + 20, "{}", t.len());
        let controls = vec![0x07u8; 2000];
        let t = stderr_tail(&controls, true);
        assert!(t.chars().count() <= QUOTED_CHARS + 20, "{}", t.len());
        assert!(t.starts_with("stderr: …\\u{7}"), "{t}");
        assert_eq!(stderr_tail(b"  \n", false), "nothing on stderr");
        assert_eq!(stderr_tail(b"cut", true), "stderr: …cut");
    }
}
