//! Peers that know only a bootstrap node find their room's other members through Kademlia
//! provider records, their connections stay within the configured limits, and once settled
//! they keep only their room mesh and a few routing contacts.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use grapevine_node::behaviour::MESH_N_HIGH;
use grapevine_node::{Config, Limits, Node, NodeEvent, NodeHandle, Transport};
use libp2p::{Multiaddr, PeerId};
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
    bootstrap_addr: Multiaddr,
    members: Vec<NodeHandle>,
    tune: fn(Config) -> Config,
    transport: Transport,
    _dirs: Vec<TempDir>,
    _events: Vec<mpsc::Receiver<NodeEvent>>,
}

impl Network {
    /// Starts a member that knows only the bootstrap node and joins the room.
    async fn add_member(&mut self) -> Result<NodeHandle> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            bootstrap: vec![self.bootstrap_addr.clone()],
            limits: Limits {
                max_established: MEMBER_MAX_CONNECTIONS,
                ..Limits::default()
            },
            ..server_config(&dir, self.transport)
        };
        let (member, rx) = Node::spawn((self.tune)(config)).await?;
        member.join(ROOM).await?;
        self.members.push(member.clone());
        self._dirs.push(dir);
        self._events.push(rx);
        Ok(member)
    }
}

/// Kademlia server mode set explicitly: on loopback, auto mode would stay a client.
fn server_config(dir: &TempDir, transport: Transport) -> Config {
    Config {
        reachable: true,
        room_lookup_interval: Duration::from_secs(1),
        ..common::config(dir.path(), transport)
    }
}

/// Leaves a config as it is: for tests that keep the timers of [`server_config`].
fn as_is(config: Config) -> Config {
    config
}

/// Starts a bootstrap node and `size` members; `tune` adjusts every node's config last.
async fn network(transport: Transport, size: usize, tune: fn(Config) -> Config) -> Result<Network> {
    let dir = tempfile::tempdir()?;
    let (bootstrap, rx) = Node::spawn(tune(server_config(&dir, transport))).await?;
    let bootstrap_addr = common::first_addr(&bootstrap).await?;
    let mut network = Network {
        bootstrap,
        bootstrap_addr,
        members: Vec::new(),
        tune,
        transport,
        _dirs: vec![dir],
        _events: vec![rx],
    };
    for _ in 0..size {
        network.add_member().await?;
    }
    Ok(network)
}

