//! Interop with a stock js-libp2p peer (`tests/interop/peer.mjs`, packages pinned in its
//! `package-lock.json`): it connects over TCP, subscribes to a room topic and receives the node's
//! envelopes; what it publishes that is not a valid record is rejected, and the node keeps running.
//!
//! Needs Node.js and the peer's packages: `.ci/run` installs them (`npm ci` in
//! `node/tests/interop`); when they are missing this test installs them itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};
use common::{WAIT, config, next_matching};
use grapevine_node::crdt::RoomId;
use grapevine_node::{Node, NodeEvent, Transport, room_topic};
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The directory of the js peer.
fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Installs the js peer's packages exactly as locked, unless they are there already.
async fn install_js_peer() -> Result<()> {
    if peer_dir().join("node_modules/libp2p").exists() {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(peer_dir())
        .status()
        .await
        .context("running npm (Node.js and npm are needed for this test)")?;
    ensure!(status.success(), "npm ci failed: {status}");
    Ok(())
}

#[tokio::test]
async fn a_js_libp2p_peer_receives_envelopes_and_its_junk_is_rejected() -> Result<()> {
    install_js_peer().await?;
    let dir = tempfile::tempdir()?;
    let (node, mut events) = Node::spawn(config(dir.path(), Transport::Tcp)).await?;
    node.join("lobby").await?;
    let address = node
        .shareable_addrs()
        .await?
        .into_iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .context("no TCP listen address")?;
    let topic = room_topic(RoomId::for_public_name("lobby")?).to_string();

    let mut js = Command::new("node")
        .arg(peer_dir().join("peer.mjs"))
        .arg(address.to_string())
        .arg(&topic)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the js peer (is Node.js installed?)")?;
    let mut lines = BufReader::new(js.stdout.take().context("no stdout")?).lines();
    let mut next_line = async || -> Result<serde_json::Value> {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .context("timed out waiting for the js peer")??
            .context("the js peer ended early")?;
        Ok(serde_json::from_str(&line)?)
    };

    let connected = next_line().await?;
    ensure!(
        connected["event"] == "connected",
        "js peer said {connected}"
    );
    let js_peer: libp2p::PeerId = connected["peer"].as_str().context("no peer id")?.parse()?;

    // Post until the js peer reports an envelope: it may take a heartbeat for it to learn that
    // the node is subscribed.
    let received = tokio::time::timeout(WAIT, async {
        let mut posted = 0;
        loop {
            node.post("lobby", &format!("hello js #{posted}")).await?;
            posted += 1;
            match tokio::time::timeout(std::time::Duration::from_millis(500), next_line()).await {
                Ok(line) => return line,
                Err(_) if posted < 20 => continue,
                Err(_) => bail!("the js peer received nothing after {posted} posts"),
            }
        }
    })
    .await
    .context("timed out waiting for the js peer to receive")??;
    ensure!(received["event"] == "received", "js peer said {received}");
    ensure!(received["bytes"].as_u64().unwrap_or(0) > 0);

    let published = next_line().await?;
    ensure!(
        published["event"] == "published",
        "js peer said {published}"
    );
    let reason = next_matching(&mut events, |event| match event {
        NodeEvent::Warning {
            peer: Some(peer),
            reason,
        } if *peer == js_peer => Some(reason.clone()),
        _ => None,
    })
    .await?;
    assert!(!reason.is_empty());

    // The node keeps running and serving its room.
    node.post("lobby", "still here").await?;
    assert!(
        node.view("lobby")
            .await?
            .messages
            .iter()
            .any(|m| m.text == "still here")
    );
    let status = tokio::time::timeout(WAIT, js.wait()).await??;
    ensure!(status.success(), "js peer exited with {status}");
    node.shutdown().await?;
    Ok(())
}
