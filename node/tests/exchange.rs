//! Two peers exchange messages in a room, over TCP and over the memory transport.

mod common;

use anyhow::Result;
use grapevine_node::crdt::Body;
use grapevine_node::{Node, NodeEvent, Transport};

async fn two_peers_exchange_messages_both_ways(transport: Transport) -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, mut events_a) = Node::spawn(common::config(dir_a.path(), transport)).await?;
    let (b, mut events_b) = Node::spawn(common::config(dir_b.path(), transport)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;
    common::connect(&b, &a).await?;

    let from_a = a.post("lobby", "hello from a").await?;
    let from_b = b.post("lobby", "hello from b").await?;

    let got_b = common::next_matching(&mut events_b, |e| match e {
        NodeEvent::RecordReceived { record, .. } if record.id == from_a => Some(record.clone()),
        _ => None,
    })
    .await?;
    assert!(matches!(&got_b.body, Body::Message { text } if text == "hello from a"));
    common::next_matching(&mut events_a, |e| match e {
        NodeEvent::RecordReceived { record, .. } if record.id == from_b => Some(()),
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
