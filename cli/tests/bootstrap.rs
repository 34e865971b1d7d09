//! `grapevine bootstrap` as the only contact of three line-mode peers, which find each other
//! through it and chat; SIGTERM stops it cleanly; its log on a pipe is plain text.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use common::{LOOPBACK, Sandbox, WAIT};

/// A running bootstrap node, killed on drop.
struct Bootstrap {
    child: Child,
    addrs: mpsc::Receiver<String>,
}

impl Bootstrap {
    /// Starts `grapevine bootstrap` on loopback in `sandbox`, its stderr to `stderr`.
    fn start(sandbox: &Sandbox, stderr: Stdio) -> Self {
        let mut command = sandbox.command();
        command
            .arg("--data-dir")
            .arg(sandbox.data_dir("bootstrap"))
            .args(["--no-mdns", "--listen", LOOPBACK, "bootstrap"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("starting grapevine bootstrap");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, addrs: rx }
    }

    /// The first address it prints.
    fn addr(&self) -> String {
        self.addrs
            .recv_timeout(WAIT)
            .expect("the bootstrap node prints its address")
    }

    /// Sends SIGTERM and waits for a clean stop.
    fn terminate(&mut self) {
        common::terminate(self.child.id());
        let status = common::wait_exit(&mut self.child, WAIT).expect("bootstrap stops on SIGTERM");
        assert_eq!(status.code(), Some(0), "a clean stop on SIGTERM");
    }
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_bootstrap_node_is_the_only_contact_three_peers_need_to_chat() {
    let sandbox = Sandbox::new();
    let mut bootstrap = Bootstrap::start(&sandbox, Stdio::null());
    let addr = bootstrap.addr();
    assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{addr}");
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(sandbox.data_dir("bootstrap"))
        .arg("id")
        .output()
        .expect("running id");
    let id = String::from_utf8(output.stdout).expect("UTF-8");
    let peer_id = common::peer_id_of(&addr);
    assert!(
        id.contains(&format!("peer id:    {peer_id}")),
        "the printed address ends with /p2p/<its peer id>: {addr} vs {id}"
    );

    let names = ["ana", "bo", "chidi"];
    let mut peers: Vec<common::Peer> = names
        .iter()
        .map(|name| {
            sandbox.chat(
                name,
                &["--room", "lobby", "--nick", name, "--bootstrap", &addr],
            )
        })
        .collect();
    let ids: Vec<String> = peers.iter_mut().map(common::Peer::peer_id).collect();
    // Each peer finds the two others as room members, with the bootstrap node's help only.
    for peer in &mut peers {
        let others: Vec<String> = ids
            .iter()
            .filter(|id| **id != peer.peer_id())
            .cloned()
            .collect();
        peer.wait_for("both other peers as room members", |v| {
            v["event"] == "room_peers"
                && v["room"] == "lobby"
                && others.iter().all(|id| {
                    v["peers"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p == id))
                })
        });
    }
    for (peer, name) in peers.iter_mut().zip(names) {
        peer.send(&format!("hello from {name}"));
    }
    for peer in &mut peers {
        for name in names {
            peer.wait_event(
                "message",
                &[("body", &format!("hello from {name}")), ("nick", name)],
            );
        }
    }
    for peer in peers {
        assert_eq!(peer.quit().code(), Some(0));
    }

    bootstrap.terminate();
}

#[test]
fn logs_written_to_a_pipe_are_plain_text_without_library_noise() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.path().join("bootstrap.stderr");
    let file = std::fs::File::create(&stderr).expect("creating a stderr file");
    let mut bootstrap = Bootstrap::start(&sandbox, file.into());
    bootstrap.addr();
    // Kademlia's complaint about knowing no peers came half a second after the start.
    std::thread::sleep(std::time::Duration::from_secs(2));
    bootstrap.terminate();
    let log = std::fs::read_to_string(&stderr).expect("reading stderr");
    assert!(log.contains("bootstrap node running"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a pipe: {log:?}"
    );
    assert!(!log.contains("local_peer_id"), "{log}");
    assert!(!log.contains("Failed to trigger bootstrap"), "{log}");
}
