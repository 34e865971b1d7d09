//! The terminal client driven in tmux: a message typed in one client shows in another, hostile
//! text from a line-mode peer is shown harmlessly, and Ctrl-C quits with exit code 0.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{LOOPBACK, Sandbox, WAIT};

/// The terminal size every client gets, wide enough that an address fits on one line.
const COLUMNS: u16 = 160;
const ROWS: u16 = 40;
/// How often the screen is read while waiting for something to appear.
const POLL: Duration = Duration::from_millis(100);

/// A tmux server of the test's own (its socket in the sandbox), killed on drop.
struct Tmux<'a> {
    sandbox: &'a Sandbox,
    socket: PathBuf,
}

impl<'a> Tmux<'a> {
    /// Starts nothing yet; fails clearly when tmux is not installed.
    fn new(sandbox: &'a Sandbox) -> Self {
        match Command::new("tmux").arg("-V").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!("`tmux -V` failed: {output:?}"),
            Err(e) => panic!(
                "the terminal client tests need tmux, which could not be run ({e}): install it \
                 (e.g. `apt-get install tmux`)"
            ),
        }
        Self {
            sandbox,
            socket: sandbox.path().join("tmux.sock"),
        }
    }

    /// Runs one tmux command against this server.
    fn tmux(&self, args: &[&str]) -> Output {
        let mut command = Command::new("tmux");
        self.sandbox.isolate(&mut command);
        let output = command
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux");
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        output
    }

    /// Starts `grapevine ARGS` in a detached session `name` of a fixed size; its exit code is
    /// written to `<name>.exit` in the sandbox.
    fn start(&self, name: &str, args: &[String]) {
        let mut line = format!("'{}'", env!("CARGO_BIN_EXE_grapevine"));
        for arg in args {
            assert!(!arg.contains('\''), "{arg}");
            line.push_str(&format!(" '{arg}'"));
        }
        let exit = self.exit_file(name);
        let script = format!("{line}; echo $? > '{}'", exit.display());
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &COLUMNS.to_string(),
            "-y",
            &ROWS.to_string(),
            &script,
        ]);
    }

    fn exit_file(&self, name: &str) -> PathBuf {
        self.sandbox.path().join(format!("{name}.exit"))
    }

    /// The screen of session `name` as text; with `escapes`, with the escape sequences tmux would
    /// send to draw its colours and attributes.
    fn screen(&self, name: &str, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", name];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.tmux(&args).stdout).into_owned()
    }

    /// Waits until the screen of `name` shows `text`; returns the screen.
    fn wait_for_text(&self, name: &str, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen(name, false);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not show {text:?} within {}s; screen:\n{screen}",
                WAIT.as_secs()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The loopback address the client in session `name` shows it listens on.
    fn listening_addr(&self, name: &str) -> String {
        let screen = self.wait_for_text(name, "listening on /ip4/127.0.0.1/tcp/");
        let addr = screen
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("an address after `listening on`")
            .to_string();
        common::peer_id_of(&addr);
        addr
    }

    /// Types `text` into session `name`, then Enter.
    fn type_line(&self, name: &str, text: &str) {
        self.tmux(&["send-keys", "-t", name, "-l", text]);
        self.tmux(&["send-keys", "-t", name, "Enter"]);
    }

    /// Waits for the program in session `name` to end; returns its exit code.
    fn exit_code(&self, name: &str) -> i32 {
        let deadline = Instant::now() + WAIT;
        let file = self.exit_file(name);
        loop {
            if let Ok(code) = std::fs::read_to_string(&file)
                && let Ok(code) = code.trim().parse()
            {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still running; screen:\n{}",
                self.screen(name, false)
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// The arguments of a terminal client for the peer `name`.
fn client_args(sandbox: &Sandbox, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--data-dir".to_string(),
        sandbox.data_dir(name).display().to_string(),
        "--no-mdns".into(),
        "--listen".into(),
        LOOPBACK.into(),
        "chat".into(),
        "--room".into(),
        "lobby".into(),
        "--nick".into(),
        name.into(),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    args
}

/// The parameters of every SGR (colour and attribute) sequence in `screen`, numbers only.
fn sgr_parameters(screen: &str) -> Vec<Vec<u16>> {
    screen
        .split("\u{1b}[")
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
            (rest[end..].starts_with('m')).then(|| {
                rest[..end]
                    .split(';')
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
        })
        .collect()
}

/// Whether an SGR parameter list sets red (foreground or background, normal or bright),
/// skipping the arguments of 256-colour and RGB colours.
fn sets_red(params: &[u16]) -> bool {
    let mut i = 0;
    while i < params.len() {
        match params[i] {
            31 | 41 | 91 | 101 => return true,
            38 | 48 if params.get(i + 1) == Some(&5) => {
                if params.get(i + 2) == Some(&1) || params.get(i + 2) == Some(&9) {
                    return true;
                }
                i += 3;
            }
            38 | 48 if params.get(i + 1) == Some(&2) => i += 5,
            _ => i += 1,
        }
    }
    false
}

#[test]
fn two_terminal_clients_chat_and_hostile_text_is_shown_harmlessly() {
    let sandbox = Sandbox::new();
    let tmux = Tmux::new(&sandbox);
    tmux.start("ana", &client_args(&sandbox, "ana", &[]));
    let addr = tmux.listening_addr("ana");
    tmux.start("bo", &client_args(&sandbox, "bo", &["--bootstrap", &addr]));
    let bo_addr = tmux.listening_addr("bo");
    tmux.wait_for_text("bo", "1 peers");
    tmux.wait_for_text("ana", "1 peers");

    tmux.type_line("ana", "hello from the terminal");
    tmux.wait_for_text("ana", "ana·");
    let screen = tmux.wait_for_text("bo", "hello from the terminal");
    assert!(
        screen.contains("ana·"),
        "the author's nickname shows: {screen}"
    );

    // The hostile peer knows both clients, and posts once both are room members, so its records
    // reach each of them directly by gossip.
    let bootstrap = format!("{addr},{bo_addr}");
    let mut mallory = sandbox.chat("mallory", &["--room", "lobby", "--bootstrap", &bootstrap]);
    let members = [common::peer_id_of(&addr), common::peer_id_of(&bo_addr)];
    mallory.wait_for("both clients as room members", |v| {
        v["event"] == "room_peers"
            && members.iter().all(|id| {
                v["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p == id))
            })
    });
    mallory.send("/nick \u{1b}[31mEVIL\u{1b}]0;title\u{7}");
    mallory.wait_event("nick", &[]);
    mallory.send("alert \u{1b}[31mRED\u{1b}]0;pwned\u{7} \u{202e}txt.exe \u{9b}2J");
    mallory.wait_for("its own hostile message", |v| {
        v["event"] == "message" && v["body"].as_str().is_some_and(|b| b.starts_with("alert"))
    });
    for client in ["ana", "bo"] {
        let screen = tmux.wait_for_text(client, "exe");
        assert!(
            screen.contains("[31mRED"),
            "the visible remains show: {screen}"
        );
        assert!(screen.contains("[31mEVIL"), "the nickname shows: {screen}");
        for bad in ['\u{1b}', '\u{7}', '\u{202e}', '\u{9b}'] {
            assert!(
                !screen.contains(bad),
                "{bad:?} reached the screen: {screen:?}"
            );
        }
        let coloured = tmux.screen(client, true);
        let red: Vec<_> = sgr_parameters(&coloured)
            .into_iter()
            .filter(|p| sets_red(p))
            .collect();
        assert!(
            red.is_empty(),
            "red leaked onto the screen: {red:?}\n{coloured:?}"
        );
        let title = tmux.tmux(&["display-message", "-p", "-t", client, "#{pane_title}"]);
        let title = String::from_utf8_lossy(&title.stdout);
        assert!(
            !title.contains("title") && !title.contains("pwned"),
            "the window title was changed: {title}"
        );
    }
    assert_eq!(mallory.quit().code(), Some(0));

    for client in ["ana", "bo"] {
        tmux.tmux(&["send-keys", "-t", client, "C-c"]);
        assert_eq!(tmux.exit_code(client), 0, "{client} exits 0 on Ctrl-C");
    }
    let history = common::history_json(&sandbox, "bo", "lobby");
    assert!(
        history
            .iter()
            .any(|v| v["body"] == "hello from the terminal"),
        "stored before exit: {history:?}"
    );
}

#[test]
fn red_is_recognised_in_every_sgr_form() {
    let screen = "\u{1b}[0m\u{1b}[36mok\u{1b}[1;31mred\u{1b}[38;5;1mred\u{1b}[38;2;31;0;0mnot";
    let params = sgr_parameters(screen);
    assert_eq!(params.len(), 5);
    let red: Vec<bool> = params.iter().map(|p| sets_red(p)).collect();
    assert_eq!(red, [false, false, true, true, false]);
}
