//! `NodeHandle::connect` answers in bounded time: an address that takes a connection in and never
//! speaks gets the typed timeout at the configured deadline, a quick failure keeps its own cause,
//! and an outcome that comes after the deadline is ignored while the node goes on.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use grapevine_node::config::DEFAULT_CONNECT_TIMEOUT;
use grapevine_node::{Config, Node, NodeError, NodeHandle, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The connect deadline in these tests: short, so a test waits for it a fraction of a second.
const DEADLINE: Duration = Duration::from_millis(300);
/// How long a slow listener holds a connection before it acts: well past [`DEADLINE`].
const LATE: Duration = Duration::from_secs(1);

/// What a loopback listener of these tests does with each connection it takes in.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Holds it open and never sends a byte, so the libp2p handshake hangs.
    Silent,
    /// After [`LATE`], closes it.
    CloseLate,
    /// After [`LATE`], passes it on, both ways, to a node listening at this address.
    ForwardLate(SocketAddr),
}

/// Starts a listener on loopback that treats every connection as `behaviour` says, for as long
/// as the test's runtime runs; returns its address.
async fn listener(behaviour: Behaviour) -> Result<Multiaddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, behaviour));
        }
    });
    Ok(format!("/ip4/127.0.0.1/tcp/{port}").parse()?)
}

async fn answer(mut stream: TcpStream, behaviour: Behaviour) {
    match behaviour {
        Behaviour::Silent => std::future::pending().await,
        Behaviour::CloseLate => {
            tokio::time::sleep(LATE).await;
            let _ = stream.shutdown().await;
        }
        Behaviour::ForwardLate(node) => {
            tokio::time::sleep(LATE).await;
            if let Ok(mut upstream) = TcpStream::connect(node).await {
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
            }
        }
    }
}

/// A node on loopback whose connects wait [`DEADLINE`] at most.
async fn node(dir: &TempDir, transport: Transport) -> Result<NodeHandle> {
    let config = Config {
        connect_timeout: DEADLINE,
        ..common::config(dir.path(), transport)
    };
    let (node, events) = Node::spawn(config).await?;
    // Nobody reads the events; the node drops what does not fit.
    drop(events);
    Ok(node)
}

/// `node.connect(addr)`, bounded by [`common::WAIT`], and how long it took.
async fn timed_connect(
    node: &NodeHandle,
    addr: &Multiaddr,
) -> Result<(Result<PeerId, NodeError>, Duration)> {
    let started = Instant::now();
    let outcome = tokio::time::timeout(common::WAIT, node.connect(addr.clone()))
        .await
        .context("connect did not answer")?;
    Ok((outcome, started.elapsed()))
}

/// Checks that `outcome` is the deadline's error for `addr`, given within the deadline's time.
fn assert_timed_out(outcome: Result<PeerId, NodeError>, took: Duration, addr: &Multiaddr) {
    match outcome {
        Err(NodeError::ConnectTimeout {
            addr: dialled,
            after,
        }) => {
            assert_eq!(&dialled, addr);
            assert_eq!(after, DEADLINE);
        }
        other => panic!("expected the connect timeout, got {other:?}"),
    }
    assert!(took >= DEADLINE, "answered before the deadline: {took:?}");
    assert!(
        took < DEFAULT_CONNECT_TIMEOUT,
        "answered by libp2p's transport timeout, not the deadline: {took:?}"
    );
}

/// A node's TCP listen address as a socket address, for the forwarding listener.
async fn socket_addr(node: &NodeHandle) -> Result<SocketAddr> {
    let addr = common::first_addr(node).await?;
    let mut ip = None;
    let mut port = None;
    for protocol in &addr {
        match protocol {
            Protocol::Ip4(found) => ip = Some(found),
            Protocol::Tcp(found) => port = Some(found),
            _ => {}
        }
    }
    Ok(SocketAddr::from((
        ip.context("no IPv4 address")?,
        port.context("no TCP port")?,
    )))
}

#[tokio::test]
async fn a_connect_to_an_address_that_never_speaks_times_out_at_the_deadline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ana = node(&dir, Transport::Tcp).await?;
    let silent = listener(Behaviour::Silent).await?;

    let (outcome, took) = timed_connect(&ana, &silent).await?;
    assert_timed_out(outcome, took, &silent);
    let text = NodeError::ConnectTimeout {
        addr: silent.clone(),
        after: DEADLINE,
    }
    .to_string();
    assert_eq!(text, format!("no answer from {silent} within 300ms"));
    Ok(())
}

#[tokio::test]
async fn a_quick_failure_keeps_its_cause_rather_than_the_timeout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ana = node(&dir, Transport::Memory).await?;
    // A memory address nobody listens on: the dial fails at once.
    let nobody: Multiaddr = "/memory/987654321".parse()?;

    let (outcome, took) = timed_connect(&ana, &nobody).await?;
    assert!(
        matches!(outcome, Err(NodeError::Dial(_))),
        "expected the dial's own failure, got {outcome:?}"
    );
    assert!(
        took < DEADLINE,
        "the failure waited for the deadline: {took:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_opened_after_the_deadline_is_kept_once_the_caller_was_told() -> Result<()> {
    let (ana_dir, bo_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let ana = node(&ana_dir, Transport::Tcp).await?;
    let bo = node(&bo_dir, Transport::Tcp).await?;
    let slow = listener(Behaviour::ForwardLate(socket_addr(&bo).await?)).await?;

    let (outcome, took) = timed_connect(&ana, &slow).await?;
    assert_timed_out(outcome, took, &slow);
    // The handshake ends after the deadline: the node takes the connection as any other.
    let bo_id = bo.peer_id();
    common::eventually("ana is connected to bo", || async {
        Ok(ana.peers().await?.contains(&bo_id))
    })
    .await
}

#[tokio::test]
async fn a_failure_after_the_deadline_is_dropped_and_the_node_goes_on() -> Result<()> {
    let (ana_dir, bo_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let ana = node(&ana_dir, Transport::Tcp).await?;
    let bo = node(&bo_dir, Transport::Tcp).await?;
    let closing = listener(Behaviour::CloseLate).await?;

    let (outcome, took) = timed_connect(&ana, &closing).await?;
    assert_timed_out(outcome, took, &closing);
    // Past the moment the late listener closes the connection, so its failure has come in.
    tokio::time::sleep(LATE).await;
    let bo_addr = common::first_addr(&bo).await?;
    let (outcome, _) = timed_connect(&ana, &bo_addr).await?;
    assert_eq!(outcome?, bo.peer_id());
    Ok(())
}
