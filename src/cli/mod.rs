//! The command line: `serve` runs Herald; the other commands are small
//! clients for trying it out, scripting and debugging receivers.

mod batches;
mod deliveries;
mod emit;
mod gates;
mod listen;
mod migrate;
mod output;
mod progress;
mod schedules;
mod server;
mod silence;
mod status;
mod subs;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::{Overrides, Settings};
use crate::core::signature::SigningSecret;
use crate::telemetry::{self, LogFormat};

pub(crate) use server::{cause_chain, connect, status_error};
pub use server::{Authed, Bearer, ServerArg, DEFAULT_SERVER};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Aggregate refresh notifications: durable batch state and signed webhooks"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Herald server.
    Serve(ServeArgs),
    /// Send one event to a Herald server, as the engine would.
    Emit(Box<emit::EmitArgs>),
    /// Read batch state.
    #[command(subcommand)]
    Batches(batches::BatchesCommand),
    /// The delivery log, redelivery, replay (admin token).
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
    /// Subscriptions managed over the admin API (admin token).
    #[command(subcommand)]
    Subs(subs::SubsCommand),
    /// Silences: mute matching alerts for a maintenance window (admin
    /// token adds and expires, reader token lists).
    #[command(subcommand)]
    Silence(silence::SilenceCommand),
    /// Wait until a cube's refresh finishes. Exit 0 succeeded, 2 failed,
    /// 3 timed out or stalled, 1 Herald unreachable or bad usage. With
    /// -o json|yaml: the outcome and the batch as it stands.
    Wait(wait::WaitArgs),
    /// Each refresh schedule: last success, when it becomes overdue, and
    /// whether it is.
    Schedules(schedules::SchedulesArgs),
    /// Each dependency gate ([[gates]]): open or waiting, and for what.
    Gates(gates::GatesArgs),
    /// The console's overview in the terminal: each cube's state, last
    /// success and next expected refresh, and the receivers in trouble.
    Status(status::StatusArgs),
    /// Receive webhooks locally: verify signatures and print each event.
    Listen(listen::ListenArgs),
    /// Check the configuration as `serve` would, without starting: exit 0
    /// when it is valid, 1 with the same message as `serve` when not.
    CheckConfig(ServeArgs),
    /// Print a new random webhook signing secret (`whsec_…`).
    Secret,
    /// Measure throughput, latency, isolation, recovery and memory on this
    /// machine (loopback only).
    Bench(crate::bench::BenchArgs),
    /// Copy a SQLite store into an empty PostgreSQL database and verify
    /// the row counts (SQLite to PostgreSQL only).
    Migrate(migrate::MigrateArgs),
    /// Print a shell completion script, e.g.
    /// `herald completions bash > /etc/bash_completion.d/herald`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), e.g. `herald man | man -l -`.
    Man,
}

/// The shells `herald completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The command line as clap sees it: for completions, the man page and
/// the tests of its help texts.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn print_completions(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command(), "herald", &mut std::io::stdout());
}

fn print_man_page() -> anyhow::Result<()> {
    clap_mangen::Man::new(command()).render(&mut std::io::stdout())?;
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; without one Herald runs on the defaults.
    #[arg(long, short, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (overrides `server.grpc_listen`).
    #[arg(long, env = "HERALD_GRPC_LISTEN")]
    grpc_listen: Option<String>,
    /// Operations HTTP address for /metrics, /healthz, /readyz, or "off"
    /// (overrides `server.http_listen`).
    #[arg(long, env = "HERALD_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Database URL (overrides `store.url`).
    #[arg(long, env = "HERALD_STORE_URL")]
    store_url: Option<String>,
    /// Allow listening on a non-loopback address without [[tokens]].
    #[arg(long)]
    insecure: bool,
}

pub async fn run() -> ExitCode {
    // Usage errors exit 1, not clap's 2: for `herald wait`, 2 means "the
    // refresh failed", and a script must be able to tell the two apart.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Wait(args) => return wait::run(args).await,
        Command::Serve(args) => {
            telemetry::init(cli.log_format);
            serve(args).await
        }
        Command::CheckConfig(args) => check_config(args).await,
        Command::Emit(args) => emit::run(*args).await,
        Command::Batches(command) => batches::run(command).await,
        Command::Deliveries(command) => deliveries::run(command).await,
        Command::Subs(command) => subs::run(command).await,
        Command::Silence(command) => silence::run(command).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Schedules(args) => schedules::run(args).await,
        Command::Gates(args) => gates::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Completions { shell } => {
            print_completions(shell);
            Ok(())
        }
        Command::Man => print_man_page(),
        Command::Secret => {
            println!("{}", SigningSecret::generate().expose());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cause_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The settings `serve` would run with: the file, then environment
/// variables and flags.
fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let overrides = Overrides {
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
        store_url: args.store_url,
        insecure: args.insecure,
    };
    Ok(Settings::load(args.config.as_deref(), &overrides)?)
}

/// Everything `serve` checks before it opens the store and the ports,
/// with the same messages; nothing is started or written.
async fn check_config(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(args)?;
    crate::app::check_settings(&settings).await?;
    println!(
        "ok: {} subscriptions, {} schedules, store {}",
        settings.subscriptions.len(),
        settings.schedules.len(),
        settings.store.url
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(settings(args.clone())?).await?;
    // SIGHUP reads the file again, with the same environment and flags.
    let reloading = tokio::spawn(app.reloader().on_hangup(move || settings(args.clone())));
    let served = app.run_until_stopped(shutdown_signal()).await;
    reloading.abort();
    Ok(served?)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}

/// Parses a point in time: RFC 3339, `now`, or a duration meaning that
/// long ago (`6h`, `30m`).
pub(crate) fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if text == "now" {
        return Ok(chrono::Utc::now());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = crate::config::parse_duration(text)
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a duration like 6h"))?;
    crate::core::time::checked_before(chrono::Utc::now(), ago)
        .ok_or_else(|| format!("`{text}` ago is before any date Herald can represent"))
}

#[cfg(test)]
mod tests {
    /// Every flag and argument of every command, with the path to it.
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_and_command_has_help_text() {
        let mut command = super::command();
        command.build();
        let mut all = Vec::new();
        arguments(&command, "herald", &mut all);
        let missing: Vec<String> = all
            .iter()
            .filter(|(_, arg)| arg.get_help().is_none())
            .map(|(path, arg)| format!("{path} --{}", arg.get_id()))
            .collect();
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        fn commands_without_about(command: &clap::Command, out: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    out.push(sub.get_name().to_owned());
                }
                commands_without_about(sub, out);
            }
        }
        let mut bare = Vec::new();
        commands_without_about(&command, &mut bare);
        assert!(bare.is_empty(), "no about text: {bare:?}");
    }

    #[test]
    fn subs_enable_and_disable_describe_themselves() {
        let command = super::command();
        let subs = command.find_subcommand("subs").unwrap();
        let about = |name: &str| {
            subs.find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        assert!(about("enable").starts_with("Resume"), "{}", about("enable"));
        assert!(
            about("disable").starts_with("Pause"),
            "{}",
            about("disable")
        );
    }
}
