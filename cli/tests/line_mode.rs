//! `grapevine chat --plain` processes on loopback: they chat both ways (messages, an edit, a
//! deletion, a reaction, a nickname), keep running through bad input, store what they saw for
//! `history`, and take a message from `grapevine send`; Ctrl-C and SIGTERM stop them promptly
//! even while stdin stays open.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{LOOPBACK, Sandbox};
use serde_json::Value;

/// The first eight hex digits of a record id: what a user types after `/edit`, `/delete` or
/// `/react`.
fn prefix(id: &Value) -> String {
    id.as_str().expect("ids are strings")[..8].to_string()
}

/// `(event, id, body)` of every record in a `history --json` listing.
fn records(lines: &[Value]) -> BTreeSet<(String, String, String)> {
    lines
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap_or_default().to_string(),
                v["id"].as_str().unwrap_or_default().to_string(),
                v["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_line_mode_peers_chat_both_ways_and_keep_the_same_history() {
    let sandbox = Sandbox::new();
    let mut ana = sandbox.chat("ana", &["--room", "lobby", "--nick", "ana"]);
    let ana_addr = ana.addr();
    let ana_id = common::peer_id_of(&ana_addr);
    let mut bo = sandbox.chat(
        "bo",
        &["--room", "lobby", "--nick", "bo", "--bootstrap", &ana_addr],
    );
    let bo_id = bo.peer_id();
    bo.wait_event("peer_connected", &[("peer", &ana_id)]);
    ana.wait_event("peer_connected", &[("peer", &bo_id)]);

    ana.send("hello from ana");
    let from_ana = ana.wait_event("message", &[("body", "hello from ana"), ("nick", "ana")]);
    let seen = bo.wait_event("message", &[("body", "hello from ana")]);
    assert_eq!(seen["id"], from_ana["id"]);
    assert_eq!(seen["author"], from_ana["author"]);
    assert_eq!(seen["nick"], "ana");
    assert_eq!(seen["room"], "lobby");
    assert!(
        seen["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "RFC 3339 in UTC: {seen}"
    );

    bo.send("hi ana, bo here");
    let from_bo = ana.wait_event("message", &[("body", "hi ana, bo here"), ("nick", "bo")]);
    bo.send("a message to take back");
    let mistake = ana.wait_event("message", &[("body", "a message to take back")]);

    ana.send(&format!(
        "/edit {} hello from ana (edited)",
        prefix(&from_ana["id"])
    ));
    let edit = bo.wait_event("edit", &[("body", "hello from ana (edited)")]);
    assert_eq!(edit["target"], from_ana["id"]);

    bo.send(&format!("/delete {}", prefix(&mistake["id"])));
    let id = mistake["id"].as_str().expect("id");
    ana.wait_event("delete", &[("target", id)]);

    ana.send(&format!("/react {} 👍", prefix(&from_bo["id"])));
    let id = from_bo["id"].as_str().expect("id");
    let reaction = bo.wait_event("reaction", &[("target", id), ("reaction", "👍")]);
    assert_eq!(reaction["on"], true);
    assert_eq!(reaction["author"], from_ana["author"]);

    bo.send("/nick bobby");
    ana.wait_event("nick", &[("nick", "bobby"), ("room", "lobby")]);
    bo.send("now as bobby");
    ana.wait_event("message", &[("body", "now as bobby"), ("nick", "bobby")]);
    // Another's message can be reacted to, but not edited.
    bo.send(&format!("/edit {} hijacked", prefix(&from_ana["id"])));
    bo.wait_for("error for editing another's message", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("not yours"))
    });

    assert_eq!(ana.quit().code(), Some(0));
    assert_eq!(bo.quit().code(), Some(0));

    let ana_history = common::history_json(&sandbox, "ana", "lobby");
    let bo_history = common::history_json(&sandbox, "bo", "lobby");
    assert_eq!(
        records(&ana_history),
        records(&bo_history),
        "both peers hold the same records"
    );
    let bodies: Vec<&str> = ana_history
        .iter()
        .filter(|v| v["event"] == "message")
        .filter_map(|v| v["body"].as_str())
        .collect();
    for body in [
        "hello from ana",
        "hi ana, bo here",
        "a message to take back",
        "now as bobby",
    ] {
        assert!(bodies.contains(&body), "{body} missing from {bodies:?}");
    }
    for event in ["edit", "delete", "reaction", "nick"] {
        assert!(
            ana_history.iter().any(|v| v["event"] == event),
            "no {event} in the history"
        );
    }

    let text = sandbox
        .run()
        .arg("--data-dir")
        .arg(sandbox.data_dir("bo"))
        .args(["history", "lobby"])
        .output()
        .expect("running history");
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).expect("UTF-8");
    assert!(text.contains("hello from ana (edited)  (edited)"), "{text}");
    assert!(text.contains("hi ana, bo here  👍×1"), "{text}");
    assert!(text.contains("(deleted)"), "{text}");
    assert!(!text.contains("a message to take back"), "{text}");
    assert!(
        text.contains("bobby·"),
        "nicknames with a short key: {text}"
    );
    assert_eq!(text.lines().count(), 4, "one line per message: {text}");
}

