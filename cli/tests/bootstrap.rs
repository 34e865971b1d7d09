//! `grapevine bootstrap` as the only contact of three line-mode peers, which find each other
//! through it and chat; SIGTERM stops it cleanly.

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

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_bootstrap_node_is_the_only_contact_three_peers_need_to_chat() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command();
    command
        .arg("--data-dir")
        .arg(sandbox.data_dir("bootstrap"))
        .args(["--no-mdns", "--listen", LOOPBACK, "bootstrap"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
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
    let mut bootstrap = Bootstrap { child, addrs: rx };
    let addr = bootstrap
        .addrs
        .recv_timeout(WAIT)
        .expect("the bootstrap node prints its address");
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

    common::terminate(bootstrap.child.id());
    let status = common::wait_exit(&mut bootstrap.child, WAIT).expect("bootstrap stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "a clean stop on SIGTERM");
}
