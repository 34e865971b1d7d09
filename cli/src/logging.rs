//! Where logs go: a file for the chat client (the screen belongs to the chat), stderr for the
//! headless commands. The level comes from `RUST_LOG` (default `info`), over a few directives
//! that quiet libraries' lines of no use to the user; `RUST_LOG` can name those targets again.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::settings::LOG_FILE;

/// The level when `RUST_LOG` is not set.
const DEFAULT_LEVEL: &str = "info";
/// Lines of libraries that say nothing the user can act on: libp2p's swarm logs the peer id at
/// `info` on every start (`grapevine id` prints it), and Kademlia warns `Failed to trigger
/// bootstrap: No known peers.` every few minutes on a node that knows no other, as the first
/// bootstrap node of a network does.
const QUIET_LIBRARIES: &str = "libp2p_swarm=warn,libp2p_kad::behaviour=error";

/// The filter: the quiet directives, then `RUST_LOG` (or the default level). A later directive
/// for the same target replaces an earlier one, so `RUST_LOG=libp2p_kad=debug` still works.
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let level = rust_log.unwrap_or(DEFAULT_LEVEL);
    EnvFilter::try_new(format!("{QUIET_LIBRARIES},{level}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{QUIET_LIBRARIES},{DEFAULT_LEVEL}")))
}

/// The filter for this process's `RUST_LOG`.
fn env_filter() -> EnvFilter {
    filter(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref())
}

/// Colour only for a person looking at a terminal: escape codes in a file or in journald are
/// noise, and `NO_COLOR` (set and not empty, <https://no-color.org>) turns colour off anyway.
fn colour_on_stderr(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Sends logs to `grapevine.log` in `dir` (appending); returns the file's path. A line the file
/// does not take (a full disk, a file system turned read-only) is dropped without a word: the
/// chat reports the disk's failure itself, and stderr is the chat's screen, which a complaint
/// from the logger for every line would garble.
pub(crate) fn to_file(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating log directory {}", dir.display()))?;
    let path = dir.join(LOG_FILE);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening log file {}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .log_internal_errors(false)
        .init();
    Ok(path)
}

/// Sends logs to stderr, in colour only on a terminal.
pub(crate) fn to_stderr() {
    let colour = colour_on_stderr(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn colour_is_for_a_terminal_without_no_color() {
        assert!(colour_on_stderr(true, None));
        assert!(!colour_on_stderr(false, None));
        assert!(!colour_on_stderr(true, Some("1".as_ref())));
        assert!(
            colour_on_stderr(true, Some("".as_ref())),
            "an empty NO_COLOR is unset"
        );
    }

    #[test]
    fn rust_log_sets_the_level_and_can_name_the_quieted_libraries_again() {
        let text = filter(None).to_string();
        assert!(text.contains("libp2p_swarm=warn"), "{text}");
        assert_eq!(filter(None).max_level_hint(), Some(LevelFilter::INFO));
        let text = filter(Some("debug")).to_string();
        assert!(text.contains("libp2p_kad::behaviour=error"), "{text}");
        assert_eq!(
            filter(Some("debug")).max_level_hint(),
            Some(LevelFilter::DEBUG)
        );
        let text = filter(Some("libp2p_swarm=debug")).to_string();
        assert!(text.contains("libp2p_swarm=debug"), "{text}");
        assert!(!text.contains("libp2p_swarm=warn"), "{text}");
        let text = filter(Some("no=such=directive")).to_string();
        assert!(
            text.contains("info"),
            "a bad RUST_LOG falls back to the default: {text}"
        );
    }
}
