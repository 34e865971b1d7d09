//! The Grapevine peer: one task owns the libp2p swarm and the joined rooms, and the rest of the
//! program drives it through a cloneable handle and reads what happens from an event stream.
//!
//! # Layout
//! - [`config`]: [`Config`], the node's addresses, transport, timings and limits.
//! - [`handle`]: [`NodeHandle`], commands with replies over a bounded channel.
//! - `event_loop`: the task that owns the swarm and the rooms; one `select!` step at a time.
//!   Its `gossip` part checks and batches room gossip; its `sync` part runs history sync.
//!   Its `discovery` part finds room members through Kademlia provider records and mDNS; its
//!   `nat` part follows reachability (AutoNAT), reserves relay slots when the node cannot be
//!   dialled, and reports hole punching (DCUtR).
//! - [`behaviour`]: the composed libp2p behaviour (connection limits, gossipsub rooms,
//!   `/grapevine/sync/1` history sync, identify, ping, Kademlia `/grapevine/kad/1.0.0`, mDNS,
//!   AutoNAT v2, circuit relay v2 client and server, DCUtR) and the wire formats of gossip
//!   envelopes and sync requests.
//! - `address_range`: the address range (IPv4 /24, IPv6 /48) a peer counts against in the
//!   Kademlia routing table's quota per range.
//! - `handshake_quota`: the bound on incoming handshakes in progress per address range.
//! - `rate_limit`: token buckets bounding the sync work each peer can ask for.
//! - `room_list`: the joined rooms' names, saved in the data directory and rejoined at start.
//! - [`gossip_counts`]: [`GossipCounts`], gossipsub's own counts of the copies it received.
//! - [`error`]: the error type, [`NodeError`].

mod address_range;
pub mod behaviour;
pub mod config;
pub mod error;
mod event_loop;
pub mod gossip_counts;
pub mod handle;
mod handshake_quota;
mod rate_limit;
mod room_list;

use grapevine_crdt::{IndexedRecord, RoomId};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::futures::StreamExt;
use libp2p::metrics::Registry;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, Transport as _, noise, tcp, yamux};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use behaviour::room_topic;
pub use config::{
    Config, CustomTransport, Limits, RangeQuota, RawStream, RawTransport, RelayLimits, Transport,
};
pub use error::NodeError;
pub use gossip_counts::GossipCounts;
pub use grapevine_crdt as crdt;
pub use handle::NodeHandle;
pub use rate_limit::Rate;
pub use room_list::ROOM_LIST_FILE;

use behaviour::Behaviour;

/// Name of the device key file inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// How long [`Node::spawn`] waits for each listener to report its address.
const LISTEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the node tells the rest of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// Records from other peers reached a joined room (by gossip or sync) and are stored; or,
    /// after [`NodeEvent::StorageFailed`], are held in memory only, until a write to the room's
    /// files succeeds again. One event per commit: a newcomer's catch-up brings a whole history
    /// in one, which one event per record would overflow the event queue with (and drop).
    RecordsReceived {
        /// The room's id.
        room: RoomId,
        /// The records as indexed by the room, in the order they arrived.
        records: Vec<IndexedRecord>,
    },
    /// A record this node wrote (through [`NodeHandle`]) is stored durably; it is being published.
    /// With [`NodeEvent::RecordsReceived`], the event stream carries every record of a joined room.
    RecordWritten {
        /// The room's id.
        room: RoomId,
        /// The record as indexed by the room.
        record: IndexedRecord,
    },
    /// Something was refused or damaged: invalid input from a peer, or a local file set aside.
    Warning {
        /// The peer that sent the input, when a peer did.
        peer: Option<PeerId>,
        /// What happened.
        reason: String,
    },
    /// The connected peers subscribed to a joined room's topic changed: someone joined, left or
    /// disconnected.
    RoomPeersChanged {
        /// The room's id.
        room: RoomId,
        /// The connected peers in the room now, sorted.
        peers: Vec<PeerId>,
    },
    /// A sync exchange with a peer stored records this node lacked (the records themselves
    /// arrive in [`NodeEvent::RecordsReceived`] too).
    SyncProgress {
        /// The room's id.
        room: RoomId,
        /// The peer syncing with this node.
        peer: PeerId,
        /// Records stored by this step of the exchange.
        new_records: usize,
    },
    /// A sync exchange this node started ended with both sides holding the same history: this
    /// node now has everything that peer had.
    SyncCompleted {
        /// The room's id.
        room: RoomId,
        /// The peer synced with.
        peer: PeerId,
        /// Records the room holds now.
        records: usize,
    },
    /// The first connection to a peer opened.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A relayed connection to a peer was joined by a direct one through hole punching (DCUtR),
    /// so traffic with that peer no longer depends on a relay's limits.
    HolePunched(PeerId),
    /// Writing to the data directory failed (a full disk, a read-only file system), so the user
    /// must be told: the node keeps running, records received are still reported but not stored
    /// until a write succeeds again, and a post that cannot be stored fails with
    /// [`NodeError::NotStored`]. Reported once per room until its files take writes again, and
    /// when the list of joined rooms cannot be saved.
    StorageFailed {
        /// What was not stored, why, and what follows.
        reason: String,
    },
}

