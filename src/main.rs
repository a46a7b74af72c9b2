//! The `hookbridge` command line: parse arguments, call the library, report errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hookbridge::body::BodyEncoding;
use hookbridge::client::{AdminClient, Method};
use hookbridge::config::{Config, ConfigError, Secret};
use hookbridge::queue::{Queue, QueueError};
use hookbridge::serve::ServeError;
use hookbridge::webhooks::Op;

/// Exit status when the queue's disk is below `storage.min_free` at start (EX_TEMPFAIL): the
/// unit's `RestartPreventExitStatus=` keeps systemd from restarting into the same full disk.
const EXIT_NO_ROOM: u8 = 75;

/// ArcGIS webhooks in — verified, deduplicated, durable — out to Kafka, RabbitMQ, HTTP, email and files.
#[derive(Parser)]
#[command(name = "hookbridge", version)]
struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        default_value = "routes.toml",
        env = "HOOKBRIDGE_CONFIG"
    )]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve,
    /// Validate the config; print each problem with its key path and exit 1 if any.
    Check,
    /// Dry-run a payload: events, dedup keys, matching routes and what each sink would send.
    Explain {
        /// The hook the payload would arrive on.
        #[arg(long)]
        hook: String,
        /// Treat the file as this content type (default: form for *.form files, else JSON).
        #[arg(long)]
        content_type: Option<String>,
        /// A request header, `Name: value` (repeatable): the ones a sender reads, such as
        /// `X-GitHub-Event` or `webhook-id`.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The payload file.
        file: PathBuf,
    },
    /// Print the x-esriHook-Signature value for a body.
    Sign {
        /// The signature key (inline, env:NAME or file:/path).
        #[arg(long)]
        key: String,
        /// The body file.
        file: PathBuf,
    },
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Inspect and act on dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// ArcGIS's side of a hook.
    Arcgis {
        #[command(subcommand)]
        command: ArcgisCommand,
    },
}

#[derive(Subcommand)]
enum ArcgisCommand {
    /// The webhooks ArcGIS has on a hook's feature service (`hooks.NAME.service`).
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// List them: id, name, active, payload URL, change types, whether a key is set.
    List(HookArgs),
    /// Register one for the hook: its URL, its first secret as the signature key, all
    /// feature change types, JSON; ArcGIS checks the URL with a CRC challenge.
    Create(HookArgs),
    /// Compare each with the hook and say what to fix; exit 1 if anything is.
    Check(HookArgs),
}

#[derive(Args)]
struct HookArgs {
    /// The hook.
    #[arg(long)]
    hook: String,
    /// The hook's public URL as ArcGIS reaches it (`https://hooks.example.org/hooks/NAME`);
    /// required by `create`.
    #[arg(long)]
    url: Option<String>,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Events, pending deliveries per sink, dead letters, disk used.
    Stats,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List(Filter),
    /// Put dead letters back in their sinks' queues.
    Replay(Filter),
    /// Delete dead letters.
    Purge(Filter),
}

#[derive(Args)]
struct Filter {
    /// Only this sink's.
    #[arg(long)]
    sink: Option<String>,
    /// Only this event's.
    #[arg(long)]
    id: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry =
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::filter::filter_fn(
                hookbridge::serve::loggable,
            ));
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check => Ok(check(&cli.config)),
        Command::Sign { key, file } => {
            let key = Secret::resolve(&key)
                .map_err(anyhow::Error::msg)
                .context("--key")?;
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            println!(
                "{}",
                hookbridge::signature::arcgis::sign(key.expose().as_bytes(), &body)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            hook,
            content_type,
            headers,
            file,
        } => {
            let headers = headers
                .iter()
                .map(|h| {
                    h.split_once(':')
                        .map(|(n, v)| (n.trim(), v.trim()))
                        .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected \"Name: value\""))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let config = Config::load(&cli.config)?;
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let encoding = match content_type {
                Some(ct) => BodyEncoding::from_content_type(Some(&ct))?,
                None if file.extension().is_some_and(|e| e == "form")
                    || body.starts_with(b"payload=") =>
                {
                    BodyEncoding::Form
                }
                None => BodyEncoding::Json,
            };
            let explanation =
                hookbridge::explain::explain(&config, &hook, &headers, encoding, &body)?;
            println!("{}", serde_json::to_string_pretty(&explanation)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let config = Config::load(&cli.config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(hookbridge::serve::serve(config));
            // A thread stuck in the store (see serve::close_by) must not hold the exit up.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(ServeError::Queue(e @ QueueError::NoRoomToStart { .. })) => {
                    tracing::error!(error = %e, exit = EXIT_NO_ROOM, "not starting: the queue's disk is full");
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_NO_ROOM))
                }
                Err(e) => {
                    tracing::error!(error = %e, "serve failed");
                    Err(e.into())
                }
            }
        }
        Command::Queue {
            command: QueueCommand::Stats,
        } => {
            let config = Config::load(&cli.config)?;
            let stats = match open_queue(&config)? {
                Store::Offline(queue) => {
                    let stats = serde_json::to_value(queue.stats(config.sinks.keys())?)?;
                    queue.close()?;
                    stats
                }
                Store::Running(admin) => admin.call(Method::Get, "/admin/queue", &[])?,
            };
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => dlq(&cli.config, command),
        Command::Arcgis {
            command: ArcgisCommand::Webhooks { command },
        } => webhooks(&cli.config, command),
    }
}