#[test]
fn bad_line_mode_input_is_answered_with_errors_and_the_peer_keeps_running() {
    let sandbox = Sandbox::new();
    let mut ana = sandbox.chat("ana", &["--room", "lobby"]);
    ana.wait_event("joined", &[("room", "lobby")]);
    let error_about = |ana: &mut common::Peer, what: &str| {
        ana.wait_for(&format!("error about {what}"), |v| {
            v["event"] == "error" && v["message"].as_str().is_some_and(|m| m.contains(what))
        });
    };
    ana.send("/frobnicate");
    error_about(&mut ana, "unknown command /frobnicate");
    ana.send("/edit");
    error_about(&mut ana, "usage: /edit ID TEXT");
    ana.send_bytes(b"caf\xe9 \xff\xfe\n");
    error_about(&mut ana, "not UTF-8");
    ana.send("/react 0000 x");
    error_about(&mut ana, "no message in this room has an id starting 0000");
    ana.send("/connect nowhere");
    error_about(&mut ana, "not a multiaddr");
    ana.send("/help");
    ana.wait_event("help", &[]);
    ana.send("still here");
    ana.wait_event("message", &[("body", "still here")]);
    ana.send("/join second");
    ana.wait_event("joined", &[("room", "second")]);
    ana.send("/leave");
    ana.wait_event("left", &[("room", "second")]);
    // The end of input stops line mode as /quit does.
    ana.close_stdin();
    assert_eq!(ana.wait_exit().code(), Some(0));
    let history = common::history_json(&sandbox, "ana", "lobby");
    assert_eq!(
        history
            .iter()
            .filter(|v| v["event"] == "message")
            .map(|v| v["body"].clone())
            .collect::<Vec<_>>(),
        ["still here"]
    );
}

#[test]
fn send_hands_one_message_to_a_running_peer_and_exits_0() {
    let sandbox = Sandbox::new();
    let mut ana = sandbox.chat("ana", &["--room", "news"]);
    let addr = ana.addr();
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(sandbox.data_dir("sender"))
        .args(["--no-mdns", "--listen", LOOPBACK, "--bootstrap", &addr])
        .args(["send", "news", "extra, extra", "--timeout", "15s"])
        .output()
        .expect("running send");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("send prints one JSON line");
    assert_eq!(printed["event"], "message");
    assert_eq!(printed["body"], "extra, extra");
    let received = ana.wait_event("message", &[("body", "extra, extra"), ("room", "news")]);
    assert_eq!(received["id"], printed["id"]);
    assert_eq!(ana.quit().code(), Some(0));
    let history = common::history_json(&sandbox, "sender", "news");
    assert!(history.iter().any(|v| v["id"] == printed["id"]));
}

/// How long a peer may take to store everything and exit once asked to stop by a signal: far
/// above what it needs, far below [`common::WAIT`], so a peer that waits for its input to end
/// fails the test.
const SIGNAL_EXIT: Duration = Duration::from_secs(8);

/// Posts a message, sends the signal `name` while stdin stays open, and checks that the peer
/// exits 0 within [`SIGNAL_EXIT`] with the message stored.
fn stops_on_signal_with_stdin_open(name: &str) {
    let sandbox = Sandbox::new();
    let mut ana = sandbox.chat("ana", &["--room", "lobby"]);
    let body = format!("posted before SIG{name}");
    ana.send(&body);
    ana.wait_event("message", &[("body", &body)]);
    common::signal(ana.pid(), name);
    let status = ana.wait_exit_within(SIGNAL_EXIT);
    assert_eq!(status.code(), Some(0), "SIG{name} is a clean stop");
    let history = common::history_json(&sandbox, "ana", "lobby");
    assert!(
        history.iter().any(|v| v["body"] == body.as_str()),
        "{body} missing from {history:?}"
    );
}

#[test]
fn sigterm_stops_line_mode_while_stdin_stays_open() {
    stops_on_signal_with_stdin_open("TERM");
}

#[test]
fn ctrl_c_stops_line_mode_while_stdin_stays_open() {
    stops_on_signal_with_stdin_open("INT");
}

#[test]
fn a_failed_connect_names_the_address_and_the_reason() {
    let sandbox = Sandbox::new();
    let mut ana = sandbox.chat("ana", &["--room", "lobby"]);
    ana.wait_event("joined", &[("room", "lobby")]);
    // A loopback port nobody listens on: one just given back by the kernel.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let closed = format!("/ip4/127.0.0.1/tcp/{port}");
    ana.send(&format!("/connect {closed}"));
    let error = ana.wait_for("error about the failed /connect", |v| {
        v["event"] == "error" && v["message"].as_str().is_some_and(|m| m.contains(&closed))
    });
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains("refused"),
        "the reason is given: {message}"
    );

    // A dial that succeeds adds nothing to the `peer_connected` line.
    let mut bo = sandbox.chat("bo", &["--room", "lobby"]);
    let bo_addr = bo.addr();
    ana.send(&format!("/connect {bo_addr}"));
    ana.wait_event("peer_connected", &[("peer", &common::peer_id_of(&bo_addr))]);
    let (status, lines) = ana.finish();
    assert_eq!(status.code(), Some(0));
    let errors: Vec<&Value> = lines.iter().filter(|v| v["event"] == "error").collect();
    assert_eq!(errors, [&error], "one error, for the failed dial");
}
