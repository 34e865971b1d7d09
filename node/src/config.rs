//! How a node is set up: where it keeps its files, how it reaches the network, and its limits.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

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
/// connected between messages; gossipsub keeps mesh connections alive on its own.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest gossip message: the gossipsub and js-libp2p-safe transmit limit (64 KiB). Records are
/// bounded well below it by the room layer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// How long one sync request may take: a large history can need several seconds to generate
/// and apply on a slow device.
pub const DEFAULT_SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Commands queued from handles before senders wait: enough for bursts of typing and UI queries.
pub const DEFAULT_COMMAND_CAPACITY: usize = 64;
/// Events queued for the reader before new ones are dropped (the loop never blocks on a slow
/// reader): room for a whole sync batch of records.
pub const DEFAULT_EVENT_CAPACITY: usize = 4_096;

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

/// Everything [`crate::Node::spawn`] needs to start a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `identity.key` and the room files.
    pub data_dir: PathBuf,
    /// Addresses to listen on; port 0 (or `/memory/0`) picks a free one.
    pub listen_addrs: Vec<Multiaddr>,
    /// The transport to build the swarm with.
    pub transport: Transport,
    /// Peers dialled at start, so a node has someone to gossip and sync with.
    pub bootstrap: Vec<Multiaddr>,
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
            bootstrap: Vec::new(),
            heartbeat: DEFAULT_HEARTBEAT,
            heartbeat_initial_delay: DEFAULT_HEARTBEAT_INITIAL_DELAY,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            sync_request_timeout: DEFAULT_SYNC_REQUEST_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}
