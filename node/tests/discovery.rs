//! Peers that know only a bootstrap node find their room's other members through Kademlia
//! provider records, and their connections stay within the configured limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use grapevine_node::{Config, Limits, Node, NodeEvent, NodeHandle, Transport};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tempfile::TempDir;
use tokio::sync::mpsc;

const MEMBERS: usize = 10;
const PUBLISHERS: usize = 3;
const ROOM: &str = "lobby";
/// Below the 10 a full mesh of members plus the bootstrap node would need.
const MEMBER_MAX_CONNECTIONS: u32 = 8;

/// A bootstrap node that serves the DHT and is not in the room, and members that know only it.
struct Network {
    bootstrap: NodeHandle,
    members: Vec<NodeHandle>,
    _dirs: Vec<TempDir>,
    _events: Vec<mpsc::Receiver<NodeEvent>>,
}

/// Kademlia server mode set explicitly: on loopback, auto mode would stay a client.
fn server_config(dir: &TempDir, transport: Transport) -> Config {
    Config {
        reachable: true,
        room_lookup_interval: Duration::from_secs(1),
        ..common::config(dir.path(), transport)
    }
}

async fn network(transport: Transport, size: usize) -> Result<Network> {
    let mut dirs = Vec::new();
    let mut events = Vec::new();
    dirs.push(tempfile::tempdir()?);
    let (bootstrap, rx) = Node::spawn(server_config(&dirs[0], transport)).await?;
    events.push(rx);
    let addr: Multiaddr = bootstrap
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .context("no listen address")?
        .with(Protocol::P2p(bootstrap.peer_id()));
    let mut members = Vec::new();
    for _ in 0..size {
        let dir = tempfile::tempdir()?;
        let config = Config {
            bootstrap: vec![addr.clone()],
            limits: Limits {
                max_established: MEMBER_MAX_CONNECTIONS,
                ..Limits::default()
            },
            ..server_config(&dir, transport)
        };
        let (member, rx) = Node::spawn(config).await?;
        member.join(ROOM).await?;
        members.push(member);
        dirs.push(dir);
        events.push(rx);
    }
    Ok(Network {
        bootstrap,
        members,
        _dirs: dirs,
        _events: events,
    })
}

/// Up to three members post; waits until every member sees every message.
async fn exchange_messages(network: &Network) -> Result<()> {
    let publishers = network.members.len().min(PUBLISHERS);
    for (i, publisher) in network.members.iter().take(publishers).enumerate() {
        publisher.post(ROOM, &format!("hello from {i}")).await?;
    }
    for member in &network.members {
        common::wait_for_messages(member, ROOM, publishers).await?;
    }
    Ok(())
}

async fn shutdown(network: Network) -> Result<()> {
    for member in &network.members {
        member.shutdown().await?;
    }
    network.bootstrap.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_knowing_only_a_bootstrap_node_all_receive_every_message() -> Result<()> {
    let started = Instant::now();
    let network = network(Transport::Memory, MEMBERS).await?;
    exchange_messages(&network).await?;
    println!(
        "{MEMBERS} peers found each other and exchanged {PUBLISHERS} messages in {:?}",
        started.elapsed()
    );
    let expected = network.members[0].view(ROOM).await?;
    for member in &network.members {
        assert_eq!(member.view(ROOM).await?.messages, expected.messages);
    }
    assert!(
        network.bootstrap.rooms().await?.is_empty(),
        "the bootstrap node is not in the room, so members reached each other directly"
    );
    shutdown(network).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_the_configured_limits() -> Result<()> {
    let network = network(Transport::Memory, MEMBERS).await?;
    // Members first, the bootstrap node (default limits) last.
    let mut handles: Vec<NodeHandle> = network.members.clone();
    handles.push(network.bootstrap.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut most = vec![0u32; handles.len()];
            while !stop.load(Ordering::Relaxed) {
                for (handle, most) in handles.iter().zip(&mut most) {
                    *most = (*most).max(handle.connections().await?);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(most)
        }
    });
    exchange_messages(&network).await?;
    // Let further lookups run after the messages are in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let most = tokio::time::timeout(common::WAIT, sampler).await???;
    println!("most connections per member, then the bootstrap node: {most:?}");
    let (bootstrap_most, members_most) = most.split_last().context("no samples")?;
    assert!(*bootstrap_most <= Limits::default().max_established);
    for (i, &most) in members_most.iter().enumerate() {
        assert!(
            most <= MEMBER_MAX_CONNECTIONS,
            "member {i} had {most} connections, above {MEMBER_MAX_CONNECTIONS}"
        );
        assert!(most >= 1, "member {i} never connected");
    }
    shutdown(network).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_find_each_other_through_a_bootstrap_node_over_tcp() -> Result<()> {
    let network = network(Transport::Tcp, 2).await?;
    exchange_messages(&network).await?;
    let other = network.members[1].peer_id();
    assert!(network.members[0].peers().await?.contains(&other));
    shutdown(network).await
}
