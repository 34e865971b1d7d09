//! Two peers exchange messages in a room, over TCP and over the memory transport, and count the
//! gossip copies they received.

mod common;

use anyhow::Result;
use grapevine_node::crdt::Body;
use grapevine_node::{GossipCounts, Node, NodeEvent, Transport};

async fn two_peers_exchange_messages_both_ways(transport: Transport) -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, mut events_a) = Node::spawn(common::config(dir_a.path(), transport)).await?;
    let (b, mut events_b) = Node::spawn(common::config(dir_b.path(), transport)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;

    let from_a = a.post("lobby", "hello from a").await?;
    let from_b = b.post("lobby", "hello from b").await?;
    common::next_matching(&mut events_a, |e| match e {
        NodeEvent::RecordWritten { record, .. } if record.id == from_a => Some(()),
        _ => None,
    })
    .await?;

    let got_b = common::next_matching(&mut events_b, |e| match e {
        NodeEvent::RecordsReceived { records, .. } => {
            records.iter().find(|record| record.id == from_a).cloned()
        }
        _ => None,
    })
    .await?;
    assert!(matches!(&got_b.body, Body::Message { text } if text == "hello from a"));
    common::next_matching(&mut events_a, |e| match e {
        NodeEvent::RecordsReceived { records, .. } if records.iter().any(|r| r.id == from_b) => {
            Some(())
        }
        _ => None,
    })
    .await?;

    for node in [&a, &b] {
        common::wait_for_messages(node, "lobby", 2).await?;
    }
    assert_eq!(a.view("lobby").await?, b.view("lobby").await?);
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_over_tcp_exchange_messages_both_ways() -> Result<()> {
    two_peers_exchange_messages_both_ways(Transport::Tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_over_memory_exchange_messages_both_ways() -> Result<()> {
    two_peers_exchange_messages_both_ways(Transport::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_over_quic_exchange_messages_both_ways() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let quic = |dir: &std::path::Path| {
        let mut config = common::config(dir, Transport::Tcp);
        config.listen_addrs = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("multiaddr")];
        config
    };
    let (a, mut events_a) = Node::spawn(quic(dir_a.path())).await?;
    let (b, mut events_b) = Node::spawn(quic(dir_b.path())).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;
    let from_a = a.post("lobby", "over quic").await?;
    let from_b = b.post("lobby", "back over quic").await?;
    for (events, id) in [(&mut events_b, from_a), (&mut events_a, from_b)] {
        common::next_matching(events, |e| match e {
            NodeEvent::RecordsReceived { records, .. } if records.iter().any(|r| r.id == id) => {
                Some(())
            }
            _ => None,
        })
        .await?;
    }
    assert_eq!(a.view("lobby").await?, b.view("lobby").await?);
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_reactions_and_nicknames_reach_the_other_peer() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;

    let kept = a.post("lobby", "first draft").await?;
    let gone = a.post("lobby", "regrettable").await?;
    a.edit("lobby", kept, "final text").await?;
    a.delete("lobby", gone).await?;
    common::wait_for_messages(&b, "lobby", 2).await?;
    b.react("lobby", kept, "+1", true).await?;
    a.set_nickname("lobby", "alice").await?;

    common::eventually("b sees every change", || async {
        Ok(b.view("lobby").await? == a.view("lobby").await?
            && !b.view("lobby").await?.nicknames.is_empty()
            && b.view("lobby")
                .await?
                .messages
                .iter()
                .any(|m| !m.reactions.is_empty()))
    })
    .await?;
    let view = b.view("lobby").await?;
    let message = view
        .messages
        .iter()
        .find(|m| m.id == kept)
        .expect("kept message");
    assert_eq!(message.text, "final text");
    assert!(view.messages.iter().any(|m| m.id == gone && m.deleted));
    assert_eq!(
        view.nicknames.values().next().map(String::as_str),
        Some("alice")
    );

    assert_eq!(a.rooms().await?, vec!["lobby".to_string()]);
    a.leave("lobby").await?;
    assert!(a.rooms().await?.is_empty());
    assert!(a.post("lobby", "not a member").await.is_err());
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_gossiped_messages_arrives_complete() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    let (b, mut events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;
    // Wait until a's first post reaches b, so the rest can travel by gossip.
    let first = a.post("lobby", "warm-up").await?;
    common::next_matching(&mut events_b, |e| match e {
        NodeEvent::RecordsReceived { records, .. } if records.iter().any(|r| r.id == first) => {
            Some(())
        }
        _ => None,
    })
    .await?;

    let started = std::time::Instant::now();
    for i in 0..300 {
        a.post("lobby", &format!("burst {i}")).await?;
    }
    common::wait_for_messages(&b, "lobby", 301).await?;
    println!("300 gossiped messages arrived in {:?}", started.elapsed());
    assert_eq!(a.view("lobby").await?, b.view("lobby").await?);
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_ends_with_the_peer_holding_what_was_just_posted() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, mut events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;
    let b_id = b.peer_id();
    common::eventually("b is a member of a's room", || async {
        Ok(a.sync_now("lobby").await? == 1)
    })
    .await?;

    // Posting many at once while exchanges run: the last exchange still ends after all of them.
    let mut last = None;
    for i in 0..20 {
        last = Some(a.post("lobby", &format!("message {i}")).await?);
    }
    assert_eq!(a.sync_now("lobby").await?, 1);
    let records = common::next_matching(&mut events_a, |e| match e {
        NodeEvent::SyncCompleted { peer, records, .. } if *peer == b_id && *records == 20 => {
            Some(*records)
        }
        _ => None,
    })
    .await?;
    assert_eq!(records, 20);
    let last = last.expect("posted");
    assert!(b.view("lobby").await?.messages.iter().any(|m| m.id == last));
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_counts_show_the_copies_a_peer_received() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    assert_eq!(b.gossip_counts().await?, GossipCounts::default());
    common::connect(&b, &a).await?;

    // A record can also arrive by sync; posting until one arrives by gossip.
    common::eventually("b received a gossip message", || async {
        a.post("lobby", "counted").await?;
        Ok(b.gossip_counts().await?.received > 0)
    })
    .await?;
    let counts = b.gossip_counts().await?;
    assert!(counts.received_bytes > 0, "{counts:?}");
    // Two peers: a sends each message to b once, so nothing arrives twice.
    assert_eq!(counts.duplicates, 0, "{counts:?}");
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_hears_of_every_record_of_a_history_longer_than_its_event_queue() -> Result<()> {
    let history = grapevine_node::config::DEFAULT_EVENT_CAPACITY + 1_000;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    for i in 0..history {
        a.post("lobby", &format!("history {i}")).await?;
    }
    let (b, mut events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;
    // Nothing reads b's events until the whole history is in.
    common::wait_for_messages(&b, "lobby", history).await?;
    let mut heard = std::collections::HashSet::new();
    while let Ok(event) = events_b.try_recv() {
        if let NodeEvent::RecordsReceived { records, .. } = event {
            heard.extend(records.into_iter().map(|record| record.id));
        }
    }
    assert_eq!(heard.len(), history, "records b's events told of");
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}
