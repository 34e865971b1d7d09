//! Every command of the real binary, and every kind of bad input: what is printed, and the exit
//! code (0 done, 1 failed while running, 2 bad input with a one-line message).

mod common;

use std::process::Output;

use common::{LOOPBACK, Sandbox};
use predicates::prelude::*;

/// The public key's length in base32 characters.
const KEY_CHARS: usize = 52;

/// Stderr of a bad-input run: exactly one line, starting with the program's name.
fn one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "bad input must exit 2; stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "bad input must be reported in one line, got:\n{stderr}"
    );
    assert!(stderr.starts_with("grapevine: "), "{stderr}");
    stderr
}

/// Runs `args` in `sandbox` expecting bad input; returns the one-line message.
fn bad_input(sandbox: &Sandbox, args: &[&str]) -> String {
    let output = sandbox
        .run()
        .args(args)
        .output()
        .expect("running grapevine");
    one_line_error(&output)
}

/// The peer id and public key printed by `grapevine id`.
fn id(sandbox: &Sandbox, args: &[&str]) -> (String, String) {
    let output = sandbox
        .run()
        .args(args)
        .arg("id")
        .output()
        .expect("running id");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` line in {stdout}"))
    };
    (field("peer id:"), field("public key:"))
}

#[test]
fn help_lists_every_command() {
    let sandbox = Sandbox::new();
    let mut assert = sandbox.run().arg("--help").assert().success();
    for command in [
        "chat",
        "bootstrap",
        "demo",
        "id",
        "history",
        "send",
        "completions",
        "man",
        "--data-dir",
        "--listen",
        "--bootstrap",
        "--no-mdns",
        "--config",
    ] {
        assert = assert.stdout(predicate::str::contains(command));
    }
    sandbox
        .run()
        .args(["chat", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--plain").and(predicate::str::contains("--nick")));
}

#[test]
fn version_prints_the_package_version() {
    Sandbox::new()
        .run()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("grapevine {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn id_prints_the_same_peer_id_and_key_on_every_run() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let dir = dir.to_str().expect("UTF-8 path");
    let (peer, key) = id(&sandbox, &["--data-dir", dir]);
    assert!(peer.starts_with("12D3KooW"), "peer id: {peer}");
    assert_eq!(key.len(), KEY_CHARS, "public key: {key}");
    assert!(
        key.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "public key: {key}"
    );
    assert_eq!(id(&sandbox, &["--data-dir", dir]), (peer.clone(), key));
    let other = sandbox.data_dir("bo");
    let (other_peer, _) = id(&sandbox, &["--data-dir", other.to_str().expect("UTF-8")]);
    assert_ne!(other_peer, peer, "each data directory has its own key");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let sandbox = Sandbox::new();
    sandbox
        .run()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("_grapevine()").and(predicate::str::contains("bootstrap")),
        );
    sandbox
        .run()
        .args(["completions", "zsh"])
        .assert()
        .success()
        .stdout(predicate::str::contains("#compdef grapevine"));
    let mut man = sandbox.run().arg("man").assert().success();
    // One page for everything: every command with its own arguments and flags, and no
    // reference to a page per command that nothing installs.
    for text in [
        ".TH grapevine",
        "grapevine bootstrap",
        "grapevine send",
        "\\-\\-room",
        "\\-\\-nick",
        "\\-\\-plain",
        "\\-\\-json",
        "\\-\\-timeout",
        "<\\fITEXT\\fR>",
    ] {
        man = man.stdout(predicate::str::contains(text));
    }
    man.stdout(predicate::str::contains("grapevine-chat(1)").not());
    bad_input(&sandbox, &["completions", "tcsh"]);
}

/// Runs `grapevine ARGS` with its stdout a pipe whose reading end is closed before the program
/// writes anything, as when `head` has read its lines and gone, and with stdin held open; checks
/// that it ends quietly with 0.
fn ends_quietly_when_the_reader_is_gone(sandbox: &Sandbox, args: &[&str]) {
    let (reader, writer) = std::io::pipe().expect("making a pipe");
    drop(reader);
    let stderr_file = sandbox.path().join("stderr");
    let mut child = sandbox
        .command()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(writer)
        .stderr(std::fs::File::create(&stderr_file).expect("creating a stderr file"))
        .spawn()
        .expect("running grapevine");
    let status = common::wait_exit(&mut child, common::WAIT);
    let stderr = std::fs::read_to_string(&stderr_file).expect("reading stderr");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "{args:?}: {status:?} {stderr}"
    );
}

#[test]
fn completions_and_the_man_page_end_quietly_when_the_reader_stops_early() {
    let sandbox = Sandbox::new();
    for command in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
        &["id"],
    ] {
        ends_quietly_when_the_reader_is_gone(&sandbox, command);
    }
}

#[test]
fn history_and_line_mode_end_quietly_when_the_reader_stops_early_and_keep_what_they_stored() {
    let sandbox = Sandbox::new();
    let mut ana = sandbox.chat("ana", &[]);
    ana.wait_event("joined", &[("room", "lobby")]);
    ana.send("stored before the reader went");
    ana.wait_event("message", &[("body", "stored before the reader went")]);
    assert!(ana.quit().success());
    let dir = sandbox.data_dir("ana");
    let dir = dir.to_str().expect("a UTF-8 path");
    for command in [
        &["--data-dir", dir, "history", "lobby"][..],
        &["--data-dir", dir, "history", "lobby", "--json"],
        // Line mode's first line (an address it listens on) meets the closed pipe: it stops,
        // storing its rooms as on any other way out.
        &[
            "--data-dir",
            dir,
            "--no-mdns",
            "--listen",
            LOOPBACK,
            "chat",
            "--plain",
        ],
    ] {
        ends_quietly_when_the_reader_is_gone(&sandbox, command);
    }
    let history = common::history_json(&sandbox, "ana", "lobby");
    assert!(
        history
            .iter()
            .any(|line| line["body"] == "stored before the reader went"),
        "{history:?}"
    );
}

#[test]
fn unknown_flags_and_commands_exit_2_with_a_one_line_message() {
    let sandbox = Sandbox::new();
    let message = bad_input(&sandbox, &["--frobnicate", "id"]);
    assert!(message.contains("--frobnicate"), "{message}");
    assert!(message.contains("--help"), "says where to look: {message}");
    let message = bad_input(&sandbox, &["frobnicate"]);
    assert!(message.contains("frobnicate"), "{message}");
    let message = bad_input(&sandbox, &["chat", "--plain", "--colour"]);
    assert!(message.contains("--colour"), "{message}");
    // With no command at all, the help is shown (on stderr), as the command line is wrong.
    sandbox
        .run()
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: grapevine"));
    let message = bad_input(&sandbox, &["send", "lobby"]);
    assert!(
        message.contains("TEXT"),
        "names the missing argument: {message}"
    );
    let message = bad_input(&sandbox, &["send", "lobby", "hi", "--timeout", "soon"]);
    assert!(message.contains("duration"), "{message}");
}

#[test]
fn bad_multiaddrs_exit_2() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let dir = dir.to_str().expect("UTF-8 path");
    let message = bad_input(&sandbox, &["--listen", "127.0.0.1:4001", "id"]);
    assert!(message.contains("127.0.0.1:4001"), "{message}");
    assert_eq!(message.matches("--help").count(), 1, "{message}");
    let message = bad_input(&sandbox, &["--bootstrap", "/ip4/999.1.1.1/tcp/1", "id"]);
    assert!(message.contains("999.1.1.1"), "{message}");
    // A well-formed address this machine does not have (TEST-NET-1) is refused when listening.
    let output = sandbox
        .run()
        .args([
            "--data-dir",
            dir,
            "--no-mdns",
            "--listen",
            "/ip4/192.0.2.1/tcp/0",
        ])
        .args(["chat", "--plain"])
        .write_stdin("")
        .output()
        .expect("running chat");
    let message = one_line_error(&output);
    assert!(message.contains("192.0.2.1"), "{message}");
}

#[test]
fn a_port_another_program_holds_exits_2_saying_it_is_in_use() {
    let sandbox = Sandbox::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("taking a port");
    let port = taken.local_addr().expect("the port taken").port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let dir = sandbox.data_dir("boot");
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&dir)
        .args(["--no-mdns", "--listen", &addr, "bootstrap"])
        .output()
        .expect("running bootstrap");
    let message = one_line_error(&output);
    assert!(message.contains(&addr), "{message}");
    assert!(
        message.to_lowercase().contains("in use"),
        "says why: {message}"
    );
    assert!(message.contains("--listen"), "says what to do: {message}");
}

#[test]
fn an_empty_nickname_exits_2_saying_what_a_nickname_must_be() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--no-mdns",
            "--listen",
            LOOPBACK,
            "chat",
            "--plain",
            "--nick",
            "",
        ])
        .write_stdin("")
        .output()
        .expect("running chat");
    let message = one_line_error(&output);
    assert!(message.contains("nickname"), "{message}");
    assert!(message.contains("--nick"), "says what to do: {message}");
}

#[test]
fn a_data_directory_in_use_by_another_process_exits_2_saying_so() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let mut first = sandbox.chat("ana", &[]);
    first.wait_event("joined", &[("room", "lobby")]);
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&dir)
        .args(["--no-mdns", "--listen", LOOPBACK, "chat", "--plain"])
        .write_stdin("")
        .output()
        .expect("running a second grapevine");
    let message = one_line_error(&output);
    assert!(message.contains("another grapevine process"), "{message}");
    assert!(message.contains("--data-dir"), "says what to do: {message}");
    assert!(first.quit().success());
}

#[test]
fn history_shows_what_a_running_chat_stored_while_it_holds_the_data_directory() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let mut ana = sandbox.chat("ana", &["--nick", "ana"]);
    ana.wait_event("joined", &[("room", "lobby")]);
    let said = ["first, while chat runs", "second, while chat runs"];
    for body in said {
        ana.send(body);
        ana.wait_event("message", &[("body", body)]);
    }

    let history = common::history_json(&sandbox, "ana", "lobby");
    for body in said {
        assert!(
            history.iter().any(|line| line["body"] == body),
            "{body:?} missing: {history:?}"
        );
    }
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&dir)
        .args(["history", "lobby"])
        .output()
        .expect("running grapevine history");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("history is UTF-8");
    assert_eq!(text.lines().count(), said.len(), "{text}");
    for (line, body) in text.lines().zip(said) {
        assert!(line.contains(body) && line.contains("ana·"), "{line}");
    }

    // The chat never noticed: it goes on storing, and stops cleanly.
    ana.send("after the reads");
    ana.wait_event("message", &[("body", "after the reads")]);
    assert!(ana.quit().success());
    let history = common::history_json(&sandbox, "ana", "lobby");
    assert!(
        history.iter().any(|line| line["body"] == "after the reads"),
        "{history:?}"
    );
}

#[test]
fn an_unreadable_or_invalid_config_file_exits_2_naming_the_file() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("missing.toml");
    let missing = missing.to_str().expect("UTF-8 path");
    let message = bad_input(&sandbox, &["--config", missing, "id"]);
    assert!(message.contains(missing), "{message}");

    let dir_as_config = sandbox.path().to_str().expect("UTF-8 path");
    let message = bad_input(&sandbox, &["--config", dir_as_config, "id"]);
    assert!(message.contains(dir_as_config), "{message}");

    let invalid = sandbox.path().join("invalid.toml");
    for (text, expected) in [
        ("colour = \"red\"\n", "colour"),
        ("mdns = \"yes\"\n", "invalid type"),
        ("bootstrap = [\"nowhere\"]\n", "nowhere"),
        ("nick = \n", "invalid"),
    ] {
        std::fs::write(&invalid, text).expect("writing the config");
        let message = bad_input(
            &sandbox,
            &["--config", invalid.to_str().expect("UTF-8"), "id"],
        );
        assert!(message.contains("invalid.toml"), "{text}: {message}");
        assert!(message.contains(expected), "{text}: {message}");
    }
}

#[test]
fn an_unusable_data_directory_exits_2() {
    // Tests may run as root, who can write anywhere: a path under a regular file is unusable
    // for everyone.
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("writing a file");
    let dir = file.join("data");
    let dir = dir.to_str().expect("UTF-8 path");
    for command in [&["id"][..], &["history", "lobby"], &["chat", "--plain"]] {
        let output = sandbox
            .run()
            .args(["--data-dir", dir, "--no-mdns"])
            .args(command)
            .write_stdin("")
            .output()
            .expect("running grapevine");
        let message = one_line_error(&output);
        assert!(message.contains(dir), "{command:?}: {message}");
        assert!(message.contains("--data-dir"), "says what to do: {message}");
    }
    assert_eq!(
        std::fs::read_to_string(&file).expect("reading the file"),
        "not a directory",
        "nothing is overwritten"
    );
}

#[test]
fn history_of_an_unknown_room_exits_2_and_says_how_to_join_it() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let dir = dir.to_str().expect("UTF-8 path");
    let message = bad_input(&sandbox, &["--data-dir", dir, "history", "nowhere"]);
    assert!(message.contains("nowhere"), "{message}");
    assert!(
        message.contains("grapevine chat --room nowhere"),
        "says what to do: {message}"
    );
    let message = bad_input(&sandbox, &["--data-dir", dir, "history", "two words"]);
    assert!(message.contains("room name"), "{message}");
}

#[test]
fn send_with_no_peer_reachable_gives_up_after_its_timeout() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let started = std::time::Instant::now();
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&dir)
        .args(["--no-mdns", "--listen", LOOPBACK])
        .args(["send", "lobby", "anyone?", "--timeout", "2s"])
        .output()
        .expect("running send");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("grapevine: no peer joined the room within 2s"),
        "{stderr}"
    );
    assert!(stderr.contains("nobody to ask"), "says why: {stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(output.stdout.is_empty(), "nothing printed as sent");
}

#[test]
fn send_names_the_contact_it_could_not_reach_and_why() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    // A port just given back by the system: nothing listens there, so a dial is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port();
    let contact = format!("/ip4/127.0.0.1/tcp/{port}");
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&dir)
        .args(["--no-mdns", "--listen", LOOPBACK, "--bootstrap", &contact])
        .args(["send", "lobby", "anyone?", "--timeout", "500ms"])
        .output()
        .expect("running send");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("within 500ms"), "{stderr}");
    assert!(
        stderr.contains(&format!("could not reach {contact}: ")),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("refused"),
        "says why: {stderr}"
    );
    assert!(stderr.contains("--bootstrap"), "says what to do: {stderr}");
    assert!(output.stdout.is_empty(), "nothing printed as sent");
}

#[test]
fn send_refuses_an_empty_message_as_bad_input() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("ana");
    let dir = dir.to_str().expect("UTF-8 path");
    let message = bad_input(&sandbox, &["--data-dir", dir, "send", "lobby", ""]);
    assert!(message.contains("empty"), "{message}");
}

#[test]
fn grapevine_environment_variables_act_as_flags() {
    let sandbox = Sandbox::new();
    let dir = sandbox.data_dir("env");
    let mut command = sandbox.run();
    command.env("GRAPEVINE_DATA_DIR", &dir).arg("id");
    command.assert().success();
    assert!(
        dir.join("identity.key").exists(),
        "the key is in GRAPEVINE_DATA_DIR"
    );

    let invalid = sandbox.path().join("env.toml");
    std::fs::write(&invalid, "colour = 1\n").expect("writing the config");
    let output = sandbox
        .run()
        .env("GRAPEVINE_CONFIG", &invalid)
        .arg("id")
        .output()
        .expect("running id");
    assert!(one_line_error(&output).contains("env.toml"));
    let output = sandbox
        .run()
        .env("GRAPEVINE_BOOTSTRAP", "nowhere")
        .arg("id")
        .output()
        .expect("running id");
    assert!(one_line_error(&output).contains("nowhere"));

    let mut command = sandbox.command();
    command
        .env("GRAPEVINE_DATA_DIR", &dir)
        .env("GRAPEVINE_LISTEN", LOOPBACK)
        .env("GRAPEVINE_NO_MDNS", "true")
        .env("GRAPEVINE_ROOM", "envroom")
        .env("GRAPEVINE_NICK", "envnick")
        .args(["chat", "--plain"]);
    let mut peer = common::Peer::spawn("env", command, &sandbox.path().join("env.stderr"));
    peer.wait_event("joined", &[("room", "envroom")]);
    peer.wait_event("nick", &[("room", "envroom"), ("nick", "envnick")]);
    let addr = peer.addr();
    assert!(
        peer.seen()
            .iter()
            .filter(|v| v["event"] == "listening")
            .all(|v| v["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))),
        "listens only where GRAPEVINE_LISTEN says: {:?}",
        peer.seen()
    );
    assert!(peer.quit().success());
    let (peer_id, _) = id(&sandbox, &["--data-dir", dir.to_str().expect("UTF-8")]);
    assert_eq!(common::peer_id_of(&addr), peer_id);
}

#[test]
fn config_file_values_take_effect_and_flags_override_them() {
    let sandbox = Sandbox::new();
    let config_dir = sandbox.data_dir("from-config");
    let config = sandbox.path().join("grapevine.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {config_dir:?}\nlisten = [\"{LOOPBACK}\"]\nmdns = false\n\
             nick = \"cfgnick\"\nrooms = [\"cfgroom\"]\n"
        ),
    )
    .expect("writing the config");
    let config = config.to_str().expect("UTF-8 path");

    let (from_config, _) = id(&sandbox, &["--config", config]);
    assert!(config_dir.join("identity.key").exists());

    let mut command = sandbox.command();
    command.args(["--config", config, "chat", "--plain"]);
    let mut peer = common::Peer::spawn("cfg", command, &sandbox.path().join("cfg.stderr"));
    peer.wait_event("joined", &[("room", "cfgroom")]);
    peer.wait_event("nick", &[("room", "cfgroom"), ("nick", "cfgnick")]);
    assert_eq!(
        peer.peer_id(),
        from_config,
        "runs on the config's data directory"
    );
    assert!(peer.quit().success());

    // The default config file is read when no --config is given.
    let default = sandbox.path().join("home/.config/grapevine");
    std::fs::create_dir_all(&default).expect("creating the config directory");
    std::fs::copy(config, default.join("config.toml")).expect("installing the config");
    assert_eq!(id(&sandbox, &[]).0, from_config);

    let flag_dir = sandbox.data_dir("from-flags");
    let mut command = sandbox.command();
    command.arg("--data-dir").arg(&flag_dir).args([
        "chat", "--plain", "--nick", "flagnick", "--room", "flagroom",
    ]);
    let mut peer = common::Peer::spawn("flags", command, &sandbox.path().join("flags.stderr"));
    peer.wait_event("joined", &[("room", "flagroom")]);
    peer.wait_event("joined", &[("room", "cfgroom")]);
    peer.wait_event("nick", &[("room", "flagroom"), ("nick", "flagnick")]);
    peer.send("/rooms");
    let rooms = peer.wait_event("rooms", &[]);
    assert_eq!(rooms["current"], "flagroom", "a --room given comes first");
    assert!(peer.quit().success());
    assert!(flag_dir.join("identity.key").exists());
    let flag_id = id(&sandbox, &["--data-dir", flag_dir.to_str().expect("UTF-8")]).0;
    assert_ne!(
        flag_id, from_config,
        "--data-dir overrides the config's data-dir"
    );
}
