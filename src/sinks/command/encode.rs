//! From delivery to what the program gets: its arguments, each rendered from one `args`
//! template into exactly one argv entry, and its stdin.
//!
//! An argument whose template does not itself start with `-` may not render to one that does:
//! only the config's own text can make an option, never an event value (`{{ id }}` rendering
//! `--delete-all` is refused). A NUL byte cannot be passed at all. A refused delivery is
//! dead-lettered with the reason and the program is not run.

use serde::Deserialize;

use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::payload_template_name;

/// What the program reads on its standard input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdinFormat {
    /// The normalized event as JSON.
    #[default]
    Event,
    /// The ArcGIS payload the event came in, as received.
    Raw,
    /// The sink's `payload_template`, rendered.
    Template,
    /// Nothing: stdin is `/dev/null`.
    None,
}

impl StdinFormat {
    /// The body format it renders with, `None` for no stdin.
    fn payload(self) -> Option<PayloadFormat> {
        match self {
            StdinFormat::Event => Some(PayloadFormat::Event),
            StdinFormat::Raw => Some(PayloadFormat::Raw),
            StdinFormat::Template => Some(PayloadFormat::Template),
            StdinFormat::None => None,
        }
    }

    /// Its name in the config, for `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            StdinFormat::Event => "event",
            StdinFormat::Raw => "raw",
            StdinFormat::Template => "template",
            StdinFormat::None => "none",
        }
    }
}

/// The renderer name of argument `index`'s template (its key path, as problems name it).
pub(super) fn arg_template_name(sink: &str, index: usize) -> String {
    format!("sinks.{sink}.args[{index}]")
}

/// One configured argument.
struct Arg {
    /// Its template's renderer name.
    template: String,
    /// Whether the template's own text starts with `-`: only then may the rendered value.
    option: bool,
}

/// What one delivery passes to the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invocation {
    /// The arguments after the program, one entry per `args` template.
    pub args: Vec<String>,
    /// What is written to stdin; `None` for `/dev/null`.
    pub stdin: Option<Vec<u8>>,
}

/// Why a delivery cannot be passed to the program.
#[derive(Debug)]
pub(super) enum Refusal {
    /// A template failed on the event.
    Render(RenderError),
    /// An argument came out unsafe (an option the config did not write, a NUL byte).
    Unsafe(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Render(e) => write!(f, "{e}"),
            Refusal::Unsafe(reason) => f.write_str(reason),
        }
    }
}

/// Renders a sink's deliveries into invocations.
pub(super) struct Encoder {
    renderer: Renderer,
    args: Vec<Arg>,
    stdin: StdinFormat,
    stdin_template: String,
}

impl Encoder {
    /// The encoder for sink `name` with these `args` templates (already compiled into
    /// `renderer`) and stdin.
    pub fn new(name: &str, args: &[String], stdin: StdinFormat, renderer: Renderer) -> Self {
        Encoder {
            renderer,
            args: args
                .iter()
                .enumerate()
                .map(|(i, text)| Arg {
                    template: arg_template_name(name, i),
                    option: text.starts_with('-'),
                })
                .collect(),
            stdin,
            stdin_template: payload_template_name(name),
        }
    }

    /// The arguments for `event`, rendered but not yet checked (see [`Encoder::refusal`]).
    pub fn args(&self, event: &Event, payload: &str) -> Result<Vec<String>, RenderError> {
        self.args
            .iter()
            .map(|a| self.renderer.render_event(&a.template, event, payload))
            .collect()
    }

    /// Why rendered `args` may not be passed, if they may not.
    pub fn refusal(&self, args: &[String]) -> Option<String> {
        for (i, (arg, spec)) in args.iter().zip(&self.args).enumerate() {
            if arg.contains('\0') {
                return Some(format!(
                    "args[{i}] rendered a NUL byte, which no argument can hold; not run"
                ));
            }
            if arg.starts_with('-') && !spec.option {
                return Some(format!(
                    "args[{i}] rendered {}, which starts with '-': an event value may not become an option (write the option in the template, e.g. \"--id={{{{ id }}}}\"); not run",
                    shown(arg)
                ));
            }
        }
        None
    }

