//! Where logs go: a file for the chat client (the screen belongs to the chat), stderr for the
//! headless commands. The level comes from `RUST_LOG` (default `info`).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::settings::LOG_FILE;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
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
        .with_env_filter(filter())
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .log_internal_errors(false)
        .init();
    Ok(path)
}

/// Sends logs to stderr.
pub(crate) fn to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .init();
}
