//! The running command sink: a batch's runs, at most `max_in_flight` at once across batches
//! (taken in queue order), each run's end read by `errors.rs`.

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::encode::{Encoder, Invocation};
use super::errors::{error_kind, finished, refused, start_failed};
use super::run::{Program, executable_problem};
use crate::event::Delivery;
use crate::metrics::METRICS;
use crate::sinks::{Outcome, Sink, SinkError, batch_outcomes};

/// Runs the program once per delivery and counts it delivered when it exits 0.
pub(super) struct CommandSink {
    name: String,
    encoder: Encoder,
    program: Program,
    retry_exit_codes: Vec<i32>,
    /// Runs under way, across every batch the dispatcher has in flight.
    permits: Semaphore,
    max_in_flight: usize,
}

impl CommandSink {
    /// A sink running `program` with `encoder`'s invocations, `max_in_flight` at once.
    pub fn new(
        name: &str,
        encoder: Encoder,
        program: Program,
        retry_exit_codes: Vec<i32>,
        max_in_flight: usize,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        CommandSink {
            name: name.to_string(),
            encoder,
            program,
            retry_exit_codes,
            permits: Semaphore::new(max_in_flight),
            max_in_flight,
        }
    }

    /// Counts one failure of `kind` for this sink.
    fn count(&self, kind: &str) {
        METRICS
            .sink_errors
            .with_label_values(&[&self.name, kind])
            .inc();
    }

    /// One delivery: its permit, then its run. `Err` when the program could not be started.
    async fn deliver(&self, d: &Delivery, invocation: Invocation) -> Result<Outcome, String> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Err("the sink is stopping".into());
        };
        let run = self
            .program
            .run(&invocation.args, invocation.stdin, &d.event.event_id)
            .await;
        let f = match run {
            Ok(f) => f,
            Err(e) => {
                self.count("start");
                return Err(start_failed(&self.program.path, &e));
            }
        };
        if let Some(kind) = error_kind(f.ended) {
            self.count(kind);
        }
        tracing::debug!(sink = %self.name, event_id = %d.event.event_id, ended = ?f.ended, took_ms = f.took.as_millis() as u64, "command finished");
        Ok(finished(
            &self.program.path,
            &f,
            &self.retry_exit_codes,
            self.program.timeout,
        ))
    }
}

#[async_trait]
impl Sink for CommandSink {
    /// Checks that the program (and the working directory) are still there: `/readyz` waits
    /// for it, and the dispatcher backs off until they are.
    async fn connect(&self) -> Result<(), SinkError> {
        let problem = executable_problem(&self.program.path).or_else(|| {
            self.program
                .working_dir
                .as_deref()
                .and_then(super::run::directory_problem)
        });
        match problem {
            Some(p) => {
                self.count("start");
                Err(SinkError::Unavailable(p))
            }
            None => {
                tracing::info!(sink = %self.name, program = %self.program.path.display(), "command ready");
                Ok(())
            }
        }
    }

