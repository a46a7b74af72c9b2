//! `[sinks.NAME]` with `type = "command"`: the settings, their checks with key paths, what
//! `explain` shows, and building the running sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{Encoder, StdinFormat};
use super::env::{self, EnvValue};
use super::run::{Program, directory_problem, executable_problem};
use super::send::CommandSink;
use crate::event::Event;
use crate::render::{RenderError, Renderer};
use crate::sinks::{Check, Sink, SinkError, SinkType, body_for_display};

/// The command sink's settings; its `Debug` shows no value of `env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program, by absolute path: no PATH search, and never a shell.
    pub program: PathBuf,
    /// Its arguments: each a tera template over the event, rendered into exactly one argument.
    #[serde(default)]
    pub args: Vec<String>,
    /// What it reads on stdin: `event` (default), `raw`, `template` or `none`.
    #[serde(default)]
    pub stdin: StdinFormat,
    /// Tera template for stdin when `stdin = "template"`.
    pub payload_template: Option<String>,
    /// Variables it gets: inline, or `env:`/`file:` secrets read at load.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// hookbridge's own variables it gets, by name.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Where it runs (default: hookbridge's own working directory).
    pub working_dir: Option<PathBuf>,
    /// Bound on one run; past it the run's whole process group is killed and the delivery
    /// retried.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Exit statuses that mean "try again later" (default 75, `EX_TEMPFAIL`).
    #[serde(default = "default_retry_exit_codes")]
    pub retry_exit_codes: Vec<i32>,
    /// Runs at once; 1 (the default) runs one at a time, in queue order.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_exit_codes() -> Vec<i32> {
    vec![75]
}
fn default_in_flight() -> usize {
    1
}

/// The most runs at once a sink may ask for.
const MAX_IN_FLIGHT: usize = 64;

impl SinkType for CommandConfig {
    const NAME: &'static str = "command";

    /// A relative `working_dir` is the config file's directory's; the program is not resolved:
    /// it must be written absolute.
    fn resolve(&mut self, base: &Path) {
        self.working_dir = self.working_dir.take().map(|d| base.join(d));
    }

    fn check(&self, check: &mut Check<'_>) {
        if let Some(problem) = executable_problem(&self.program) {
            check.problem("program", problem);
        }
        if let Some(problem) = self.working_dir.as_deref().and_then(directory_problem) {
            check.problem("working_dir", problem);
        }
        for (i, text) in self.args.iter().enumerate() {
            let key = format!("args[{i}]");
            if text.contains('\0') {
                check.problem(&key, "holds a NUL byte, which no argument can");
            } else {
                // Named `sinks.NAME.args[i]`, as `arg_template_name` says.
                check.template(&key, text);
            }
        }
        match (self.stdin, &self.payload_template) {
            (StdinFormat::Template, Some(t)) => check.template("payload_template", t),
            (StdinFormat::Template, None) => check.problem(
                "payload_template",
                "stdin = \"template\" needs a payload_template",
            ),
            (_, Some(_)) => check.problem(
                "payload_template",
                "set stdin = \"template\" to use a payload_template",
            ),
            (_, None) => {}
        }
        for (name, value) in &self.env {
            let key = format!("env.{name}");
            if let Some(problem) = env::name_problem(name) {
                check.problem(&key, problem);
            } else if let Some(problem) = env::value_problem(value) {
                check.problem(&key, problem);
            }
        }
        for (i, name) in self.pass_env.iter().enumerate() {
            let key = format!("pass_env[{i}]");
            if let Some(problem) = env::name_problem(name) {
                check.problem(&key, problem);
            } else if self.env.contains_key(name) {
                check.problem(
                    &key,
                    format!("{name} is also set in env: set it in one place"),
                );
            }
        }
        if self.timeout.is_zero() {
            check.problem("timeout", "must be longer than 0s");
        }
        for (i, code) in self.retry_exit_codes.iter().enumerate() {
            if !(1..=255).contains(code) {
                check.problem(
                    &format!("retry_exit_codes[{i}]"),
                    format!("expected an exit status from 1 to 255 (0 is success); found {code}"),
                );
            }
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            check.problem(
                "max_in_flight",
                format!(
                    "expected 1 to {MAX_IN_FLIGHT}; found {}",
                    self.max_in_flight
                ),
            );
        }
    }

