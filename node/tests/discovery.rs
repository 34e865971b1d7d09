//! Peers that know only a bootstrap node find their room's other members through Kademlia
//! provider records, their connections stay within the configured limits, and once settled
//! they keep only their room mesh and a few routing contacts; a joining node's Kademlia
//! bootstrap asks for nothing beyond the lookup of its own id.

mod common;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use grapevine_node::behaviour::MESH_N_HIGH;
use grapevine_node::{
    Config, CustomTransport, Limits, Node, NodeEvent, NodeHandle, RawStream, Transport,
};
use libp2p::core::transport::MemoryTransport;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::{Multiaddr, PeerId, Transport as _};
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

/// Peers of the bootstrap test besides the bootstrap node and the newcomer: more than the 20
/// ([`libp2p::kad::K_VALUE`]) a lookup gathers, so the newcomer's routing table spans several
/// k-buckets and a whole bootstrap walks about four of them after its own-id lookup.
const DHT_PEERS: usize = 24;
/// How long the DHT must read next to nothing before the newcomer starts. Its peers' AutoNAT
/// probes move some 20 MB of dial-back data between them in rounds 5 s apart for about 15 s
/// after they start (the memory transport has no IP address to skip it by); a newcomer that
/// joined during a round once waited over 10 s for its first connection, so its own-id lookup
/// timed out and it stayed alone.
const DHT_QUIET_PERIOD: Duration = Duration::from_secs(6);
/// The longest the DHT is given to go quiet.
const DHT_SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Peers the newcomer connects to before its bootstrap traffic may count as over: its own-id
/// lookup reached 21 to 25 of the 25 (the bootstrap node too) in every run.
const BOOTSTRAP_REACH: usize = 16;
/// The newcomer's bootstraps count as over once it connects to no new peer and reads less
/// than [`QUIET_BYTES`] in this long. Its walks read some 30 to 80 kB a second, in bursts up to
/// about 1 s apart (2 s proved too short with the other tests of this file running beside
/// it); ping and its own AutoNAT probes read a few kB every 5 s or more.
const QUIET_PERIOD: Duration = Duration::from_secs(4);
/// Bytes read within [`QUIET_PERIOD`] (or [`DHT_QUIET_PERIOD`], by the whole DHT) below which
/// reading counts as quiet.
const QUIET_BYTES: u64 = 10_000;
/// The longest the newcomer's bootstraps are followed: twice [`common::WAIT`], as a machine
/// busy with other work once slowed them past 20 s.
const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(40);
/// Bytes the newcomer may read over its bootstraps: about midway (by ratio) between the most
/// measured with the cut and the least without it.
const BOOTSTRAP_BYTES: u64 = 200_000;

/// Every Kademlia bootstrap ends after its first step, the lookup of the node's own id
/// (`cut_bootstrap_short`): the lookups of a random id in each farther k-bucket are skipped.
/// Each of those asks every peer again (25 peers are fewer than a lookup's three disjoint paths
/// of 20 take in), so it shows in the bytes the newcomer reads: mostly the peers' answers,
/// about 2 kB each (20 peers and their addresses), on top of about 1.5 kB of handshakes and
/// identify per peer. The join runs two bootstraps (libp2p-kad starts another while the table
/// holds fewer than 20 peers). Measured until the newcomer went quiet, alone and beside this
/// file's other tests: with the cut (two own-id lookups, reaching 21 or 22 peers) 119 to 125 kB
/// in sixteen runs in a quiet DHT, and 84 to 137 kB in some thirty earlier runs that joined
/// during the AutoNAT rounds; without it (two whole bootstraps, reaching all 25 peers) 395 to
/// 488 kB in four runs in a quiet DHT, and 308 to 919 kB in some twenty earlier ones (how many
/// buckets they walk depends on how near the newcomer's nearest peer is). The newcomer is a
/// DHT client, as a user behind a NAT is: it serves no AutoNAT probes, whose dial-back data
/// would be read too, and nobody asks it anything until its address is confirmed. It joins
/// once the DHT has gone quiet, and its bytes are counted until it goes quiet too or passes
/// the bound ([`follow_bootstrap`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_bootstraps_with_only_the_lookup_of_its_own_id() -> Result<()> {
    let dht_read = Arc::new(AtomicU64::new(0));
    let dht = Dht::start(&dht_read).await?;
    anyhow::ensure!(
        went_quiet(&dht_read, DHT_QUIET_PERIOD, DHT_SETTLE_DEADLINE).await,
        "the DHT still read {QUIET_BYTES} bytes every {DHT_QUIET_PERIOD:?} after \
         {DHT_SETTLE_DEADLINE:?}"
    );

    let read = Arc::new(AtomicU64::new(0));
    let dir = tempfile::tempdir()?;
    let config = Config {
        reachable: false,
        ..dht.peer_config(&dir, &read)
    };
    let (newcomer, mut events) = Node::spawn(config).await?;
    let traffic = follow_bootstrap(&mut events, &read).await;
    println!("the newcomer's bootstraps: {traffic:?}");
    let BootstrapTraffic { bytes, peers } = traffic;
    assert!(
        bytes <= BOOTSTRAP_BYTES,
        "the newcomer read {bytes} bytes, above {BOOTSTRAP_BYTES}: its bootstraps walked more \
         than its own id"
    );
    anyhow::ensure!(
        peers >= BOOTSTRAP_REACH,
        "the newcomer's bootstrap reached {peers} peers, fewer than {BOOTSTRAP_REACH}"
    );
    newcomer.shutdown().await?;
    dht.shutdown().await
}