/// `hookbridge arcgis webhooks ...`: prints the report; exit 1 when it found something to fix.
fn webhooks(path: &Path, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let (op, args) = match &command {
        WebhooksCommand::List(a) => (Op::List, a),
        WebhooksCommand::Create(a) => (Op::Create, a),
        WebhooksCommand::Check(a) => (Op::Check, a),
    };
    let report = hookbridge::webhooks::run(&config, op, &args.hook, args.url.as_deref())?;
    print!("{}", report.text);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            for w in c.warnings() {
                println!("{}: warning: {w}", path.display());
            }
            println!(
                "{}: ok ({} hooks, {} sinks, routes valid)",
                path.display(),
                c.hooks.len(),
                c.sinks.len()
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            println!("{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The queue, opened directly (daemon stopped) or through the admin API (daemon running).
enum Store {
    Offline(std::sync::Arc<Queue>),
    Running(AdminClient),
}

/// Opens the queue of a stopped daemon, or reaches a running one through its admin API.
fn open_queue(config: &Config) -> anyhow::Result<Store> {
    match Queue::open(&config.storage.path, config.storage.retention()) {
        Ok(q) => Ok(Store::Offline(q)),
        Err(e @ QueueError::Locked(_)) => match &config.server.admin_token {
            Some(token) => Ok(Store::Running(AdminClient::new(config, token.expose())?)),
            None => bail!(
                "the data directory {} is in use: is `hookbridge serve` running? Stop it, or set server.admin_token to use the admin API ({e})",
                config.storage.path.display()
            ),
        },
        Err(e) => Err(e.into()),
    }
}

/// The filter's `sink` and `id`, as the admin API's query.
fn query(f: &Filter) -> Vec<(&str, &str)> {
    [("sink", f.sink.as_deref()), ("id", f.id.as_deref())]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

fn dlq(config: &Path, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let queue = match open_queue(&config)? {
        Store::Offline(q) => q,
        Store::Running(admin) => {
            match &command {
                DlqCommand::List(f) => println!(
                    "{}",
                    serde_json::to_string_pretty(&admin.call(
                        Method::Get,
                        "/admin/dlq",
                        &query(f)
                    )?)?
                ),
                DlqCommand::Replay(f) => println!(
                    "replayed {} dead letter(s)",
                    admin.call(Method::Post, "/admin/dlq/replay", &query(f))?["replayed"]
                ),
                DlqCommand::Purge(f) => println!(
                    "purged {} dead letter(s)",
                    admin.call(Method::Post, "/admin/dlq/purge", &query(f))?["purged"]
                ),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let result = match &command {
        DlqCommand::List(f) => {
            let letters = queue.dead_letters(f.sink.as_deref(), f.id.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&letters)?);
            Ok(())
        }
        DlqCommand::Replay(f) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let n = runtime.block_on(queue.replay(f.sink.clone(), f.id.clone()))?;
            println!("replayed {n} dead letter(s)");
            Ok(())
        }
        DlqCommand::Purge(f) => {
            let n = queue.purge(f.sink.as_deref(), f.id.as_deref())?;
            println!("purged {n} dead letter(s)");
            Ok(())
        }
    };
    queue.close()?;
    result.map(|_| ExitCode::SUCCESS)
}
