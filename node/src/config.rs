//! How a node is set up: where it keeps its files, how it reaches the network, and its limits.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::core::transport::Boxed;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::multiaddr::Protocol;

use crate::rate_limit::Rate;

/// Directory used when none is given: relative, so a test or a first run never writes elsewhere.
pub const DEFAULT_DATA_DIR: &str = "grapevine-data";
/// Gossipsub heartbeat: libp2p's default of one second keeps mesh upkeep cheap for chat traffic.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Delay before the first heartbeat. Shorter than libp2p's 5 s so a freshly started node forms
/// its mesh while the user is still typing the first message.
pub const DEFAULT_HEARTBEAT_INITIAL_DELAY: Duration = Duration::from_millis(500);
/// Anti-entropy: how often to sync each room with one random member. Often enough that a
/// partition heals within a minute, rarely enough that idle rooms cost next to nothing.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// How long an unused connection stays open. Longer than libp2p's 10 s so room members stay
/// connected between messages. Gossipsub's streams keep every connection to another node open,
/// so the node also closes connections outside its room meshes once they are this old (see
/// [`Limits::routing_contacts`]): this is also how long the connections of each Kademlia
/// refresh live. 30 s rather than the 60 s of earlier versions: in a quiet 500-member netsim room
/// (`scale-500`, idle CPU over a whole refresh period, one run each) a node spent 0.075 % of a
/// core with 10 s, 0.084 % with 30 s and 0.109 % with 60 s.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest gossip message: the gossipsub and js-libp2p-safe transmit limit (64 KiB). Records are
/// bounded well below it by the room layer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// How long one sync request may take: a large history can need several seconds to generate
/// and apply on a slow device.
pub const DEFAULT_SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`crate::NodeHandle::connect`] waits for a dial's outcome before telling the caller
/// that no answer came: 10 s, js-libp2p's dial timeout and rust-libp2p's connection timeout
/// (which its swarm builder puts on every dial and handshake of this node too), long enough for
/// a handshake over a slow path, short enough for a person waiting at the prompt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands queued from handles before senders wait: enough for bursts of typing and UI queries.
pub const DEFAULT_COMMAND_CAPACITY: usize = 64;
/// Events queued for the reader before new ones are dropped (the loop never blocks on a slow
/// reader): room for a whole sync batch of records.
pub const DEFAULT_EVENT_CAPACITY: usize = 4_096;

/// How often a joined room with too few connected members looks up its providers in Kademlia
/// (and announces itself again): a lonely member finds newcomers within a minute. Rooms with
/// enough members are not looked up, since each lookup connects to some twenty DHT peers.
pub const DEFAULT_ROOM_LOOKUP_INTERVAL: Duration = Duration::from_secs(60);
/// A chat node serves the DHT only when told it is reachable: behind NAT (the common case) a
/// server would be advertised to others who then cannot reach it.
pub const DEFAULT_REACHABLE: bool = false;
/// mDNS is on for users: peers on the same LAN find each other with no configuration at all.
pub const DEFAULT_MDNS: bool = true;

/// Connections to one peer: three, so a relayed connection plus the two direct ones that hole
/// punching (DCUtR) opens when both sides dial at once are not refused, but no more.
pub const DEFAULT_MAX_ESTABLISHED_PER_PEER: u32 = 3;
/// Incoming connections: room meshes (gossipsub keeps up to 12 peers per room) for a handful of
/// rooms plus DHT traffic when serving; more would only cost memory and file descriptors.
pub const DEFAULT_MAX_ESTABLISHED_INCOMING: u32 = 96;
/// Outgoing connections: the meshes of a handful of rooms plus short-lived DHT lookups.
pub const DEFAULT_MAX_ESTABLISHED_OUTGOING: u32 = 64;
/// All established connections: below the sum of the two above, so a node busy dialling out
/// still leaves room for a few incoming peers and the reverse, within a typical 256-fd limit.
pub const DEFAULT_MAX_ESTABLISHED: u32 = 128;
/// Handshakes in progress from others: bounds the work a burst of dials can make us do.
pub const DEFAULT_MAX_PENDING_INCOMING: u32 = 32;
/// Handshakes in progress from one address range (an IPv4 /24, an IPv6 /48): a quarter of
/// [`DEFAULT_MAX_PENDING_INCOMING`], so silent connections from one range, each holding a slot
/// until the 10 s connection timeout, cannot keep every other newcomer out.
pub const DEFAULT_MAX_PENDING_INCOMING_PER_RANGE: u32 = 8;
/// Our own dials in progress: a room lookup dials at most a few tens of providers at once.
pub const DEFAULT_MAX_PENDING_OUTGOING: u32 = 32;
/// Connections kept to peers outside every room mesh (the bootstrap node, DHT contacts): enough
/// for Kademlia lookups to start from a live peer, few enough that a node's settled connection
/// count is its room meshes (at most [`crate::behaviour::MESH_N_HIGH`] peers per room) plus these.
pub const DEFAULT_ROUTING_CONTACTS: u32 = 4;
/// Share of the machine's memory the process may use before new connections are refused: a chat
/// node has no business using more than half, and refusing peers keeps the device usable
/// rather than growing until the system kills it.
pub const DEFAULT_MAX_MEMORY_FRACTION: f64 = 0.5;

