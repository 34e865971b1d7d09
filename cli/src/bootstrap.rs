//! `grapevine bootstrap`: a headless, long-running volunteer node. It serves the DHT, relays for
//! peers behind NAT within the limits of a small VPS, prints the addresses others should pass to
//! `--bootstrap`, logs to stderr, and stops cleanly on SIGINT or SIGTERM.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use grapevine_node::{Config, Node, NodeEvent};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::settings::Settings;

/// The well-known port a bootstrap node listens on when no `--listen` is given, over TCP and
/// QUIC, so its address stays the same across restarts.
pub(crate) const DEFAULT_PORT: u16 = 4001;
/// How often the node logs how many connections it serves.
const STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the bootstrap node until a stop signal.
pub(crate) async fn run(settings: &Settings) -> Result<()> {
    let listen = if settings.listen_given {
        settings.listen.clone()
    } else {
        default_listen()
    };
    let config = Config {
        bootstrap: settings.bootstrap.clone(),
        ..Config::bootstrap_node(&settings.data_dir, listen)
    };
    let mut stop = crate::signals::Stop::new()?;
    let (node, mut events) = Node::spawn(config).await?;
    if let Err(e) = print_addrs(&node.shareable_addrs().await?) {
        // The node is what a volunteer runs this for; it serves whether anyone reads them.
        tracing::warn!(error = %e, "could not print the node's addresses on stdout");
    }
    tracing::info!(peer = %node.peer_id(), "bootstrap node running; share an address above");
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    status.tick().await;
    loop {
        tokio::select! {
            () = stop.wait() => break,
            event = events.recv() => match event {
                Some(NodeEvent::Warning { peer, reason }) => {
                    tracing::warn!(?peer, %reason, "refused input");
                }
                Some(_) => {}
                None => break,
            },
            _ = status.tick() => {
                let connections = node.connections().await?;
                tracing::info!(connections, "serving");
            }
        }
    }
    tracing::info!("stopping");
    node.shutdown().await.context("stopping the node")?;
    Ok(())
}

/// Every interface on [`DEFAULT_PORT`], over TCP and QUIC.
fn default_listen() -> Vec<Multiaddr> {
    let any = Multiaddr::empty().with(Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED));
    vec![
        any.clone().with(Protocol::Tcp(DEFAULT_PORT)),
        any.with(Protocol::Udp(DEFAULT_PORT)).with(Protocol::QuicV1),
    ]
}

/// Prints the addresses to share, one a line, on stdout.
fn print_addrs(addrs: &[Multiaddr]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for addr in addrs {
        writeln!(out, "{addr}")?;
    }
    out.flush()
}
