//! `grapevine send ROOM TEXT`: start, find a member of the room, post one message, and wait
//! until a peer holds it (a sync exchange with it completes after the post).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use grapevine_node::crdt::RoomId;
use grapevine_node::{Node, NodeEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::output::Output;
use crate::settings::Settings;

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
        let waited = |what: &str| format!("no peer {what} within {}s", timeout.as_secs());
        // A member must be connected before the message can be handed to anyone.
        tokio::time::timeout_at(deadline, wait_for_member(&mut events, room_id))
            .await
            .map_err(|_| anyhow::anyhow!(waited("joined the room")))??;
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
        println!("{}", line.to_json());
        anyhow::Ok(())
    }
    .await;
    node.shutdown().await.context("storing the room")?;
    result
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