/// A bootstrap node and [`DHT_PEERS`] peers that know only it and join no room: a DHT with no
/// room lookups going on in it.
struct Dht {
    bootstrap: NodeHandle,
    bootstrap_addr: Multiaddr,
    peers: Vec<NodeHandle>,
    _dirs: Vec<TempDir>,
    _events: Vec<mpsc::Receiver<NodeEvent>>,
}

impl Dht {
    /// Starts the DHT's nodes, each counting the bytes it reads into `read`.
    async fn start(read: &Arc<AtomicU64>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            custom_transport: Some(counting_memory_transport(read.clone())),
            ..server_config(&dir, Transport::Memory)
        };
        let (bootstrap, rx) = Node::spawn(config).await?;
        let mut dht = Self {
            bootstrap_addr: common::first_addr(&bootstrap).await?,
            bootstrap,
            peers: Vec::new(),
            _dirs: vec![dir],
            _events: vec![rx],
        };
        for _ in 0..DHT_PEERS {
            let dir = tempfile::tempdir()?;
            let (peer, rx) = Node::spawn(dht.peer_config(&dir, read)).await?;
            dht.peers.push(peer);
            dht._dirs.push(dir);
            dht._events.push(rx);
        }
        Ok(dht)
    }

    /// A DHT server that keeps its files in `dir`, knows only the bootstrap node and counts the
    /// bytes it reads into `read`.
    fn peer_config(&self, dir: &TempDir, read: &Arc<AtomicU64>) -> Config {
        Config {
            bootstrap: vec![self.bootstrap_addr.clone()],
            custom_transport: Some(counting_memory_transport(read.clone())),
            ..server_config(dir, Transport::Memory)
        }
    }

    async fn shutdown(self) -> Result<()> {
        for peer in &self.peers {
            peer.shutdown().await?;
        }
        self.bootstrap.shutdown().await?;
        Ok(())
    }
}

/// Waits, for at most `limit`, until less than [`QUIET_BYTES`] are read into `read` over
/// `period`; says whether that happened.
async fn went_quiet(read: &AtomicU64, period: Duration, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let (mut quiet_since, mut read_then) = (Instant::now(), read.load(Ordering::Relaxed));
    while Instant::now() < end {
        if quiet_since.elapsed() >= period {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let read_now = read.load(Ordering::Relaxed);
        if read_now - read_then >= QUIET_BYTES {
            (quiet_since, read_then) = (Instant::now(), read_now);
        }
    }
    false
}

/// What a newly joined node read while it bootstrapped.
#[derive(Debug)]
struct BootstrapTraffic {
    /// Bytes read, from every peer.
    bytes: u64,
    /// Peers it connected to.
    peers: usize,
}

/// Follows a newcomer's connections and the bytes it reads until its bootstraps are over or
/// it has read more than [`BOOTSTRAP_BYTES`], for at most
/// [`BOOTSTRAP_DEADLINE`]. Over means: it has connected to [`BOOTSTRAP_REACH`] peers, then for
/// [`QUIET_PERIOD`] it connects to no other and reads less than [`QUIET_BYTES`]. New
/// connections keep it from counting as over: the own-id lookup can wait seconds for its last
/// peers (seen on a busy machine), reading little meanwhile.
async fn follow_bootstrap(
    events: &mut mpsc::Receiver<NodeEvent>,
    read: &AtomicU64,
) -> BootstrapTraffic {
    let mut connected = HashSet::new();
    let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
    let (mut quiet_since, mut read_then, mut connected_then) = (Instant::now(), 0, 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(event) = events.try_recv() {
            if let NodeEvent::PeerConnected(peer) = event {
                connected.insert(peer);
            }
        }
        let (read_now, peers) = (read.load(Ordering::Relaxed), connected.len());
        if read_now > BOOTSTRAP_BYTES {
            break;
        }
        if peers < BOOTSTRAP_REACH || peers != connected_then || read_now - read_then >= QUIET_BYTES
        {
            (quiet_since, read_then, connected_then) = (Instant::now(), read_now, peers);
        } else if quiet_since.elapsed() >= QUIET_PERIOD {
            break;
        }
    }
    BootstrapTraffic {
        bytes: read.load(Ordering::Relaxed),
        peers: connected.len(),
    }
}

/// The memory transport, counting into `read` the bytes the node reads (as they arrive, still
/// encrypted).
fn counting_memory_transport(read: Arc<AtomicU64>) -> CustomTransport {
    CustomTransport::new(move || {
        let read = read.clone();
        MemoryTransport::default()
            .map(move |stream, _| {
                Box::new(CountingStream {
                    inner: Box::new(stream),
                    read: read.clone(),
                }) as Box<dyn RawStream>
            })
            .boxed()
    })
}

/// A stream that adds the bytes read from it to a counter shared by all of a node's streams.
struct CountingStream {
    inner: Box<dyn RawStream>,
    read: Arc<AtomicU64>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.read.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
