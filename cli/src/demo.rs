//! `grapevine demo`: for a newcomer alone on one machine. The chat client opens in the room
//! `demo` with a few peers started in this process on loopback; they join one after another,
//! chat, answer the newcomer, react, and one leaves and comes back, so the network is seen
//! working at once. Everything lives in a temporary directory removed at exit.

use std::time::Duration;

use anyhow::{Context, Result};
use grapevine_node::crdt::{Body, Identity, PublicKey};
use grapevine_node::{Config, IDENTITY_FILE, Node, NodeEvent, NodeHandle};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The room of the demo.
const ROOM: &str = "demo";
/// The newcomer's nickname in the demo.
const NEWCOMER_NICK: &str = "you";
/// Delay between two demo peers joining.
const JOIN_GAP: Duration = Duration::from_millis(1500);
/// How long a demo peer takes to answer: long enough to look typed.
const ANSWER_DELAY: Duration = Duration::from_millis(800);

/// One demo peer: its nickname, what it says on arrival, its answer to the newcomer, and what it
/// says now and then.
struct Persona {
    nick: &'static str,
    hello: &'static str,
    answer: &'static str,
    chatter: &'static [&'static str],
    /// Leaves after this long and comes back after as long again.
    wanders: Option<Duration>,
}

const PERSONAS: [Persona; 4] = [
    Persona {
        nick: "ana",
        hello: "hi all 👋 this room lives only on our machines, no server anywhere",
        answer: "got it! your message is stored on my node now",
        chatter: &[
            "every message is signed by its author's key",
            "if you restart, your history is still there",
        ],
        wanders: None,
    },
    Persona {
        nick: "bo",
        hello: "hello! type something, we'll answer",
        answer: "seen here too 👍",
        chatter: &["try /react with an id from the right of a message"],
        wanders: None,
    },
    Persona {
        nick: "chidi",
        hello: "joined via gossip, synced the history on the way in",
        answer: "that reached me in a few milliseconds",
        chatter: &["/peers lists who you are connected to"],
        wanders: None,
    },
    Persona {
        nick: "dee",
        hello: "hey! I'll pop out for a bit later, watch the member count",
        answer: "welcome! /nick NAME sets your name, /help lists the rest",
        chatter: &["back again: I caught up on what I missed by sync"],
        wanders: Some(Duration::from_secs(40)),
    },
];

/// Runs the demo; `terminal` picks the full client, else line mode.
pub(crate) async fn run(terminal: bool) -> Result<()> {
    let dir = tempfile::tempdir().context("creating the demo's temporary directory")?;
    let loopback: Multiaddr = Multiaddr::empty()
        .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
        .with(Protocol::Tcp(0));
    let config = |name: &str, bootstrap: Vec<Multiaddr>| Config {
        data_dir: dir.path().join(name),
        listen_addrs: vec![loopback.clone()],
        bootstrap,
        mdns: false,
        ..Config::default()
    };
    let (node, events) = Node::spawn(config(NEWCOMER_NICK, Vec::new())).await?;
    let me = Identity::load(&dir.path().join(NEWCOMER_NICK).join(IDENTITY_FILE))
        .context("reading the demo key")?
        .public_key();
    let addr = node
        .shareable_addrs()
        .await?
        .into_iter()
        .next()
        .context("the demo node has no address")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut peers = JoinSet::new();
    for (i, persona) in PERSONAS.iter().enumerate() {
        let config = config(persona.nick, vec![addr.clone()]);
        let stop = stop_rx.clone();
        let start = JOIN_GAP * (u32::try_from(i).unwrap_or(0) + 1);
        peers.spawn(async move {
            if let Err(e) = demo_peer(persona, i, config, me, start, stop).await {
                tracing::warn!(peer = persona.nick, error = %e, "demo peer stopped");
            }
        });
    }
    let rooms = [ROOM.to_string()];
    let result = if terminal {
        crate::tui::run(node, events, me, &rooms, Some(NEWCOMER_NICK)).await
    } else {
        crate::line_mode::run(node, events, me, &rooms, Some(NEWCOMER_NICK)).await
    };
    let _ = stop_tx.send(true);
    while peers.join_next().await.is_some() {}
    result
}

/// One demo peer, from its arrival until the demo stops.
async fn demo_peer(
    persona: &'static Persona,
    index: usize,
    config: Config,
    newcomer: PublicKey,
    start: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    tokio::select! {
        () = tokio::time::sleep(start) => {}
        _ = stop.changed() => return Ok(()),
    }
    let (node, mut events) = Node::spawn(config).await?;
    node.join(ROOM).await?;
    node.set_nickname(ROOM, persona.nick).await?;
    node.post(ROOM, persona.hello).await?;
    let chatter_every = Duration::from_secs(25 + 7 * index as u64);
    let mut chatter =
        tokio::time::interval_at(tokio::time::Instant::now() + chatter_every, chatter_every);
    let mut said = 0;
    let mut wander = persona
        .wanders
        .map(|after| Box::pin(tokio::time::sleep(after)));
    let mut away = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = events.recv() => match event {
                Some(NodeEvent::RecordsReceived { records, .. }) if !away => {
                    for record in records {
                        if record.author == newcomer && matches!(record.body, Body::Message { .. }) {
                            answer(&node, persona, index, record.id).await?;
                        }
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = chatter.tick(), if !away && said < persona.chatter.len() => {
                node.post(ROOM, persona.chatter[said]).await?;
                said += 1;
            }
            () = async { if let Some(w) = wander.as_mut() { w.await } else { std::future::pending().await } } => {
                let Some(after) = persona.wanders else { break };
                if away {
                    node.join(ROOM).await?;
                    wander = None;
                } else {
                    node.post(ROOM, "off for a moment, back soon").await?;
                    node.leave(ROOM).await?;
                    wander = Some(Box::pin(tokio::time::sleep(after)));
                }
                away = !away;
            }
        }
    }
    node.shutdown().await?;
    Ok(())
}

/// Answers one of the newcomer's messages: the peer whose turn it is replies, and `bo` reacts.
async fn answer(
    node: &NodeHandle,
    persona: &Persona,
    index: usize,
    message: grapevine_node::crdt::RecordId,
) -> Result<()> {
    tokio::time::sleep(ANSWER_DELAY * (u32::try_from(index).unwrap_or(0) + 1)).await;
    if persona.nick == "bo" {
        node.react(ROOM, message, "👍", true).await?;
    }
    if usize::from(message.0[0]) % PERSONAS.len() == index {
        node.post(ROOM, persona.answer).await?;
    }
    Ok(())
}
