//! The markdown the benchmark prints, also kept in `BENCH_REPORT` when that names a file.

use std::path::PathBuf;

/// Durable accept over the no-op's rate with 1-event requests: the least the targets allow.
pub const ONE_EVENT_TO_NOOP: f64 = 0.35;
/// The same with 3-event and form bodies: cost follows events, so the bar is lower.
pub const SEVERAL_EVENTS_TO_NOOP: f64 = 0.25;
/// Durable accept over the sled floor's rate, every request shape: the least allowed.
pub const TO_FLOOR: f64 = 0.9;
/// RSS under full load, in MiB: the most allowed.
pub const RSS_LOADED_MIB: u64 = 80;

/// Prints each line as it comes and rewrites the report file after every line, so a phase that
/// fails later leaves the figures measured so far.
pub struct Report {
    text: String,
    path: Option<PathBuf>,
    targets: Vec<Target>,
}

/// One figure of the project's targets as this run measured it.
struct Target {
    figure: String,
    measured: String,
    target: String,
    met: bool,
}

impl Report {
    pub fn from_env() -> Report {
        Report {
            text: String::new(),
            path: std::env::var_os("BENCH_REPORT").map(PathBuf::from),
            targets: Vec::new(),
        }
    }

    /// Records a figure for the closing table, which puts every target this run measured in one
    /// place.
    pub fn target(&mut self, figure: &str, measured: String, target: &str, met: bool) {
        self.targets.push(Target {
            figure: figure.to_string(),
            measured,
            target: target.to_string(),
            met,
        });
    }

    /// Prints the figures recorded with [`Report::target`], each next to its target.
    pub fn print_targets(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let rows: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                format!(
                    "| {} | {} | {} | {} |",
                    t.figure,
                    t.measured,
                    t.target,
                    if t.met { "met" } else { "**not met**" }
                )
            })
            .collect();
        self.line("");
        self.line("## Against the targets (this run)");
        self.line("");
        self.line("| figure | measured | target | |");
        self.line("|---|---:|---:|---|");
        for row in rows {
            self.line(row);
        }
    }

    pub fn line(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        println!("{line}");
        self.text.push_str(line);
        self.text.push('\n');
        if let Some(path) = &self.path {
            if let Err(e) = std::fs::write(path, &self.text) {
                eprintln!("cannot write {}: {e}", path.display());
                self.path = None;
            }
        }
    }
}

/// `out!(report, "format", args...)`: one line of the report.
macro_rules! out {
    ($report:expr) => {
        $report.line("")
    };
    ($report:expr, $($arg:tt)*) => {
        $report.line(format!($($arg)*))
    };
}
pub(crate) use out;
