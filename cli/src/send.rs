//! `grapevine send ROOM TEXT`: start, find a member of the room, post one message, and wait
//! until a peer holds it (a sync exchange with it completes after the post).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use grapevine_node::crdt::RoomId;
use grapevine_node::{Node, NodeError, NodeEvent, NodeHandle};
use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::output::Output;
use crate::settings::Settings;

/// How long each contact may take to answer a dial made to learn why no peer was found: a
/// refused or unreachable address answers at once, a silent one (a firewall that drops) never
/// does.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Posts `text` in `room`; succeeds once a peer holds it, fails after `timeout`.
pub(crate) async fn run(
    settings: &Settings,
    room: &str,
    text: &str,
    timeout: Duration,
) -> Result<()> {
    let room_id = RoomId::for_public_name(room).map_err(|e| crate::UsageError(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let (node, mut events) = Node::spawn(settings.node_config()).await?;
    let result = async {
        node.join(room).await?;
        let waited = |what: &str| {
            format!(
                "no peer {what} within {}",
                humantime::format_duration(timeout)
            )
        };
        // A member must be connected before the message can be handed to anyone.
        if tokio::time::timeout_at(deadline, wait_for_member(&mut events, room_id))
            .await
            .is_err()
        {
            let why = why_no_member(&node, settings, room).await?;
            bail!("{}: {why}", waited("joined the room"));
        }
        let id = node.post(room, text).await?;
        // Events already queued describe the time before the post.
        while events.try_recv().is_ok() {}
        if node.sync_now(room).await? == 0 {
            bail!("the room's members left before the message could be handed over");
        }
        tokio::time::timeout_at(deadline, wait_for_sync(&mut events, room_id))
            .await
            .map_err(|_| anyhow::anyhow!(waited("confirmed holding the message")))??;
        let view = node.view(room).await?;
        let record = view
            .messages
            .iter()
            .find(|m| m.id == id)
            .context("the message vanished")?;
        let line = Output::Message {
            room: room.to_string(),
            id: id.to_string(),
            author: record.author.to_string(),
            nick: view.nicknames.get(&record.author).cloned(),
            sent_at: crate::output::rfc3339(record.sent_at),
            body: record.text.clone(),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", line.to_json())?;
        out.flush()?;
        anyhow::Ok(())
    }
    .await;
    node.shutdown().await.context("storing the room")?;
    result
}

/// Why no member of `room` was found, and what to do: no contact to ask, contacts that could
/// not be reached (each dialled again to learn why, as the node's own dials at start report
/// nothing), or peers reached that are not in the room.
async fn why_no_member(node: &NodeHandle, settings: &Settings, room: &str) -> Result<String> {
    let peers = node.peers().await?.len();
    if peers > 0 {
        return Ok(format!(
            "connected to {peers} peer(s), but none is in room {room} (is anyone there now?)"
        ));
    }
    if settings.bootstrap.is_empty() {
        return Ok(if settings.mdns {
            "none answered on the local network (mDNS); pass --bootstrap with a peer's address"
                .to_string()
        } else {
            "no --bootstrap given and mDNS is off, so there was nobody to ask".to_string()
        });
    }
    let probes = settings.bootstrap.iter().map(|addr| probe(node, addr));
    let failures: Vec<String> = futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    Ok(if failures.is_empty() {
        "its contacts answered only late; try again, or with a longer --timeout".to_string()
    } else {
        format!(
            "could not reach {} (check the --bootstrap address and that a peer runs there)",
            failures.join("; ")
        )
    })
}

/// Dials `addr`; returns why it could not be reached, or `None` when it answered.
async fn probe(node: &NodeHandle, addr: &Multiaddr) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, node.connect(addr.clone())).await {
        Ok(Ok(_)) => None,
        Ok(Err(NodeError::Dial(reason))) => Some(format!("{addr}: {reason}")),
        Ok(Err(other)) => Some(format!("{addr}: {other}")),
        Err(_) => Some(format!(
            "{addr}: no answer within {}",
            humantime::format_duration(PROBE_TIMEOUT)
        )),
    }
}

/// Waits for the room to have a connected member; joining reports the members already there.
async fn wait_for_member(events: &mut mpsc::Receiver<NodeEvent>, room: RoomId) -> Result<()> {
    while let Some(event) = events.recv().await {
        if let NodeEvent::RoomPeersChanged { room: r, peers } = event
            && r == room
            && !peers.is_empty()
        {
            return Ok(());
        }
    }
    bail!("the node stopped")
}

/// Waits for a sync exchange about the room to complete.
async fn wait_for_sync(events: &mut mpsc::Receiver<NodeEvent>, room: RoomId) -> Result<()> {
    while let Some(event) = events.recv().await {
        if let NodeEvent::SyncCompleted { room: r, .. } = event
            && r == room
        {
            return Ok(());
        }
    }
    bail!("the node stopped")
}