    /// Runs the batch's deliveries concurrently, each waiting for a permit in queue order. A
    /// delivery whose arguments are refused is dead-lettered without running anything. If the
    /// program could not be started for any of them and none ran, the batch fails as a whole
    /// and no attempt is spent.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let runs = batch.iter().map(|d| async move {
            match self.encoder.invocation(&d.event, &d.payload) {
                Ok(invocation) => (true, self.deliver(d, invocation).await),
                Err(refusal) => {
                    self.count("render");
                    (false, Ok(refused(&refusal)))
                }
            }
        });
        let results = futures::future::join_all(runs).await;
        let heard = results.iter().any(|(ran, r)| *ran && r.is_ok());
        batch_outcomes(results.into_iter().map(|(_, r)| r).collect(), heard)
    }

    /// A couple of rounds of runs: a batch is settled (and recorded) only when its slowest run
    /// ends, so a large one would hold quick ones back.
    fn max_batch(&self) -> usize {
        self.max_in_flight * 2
    }

    /// Two batches when runs may overlap, so the next batch's runs start while the last of the
    /// previous one finish; one to keep the queue's order.
    fn max_in_flight(&self) -> usize {
        if self.max_in_flight > 1 { 2 } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::problem::Problem;
    use crate::render::Renderer;
    use crate::sinks::command::encode::{StdinFormat, arg_template_name};
    use crate::sinks::command::run::tests::script;

    fn sink(path: PathBuf, args: &[&str], max_in_flight: usize) -> CommandSink {
        let mut r = Renderer::new(std::env::temp_dir());
        let mut problems: Vec<Problem> = Vec::new();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for (i, a) in args.iter().enumerate() {
            let name = arg_template_name("run", i);
            r.add_inline(&name, a, &name, &mut problems);
        }
        let program = Program {
            path,
            working_dir: None,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            timeout: Duration::from_secs(10),
        };
        let encoder = Encoder::new("run", &args, StdinFormat::None, r);
        CommandSink::new("run", encoder, program, vec![75], max_in_flight)
    }

    fn delivery(seq: u64, id: &str) -> Delivery {
        Delivery {
            seq,
            attempts: 0,
            event: crate::event::Event {
                id: id.into(),
                ..crate::event::sample(seq)
            },
            payload: Arc::from("{}"),
        }
    }

    #[tokio::test]
    async fn outcomes_follow_the_exit_status_and_a_refusal_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let p = script(
            dir.path(),
            &format!(
                "echo \"$1\" >> {}; case \"$1\" in ok) exit 0;; later) exit 75;; *) exit 3;; esac",
                ran.display()
            ),
        );
        let s = sink(p, &["{{ id }}"], 2);
        s.connect().await.unwrap();
        let batch = [
            delivery(1, "ok"),
            delivery(2, "later"),
            delivery(3, "bad"),
            delivery(4, "--all"),
        ];
        let out = s.send(&batch).await.unwrap();
        assert!(matches!(&out[0], Outcome::DeliveredWith(r) if r.contains("status 0")));
        assert!(matches!(&out[1], Outcome::Retry(r) if r.contains("status 75")));
        assert!(matches!(&out[2], Outcome::Reject(r) if r.contains("status 3")));
        assert!(matches!(&out[3], Outcome::Reject(r) if r.contains("may not become an option")));
        let mut lines: Vec<String> = std::fs::read_to_string(&ran)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["bad", "later", "ok"], "--all never ran");
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_makes_the_sink_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(dir.path().join("gone"), &[], 1);
        assert!(matches!(s.connect().await, Err(SinkError::Unavailable(_))));
        match s.send(&[delivery(1, "a"), delivery(2, "b")]).await {
            Err(SinkError::Unavailable(r)) => assert!(r.contains("cannot start"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn runs_overlap_up_to_max_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p = script(
            dir.path(),
            &format!(
                "echo \"start $(date +%s%N)\" >> {log}; sleep 0.3; echo \"end $(date +%s%N)\" >> {log}",
                log = log.display()
            ),
        );
        let batch: Vec<Delivery> = (1..=5).map(|n| delivery(n, "x")).collect();
        let out = sink(p, &[], 2).send(&batch).await.unwrap();
        assert!(out.iter().all(Outcome::is_delivered), "{out:?}");
        let mut marks: Vec<(u128, i32)> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| {
                let (what, at) = l.split_once(' ').unwrap();
                (at.parse().unwrap(), if what == "start" { 1 } else { -1 })
            })
            .collect();
        // At the same instant an end counts before a start.
        marks.sort();
        let (mut now, mut most) = (0, 0);
        for (_, step) in marks {
            now += step;
            most = most.max(now);
        }
        assert_eq!(
            most, 2,
            "at most max_in_flight runs at once, and more than one"
        );
    }
}
