//! The `grapevine` binary: raw arguments become validated [`settings::Settings`], then one
//! command runs. Exit codes: 0 done, 1 failed while running, 2 bad input (flags, addresses,
//! config file, data directory, unknown room).

mod args;
mod bootstrap;
mod demo;
mod history;
mod input;
mod line_mode;
mod logging;
mod output;
mod reference;
mod send;
mod session;
mod settings;
mod signals;
mod tui;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use grapevine_cli::sanitize;
use grapevine_node::crdt::Identity;
use grapevine_node::error::causes;
use grapevine_node::{IDENTITY_FILE, Node};

use args::{ChatArgs, Cli, Command};
use settings::{Settings, SettingsError};

/// Input the user must fix; reported in one line with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return command_line_error(&error),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if reader_went_away(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let usage = error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<SettingsError>().is_some()
                || error
                    .downcast_ref::<grapevine_node::NodeError>()
                    .is_some_and(is_usage_error);
            eprintln!("grapevine: {}", causes(error.as_ref()));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// `--help`, `--version` and the help shown when no command is given print as clap writes them;
/// a mistake on the command line is one line on stderr with exit code 2, like every other bad
/// input.
fn command_line_error(error: &clap::Error) -> ExitCode {
    let code = u8::try_from(error.exit_code()).unwrap_or(2);
    if !error.use_stderr()
        || error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        return match error.print() {
            Ok(()) => ExitCode::from(code),
            Err(_) => ExitCode::FAILURE,
        };
    }
    eprintln!(
        "grapevine: {} (see --help)",
        one_line(&error.render().to_string())
    );
    ExitCode::from(code)
}

/// Whether the command failed only because whoever read its output stopped reading (a closed
/// pipe, as after `grapevine history lobby | head`): what was asked for is done as far as anyone
/// reads it, so that ends quietly, as Unix tools end there.
fn reader_went_away(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Clap's error text in one line: the message with the lines that continue it and its tips,
/// without the usage and the pointer to `--help` that follow.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim);
    let first = lines.next().unwrap_or_default();
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let footer =
        |line: &&str| line.starts_with("Usage:") || line.starts_with("For more information");
    for line in lines.take_while(|line| !footer(line)) {
        if line.is_empty() {
            continue;
        }
        message.push_str(if line.starts_with("tip:") { "; " } else { " " });
        message.push_str(line);
    }
    message
}

/// Node errors caused by what the user typed rather than by the machine or the network.
fn is_usage_error(error: &grapevine_node::NodeError) -> bool {
    matches!(error, grapevine_node::NodeError::RoomName(_))
}

/// Turns the errors a user can fix into a [`UsageError`] that says what to do: an address that
/// cannot be listened on, and a data directory another grapevine process holds (its rooms are
/// locked while open, as two writers would corrupt them). Others pass unchanged.
fn explain(error: anyhow::Error, settings: &Settings) -> anyhow::Error {
    use grapevine_node::NodeError;
    use grapevine_node::crdt::RoomError;
    use grapevine_node::crdt::store::StoreError;
    for cause in error.chain() {
        if let Some(NodeError::Listen { addr, reason, kind }) = cause.downcast_ref::<NodeError>() {
            let advice = match kind {
                Some(std::io::ErrorKind::AddrInUse) => {
                    "another program holds that port: stop it, or pick another port with --listen"
                }
                Some(std::io::ErrorKind::AddrNotAvailable) => {
                    "this machine has no such address: pick one of its own with --listen"
                }
                _ => "pick another address with --listen",
            };
            return UsageError(format!("cannot listen on {addr}: {reason} ({advice})")).into();
        }
        let busy = matches!(
            cause.downcast_ref::<RoomError>(),
            Some(RoomError::Store(StoreError::RoomBusy { .. }))
        ) || matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::RoomBusy { .. })
        );
        if busy {
            return UsageError(format!(
                "data directory {} is in use by another grapevine process: stop that process, \
                 or pass another --data-dir",
                settings.data_dir.display()
            ))
            .into();
        }
    }
    error
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completions(args) => return reference::completions(args.shell),
        Command::Man => return reference::manual_page(),
        _ => {}
    }
    let settings = Settings::resolve(&cli.common)?;
    settings.prepare_data_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    run_command(cli.command, &settings, &runtime).map_err(|error| explain(error, &settings))
}

