//! Peers behind NAT reach each other through a bootstrap node's circuit relay, upgrade to a
//! direct connection by hole punching where they can, and the relay's limits hold.
//!
//! A peer with no direct listen address is a faithful model of one behind NAT: nobody can dial
//! it except through a relay, so any connection it has with another such peer is relayed.

mod common;
mod held_relay;

use std::time::Duration;

use anyhow::{Context, Result};
use grapevine_node::{Config, Node, NodeEvent, NodeHandle, RelayLimits, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tempfile::TempDir;
use tokio::sync::mpsc;

const ROOM: &str = "lobby";

/// A fresh listen address on loopback TCP or in memory.
fn local(transport: Transport) -> Multiaddr {
    match transport {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
        Transport::Memory => "/memory/0",
    }
    .parse()
    .expect("valid multiaddr")
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// A bootstrap node with `relay` limits; returns it and its `/p2p/` address.
async fn relay_node(
    dir: &TempDir,
    transport: Transport,
    relay: RelayLimits,
) -> Result<(NodeHandle, mpsc::Receiver<NodeEvent>, Multiaddr)> {
    let config = Config {
        transport,
        relay: Some(relay),
        ..Config::bootstrap_node(dir.path(), vec![local(transport)])
    };
    let (node, events) = Node::spawn(config).await?;
    let addr = common::first_addr(&node).await?;
    Ok((node, events, addr))
}

/// A peer that knows only the relay node and listens on `listen` (no address at all: behind NAT).
async fn peer(
    dir: &TempDir,
    transport: Transport,
    relay: &Multiaddr,
    listen: Vec<Multiaddr>,
) -> Result<(NodeHandle, mpsc::Receiver<NodeEvent>)> {
    peer_of(dir, transport, vec![relay.clone()], listen).await
}

/// A peer that knows only the relay nodes `relays` and listens on `listen`.
async fn peer_of(
    dir: &TempDir,
    transport: Transport,
    relays: Vec<Multiaddr>,
    listen: Vec<Multiaddr>,
) -> Result<(NodeHandle, mpsc::Receiver<NodeEvent>)> {
    let config = Config {
        listen_addrs: listen,
        bootstrap: relays,
        room_lookup_interval: Duration::from_secs(1),
        ..common::config(dir.path(), transport)
    };
    Ok(Node::spawn(config).await?)
}

/// Waits until `node` listens through a relay, and returns that address with its `/p2p/` suffix.
async fn relayed_address(node: &NodeHandle) -> Result<Multiaddr> {
    let addr = tokio::time::timeout(common::WAIT, async {
        loop {
            if let Some(addr) = node.listen_addrs().await?.into_iter().find(is_relayed) {
                return anyhow::Ok(addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("timed out waiting for a relay reservation")??;
    Ok(match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr,
        _ => addr.with(Protocol::P2p(node.peer_id())),
    })
}

/// Whether `node` listens through the relay `relay`.
async fn listens_through(node: &NodeHandle, relay: PeerId) -> Result<bool> {
    let relay = Protocol::P2p(relay);
    Ok(node
        .listen_addrs()
        .await?
        .iter()
        .any(|addr| is_relayed(addr) && addr.iter().any(|p| p == relay)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_behind_nat_reserve_at_the_relay_find_each_other_and_talk_through_it() -> Result<()> {
    talk_through_the_relay(Transport::Tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_behind_nat_talk_through_the_relay_on_the_memory_transport() -> Result<()> {
    talk_through_the_relay(Transport::Memory).await
}

/// Two peers with no listen address that know only the relay node reserve at it on their own,
/// find each other in the DHT, and exchange messages both ways over the relay.
async fn talk_through_the_relay(transport: Transport) -> Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let (relay, _relay_events, relay_addr) =
        relay_node(&dirs[0], transport, RelayLimits::default()).await?;
    let (a, _a_events) = peer(&dirs[1], transport, &relay_addr, Vec::new()).await?;
    let (b, _b_events) = peer(&dirs[2], transport, &relay_addr, Vec::new()).await?;
    // Neither was told to listen through the relay: each found it cannot be dialled.
    relayed_address(&a).await?;
    relayed_address(&b).await?;
    a.join(ROOM).await?;
    b.join(ROOM).await?;
    // They know only the relay; the DHT gives each the other's relayed address.
    common::eventually("A and B connected", || async {
        Ok(a.peers().await?.contains(&b.peer_id()))
    })
    .await?;
    a.post(ROOM, "hello from A").await?;
    b.post(ROOM, "hello from B").await?;
    common::wait_for_messages(&a, ROOM, 2).await?;
    common::wait_for_messages(&b, ROOM, 2).await?;

    // The side that dialled names the circuit through the relay in its address.
    let mut dialled = Vec::new();
    for (node, other) in [(&a, &b), (&b, &a)] {
        let connections = node.peer_connections(other.peer_id()).await?;
        assert!(
            !connections.is_empty(),
            "no connection left: {connections:?}"
        );
        assert!(
            connections.iter().all(|c| c.relayed),
            "a direct connection between peers with no direct address: {connections:?}"
        );
        dialled.extend(
            connections
                .into_iter()
                .map(|c| c.remote_addr)
                .filter(is_relayed),
        );
    }
    let relay_peer = Protocol::P2p(relay.peer_id());
    assert!(
        dialled
            .iter()
            .any(|addr| addr.iter().any(|p| p == relay_peer)),
        "no connection dialled through the relay: {dialled:?}"
    );
    assert!(relay.rooms().await?.is_empty());

    a.shutdown().await?;
    b.shutdown().await?;
    relay.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_connection_is_upgraded_to_a_direct_one_by_hole_punching() -> Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let tcp = Transport::Tcp;
    let (relay, _relay_events, relay_addr) =
        relay_node(&dirs[0], tcp, RelayLimits::default()).await?;
    // A listens directly too, but nobody is told that address: B reaches A only through the
    // relay, and only DCUtR tells each side where to dial the other.
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let (a, mut a_events) = peer(&dirs[1], tcp, &relay_addr, vec![local(tcp), circuit]).await?;
    let (b, mut b_events) = peer(&dirs[2], tcp, &relay_addr, vec![local(tcp)]).await?;
    let a_relayed = relayed_address(&a).await?;
    // libp2p's relay client fails a circuit dial while a dial to the relay is still in flight.
    common::eventually("B connected to the relay", || async {
        Ok(b.peers().await?.contains(&relay.peer_id()))
    })
    .await?;
    b.dial(a_relayed).await?;
    // Each side dials the other's observed address; on loopback both dials share one TCP
    // 4-tuple, so one of them wins and only its dialler reports the upgrade.
    let punched = tokio::time::timeout(common::WAIT, async {
        loop {
            let (event, at) = tokio::select! {
                Some(event) = a_events.recv() => (event, &a),
                Some(event) = b_events.recv() => (event, &b),
                else => anyhow::bail!("event streams ended"),
            };
            if let NodeEvent::HolePunched(peer) = event {
                return Ok((at.peer_id(), peer));
            }
        }
    })
    .await
    .context("timed out waiting for hole punching")??;
    assert!(
        punched == (a.peer_id(), b.peer_id()) || punched == (b.peer_id(), a.peer_id()),
        "hole punched with a stranger: {punched:?}"
    );
    // The other side learns of the new connection a moment later.
    for (node, other) in [(&a, &b), (&b, &a)] {
        common::eventually("a direct connection beside the relayed one", || async {
            let connections = node.peer_connections(other.peer_id()).await?;
            Ok(connections.iter().any(|c| !c.relayed) && connections.iter().any(|c| c.relayed))
        })
        .await?;
    }

    a.shutdown().await?;
    b.shutdown().await?;
    relay.shutdown().await?;
    Ok(())
}

/// A peer that finds a direct address while a renewal of its reservation is on its way keeps the
/// reservation and keeps running. libp2p-relay 0.22's client forgets a reservation whose listener
/// closes, and panics in the node's event loop when the answer to a request already sent comes
/// back; the relay decides when renewals go out, so the node must not close the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_finds_a_direct_address_keeps_its_reservations_and_keeps_running() -> Result<()>
{
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let tcp = Transport::Tcp;
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse()?;
    let config = Config {
        transport: tcp,
        ..Config::bootstrap_node(dirs[0].path(), vec![local(tcp), quic.clone()])
    };
    let (relay, _relay_events) = Node::spawn(config).await?;
    let (relay_quic, relay_tcp): (Vec<Multiaddr>, Vec<Multiaddr>) = relay
        .shareable_addrs()
        .await?
        .into_iter()
        .partition(|addr| addr.iter().any(|p| p == Protocol::QuicV1));
    let relay_tcp = relay_tcp.into_iter().next().context("no TCP address")?;
    let relay_quic = relay_quic.into_iter().next().context("no QUIC address")?;
    let held = held_relay::spawn().await?;
    // B listens on QUIC only and reaches both relays over TCP, from ports it picks for each
    // connection: the only addresses they tell it they see it at are ones nobody can dial it
    // at. Its first AutoNAT round (5 s after it starts) fails, so it reserves at both.
    let (b, _b_events) = peer_of(
        &dirs[1],
        tcp,
        vec![relay_tcp, held.addr.clone()],
        vec![quic],
    )
    .await?;
    common::eventually("B reserved at both relays", || async {
        Ok(
            listens_through(&b, relay.peer_id()).await?
                && listens_through(&b, held.peer_id).await?,
        )
    })
    .await?;
    // The held relay's next answer waits: from then on a renewal is on its way.
    held.gate.close();
    common::eventually("B renewed its reservation", || async {
        Ok(held.gate.held() > 0)
    })
    .await?;
    // Over QUIC, the relay node sees B at its listen address; the next round confirms it, and
    // with a direct address B serves the DHT and enters the relay node's routing table.
    b.dial(relay_quic).await?;
    common::eventually("B confirmed a direct address", || async {
        let table = relay.routing_table().await?;
        Ok(table.iter().any(|entry| entry.peer == b.peer_id()))
    })
    .await?;
    held.gate.open();
    common::eventually("the renewal answered", || async {
        Ok(held.gate.held() == 0)
    })
    .await?;
    // The answer reaches B a moment after the relay sends it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.peers().await.context("B's event loop ended")?;
    assert!(
        listens_through(&b, relay.peer_id()).await? && listens_through(&b, held.peer_id).await?,
        "B gave up a reservation while its connection to the relay was open"
    );

    b.shutdown().await?;
    relay.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_reservations_beyond_its_limit() -> Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let limits = RelayLimits {
        max_reservations: 1,
        ..RelayLimits::default()
    };
    let memory = Transport::Memory;
    let (relay, _relay_events, relay_addr) = relay_node(&dirs[0], memory, limits).await?;
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let (first, _first_events) = peer(&dirs[1], memory, &relay_addr, vec![circuit.clone()]).await?;
    relayed_address(&first).await?;
    let second = peer(&dirs[2], memory, &relay_addr, vec![circuit]).await;
    let error = second
        .err()
        .context("a second reservation was granted beyond a limit of one")?;
    println!("second reservation refused: {error}");
    assert!(
        error.to_string().contains("ResourceLimitExceeded"),
        "refused for another reason: {error}"
    );

    first.shutdown().await?;
    relay.shutdown().await?;
    Ok(())
}
