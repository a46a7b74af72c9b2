//! The markdown the benchmark prints, also kept in `BENCH_REPORT` when that names a file.

use std::path::PathBuf;

/// Prints each line as it comes and rewrites the report file after every line, so a phase that
/// fails later leaves the figures measured so far.
pub struct Report {
    text: String,
    path: Option<PathBuf>,
}

impl Report {
    pub fn from_env() -> Report {
        Report {
            text: String::new(),
            path: std::env::var_os("BENCH_REPORT").map(PathBuf::from),
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
