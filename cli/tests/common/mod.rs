//! Helpers shared by the CLI tests: the real `grapevine` binary in a sandbox of its own (home,
//! config and data directories in a temporary directory, no `GRAPEVINE_*` variable inherited),
//! and line-mode peers read one JSON line at a time. Every wait is bounded by [`WAIT`] and every
//! child process is killed when its handle is dropped.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);
/// Every test peer listens on loopback only, on a free port.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";
/// The environment variables the binary reads; none is inherited from the test's environment.
const GRAPEVINE_VARS: &[&str] = &[
    "GRAPEVINE_DATA_DIR",
    "GRAPEVINE_LISTEN",
    "GRAPEVINE_BOOTSTRAP",
    "GRAPEVINE_NO_MDNS",
    "GRAPEVINE_CONFIG",
    "GRAPEVINE_ROOM",
    "GRAPEVINE_NICK",
];

/// A temporary home for one test: the platform directories point into it, and each peer gets a
/// data directory of its own under it.
pub struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    /// A fresh, empty sandbox.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    /// The sandbox's root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory of the peer `name` (created by the binary on first use).
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.path().join("peers").join(name)
    }

    /// The binary with an environment that cannot reach the user's own files or settings.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_grapevine"));
        self.isolate(&mut command);
        command
    }

    /// Points `command`'s home and platform directories into the sandbox and removes every
    /// `GRAPEVINE_*` variable, so the user's own files and settings are out of reach.
    pub fn isolate(&self, command: &mut Command) {
        let home = self.path().join("home");
        command
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("RUST_LOG", "info");
        for var in GRAPEVINE_VARS {
            command.env_remove(var);
        }
    }

    /// [`Sandbox::command`] for a run to completion, bounded by [`WAIT`].
    pub fn run(&self) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::from_std(self.command());
        command.timeout(WAIT);
        command
    }

    /// `grapevine chat --plain` for the peer `name`, on loopback without mDNS, with `args` after.
    pub fn chat(&self, name: &str, args: &[&str]) -> Peer {
        self.chat_in(name, &self.data_dir(name), args)
    }

    /// [`Sandbox::chat`] with the data directory `data_dir`, wherever it is.
    pub fn chat_in(&self, name: &str, data_dir: &Path, args: &[&str]) -> Peer {
        let mut command = self.command();
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--no-mdns", "--listen", LOOPBACK, "chat", "--plain"])
            .args(args);
        Peer::spawn(name, command, &self.path().join(format!("{name}.stderr")))
    }
}

/// One line of a line-mode peer's output.
enum Line {
    Json(Value),
    /// A line that is not a JSON object: line mode must never print one.
    NotJson(String),
}

/// A running `grapevine` process whose stdout is one JSON object per line (line mode).
pub struct Peer {
    /// A name for messages about this peer.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Line>,
    seen: Vec<Value>,
    stderr: PathBuf,
}