    /// The run that would be made for `event`: the argv, what stdin gets, the environment's
    /// names (values hidden), and why it would be refused, if it would.
    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let encoder = self.encoder(name, r);
        let args = encoder.args(event, payload)?;
        let stdin = encoder.stdin(event, payload)?;
        let mut argv = vec![self.program.display().to_string()];
        argv.extend(args.iter().cloned());
        let mut shown = json!({
            "argv": argv,
            "stdin": self.stdin.as_str(),
            "input": stdin.as_deref().map(body_for_display),
            "env": env::shown(&self.env, &self.pass_env, &event.event_id),
            "working_dir": self.working_dir,
            "timeout": humantime::format_duration(self.timeout).to_string(),
        });
        if let Some(reason) = encoder.refusal(&args) {
            shown["refused"] = Value::from(reason);
        }
        Ok(shown)
    }

    /// The running sink; the environment is made now, from hookbridge's own at this start or
    /// reload.
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let program = Program {
            path: self.program.clone(),
            working_dir: self.working_dir.clone(),
            env: env::child_env(&self.env, &self.pass_env, |v| std::env::var(v).ok()),
            timeout: self.timeout,
        };
        Ok(Arc::new(CommandSink::new(
            name,
            self.encoder(name, r),
            program,
            self.retry_exit_codes.clone(),
            self.max_in_flight,
        )))
    }
}

impl CommandConfig {
    /// The encoder of sink `name`, whose templates `r` holds.
    fn encoder(&self, name: &str, r: &Renderer) -> Encoder {
        Encoder::new(name, &self.args, self.stdin, r.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::sinks::registry::check_problems;

    fn settings(text: &str) -> CommandConfig {
        toml::from_str(text).unwrap()
    }

    fn keys(c: &CommandConfig) -> Vec<String> {
        let mut r = Renderer::new(std::env::temp_dir());
        check_problems("run", c, &mut r)
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    #[test]
    fn every_setting_is_checked_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = settings(&format!(
            r#"
program = "{}"
args = ["{{{{ id", "ok", "a\u0000b"]
stdin = "template"
env = {{ "BAD-NAME" = "x", HOOKBRIDGE_EVENT_ID = "y", NUL = "a\u0000" }}
pass_env = ["LANG", "1X", "GOOD"]
working_dir = "{}"
timeout = "0s"
retry_exit_codes = [75, 0, 300]
max_in_flight = 0
"#,
            plain.display(),
            plain.display()
        ));
        let got = keys(&c);
        let expected = [
            "sinks.run.program: ",
            "sinks.run.working_dir: ",
            "sinks.run.args[0]: ",
            "sinks.run.args[2]: holds a NUL byte",
            "sinks.run.payload_template: stdin = \"template\" needs",
            "sinks.run.env.BAD-NAME: ",
            "sinks.run.env.HOOKBRIDGE_EVENT_ID: HOOKBRIDGE_EVENT_ID is set by hookbridge itself",
            "sinks.run.env.NUL: holds a NUL byte",
            "sinks.run.pass_env[1]: ",
            "sinks.run.timeout: ",
            "sinks.run.retry_exit_codes[1]: ",
            "sinks.run.retry_exit_codes[2]: ",
            "sinks.run.max_in_flight: ",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (want, got) in expected.iter().zip(&got) {
            assert!(got.starts_with(want), "expected {want}, got {got}");
        }
        assert!(got[0].contains("not executable"), "{}", got[0]);
        assert!(got[1].contains("not a directory"), "{}", got[1]);

        let c = settings(
            "program = \"restore\"\npayload_template = \"x\"\nenv = { LANG = \"C\" }\npass_env = [\"LANG\"]\n",
        );
        let got = keys(&c);
        assert!(got[0].contains("absolute"), "{got:?}");
        assert!(got[1].contains("set stdin = \"template\""), "{got:?}");
        assert!(
            got[2].starts_with("sinks.run.pass_env[0]: LANG is also set in env"),
            "{got:?}"
        );
    }

    #[test]
    fn explain_shows_the_argv_and_env_names_but_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "tok-SECRET-42\n").unwrap();
        let c = settings(&format!(
            "program = \"/bin/true\"\nargs = [\"--service\", \"{{{{ id }}}}\"]\nenv = {{ TOKEN = \"file:{}\", MODE = \"inline-value\" }}\npass_env = [\"LANG\"]\n",
            secret.display()
        ));
        assert!(!format!("{c:?}").contains("SECRET"));
        assert!(!format!("{c:?}").contains("inline-value"));
        let mut r = Renderer::new(dir.path().into());
        assert!(check_problems("run", &c, &mut r).is_empty());
        let event = Event {
            id: "-rf".into(),
            ..crate::event::sample(1)
        };
        let shown = c.preview("run", &r, &event, "{}").unwrap();
        assert_eq!(shown["argv"], json!(["/bin/true", "--service", "-rf"]));
        assert_eq!(shown["stdin"], "event");
        assert_eq!(shown["input"]["id"], "-rf");
        assert_eq!(shown["env"]["TOKEN"], "***");
        assert_eq!(shown["env"]["MODE"], "***");
        assert_eq!(shown["env"]["PATH"], "/usr/bin:/bin");
        assert!(shown["refused"].as_str().unwrap().contains("args[1]"));
        let text = shown.to_string();
        assert!(
            !text.contains("SECRET") && !text.contains("inline-value"),
            "{text}"
        );
    }
}