/// One open connection to a peer, as [`NodeHandle::peer_connections`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnection {
    /// The peer's address on this connection: the address dialled, or the one the peer came
    /// from (just `/p2p/<peer>` for a connection relayed to us).
    pub remote_addr: Multiaddr,
    /// The connection runs through a relay (`/p2p-circuit`) rather than directly.
    pub relayed: bool,
}

/// One peer of the Kademlia routing table, as [`NodeHandle::routing_table`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingEntry {
    /// The peer.
    pub peer: PeerId,
    /// The addresses the table holds for it, handed to others who ask for peers near a key.
    pub addresses: Vec<Multiaddr>,
}

/// The node's connections by state and direction, as [`NodeHandle::connection_counts`] reports
/// them, to compare with the configured [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionCounts {
    /// Incoming connections still in their handshake.
    pub pending_incoming: u32,
    /// Outgoing dials still in progress.
    pub pending_outgoing: u32,
    /// Established connections the peer opened.
    pub established_incoming: u32,
    /// Established connections this node opened.
    pub established_outgoing: u32,
}

/// What this node saw of one peer as the source of room gossip, as
/// [`NodeHandle::gossip_source`] reports it: enough to tell whether a spammer's messages still
/// cost signature checks once gossipsub has graylisted it, and what a slow reader made this
/// node drop.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GossipSource {
    /// The peer's gossipsub score here (`None` for a peer gossipsub does not know).
    pub score: Option<f64>,
    /// Record signatures this node checked for gossip the peer forwarded, since it started
    /// (duplicates and structurally invalid changes are dropped before any signature is checked
    /// and are not counted).
    pub signature_checks: u64,
    /// Gossip messages this node dropped instead of sending them to the peer, since it started,
    /// because the peer read too slowly: its send queue was full ([`behaviour::SEND_QUEUE_LEN`])
    /// or they waited in it longer than allowed. A slow reader costs its senders this much, not
    /// a queue without bound.
    pub dropped_for_slowness: u64,
}

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Loads (or creates) the device key and the store in `config.data_dir`, builds the swarm,
    /// starts listening (waiting until each listener has its address), dials the bootstrap
    /// peers, rejoins the rooms joined before the last stop, and spawns the event loop on the current tokio runtime.
    pub async fn spawn(
        config: Config,
    ) -> Result<(NodeHandle, mpsc::Receiver<NodeEvent>), NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Setup(e.to_string()))?;
        let identity =
            grapevine_crdt::Identity::load_or_create(&config.data_dir.join(IDENTITY_FILE))?;
        let store = grapevine_crdt::Store::open(&config.data_dir)?;
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(identity.secret_bytes())
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        let (mut swarm, metrics) = build_swarm(keypair, &config)?;
        for addr in &config.listen_addrs {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    reason: error::causes(&e),
                    kind: error::io_kind(&e),
                })?;
        }
        wait_for_listeners(&mut swarm, config.listen_addrs.len()).await?;
        if config.reachable {
            let addrs: Vec<Multiaddr> = swarm.listeners().cloned().collect();
            for addr in addrs {
                swarm.add_external_address(addr);
            }
        }
        seed_routing_table(&mut swarm, &config.bootstrap);
        for addr in &config.bootstrap {
            // Named peers are dialled only when not yet connected (a relay listener may have).
            let opts = match addr.iter().last() {
                Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .build(),
                _ => DialOpts::from(addr.clone()),
            };
            if let Err(e) = swarm.dial(opts) {
                tracing::warn!(%addr, error = %e, "could not dial bootstrap peer");
            }
        }
        let peer_id = *swarm.local_peer_id();
        let (command_tx, command_rx) = mpsc::channel(config.command_capacity);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
        let rooms = room_list::load(&config.data_dir)?;
        let mut event_loop = event_loop::EventLoop::new(
            swarm, metrics, store, identity, &config, command_rx, event_tx,
        );
        // Every line the loop logs names its node: a process may run many (simulations, tests).
        let span = tracing::info_span!("node", peer = %peer_id);
        span.in_scope(|| event_loop.rejoin(&rooms));
        tokio::spawn(event_loop.run().instrument(span));
        Ok((NodeHandle::new(command_tx, peer_id), event_rx))
    }
}