    /// What goes to stdin for `event`.
    pub fn stdin(&self, event: &Event, payload: &str) -> Result<Option<Vec<u8>>, RenderError> {
        match self.stdin.payload() {
            Some(format) => self
                .renderer
                .encode(format, &self.stdin_template, event, payload)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Everything the program gets for `event`, or why it must not run.
    pub fn invocation(&self, event: &Event, payload: &str) -> Result<Invocation, Refusal> {
        let args = self.args(event, payload).map_err(Refusal::Render)?;
        if let Some(reason) = self.refusal(&args) {
            return Err(Refusal::Unsafe(reason));
        }
        let stdin = self.stdin(event, payload).map_err(Refusal::Render)?;
        Ok(Invocation { args, stdin })
    }
}

/// Most characters of a refused argument a reason quotes.
const SHOWN_CHARS: usize = 80;

/// A refused argument as a reason quotes it: its start, control characters escaped.
fn shown(arg: &str) -> String {
    let head: String = arg.chars().take(SHOWN_CHARS).collect();
    let more = if head.len() < arg.len() { "…" } else { "" };
    format!("{:?}{more}", head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problem;

    fn encoder(args: &[&str], stdin: StdinFormat, template: Option<&str>) -> Encoder {
        let mut r = Renderer::new(std::env::temp_dir());
        let mut problems: Vec<Problem> = Vec::new();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for (i, a) in args.iter().enumerate() {
            let name = arg_template_name("run", i);
            r.add_inline(&name, a, &name, &mut problems);
        }
        if let Some(t) = template {
            let name = payload_template_name("run");
            r.add_inline(&name, t, &name, &mut problems);
        }
        assert!(problems.is_empty(), "{problems:?}");
        Encoder::new("run", &args, stdin, r)
    }

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            ..crate::event::sample(1)
        }
    }

    #[test]
    fn each_template_is_one_argument_whatever_the_value_holds() {
        let e = encoder(
            &["--service", "{{ id }}", "--kind={{ kind }}", "{{ id }} x"],
            StdinFormat::None,
            None,
        );
        let hostile = "a b \"c\" 'd'; rm -rf / $(reboot) `id` | tee";
        let got = e.invocation(&event(hostile), "{}").unwrap();
        assert_eq!(
            got.args,
            [
                "--service".to_string(),
                hostile.to_string(),
                "--kind=portal".to_string(),
                format!("{hostile} x"),
            ]
        );
        assert_eq!(got.stdin, None);
    }

    #[test]
    fn a_value_that_would_become_an_option_is_refused() {
        let e = encoder(&["--service", "{{ id }}"], StdinFormat::Event, None);
        let Err(Refusal::Unsafe(reason)) = e.invocation(&event("--delete-all"), "{}") else {
            panic!("not refused");
        };
        assert!(
            reason.contains("args[1]") && reason.contains("\"--delete-all\""),
            "{reason}"
        );
        // Written by the config, an option may carry any value.
        let e = encoder(&["--id={{ id }}", "-{{ id }}"], StdinFormat::Event, None);
        assert!(e.invocation(&event("-x"), "{}").is_ok());
        // A leading space is not an option.
        let e = encoder(&[" {{ id }}"], StdinFormat::Event, None);
        assert_eq!(e.invocation(&event("-x"), "{}").unwrap().args, [" -x"]);
    }

    #[test]
    fn a_nul_byte_is_refused_and_a_long_value_is_quoted_short() {
        let e = encoder(&["{{ id }}"], StdinFormat::Event, None);
        let Err(Refusal::Unsafe(reason)) = e.invocation(&event("a\0b"), "{}") else {
            panic!("not refused");
        };
        assert!(reason.contains("NUL"), "{reason}");
        let long = format!("-{}", "x".repeat(1000));
        let Err(Refusal::Unsafe(reason)) = e.invocation(&event(&long), "{}") else {
            panic!("not refused");
        };
        assert!(reason.len() < 300, "{reason}");
    }

    #[test]
    fn stdin_is_the_event_the_payload_or_the_template() {
        let ev = event("abc");
        let e = encoder(&[], StdinFormat::Event, None);
        let got = e.invocation(&ev, "{\"raw\":1}").unwrap().stdin.unwrap();
        let back: Event = serde_json::from_slice(&got).unwrap();
        assert_eq!(back.id, "abc");
        let e = encoder(&[], StdinFormat::Raw, None);
        let got = e.invocation(&ev, "{\"raw\":1}").unwrap().stdin.unwrap();
        assert_eq!(got, b"{\"raw\":1}");
        let e = encoder(
            &[],
            StdinFormat::Template,
            Some("{{ id }} {{ payload.raw }}"),
        );
        let got = e.invocation(&ev, "{\"raw\":1}").unwrap().stdin.unwrap();
        assert_eq!(got, b"abc 1");
        let e = encoder(&["{{ properties.missing }}"], StdinFormat::None, None);
        assert!(matches!(e.invocation(&ev, "{}"), Err(Refusal::Render(_))));
    }
}