/// Sync exchanges one peer may start with this node: a fresh exchange can make the node
/// generate a room's whole history, so a peer gets a burst (joining a few tens of rooms at once)
/// and then one every two seconds, well above anti-entropy's one per room per
/// [`DEFAULT_SYNC_INTERVAL`].
pub const DEFAULT_SYNC_EXCHANGES_PER_PEER: Rate = Rate {
    burst: 32,
    per_second: 0.5,
};
/// Sync requests of any kind from one peer: an exchange takes a few rounds (three for a
/// 100,000-record catch-up), so a burst of a few exchanges' worth and then eight a second.
pub const DEFAULT_SYNC_REQUESTS_PER_PEER: Rate = Rate {
    burst: 128,
    per_second: 8.0,
};

/// Kademlia routing-table peers of one address range (an IPv4 /24, an IPv6 /48) in one k-bucket:
/// Ethereum discovery's `bucketIPLimit`. Below Kademlia's lookup parallelism (α = 3), so even
/// when ids of one range sit closest to a key, the first round of a lookup of that key also asks
/// a peer from elsewhere.
pub const DEFAULT_KAD_PEERS_PER_RANGE_IN_BUCKET: usize = 2;
/// Kademlia routing-table peers of one address range in the whole table: Ethereum discovery's
/// `tableIPLimit`. A rented /24 can place at most this many of its ids in any node's table, yet
/// a few honest DHT servers sharing a hosting block all fit.
pub const DEFAULT_KAD_PEERS_PER_RANGE: usize = 10;

/// Bootstrap node, established connections in all: a few hundred newcomers asking the DHT at once
/// plus the peers holding relay reservations, well within a small VPS's 1,024 file descriptors.
pub const BOOTSTRAP_MAX_ESTABLISHED: u32 = 384;
/// Bootstrap node, incoming connections: nearly all of its connections are opened by others.
pub const BOOTSTRAP_MAX_ESTABLISHED_INCOMING: u32 = 352;
/// Bootstrap node, outgoing connections: DHT upkeep and AutoNAT dial-backs only.
pub const BOOTSTRAP_MAX_ESTABLISHED_OUTGOING: u32 = 64;
/// Bootstrap node, handshakes in progress from others: tight, since each costs a Noise handshake
/// on a small CPU and a burst of dials is the cheapest way to load a public node.
pub const BOOTSTRAP_MAX_PENDING_INCOMING: u32 = 16;
/// Bootstrap node, handshakes in progress from one address range: a quarter of
/// [`BOOTSTRAP_MAX_PENDING_INCOMING`], as on a chat node.
pub const BOOTSTRAP_MAX_PENDING_INCOMING_PER_RANGE: u32 = 4;
/// Bootstrap node, its own dials in progress: DHT refreshes and AutoNAT dial-backs.
pub const BOOTSTRAP_MAX_PENDING_OUTGOING: u32 = 16;
/// Bootstrap node, share of memory: the node is the VPS's main process, but the kernel's socket
/// buffers and the page cache need the rest.
pub const BOOTSTRAP_MAX_MEMORY_FRACTION: f64 = 0.6;
/// Bootstrap node, idle connection timeout: it joins no room, so once a newcomer's DHT queries
/// and identify are done the connection closes; relay reservations and circuits keep theirs open.
pub const BOOTSTRAP_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Relay reservations held at once: each is one NATed peer reachable through this node, and holds
/// one connection open; 128 (libp2p's default) fits a small VPS's connection budget.
pub const DEFAULT_RELAY_MAX_RESERVATIONS: usize = 128;
/// Reservations per peer: two, so a peer that reconnects can renew before its old one expires.
pub const DEFAULT_RELAY_MAX_RESERVATIONS_PER_PEER: usize = 2;
/// How long a reservation lasts before the peer must renew it: libp2p's one hour; the client
/// renews on its own.
pub const DEFAULT_RELAY_RESERVATION_DURATION: Duration = Duration::from_secs(60 * 60);
/// Circuits relayed at once: each carries a chat connection between two NATed peers until they
/// punch a hole or the circuit ends; 32 bounds the relay's bandwidth on a small VPS.
pub const DEFAULT_RELAY_MAX_CIRCUITS: usize = 32;
/// Circuits per peer: a peer in a few rooms talks to a few relayed members at once.
pub const DEFAULT_RELAY_MAX_CIRCUITS_PER_PEER: usize = 4;
/// How long one circuit lasts: libp2p's two minutes, enough for hole punching and a history sync;
/// room lookups redial a member whose circuit ended.
pub const DEFAULT_RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(2 * 60);
/// Bytes relayed per circuit (both directions): 1 MiB, room for a history sync of chat text,
/// while 32 circuits at most cost the relay about 270 KB/s.
pub const DEFAULT_RELAY_MAX_CIRCUIT_BYTES: u64 = 1 << 20;