impl Peer {
    /// Starts `command` with piped stdin and stdout; stderr goes to the file `stderr`.
    pub fn spawn(name: &str, mut command: Command, stderr: &Path) -> Self {
        let log = File::create(stderr).expect("creating a stderr file");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting grapevine");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let parsed = match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.is_object() => Line::Json(value),
                    _ => Line::NotJson(line),
                };
                if tx.send(parsed).is_err() {
                    return;
                }
            }
        });
        Self {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
            stderr: stderr.to_path_buf(),
        }
    }

    /// Writes one line (a newline is added).
    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Writes raw bytes to stdin.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: writing to stdin: {e}", self.name));
    }

    /// The first output line, old or new, that `matches`; fails after [`WAIT`] with everything
    /// seen so far.
    pub fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|v| matches(v)) {
            return found.clone();
        }
        self.wait_new(what, matches)
    }

    /// Waits until, for each of `values`, some `event` line, old or new, has it as its `key`;
    /// returns those lines. Fails when [`WAIT`] passes with no new one found.
    pub fn wait_all(
        &mut self,
        event: &str,
        key: &str,
        values: impl IntoIterator<Item = String>,
    ) -> Vec<Value> {
        let mut missing: BTreeSet<String> = values.into_iter().collect();
        let matches = |v: &Value, missing: &BTreeSet<String>| {
            v["event"] == event && v[key].as_str().is_some_and(|value| missing.contains(value))
        };
        let mut found = Vec::new();
        for line in &self.seen {
            if matches(line, &missing) {
                missing.remove(line[key].as_str().unwrap_or_default());
                found.push(line.clone());
            }
        }
        while let Some(first) = missing.first() {
            let what = format!(
                "{} more {event} events, such as {key} {first:?}",
                missing.len()
            );
            let line = self.wait_new(&what, |v| matches(v, &missing));
            missing.remove(line[key].as_str().unwrap_or_default());
            found.push(line);
        }
        found
    }

    /// The next new output line that `matches`; fails after [`WAIT`] with everything seen.
    fn wait_new(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Line::Json(value)) => {
                    self.seen.push(value.clone());
                    if matches(&value) {
                        return value;
                    }
                }
                Ok(Line::NotJson(line)) => self.fail(&format!(
                    "printed a line that is not a JSON object: {line:?}"
                )),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {what} within {}s", WAIT.as_secs()))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("stdout closed before {what}"))
                }
            }
        }
    }

    /// Waits for an event of kind `event` whose fields include every `(key, value)` of `fields`.
    pub fn wait_event(&mut self, event: &str, fields: &[(&str, &str)]) -> Value {
        let what = format!("{event} event with {fields:?}");
        self.wait_for(&what, |v| {
            v["event"] == event && fields.iter().all(|(key, value)| v[*key] == *value)
        })
    }

    /// The loopback address this peer listens on, with `/p2p/<peer id>`.
    pub fn addr(&mut self) -> String {
        let line = self.wait_for("loopback listening address", |v| {
            v["event"] == "listening"
                && v["addr"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
        });
        line["addr"].as_str().unwrap_or_default().to_string()
    }

    /// This peer's id, from its listening address.
    pub fn peer_id(&mut self) -> String {
        peer_id_of(&self.addr())
    }

    /// Every output line read so far.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }

    /// Sends `/quit` and waits for the process to exit.
    pub fn quit(mut self) -> ExitStatus {
        self.send("/quit");
        self.wait_exit()
    }

    /// Closes stdin (the end of input stops line mode).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits, bounded, for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(WAIT)
    }

    /// Waits at most `timeout` for the process to exit; fails if it is still running then.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> ExitStatus {
        match wait_exit(&mut self.child, timeout) {
            Some(status) => status,
            None => self.fail(&format!(
                "still running {}s after being asked to stop",
                timeout.as_secs()
            )),
        }
    }

    /// Sends `/quit`, waits for the process to exit, and returns its status with every line it
    /// printed.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>) {
        self.send("/quit");
        let status = self.wait_exit();
        (status, self.drain())
    }

    /// Kills the process with SIGKILL (no chance to store anything) and returns every line it
    /// printed, including those still in the pipe when it died.
    pub fn kill(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain()
    }

    /// Every line printed, once the process has exited.
    fn drain(&mut self) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Line::Json(value)) => self.seen.push(value),
                Ok(Line::NotJson(line)) => self.fail(&format!(
                    "printed a line that is not a JSON object: {line:?}"
                )),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.fail("stdout still open after the process ended")
                }
            }
        }
        std::mem::take(&mut self.seen)
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with what the peer printed, so a failure explains itself.
    pub fn fail(&self, problem: &str) -> ! {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let seen: Vec<String> = self.seen.iter().map(Value::to_string).collect();
        panic!(
            "{}: {problem}\n--- stdout lines ---\n{}\n--- stderr ---\n{stderr}",
            self.name,
            seen.join("\n")
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The peer id at the end of a multiaddr ending in `/p2p/<peer id>`.
pub fn peer_id_of(addr: &str) -> String {
    let (_, id) = addr
        .rsplit_once("/p2p/")
        .unwrap_or_else(|| panic!("{addr} does not end with /p2p/<peer id>"));
    id.to_string()
}

/// Sends SIGTERM to a process.
pub fn terminate(pid: u32) {
    signal(pid, "TERM");
}

/// Sends the signal `name` (as `kill` spells it: `TERM`, `INT`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The JSON lines of `grapevine history ROOM --json` for the peer `name`.
pub fn history_json(sandbox: &Sandbox, name: &str, room: &str) -> Vec<Value> {
    history_json_in(sandbox, &sandbox.data_dir(name), room)
}

/// The JSON lines of `grapevine history ROOM --json` for the data directory `data_dir`.
pub fn history_json_in(sandbox: &Sandbox, data_dir: &Path, room: &str) -> Vec<Value> {
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(data_dir)
        .args(["history", room, "--json"])
        .output()
        .expect("running grapevine history");
    assert!(
        output.status.success(),
        "history of {} failed: {}",
        data_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("history is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each history line is JSON"))
        .collect()
}