/// Adds the bootstrap addresses that name their peer (`/p2p/<id>`) to Kademlia and starts a
/// bootstrap, so the node learns the DHT around it.
fn seed_routing_table(swarm: &mut Swarm<Behaviour>, bootstrap: &[Multiaddr]) {
    let kad = &mut swarm.behaviour_mut().kad;
    let mut seeded = false;
    for addr in bootstrap {
        let mut addr = addr.clone();
        if let Some(Protocol::P2p(peer)) = addr.pop() {
            kad.add_address(&peer, addr);
            seeded = true;
        }
    }
    if seeded && let Err(e) = kad.bootstrap() {
        tracing::warn!(error = %e, "Kademlia bootstrap failed");
    }
}

/// The error type libp2p's swarm builder takes from fallible setup closures.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The swarm, and the registry its gossipsub records counters into.
fn build_swarm(
    keypair: libp2p::identity::Keypair,
    config: &Config,
) -> Result<(Swarm<Behaviour>, Registry), NodeError> {
    let mut metrics = Registry::default();
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let idle = config.idle_connection_timeout;
    let raw = match (&config.custom_transport, config.transport) {
        (Some(custom), _) => custom.build(),
        (None, Transport::Memory) => MemoryTransport::default()
            .map(|stream, _| Box::new(stream) as Box<dyn RawStream>)
            .boxed(),
        (None, Transport::Tcp) => {
            let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| setup(&e))?
                .with_quic()
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(|e| setup(&e))?
                .with_behaviour(|key, relay| {
                    Behaviour::new(key, config, relay, &mut metrics).map_err(BoxError::from)
                })
                .map_err(|e| setup(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build();
            return Ok((swarm, metrics));
        }
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            Ok::<_, BoxError>(
                raw.upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    .boxed(),
            )
        })
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay| {
            Behaviour::new(key, config, relay, &mut metrics).map_err(BoxError::from)
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok((swarm, metrics))
}

/// Drives the swarm until every listener reported an address, so [`NodeHandle::listen_addrs`]
/// is complete as soon as the node is handed out.
async fn wait_for_listeners(
    swarm: &mut Swarm<Behaviour>,
    listeners: usize,
) -> Result<(), NodeError> {
    let mut ready = 0;
    while ready < listeners {
        let event = tokio::time::timeout(LISTEN_TIMEOUT, swarm.select_next_some())
            .await
            .map_err(|_| NodeError::Setup("no listen address reported in time".into()))?;
        match event {
            SwarmEvent::NewListenAddr { .. } => ready += 1,
            SwarmEvent::ListenerError { error, .. } => {
                return Err(NodeError::Setup(error::causes(&error)));
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                return Err(NodeError::Setup(format!(
                    "listener on {addresses:?} closed: {reason:?}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