/// Bounds of the circuit relay v2 server a bootstrap node runs, so relaying for peers behind NAT
/// cannot exhaust the relay's connections or bandwidth. libp2p's per-peer and per-IP rate limits
/// on reservations and circuits apply as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Most reservations held at once.
    pub max_reservations: usize,
    /// Most reservations held by one peer.
    pub max_reservations_per_peer: usize,
    /// Lifetime of a reservation before it must be renewed.
    pub reservation_duration: Duration,
    /// Most circuits relayed at once.
    pub max_circuits: usize,
    /// Most circuits with one peer at either end.
    pub max_circuits_per_peer: usize,
    /// Lifetime of one circuit.
    pub max_circuit_duration: Duration,
    /// Bytes relayed over one circuit before it is closed.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: DEFAULT_RELAY_MAX_RESERVATIONS,
            max_reservations_per_peer: DEFAULT_RELAY_MAX_RESERVATIONS_PER_PEER,
            reservation_duration: DEFAULT_RELAY_RESERVATION_DURATION,
            max_circuits: DEFAULT_RELAY_MAX_CIRCUITS,
            max_circuits_per_peer: DEFAULT_RELAY_MAX_CIRCUITS_PER_PEER,
            max_circuit_duration: DEFAULT_RELAY_MAX_CIRCUIT_DURATION,
            max_circuit_bytes: DEFAULT_RELAY_MAX_CIRCUIT_BYTES,
        }
    }
}

/// How many Kademlia routing-table peers of one address range (an IPv4 /24, an IPv6 /48; loopback
/// counts by its /24, local-network and non-IP addresses not at all) a node keeps, so ids ground
/// near a room's key from one range cannot fill the k-buckets that lookups of that key go
/// through. A peer over the quota is not added; it can still be connected and talked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeQuota {
    /// Peers of one range in one k-bucket.
    pub per_bucket: usize,
    /// Peers of one range in the whole routing table.
    pub per_table: usize,
}

impl RangeQuota {
    /// Whether one more peer fits, given how many of its range its k-bucket and the whole table
    /// already hold.
    pub(crate) fn admits(&self, in_bucket: usize, in_table: usize) -> bool {
        in_bucket < self.per_bucket && in_table < self.per_table
    }
}

impl Default for RangeQuota {
    fn default() -> Self {
        Self {
            per_bucket: DEFAULT_KAD_PEERS_PER_RANGE_IN_BUCKET,
            per_table: DEFAULT_KAD_PEERS_PER_RANGE,
        }
    }
}

