//! `grapevine demo` with stdin piped runs in line mode: the demo peers join and answer.

mod common;

use common::{Peer, Sandbox};

/// The demo peers' nicknames.
const DEMO_PEERS: [&str; 4] = ["ana", "bo", "chidi", "dee"];

#[test]
fn demo_peers_join_and_answer_the_newcomer() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command();
    // The demo keeps its peers in a temporary directory; the data directory only holds logs.
    command
        .arg("--data-dir")
        .arg(sandbox.data_dir("newcomer"))
        .arg("demo");
    let mut demo = Peer::spawn("demo", command, &sandbox.path().join("demo.stderr"));
    demo.wait_event("joined", &[("room", "demo")]);
    let me = demo.wait_event("nick", &[("nick", "you")])["author"].clone();
    for nick in DEMO_PEERS {
        demo.wait_event("nick", &[("nick", nick), ("room", "demo")]);
    }
    demo.send("hello demo");
    let mine = demo.wait_event("message", &[("body", "hello demo")]);
    let id = mine["id"].as_str().expect("id").to_string();
    demo.wait_for("an answer from a demo peer", |v| {
        v["event"] == "message"
            && v["author"] != me
            && v["nick"].as_str().is_some_and(|n| DEMO_PEERS.contains(&n))
            && v["sent_at"].as_str() > mine["sent_at"].as_str()
    });
    demo.wait_event("reaction", &[("target", &id), ("nick", "bo")]);
    assert_eq!(demo.quit().code(), Some(0));
}