/// Runs a command that works on the data directory.
fn run_command(
    command: Command,
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    match command {
        Command::Id => print_id(settings),
        Command::History(args) => {
            logging::to_stderr();
            history::run(settings, &args.room, args.json)
        }
        Command::Send(args) => {
            logging::to_stderr();
            runtime.block_on(send::run(settings, &args.room, &args.text, args.timeout))
        }
        Command::Chat(args) => {
            logging::to_file(&settings.log_dir)?;
            runtime.block_on(chat(settings, args))
        }
        Command::Bootstrap => {
            logging::to_stderr();
            runtime.block_on(bootstrap::run(settings))
        }
        Command::Demo => {
            logging::to_file(&settings.log_dir)?;
            runtime.block_on(demo::run(std::io::stdin().is_terminal()))
        }
        Command::Completions(_) | Command::Man => Ok(()),
    }
}

/// Loads (or creates) the device key.
fn identity(settings: &Settings) -> Result<Identity> {
    let path = settings.data_dir.join(IDENTITY_FILE);
    Identity::load_or_create(&path)
        .with_context(|| format!("loading the device key {}", path.display()))
}

fn print_id(settings: &Settings) -> Result<()> {
    let identity = identity(settings)?;
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(identity.secret_bytes())
        .context("deriving the peer id")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "peer id:    {}", keypair.public().to_peer_id())?;
    writeln!(out, "public key: {}", identity.public_key())?;
    out.flush()?;
    Ok(())
}

async fn chat(settings: &Settings, args: ChatArgs) -> Result<()> {
    let me = identity(settings)?.public_key();
    let mut rooms = args.rooms.clone();
    rooms.extend(
        settings
            .rooms
            .iter()
            .filter(|r| !args.rooms.contains(r))
            .cloned(),
    );
    let nick = settings.chat_nick(args.nick.as_deref())?;
    let nick = nick.as_deref();
    let (node, events) = Node::spawn(settings.node_config()).await?;
    if args.plain || !std::io::stdin().is_terminal() {
        line_mode::run(node, events, me, &rooms, nick).await
    } else {
        tui::run(node, events, me, &rooms, nick).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_names_each_cause_once() {
        use grapevine_node::NodeError;
        use grapevine_node::crdt::RoomError;
        use grapevine_node::crdt::store::StoreError;
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let cause = full.to_string();
        let store = StoreError::Io {
            path: "rooms/x/epoch-0.log".into(),
            source: full,
        };
        let error = anyhow::Error::new(NodeError::Room(RoomError::Store(store)))
            .context("storing the rooms");
        let line = causes(error.as_ref());
        assert!(line.starts_with("storing the rooms: room: I/O error on rooms/x/epoch-0.log"));
        assert_eq!(line.matches("epoch-0.log").count(), 1, "{line}");
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
    }

    #[test]
    fn command_line_errors_read_as_one_line() {
        let error = Cli::try_parse_from(["grapevine", "send", "lobby"]).unwrap_err();
        let line = one_line(&error.render().to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<TEXT>"), "{line}");
        assert!(!line.contains("Usage"), "{line}");
        let error = Cli::try_parse_from(["grapevine", "--listen", "x", "id"]).unwrap_err();
        let line = one_line(&error.render().to_string());
        assert!(line.ends_with("invalid multiaddr"), "{line}");
        let error = Cli::try_parse_from(["grapevine", "chta"]).unwrap_err();
        let line = one_line(&error.render().to_string());
        assert!(line.contains("'chta'") && line.contains("tip:"), "{line}");
    }
}