/// Bounds on connections and on the work one peer can ask for, so no number of peers can
/// exhaust memory or file descriptors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most established connections to one peer.
    pub max_established_per_peer: u32,
    /// Most established incoming connections. Above seven eighths of it (or of
    /// [`Limits::max_established`]) the node closes its least useful connections, past a few
    /// seconds' grace, so a member who joins later is not refused: strangers first, then room
    /// members outside its meshes, then peers of meshes larger than gossipsub's lower bound.
    pub max_established_incoming: u32,
    /// Most established outgoing connections.
    pub max_established_outgoing: u32,
    /// Most established connections in all.
    pub max_established: u32,
    /// Most incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Most incoming connections still in their handshake from one address range (an IPv4 /24,
    /// an IPv6 /48; local-network addresses are not counted).
    pub max_pending_incoming_per_range: u32,
    /// Most outgoing dials still in progress.
    pub max_pending_outgoing: u32,
    /// Share (0 to 1) of the machine's physical memory above which new connections are refused.
    pub max_memory_fraction: f64,
    /// Peers outside every room mesh that stay connected. Gossipsub's streams keep every
    /// connection open, so once a connection is older than [`Config::idle_connection_timeout`]
    /// the node closes it itself if the peer is in no room mesh, has no sync exchange in flight
    /// and is not among this many kept contacts (bootstrap peers first, then the oldest). A
    /// settled node thus holds at most its room meshes plus this many peers.
    pub routing_contacts: u32,
    /// Sync exchanges one peer may start; requests over it are answered with nothing.
    pub sync_exchanges_per_peer: Rate,
    /// Sync requests of any kind one peer may send; requests over it are answered with nothing.
    pub sync_requests_per_peer: Rate,
    /// Kademlia routing-table peers kept per address range.
    pub kad_range_quota: RangeQuota,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_established_per_peer: DEFAULT_MAX_ESTABLISHED_PER_PEER,
            max_established_incoming: DEFAULT_MAX_ESTABLISHED_INCOMING,
            max_established_outgoing: DEFAULT_MAX_ESTABLISHED_OUTGOING,
            max_established: DEFAULT_MAX_ESTABLISHED,
            max_pending_incoming: DEFAULT_MAX_PENDING_INCOMING,
            max_pending_incoming_per_range: DEFAULT_MAX_PENDING_INCOMING_PER_RANGE,
            max_pending_outgoing: DEFAULT_MAX_PENDING_OUTGOING,
            max_memory_fraction: DEFAULT_MAX_MEMORY_FRACTION,
            routing_contacts: DEFAULT_ROUTING_CONTACTS,
            sync_exchanges_per_peer: DEFAULT_SYNC_EXCHANGES_PER_PEER,
            sync_requests_per_peer: DEFAULT_SYNC_REQUESTS_PER_PEER,
            kad_range_quota: RangeQuota::default(),
        }
    }
}

impl Limits {
    /// The bounds of a bootstrap node on a small VPS (about 1 vCPU, 1 GB of memory, 1,024 file
    /// descriptors): a few hundred peers at once, few handshakes in flight.
    pub fn bootstrap() -> Self {
        Self {
            max_established_per_peer: DEFAULT_MAX_ESTABLISHED_PER_PEER,
            max_established_incoming: BOOTSTRAP_MAX_ESTABLISHED_INCOMING,
            max_established_outgoing: BOOTSTRAP_MAX_ESTABLISHED_OUTGOING,
            max_established: BOOTSTRAP_MAX_ESTABLISHED,
            max_pending_incoming: BOOTSTRAP_MAX_PENDING_INCOMING,
            max_pending_incoming_per_range: BOOTSTRAP_MAX_PENDING_INCOMING_PER_RANGE,
            max_pending_outgoing: BOOTSTRAP_MAX_PENDING_OUTGOING,
            max_memory_fraction: BOOTSTRAP_MAX_MEMORY_FRACTION,
            routing_contacts: DEFAULT_ROUTING_CONTACTS,
            sync_exchanges_per_peer: DEFAULT_SYNC_EXCHANGES_PER_PEER,
            sync_requests_per_peer: DEFAULT_SYNC_REQUESTS_PER_PEER,
            kad_range_quota: RangeQuota::default(),
        }
    }
}

/// Which libp2p transport the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The real network: TCP with Noise and Yamux for `/tcp` addresses, and QUIC for
    /// `/udp/…/quic-v1` addresses.
    #[default]
    Tcp,
    /// libp2p's in-process memory transport with Noise and Yamux, for tests and simulations.
    Memory,
}

/// A byte stream of a [`CustomTransport`].
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawStream for T {}

/// A raw transport: streams before encryption and multiplexing.
pub type RawTransport = Boxed<Box<dyn RawStream>>;

/// A transport the program provides instead of [`Config::transport`], below encryption and
/// multiplexing (the node adds Noise and Yamux as it does for TCP and memory). netsim builds its
/// simulated links this way, with latency, loss and partitions, so the node code under test is
/// the same code users run.
#[derive(Clone)]
pub struct CustomTransport(Arc<dyn Fn() -> RawTransport + Send + Sync>);

impl CustomTransport {
    /// A transport built by `make` when the node starts.
    pub fn new(make: impl Fn() -> RawTransport + Send + Sync + 'static) -> Self {
        Self(Arc::new(make))
    }

    pub(crate) fn build(&self) -> RawTransport {
        (self.0)()
    }
}

