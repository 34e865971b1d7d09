//! The command line as clap parses it: raw values, checked only for their syntax. `settings`
//! turns them, with the config file and the environment, into what the program runs with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use grapevine_node::crdt::record::MAX_TEXT_BYTES;
use libp2p::Multiaddr;

/// Peer-to-peer chat with no server: rooms are kept by their members and travel by gossip.
#[derive(Debug, Parser)]
#[command(name = "grapevine", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command accepts. Each also reads a `GRAPEVINE_*` environment variable, and the
/// config file fills in what neither gives.
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// Where the device key and the rooms are kept [default: the platform's data directory]
    #[arg(long, global = true, env = "GRAPEVINE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable) [default: every interface,
    /// TCP and QUIC, on free ports]
    #[arg(
        long = "listen",
        global = true,
        env = "GRAPEVINE_LISTEN",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub(crate) listen: Vec<Multiaddr>,
    /// Peer to dial at start, ideally ending in /p2p/<peer id> (repeatable)
    #[arg(
        long = "bootstrap",
        global = true,
        env = "GRAPEVINE_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Do not look for peers on the local network (mDNS)
    #[arg(long, global = true, env = "GRAPEVINE_NO_MDNS")]
    pub(crate) no_mdns: bool,
    /// TOML config file [default: config.toml in the platform's config directory, if present]
    #[arg(long, global = true, env = "GRAPEVINE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Chat in the terminal (a line mode for scripts with --plain or when stdin is not a terminal)
    Chat(ChatArgs),
    /// Run a long-lived node that helps others find each other and relays for peers behind NAT
    Bootstrap,
    /// Try Grapevine alone: the chat client in a room with a few local peers that answer
    Demo,
    /// Print this device's peer id and public key (creating the key on first use)
    Id,
    /// Print a room's stored history without going online (also while chat runs)
    History(HistoryArgs),
    /// Post one message and wait until a peer holds it
    Send(SendArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Print the manual page (roff)
    Man,
}

/// Flags of `grapevine chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// Room to join at start (repeatable); the first one is shown first
    #[arg(
        long = "room",
        env = "GRAPEVINE_ROOM",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub(crate) rooms: Vec<String>,
    /// Nickname to set in the rooms joined
    #[arg(long, env = "GRAPEVINE_NICK", value_name = "NAME")]
    pub(crate) nick: Option<String>,
    /// Line mode: one input line per message or command, one JSON object per output line
    #[arg(long)]
    pub(crate) plain: bool,
}

/// Arguments of `grapevine history`.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The room's name
    pub(crate) room: String,
    /// One JSON object per record (the line-mode schema) instead of readable text
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `grapevine send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The room's name
    pub(crate) room: String,
    /// The message
    #[arg(value_parser = parse_message)]
    pub(crate) text: String,
    /// Give up after this long without a peer holding the message, e.g. 30s or 2m
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

/// Arguments of `grapevine completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    pub(crate) shell: clap_complete::Shell,
}

/// A message text a record can carry: not empty, at most [`MAX_TEXT_BYTES`] bytes.
fn parse_message(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the message is empty: give the text to send".to_string());
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "the message is {} bytes long; at most {MAX_TEXT_BYTES} fit in one",
            text.len()
        ));
    }
    Ok(text.to_string())
}

/// Reads `90`, `90s`, `1500ms`, `2m` or `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 1500ms, 2m or 1h"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "" | "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        _ => return Err(format!("unknown unit `{unit}`: use ms, s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_message_must_fit_a_record() {
        assert_eq!(parse_message("hi"), Ok("hi".to_string()));
        assert!(parse_message("").is_err());
        assert!(parse_message(&"x".repeat(MAX_TEXT_BYTES)).is_ok());
        assert!(parse_message(&"x".repeat(MAX_TEXT_BYTES + 1)).is_err());
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }
}
