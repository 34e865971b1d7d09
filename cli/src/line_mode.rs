//! `grapevine chat --plain`: for scripts and harnesses. Each input line is a message for the
//! current room or a slash command; each output line is one JSON object ([`Output`]). Runs
//! until stdin closes, `/quit`, Ctrl-C or SIGTERM, then stores everything and exits.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use grapevine_node::crdt::PublicKey;
use grapevine_node::{NodeEvent, NodeHandle};
use tokio::sync::mpsc;

use crate::input::{self, Input};
use crate::output::Output;
use crate::session::Session;

/// Longest input line: far above the longest message (4 KiB), so only junk is refused.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Input lines read ahead of the loop: a script that writes faster than the node answers waits.
const INPUT_LINE_CAPACITY: usize = 16;

/// Writes output lines to stdout, flushing each so a reader sees it at once.
struct Printer {
    stdout: std::io::Stdout,
}

impl Printer {
    fn print(&mut self, outputs: impl IntoIterator<Item = Output>) -> Result<()> {
        let mut out = self.stdout.lock();
        for output in outputs {
            writeln!(out, "{}", output.to_json()).context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")
    }
}

/// Runs line mode on a started node until the input ends; shuts the node down (storing
/// everything) before returning.
pub(crate) async fn run(
    node: NodeHandle,
    mut events: mpsc::Receiver<NodeEvent>,
    me: PublicKey,
    rooms: &[String],
    nick: Option<&str>,
) -> Result<()> {
    let mut printer = Printer {
        stdout: std::io::stdout(),
    };
    let (mut session, outputs) = Session::start(node.clone(), me, rooms, nick).await?;
    // Every way out, a reader gone from stdout too, passes the node's shutdown below, which
    // stores what it received.
    let result = async {
        printer.print(outputs)?;
        let mut stop = crate::signals::Stop::new()?;
        let mut lines = spawn_stdin_reader();
        loop {
            let outputs = tokio::select! {
                read = lines.recv() => match read {
                    Some(Ok(line)) => match handle_line(&mut session, &line).await {
                        Some(outputs) => outputs,
                        None => break Ok(()),
                    },
                    Some(Err(e)) => break Err(anyhow::Error::new(e).context("reading stdin")),
                    None => break Ok(()),
                },
                event = events.recv() => match event {
                    Some(event) => session.on_event(&event),
                    None => break Ok(()),
                },
                // A peer reached is reported by its `peer_connected` line already.
                connected = session.connect_finished() => connected.err().into_iter().collect(),
                () = stop.wait() => break Ok(()),
            };
            if let Err(e) = printer.print(outputs) {
                break Err(e);
            }
        }
    }
    .await;
    node.shutdown().await.context("storing the rooms")?;
    result
}

/// Reads stdin on a thread of its own and forwards each line; the channel closes at the end of
/// input, or after forwarding a read error. Not `tokio::io::stdin`: its read runs on the
/// runtime's blocking pool, which the runtime waits for when it shuts down, so Ctrl-C or SIGTERM
/// could not end the program until stdin closed. This thread is never joined: the process exits
/// without waiting for it.
fn spawn_stdin_reader() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(INPUT_LINE_CAPACITY);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let read = match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => Ok(line),
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The outputs for one input line; `None` for `/quit`.
async fn handle_line(session: &mut Session, line: &[u8]) -> Option<Vec<Output>> {
    let error = |message: String| Some(vec![Output::Error { message }]);
    if line.len() > MAX_LINE_BYTES {
        return error(format!("line of {} bytes ignored: too long", line.len()));
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return error("line ignored: not UTF-8".to_string());
    };
    match input::parse(line) {
        Ok(None) => Some(Vec::new()),
        Ok(Some(Input::Quit)) => None,
        Ok(Some(input)) => match session.on_input(input).await {
            Ok(outputs) => Some(outputs),
            Err(message) => error(message),
        },
        Err(message) => error(message),
    }
}