impl std::fmt::Debug for CustomTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomTransport")
    }
}

/// Everything [`crate::Node::spawn`] needs to start a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `identity.key` and the room files.
    pub data_dir: PathBuf,
    /// Addresses to listen on; port 0 (or `/memory/0`) picks a free one.
    pub listen_addrs: Vec<Multiaddr>,
    /// The transport to build the swarm with.
    pub transport: Transport,
    /// A transport of the program's own, used instead of `transport` when set.
    pub custom_transport: Option<CustomTransport>,
    /// Peers dialled at start, so a node has someone to gossip and sync with. An address that
    /// ends in `/p2p/<peer id>` also seeds the Kademlia routing table.
    pub bootstrap: Vec<Multiaddr>,
    /// This node can be dialled at its listen addresses: it serves Kademlia (server mode),
    /// advertises those addresses and answers AutoNAT probes. Otherwise Kademlia stays a client
    /// until AutoNAT confirms a direct (not relayed) external address, and the node reserves a
    /// relay slot at its bootstrap peers when it finds it cannot be dialled.
    pub reachable: bool,
    /// Find peers on the local network with mDNS and dial them (with [`Transport::Tcp`] only).
    pub mdns: bool,
    /// Serve as a circuit relay v2 for peers behind NAT, within these limits; `None` on a chat
    /// node. Every node is a relay client, and a [`Config::reachable`] node also answers AutoNAT
    /// probes.
    pub relay: Option<RelayLimits>,
    /// Interval of the Kademlia lookup (and announcement) of each joined room that has too few
    /// connected members.
    pub room_lookup_interval: Duration,
    /// Connection and memory bounds.
    pub limits: Limits,
    /// Gossipsub heartbeat interval.
    pub heartbeat: Duration,
    /// Delay before the first gossipsub heartbeat.
    pub heartbeat_initial_delay: Duration,
    /// Interval of the periodic sync with a random member of each room.
    pub sync_interval: Duration,
    /// Idle connection timeout of the swarm.
    pub idle_connection_timeout: Duration,
    /// Timeout of one sync request.
    pub sync_request_timeout: Duration,
    /// How long [`crate::NodeHandle::connect`] waits for a dial's outcome before it fails with
    /// [`crate::NodeError::ConnectTimeout`]. Every dial and handshake also ends after libp2p's
    /// own transport timeout (10 s), with [`crate::NodeError::Dial`]: a longer value does not
    /// make a dial wait longer.
    pub connect_timeout: Duration,
    /// Largest gossip message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// Capacity of the command channel from handles to the event loop.
    pub command_capacity: usize,
    /// Capacity of the event channel from the event loop to its reader.
    pub event_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen_addrs: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(Protocol::Tcp(0)),
            ],
            transport: Transport::Tcp,
            custom_transport: None,
            bootstrap: Vec::new(),
            reachable: DEFAULT_REACHABLE,
            mdns: DEFAULT_MDNS,
            relay: None,
            room_lookup_interval: DEFAULT_ROOM_LOOKUP_INTERVAL,
            limits: Limits::default(),
            heartbeat: DEFAULT_HEARTBEAT,
            heartbeat_initial_delay: DEFAULT_HEARTBEAT_INITIAL_DELAY,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            sync_request_timeout: DEFAULT_SYNC_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

impl Config {
    /// A long-lived volunteer node at a public address, which others list as their bootstrap
    /// peer: it serves the DHT (Kademlia server mode), relays for peers behind NAT and answers
    /// their AutoNAT probes, joins no rooms, skips mDNS, and keeps to the [`Limits::bootstrap`]
    /// and [`RelayLimits`] bounds of a small VPS. Its connections close when idle (after
    /// [`BOOTSTRAP_IDLE_CONNECTION_TIMEOUT`]) unless a reservation or circuit holds them.
    pub fn bootstrap_node(data_dir: impl Into<PathBuf>, listen_addrs: Vec<Multiaddr>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen_addrs,
            reachable: true,
            mdns: false,
            relay: Some(RelayLimits::default()),
            limits: Limits::bootstrap(),
            idle_connection_timeout: BOOTSTRAP_IDLE_CONNECTION_TIMEOUT,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_quota_admits_below_both_bounds_only() {
        let quota = RangeQuota {
            per_bucket: 2,
            per_table: 10,
        };
        assert!(quota.admits(0, 0));
        assert!(quota.admits(1, 9));
        assert!(!quota.admits(2, 2));
        assert!(!quota.admits(0, 10));
    }
}
