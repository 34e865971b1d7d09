//! History reaches peers that were not there: late joiners and restarted peers.

mod common;

use std::time::Instant;

use anyhow::Result;
use grapevine_node::crdt::RoomId;
use grapevine_node::{Node, NodeEvent, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_receives_full_history_of_1000_messages() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    for i in 0..1_000 {
        a.post("lobby", &format!("message {i}")).await?;
    }

    let started = Instant::now();
    let (b, mut events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    common::connect(&b, &a).await?;
    b.join("lobby").await?;
    let lobby = RoomId::for_public_name("lobby")?;
    let a_id = a.peer_id();
    // Events tell the program who is in the room, how the catch-up goes and when it is done.
    let (mut members_seen, mut progress, mut completed) = (false, 0, None);
    while completed.is_none() {
        match common::next_matching(&mut events_b, |e| Some(e.clone())).await? {
            NodeEvent::RoomPeersChanged { room, peers } if room == lobby => {
                members_seen |= peers == [a_id];
            }
            NodeEvent::SyncProgress {
                room, new_records, ..
            } if room == lobby => progress += new_records,
            NodeEvent::SyncCompleted { room, records, .. } if room == lobby && records > 0 => {
                completed = Some(records);
            }
            _ => {}
        }
    }
    assert!(members_seen, "b saw a join the room");
    assert_eq!(progress, 1_000, "progress counts every record");
    assert_eq!(completed, Some(1_000));
    common::wait_for_messages(&b, "lobby", 1_000).await?;
    println!(
        "late joiner synced 1,000 messages in {:?}",
        started.elapsed()
    );

    let (view_a, view_b) = (a.view("lobby").await?, b.view("lobby").await?);
    assert_eq!(view_a.messages.len(), view_b.messages.len());
    assert_eq!(view_a, view_b);
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_keeps_its_history_and_catches_up() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _events_a) = Node::spawn(common::config(dir_a.path(), Transport::Tcp)).await?;
    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Tcp)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;
    a.post("lobby", "before the restart").await?;
    b.post("lobby", "b was here").await?;
    common::wait_for_messages(&b, "lobby", 2).await?;
    let before = b.view("lobby").await?;
    let b_peer = b.peer_id();
    b.shutdown().await?;

    a.post("lobby", "while b was away").await?;

    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Tcp)).await?;
    assert_eq!(
        b.peer_id(),
        b_peer,
        "the identity is kept in the data directory"
    );
    b.join("lobby").await?;
    assert_eq!(
        b.view("lobby").await?,
        before,
        "history survives the restart"
    );

    common::connect(&b, &a).await?;
    common::wait_for_messages(&b, "lobby", 3).await?;
    assert_eq!(b.view("lobby").await?, a.view("lobby").await?);
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_rooms_are_rejoined_after_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, _events) = Node::spawn(common::config(dir.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    a.join("kitchen").await?;
    a.leave("kitchen").await?;
    a.post("lobby", "still here after the restart").await?;
    let before = a.view("lobby").await?;
    a.shutdown().await?;

    let (a, _events) = Node::spawn(common::config(dir.path(), Transport::Memory)).await?;
    assert_eq!(a.rooms().await?, vec!["lobby".to_string()]);
    assert_eq!(
        a.view("lobby").await?,
        before,
        "history is there without a join"
    );
    a.shutdown().await?;
    Ok(())
}

/// Records that arrive by sync are passed on at once: B, syncing with newcomer A, gains A's
/// history in one message and starts an exchange with C, its other room member, so C holds it
/// long before any anti-entropy tick (an hour here). A and C never connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_gained_by_sync_reach_the_next_member_without_waiting_for_anti_entropy()
-> Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let config = |dir: &tempfile::TempDir| grapevine_node::Config {
        sync_interval: std::time::Duration::from_secs(3600),
        ..common::config(dir.path(), Transport::Memory)
    };
    let (a, _events_a) = Node::spawn(config(&dirs[0])).await?;
    let (b, _events_b) = Node::spawn(config(&dirs[1])).await?;
    let (c, _events_c) = Node::spawn(config(&dirs[2])).await?;
    for node in [&a, &b, &c] {
        node.join("lobby").await?;
    }
    common::connect(&c, &b).await?;
    c.post("lobby", "from c").await?;
    common::wait_for_messages(&b, "lobby", 1).await?;
    for i in 0..20 {
        a.post("lobby", &format!("a's history {i}")).await?;
    }
    common::connect(&a, &b).await?;
    common::wait_for_messages(&b, "lobby", 21).await?;
    common::wait_for_messages(&c, "lobby", 21).await?;
    assert!(
        !c.peers().await?.contains(&a.peer_id()),
        "c got a's history through b, not from a"
    );
    for node in [a, b, c] {
        node.shutdown().await?;
    }
    Ok(())
}
