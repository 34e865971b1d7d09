//! Ctrl-C, SIGTERM and SIGHUP (a closed terminal) as one "stop" the program can wait for, so
//! every command shuts down the same way: store everything, then exit.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Waits for the first signal asking the program to stop.
#[derive(Debug)]
pub(crate) struct Stop {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Stop {
    /// Installs the handlers; from now on these signals no longer kill the process outright.
    pub(crate) fn new() -> Result<Self> {
        let install = |kind| signal(kind).context("installing a signal handler");
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// Returns when SIGINT, SIGTERM or SIGHUP arrives.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}
