//! Two groups of a room split apart (every link between them cut), both keep chatting, and after
//! the split is repaired every member holds every message and the same heads with no user
//! action: discovery redials, and sync on reconnection and anti-entropy catch up.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use grapevine_node::{Config, Node, NodeEvent, NodeHandle, Transport};
use libp2p::Multiaddr;
use tempfile::TempDir;
use tokio::sync::mpsc;

const ROOM: &str = "lobby";
const GROUP_SIZE: usize = 3;
const MESSAGES_PER_SIDE: usize = 5;

struct Peer {
    handle: NodeHandle,
    _events: mpsc::Receiver<NodeEvent>,
    _dir: TempDir,
}

async fn spawn(config: Config, dir: TempDir) -> Result<Peer> {
    let (handle, events) = Node::spawn(config).await?;
    Ok(Peer {
        handle,
        _events: events,
        _dir: dir,
    })
}

/// Frequent room lookups, so a repaired link is found again within seconds.
fn member_config(dir: &TempDir, bootstrap: Multiaddr) -> Config {
    Config {
        reachable: true,
        bootstrap: vec![bootstrap],
        room_lookup_interval: Duration::from_secs(1),
        ..common::config(dir.path(), Transport::Memory)
    }
}

/// Waits until every peer in `group` shows exactly the message texts in `expected`.
async fn wait_for_texts(group: &[&NodeHandle], expected: &[String]) -> Result<()> {
    let mut expected = expected.to_vec();
    expected.sort();
    for peer in group {
        common::eventually("a peer holds exactly the expected messages", || async {
            let mut texts: Vec<String> = peer
                .view(ROOM)
                .await?
                .messages
                .into_iter()
                .map(|m| m.text)
                .collect();
            texts.sort();
            Ok(texts == expected)
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_groups_keep_chatting_and_converge_after_repair() -> Result<()> {
    // The bootstrap node is not in the room: it carries no room traffic across the split.
    let bootstrap_dir = tempfile::tempdir()?;
    let bootstrap_config = Config {
        reachable: true,
        ..common::config(bootstrap_dir.path(), Transport::Memory)
    };
    let bootstrap = spawn(bootstrap_config, bootstrap_dir).await?;
    let bootstrap_addr = common::first_addr(&bootstrap.handle).await?;

    let mut peers = Vec::new();
    for _ in 0..2 * GROUP_SIZE {
        let dir = tempfile::tempdir()?;
        let peer = spawn(member_config(&dir, bootstrap_addr.clone()), dir).await?;
        peer.handle.join(ROOM).await?;
        peers.push(peer);
    }
    let all: Vec<&NodeHandle> = peers.iter().map(|p| &p.handle).collect();
    let (left, right) = all.split_at(GROUP_SIZE);

    // Before the split: one message reaches everyone, so the room is connected.
    all[0].post(ROOM, "before the split").await?;
    let mut everything = vec!["before the split".to_string()];
    wait_for_texts(&all, &everything).await?;

    // Split: every link between the groups is cut, both ways.
    for a in left {
        for b in right {
            a.block_peer(b.peer_id()).await?;
            b.block_peer(a.peer_id()).await?;
        }
    }
    for a in left {
        let right_ids: Vec<_> = right.iter().map(|b| b.peer_id()).collect();
        common::eventually("no link crosses the split", || async {
            Ok(!a.peers().await?.iter().any(|p| right_ids.contains(p)))
        })
        .await?;
    }

    // Both sides keep chatting, each unaware of the other's messages.
    let mut left_texts = everything.clone();
    let mut right_texts = everything.clone();
    for i in 0..MESSAGES_PER_SIDE {
        let text = format!("left {i}");
        left[i % GROUP_SIZE].post(ROOM, &text).await?;
        left_texts.push(text);
        let text = format!("right {i}");
        right[i % GROUP_SIZE].post(ROOM, &text).await?;
        right_texts.push(text);
    }
    wait_for_texts(left, &left_texts).await?;
    wait_for_texts(right, &right_texts).await?;

    // Repair: only the blocks are lifted; nobody dials or asks for a sync.
    for a in left {
        for b in right {
            a.unblock_peer(b.peer_id()).await?;
            b.unblock_peer(a.peer_id()).await?;
        }
    }
    everything = left_texts;
    everything.extend(right_texts.into_iter().skip(1));
    wait_for_texts(&all, &everything).await?;
    let heads = all[0].heads(ROOM).await?;
    for peer in &all[1..] {
        ensure!(
            peer.heads(ROOM).await? == heads,
            "a peer's heads differ after the repair"
        );
    }

    // And the healed room carries new gossip across the old split.
    right[0].post(ROOM, "after the repair").await?;
    everything.push("after the repair".to_string());
    wait_for_texts(&all, &everything).await?;

    for peer in &all {
        peer.shutdown().await?;
    }
    bootstrap.handle.shutdown().await?;
    Ok(())
}