/// Up to three members post; waits until every member sees every message.
async fn exchange_messages(network: &Network) -> Result<()> {
    let publishers = network.members.len().min(PUBLISHERS);
    for (i, publisher) in network.members.iter().take(publishers).enumerate() {
        publisher.post(ROOM, &format!("hello from {i}")).await?;
    }
    for member in &network.members {
        if let Err(e) = common::wait_for_messages(member, ROOM, publishers).await {
            let mut state = Vec::new();
            for member in &network.members {
                let messages = member.view(ROOM).await?.messages.len();
                state.push((messages, member.connections().await?));
            }
            return Err(e.context(format!("(messages, connections) per member: {state:?}")));
        }
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
    let network = network(Transport::Memory, MEMBERS, as_is).await?;
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

/// Members of the latecomer test: more of them than a member may have connections, but room
/// enough for a mesh (`MESH_N` peers), the bootstrap node and a spare.
const CROWDED_MEMBERS: usize = 14;
const CROWDED_MAX_CONNECTIONS: u32 = 10;

fn crowded_config(config: Config) -> Config {
    if config.bootstrap.is_empty() {
        return config;
    }
    Config {
        limits: Limits {
            max_established: CROWDED_MAX_CONNECTIONS,
            ..config.limits
        },
        ..config
    }
}

/// Discovery connects every member to most others (each lookup walks the DHT, and every member
/// serves it), so members reach their connection limit; they must still let a latecomer in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_near_their_connection_limit_make_room_for_a_latecomer() -> Result<()> {
    let mut network = network(Transport::Memory, CROWDED_MEMBERS, crowded_config).await?;
    exchange_messages(&network).await?;
    // An eighth of the limit (here one connection) is made free once the connections are past
    // their grace period. Lookups by members short of peers take it again for a while, so each
    // member need only be seen with it free once.
    let kept_free = CROWDED_MAX_CONNECTIONS - 1;
    let members = network.members.clone();
    let mut made_room = vec![false; members.len()];
    let deadline = Instant::now() + common::WAIT;
    while !made_room.iter().all(|&made| made) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "members seen below their limit (the others never were): {made_room:?}"
        );
        for (member, made) in members.iter().zip(&mut made_room) {
            *made |= member.connections().await? <= kept_free;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let latecomer = network.add_member().await?;
    common::wait_for_messages(&latecomer, ROOM, PUBLISHERS).await?;
    latecomer.post(ROOM, "late but here").await?;
    for member in &network.members {
        common::wait_for_messages(member, ROOM, PUBLISHERS + 1).await?;
    }
    let peers = latecomer.peers().await?;
    assert!(
        peers
            .iter()
            .any(|p| members.iter().any(|m| m.peer_id() == *p)),
        "the latecomer is connected to members, not only to the bootstrap node: {peers:?}"
    );
    shutdown(network).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_the_configured_limits() -> Result<()> {
    let network = network(Transport::Memory, MEMBERS, as_is).await?;
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

/// Members of the settling test: a short idle timeout so pruning starts within the test, room
/// lookups only at join (the default interval is longer than the test), few routing contacts.
fn settling_config(config: Config) -> Config {
    Config {
        idle_connection_timeout: SETTLING_IDLE_TIMEOUT,
        room_lookup_interval: grapevine_node::config::DEFAULT_ROOM_LOOKUP_INTERVAL,
        limits: Limits {
            routing_contacts: SETTLING_ROUTING_CONTACTS,
            ..Limits::default()
        },
        ..config
    }
}

const SETTLING_MEMBERS: usize = 30;
const SETTLING_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const SETTLING_ROUTING_CONTACTS: u32 = 2;
/// Kademlia's walks of the join open and close connections for some seconds (longer in debug
/// builds on two cores); the test waits for them this long at most.
const SETTLING_DEADLINE: Duration = Duration::from_secs(90);

/// Once Kademlia's walks of the join are over, every member keeps at most its room mesh and a
/// few routing contacts, and the bootstrap node (in no room) only its routing contacts. "Kept"
/// means connected at every sample of a window three idle timeouts long: a connection opened
/// for one sync exchange or one lookup closes within about one idle timeout, so only kept ones
/// are in every sample. Windows repeat until one passes, for at most `SETTLING_DEADLINE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_peers_keep_only_their_room_mesh_and_a_few_routing_contacts() -> Result<()> {
    let network = network(Transport::Memory, SETTLING_MEMBERS, settling_config).await?;
    exchange_messages(&network).await?;
    let started = Instant::now();
    let member_bound = MESH_N_HIGH + SETTLING_ROUTING_CONTACTS as usize;
    let bootstrap_bound = SETTLING_ROUTING_CONTACTS as usize;
    let mut handles: Vec<NodeHandle> = network.members.clone();
    handles.push(network.bootstrap.clone());
    let kept = loop {
        let kept = peers_kept_through(&handles, SETTLING_IDLE_TIMEOUT * 3).await?;
        let (bootstrap_kept, members_kept) = kept.split_last().context("no nodes")?;
        let settled =
            members_kept.iter().all(|&k| k <= member_bound) && *bootstrap_kept <= bootstrap_bound;
        if settled || started.elapsed() >= SETTLING_DEADLINE {
            break kept;
        }
    };
    println!(
        "peers kept per member, then the bootstrap node, {:.1} s after the messages: {kept:?}",
        started.elapsed().as_secs_f64()
    );
    let (bootstrap_kept, members_kept) = kept.split_last().context("no nodes")?;
    for (i, &kept) in members_kept.iter().enumerate() {
        assert!(
            kept <= member_bound,
            "member {i} kept {kept} peers, above {MESH_N_HIGH} mesh peers and \
             {SETTLING_ROUTING_CONTACTS} routing contacts"
        );
    }
    assert!(
        *bootstrap_kept <= bootstrap_bound,
        "the bootstrap node is in no room mesh, yet kept {bootstrap_kept} peers"
    );
    network.members[SETTLING_MEMBERS - 1]
        .post(ROOM, "after settling")
        .await?;
    for member in &network.members {
        common::wait_for_messages(member, ROOM, PUBLISHERS + 1).await?;
    }
    shutdown(network).await
}

/// How many peers each node stayed connected to at every sample taken over `window`.
async fn peers_kept_through(handles: &[NodeHandle], window: Duration) -> Result<Vec<usize>> {
    let mut kept: Vec<Option<HashSet<PeerId>>> = vec![None; handles.len()];
    let end = Instant::now() + window;
    while Instant::now() < end {
        for (handle, kept) in handles.iter().zip(&mut kept) {
            let now: HashSet<PeerId> = handle.peers().await?.into_iter().collect();
            *kept = Some(match kept.take() {
                Some(before) => before.intersection(&now).copied().collect(),
                None => now,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(kept.into_iter().map(|k| k.map_or(0, |k| k.len())).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_find_each_other_through_a_bootstrap_node_over_tcp() -> Result<()> {
    let network = network(Transport::Tcp, 2, as_is).await?;
    exchange_messages(&network).await?;
    let other = network.members[1].peer_id();
    assert!(network.members[0].peers().await?.contains(&other));
    shutdown(network).await
}

/// libp2p-kad keeps a peer with its last address however often dials to it fail; the node takes
/// it out itself, or peers that left would stay in full k-buckets for good (a full bucket no
/// longer makes room by dialling its oldest entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_dialled_leaves_the_routing_table() -> Result<()> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, _a_events) = Node::spawn(server_config(&a_dir, Transport::Memory)).await?;
    let (b, _b_events) = Node::spawn(server_config(&b_dir, Transport::Memory)).await?;
    let b_id = b.peer_id();
    let b_addr = common::first_addr(&b).await?;
    common::connect(&a, &b).await?;
    let in_table =
        |entries: Vec<grapevine_node::RoutingEntry>| entries.iter().any(|e| e.peer == b_id);
    common::eventually("b in a's routing table", || async {
        Ok(in_table(a.routing_table().await?))
    })
    .await?;

    b.shutdown().await?;
    common::eventually("a no longer connected to b", || async {
        Ok(!a.peers().await?.contains(&b_id))
    })
    .await?;
    assert!(
        in_table(a.routing_table().await?),
        "a disconnection alone leaves the peer in the table"
    );
    // Dialling fails at once (nobody listens there any more), or the dial is refused.
    let _ = a.dial(b_addr).await;
    common::eventually("b out of a's routing table", || async {
        Ok(!in_table(a.routing_table().await?))
    })
    .await?;
    a.shutdown().await?;
    Ok(())
}
