//! Helpers shared by the node tests: quick configs, bounded waits for events and views.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use grapevine_node::{Config, NodeEvent, NodeHandle, Transport};
use libp2p::Multiaddr;
use tokio::sync::mpsc;

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A config for a test node: loopback or memory, fast heartbeats, frequent anti-entropy.
pub fn config(dir: &Path, transport: Transport) -> Config {
    let listen: Multiaddr = match transport {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
        Transport::Memory => "/memory/0",
    }
    .parse()
    .expect("valid multiaddr");
    Config {
        data_dir: dir.to_path_buf(),
        listen_addrs: vec![listen],
        transport,
        heartbeat: Duration::from_millis(100),
        heartbeat_initial_delay: Duration::from_millis(50),
        sync_interval: Duration::from_secs(2),
        mdns: false,
        ..Config::default()
    }
}

/// Waits (bounded) for the first event matching `pick`, skipping others.
pub async fn next_matching<T>(
    events: &mut mpsc::Receiver<NodeEvent>,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> Result<T> {
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
        bail!("event stream ended")
    })
    .await
    .context("timed out waiting for an event")?
}

/// Polls `check` until it returns true, bounded by [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    tokio::time::timeout(WAIT, async {
        loop {
            if check().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .with_context(|| format!("timed out waiting until {what}"))?
}

/// Connects `from` to `to` and waits until both have joined each other's room topics enough to
/// be connected.
pub async fn connect(from: &NodeHandle, to: &NodeHandle) -> Result<()> {
    let addr = to
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .context("no listen address")?;
    from.dial(addr).await?;
    let peer = to.peer_id();
    eventually("connected", || async {
        Ok(from.peers().await?.contains(&peer))
    })
    .await
}

/// Waits until `node`'s view of `room` holds `count` messages.
pub async fn wait_for_messages(node: &NodeHandle, room: &str, count: usize) -> Result<()> {
    eventually(&format!("{count} messages in {room}"), || async {
        Ok(node.view(room).await?.messages.len() == count)
    })
    .await
}

/// A node's first listen address with its peer id (`/p2p/…`), to dial or to hand out as a
/// bootstrap address.
pub async fn first_addr(node: &NodeHandle) -> Result<Multiaddr> {
    node.shareable_addrs()
        .await?
        .into_iter()
        .next()
        .context("no listen address")
}
