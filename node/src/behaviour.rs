//! The libp2p protocols a node speaks, composed into one behaviour, and their wire formats.

use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use grapevine_crdt::RoomId;
use grapevine_crdt::sync::MAX_SYNC_MESSAGE_BYTES;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::metrics::Registry;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    mdns, memory_connection_limits, ping, relay,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, RelayLimits, Transport};

/// Protocol id of history sync; the version moves when the wire format does.
pub const SYNC_PROTOCOL: &str = "/grapevine/sync/1";
/// Protocol version announced by identify.
pub const IDENTIFY_PROTOCOL: &str = "/grapevine/1.0.0";
/// Protocol id of our Kademlia DHT: a name of our own keeps Grapevine's DHT apart from IPFS's.
pub const KAD_PROTOCOL: &str = "/grapevine/kad/1.0.0";
/// Largest sync request or response on the wire: a crdt sync message plus a little framing.
pub const MAX_SYNC_FRAME_BYTES: usize = MAX_SYNC_MESSAGE_BYTES + 4 * 1024;

/// What every room topic starts with; the room id follows.
const ROOM_TOPIC_PREFIX: &str = "grapevine/room/";

/// The gossipsub topic of a room: every member subscribes to it.
pub fn room_topic(room: RoomId) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("{ROOM_TOPIC_PREFIX}{room}"))
}

/// Whether `topic` names a room: the prefix, then a room id as 64 lowercase hex digits.
fn is_room_topic(topic: &str) -> bool {
    topic.strip_prefix(ROOM_TOPIC_PREFIX).is_some_and(|id| {
        id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Rooms a peer can be in as far as this node keeps track: gossipsub ignores a peer's
/// subscriptions past this many, and a request subscribing to more at once. Without a bound a
/// peer could subscribe to made-up topics without end, and the node keeps every one for as long
/// as the peer stays connected: in netsim's `control-flood` scenario one flooder sends 2,000
/// subscriptions of 200 bytes a second to each of three members, 24 MB of topic names in 20 s,
/// all of which they kept. A member of more rooms than this is still served in the first 256
/// it joined.
pub const MAX_PEER_ROOMS: usize = 256;

/// Which subscriptions of other peers gossipsub keeps: room topics only, at most
/// [`MAX_PEER_ROOMS`] per peer.
pub(crate) type SubscriptionFilter = gossipsub::MaxCountSubscriptionFilter<RoomTopics>;

fn subscription_filter() -> SubscriptionFilter {
    gossipsub::MaxCountSubscriptionFilter {
        filter: RoomTopics,
        max_subscribed_topics: MAX_PEER_ROOMS,
        max_subscriptions_per_request: MAX_PEER_ROOMS,
    }
}

/// Accepts room topics and nothing else: a node only ever joins those, and a topic name of fixed
/// length bounds what each kept subscription costs (a made-up name may be 16 KiB long).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RoomTopics;

impl gossipsub::TopicSubscriptionFilter for RoomTopics {
    fn can_subscribe(&mut self, topic: &gossipsub::TopicHash) -> bool {
        is_room_topic(topic.as_str())
    }
}

/// The Kademlia key under which a room's members announce themselves: a sha2-256 multihash
/// (`0x12 0x20`, then SHA-256 of the room id), the only key form js-libp2p's DHT accepts.
pub fn room_provider_key(room: RoomId) -> kad::RecordKey {
    let mut key = Vec::with_capacity(34);
    key.extend_from_slice(&[0x12, 0x20]);
    key.extend_from_slice(&Sha256::digest(room.0));
    kad::RecordKey::new(&key)
}

/// What is published on a room topic: one Automerge change, in a CBOR map so fields can be added.
/// Public so test and simulation peers can speak the wire format without a node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The change bytes.
    #[serde(with = "serde_bytes")]
    pub c: Vec<u8>,
}

impl Envelope {
    /// The published bytes carrying `change`.
    pub fn encode(change: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(change.len() + 8);
        let envelope = Envelope { c: change.to_vec() };
        // Writing a map of one byte string into a Vec cannot fail.
        if let Err(e) = ciborium::into_writer(&envelope, &mut out) {
            unreachable!("encoding an envelope into memory failed: {e}");
        }
        out
    }

    /// Reads published bytes; fails on anything that is not an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(ciborium::from_reader(bytes)?)
    }
}

/// Why published bytes are not a gossip envelope: the publisher is penalised for it.
#[derive(Debug, thiserror::Error)]
#[error("undecodable gossip envelope: {0}")]
pub struct EnvelopeError(#[from] ciborium::de::Error<std::io::Error>);

/// A sync request: the next sync message of one room, or `None` to ask for the peer's next one.
/// Public, like [`SyncResponse`] and [`SyncCodec`], so test and simulation peers can speak
/// `/grapevine/sync/1` without a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The room the message belongs to.
    pub room: RoomId,
    /// The first request of an exchange: the responder starts a fresh session.
    pub start: bool,
    /// The requester's sync message, if it has one.
    #[serde(with = "serde_bytes")]
    pub message: Option<Vec<u8>>,
    /// The requester has just joined the room and is catching up: a responder catching up
    /// itself holds the request until its own catch-up ends only when its peer id is the lower,
    /// so that newcomers never wait on each other in a cycle. Absent (false) from peers that
    /// predate it.
    #[serde(default)]
    pub catching_up: bool,
}

/// A sync response: the responder's next sync message, or `None` when it has nothing to say.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The responder's sync message, if it has one.
    #[serde(with = "serde_bytes")]
    pub message: Option<Vec<u8>>,
    /// Changes the request brought the responder that it did not hold: with what the response
    /// brings the requester, whether the round moved anything. Absent (zero) from peers that
    /// predate it.
    #[serde(default)]
    pub gained: u32,
}

/// The `/grapevine/sync/1` codec: length-prefixed CBOR frames, bounded by
/// [`MAX_SYNC_FRAME_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

async fn read_frame<T, M>(io: &mut T) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_SYNC_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sync frame of {len} bytes is too large"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    ciborium::from_reader(&buf[..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T, M>(io: &mut T, message: &M) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Serialize,
{
    let mut buf = Vec::new();
    ciborium::into_writer(message, &mut buf).map_err(io::Error::other)?;
    let len = u32::try_from(buf.len())
        .ok()
        .filter(|&n| n as usize <= MAX_SYNC_FRAME_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "sync frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&buf).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

/// Every protocol of a node: blocked and graylisted peers and connection bounds (in all and per
/// address range) first (so they can refuse before anyone else acts), then room gossip, history
/// sync, identify, ping, Kademlia and mDNS for discovery, and NAT traversal: AutoNAT, the circuit
/// relay v2 client (and server on bootstrap nodes) and DCUtR.
///
/// AutoNAT is version 2 (`/libp2p/autonat/2/*`), which libp2p 0.57 ships beside v1 and which works
/// with our TCP, QUIC and memory transports: its server dials back from a new port, so a port
/// already opened by hole punching or port reuse cannot fake reachability as it can in v1, and a
/// probe costs the asking peer more bytes than the dial-back costs the server, so servers cannot be
/// used for amplification. A v2 client confirms each address it tests as an external address, which
/// is what moves Kademlia to server mode; v1's only extra, a summary "private" status, is derived
/// from failed probes instead (see the event loop's `nat` part). The server half runs only on
/// [`Config::reachable`] nodes, since a dial-back from a node behind NAT proves nothing.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Peers blocked through [`crate::NodeHandle::block_peer`]: the program's own choice.
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Peers refused while gossipsub's score of them is below the graylist threshold, kept
    /// apart from `blocked` so that letting one back in never undoes the program's choice.
    pub(crate) shunned: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) handshakes: crate::handshake_quota::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour<gossipsub::IdentityTransform, SubscriptionFilter>,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) autonat: autonat::v2::client::Behaviour,
    pub(crate) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
}

impl Behaviour {
    /// Composes the behaviour; `relay_client` comes from the swarm builder, which pairs it with
    /// the relay transport. gossipsub records its counters into `metrics`.
    pub(crate) fn new(
        keypair: &Keypair,
        config: &Config,
        relay_client: relay::client::Behaviour,
        metrics: &mut Registry,
    ) -> Result<Self, String> {
        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(GOSSIP_VALIDATION)
            .validate_messages()
            .message_id_fn(|message: &gossipsub::Message| {
                gossipsub::MessageId::from(Sha256::digest(&message.data).to_vec())
            })
            .max_transmit_size(config.max_message_size)
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N_LOW)
            .mesh_n_high(MESH_N_HIGH)
            .heartbeat_interval(config.heartbeat)
            .heartbeat_initial_delay(config.heartbeat_initial_delay)
            .connection_handler_queue_len(SEND_QUEUE_LEN)
            .max_control_messages_sent(GOSSIP_IDS_PER_PEER)
            .publish_queue_duration(PUBLISH_QUEUE_WAIT)
            .forward_queue_duration(FORWARD_QUEUE_WAIT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut gossipsub = gossipsub::Behaviour::new_with_subscription_filter(
            gossipsub::MessageAuthenticity::Signed(keypair.clone()),
            gossip_config,
            subscription_filter(),
        )
        .map_err(str::to_string)?
        .with_metrics(metrics, gossipsub::MetricsConfig::default());
        gossipsub
            .with_peer_score(peer_score_params(), score_thresholds())
            .map_err(|e| e.to_string())?;
        let sync = request_response::Behaviour::with_codec(
            SyncCodec,
            [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(config.sync_request_timeout),
        );
        let identify = identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.to_string(),
            keypair.public(),
        ));
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL));
        let local = keypair.public().to_peer_id();
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
        // The event loop adds peers itself, within the quota of peers per address range.
        kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
        // S/Kademlia disjoint paths: each of the α = 3 paths of a lookup asks only the peers it
        // found itself, so a path that starts at an honest peer stays among the peers honest
        // answers lead to, even when ids ground near the key answer with one another only. The
        // quota per address range stops sybils from one range by itself; against sybils spread
        // over many ranges (the `kademlia_sybils` test without the quota) lookups found an honest
        // member 3 to 5 times as often with disjoint paths, for about a quarter more connections
        // per join.
        kad_config.disjoint_query_paths(true);
        let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kad_config);
        // Not libp2p's auto mode, which would also serve behind a relayed address: the event
        // loop moves to server mode when a direct external address is confirmed.
        kad.set_mode(Some(if config.reachable {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
        // The memory transport has no local network to search.
        let mdns = if config.mdns
            && config.transport == Transport::Tcp
            && config.custom_transport.is_none()
        {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let l = &config.limits;
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(l.max_established_per_peer))
                .with_max_established_incoming(Some(l.max_established_incoming))
                .with_max_established_outgoing(Some(l.max_established_outgoing))
                .with_max_established(Some(l.max_established))
                .with_max_pending_incoming(Some(l.max_pending_incoming))
                .with_max_pending_outgoing(Some(l.max_pending_outgoing)),
        );
        let memory =
            memory_connection_limits::Behaviour::with_max_percentage(l.max_memory_fraction);
        let autonat_server = config
            .reachable
            .then(autonat::v2::server::Behaviour::default);
        let relay = config
            .relay
            .map(|r| relay::Behaviour::new(local, relay_config(r)));
        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            shunned: allow_block_list::Behaviour::default(),
            limits,
            handshakes: crate::handshake_quota::Behaviour::new(l.max_pending_incoming_per_range),
            memory,
            gossipsub,
            sync,
            identify,
            ping,
            kad,
            mdns: mdns.into(),
            autonat: autonat::v2::client::Behaviour::default(),
            autonat_server: autonat_server.into(),
            relay_client,
            relay: relay.into(),
            dcutr: dcutr::Behaviour::new(local),
        })
    }
}

/// The relay server's configuration: our limits, libp2p's default rate limits per peer and IP.
fn relay_config(limits: RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    }
}

/// Peers a room's gossipsub mesh aims for: libp2p's default, named because discovery dials
/// room members only up to it.
pub const MESH_N: usize = 6;
/// Below this many mesh peers gossipsub grafts more, and discovery dials more room members:
/// libp2p's default.
pub const MESH_N_LOW: usize = 5;
/// Above this many mesh peers gossipsub prunes: libp2p's default. A settled node keeps at most
/// this many peers per joined room, plus [`crate::Limits::routing_contacts`].
pub const MESH_N_HIGH: usize = 12;

/// Gossip messages (own, forwarded, IHAVE and IWANT) queued towards one peer at most: past it,
/// gossipsub drops the message for that peer (and lowers its score a little) rather than
/// buffering for a peer that reads slowly. A fifth of libp2p's default of 5,000: a burst of 500
/// records posted at once fits twice, and a slow reader holds at most 1,000 messages of each of
/// its senders (about 400 KB at chat sizes; 64 MiB at the 64 KiB message cap). Grafts, prunes
/// and IDONTWANTs have a queue of their own (20,000, fixed by libp2p), subscriptions an unbounded
/// one (one entry per topic change).
pub const SEND_QUEUE_LEN: usize = 1_000;
/// Message ids gossipsub announces to (IHAVE) and asks of (IWANT) one peer per heartbeat at most.
/// Each id asked for is a promise the node keeps for a few seconds: at libp2p's default of 5,000,
/// 24 peers announcing made-up ids grew a node by about 190 MiB before their scores dropped far
/// enough to be ignored; at 500 by 33-39 MiB (the `flood_memory` bench, "many-ihave"). Gossip
/// covers the last three heartbeats, so a room still has every id announced up to about 160
/// records/s; above that each peer is told a different random 500, and the mesh and sync carry
/// the records anyway.
pub const GOSSIP_IDS_PER_PEER: usize = 500;
/// How long an own message may wait in a peer's send queue before it is dropped for that peer:
/// libp2p's default, named here beside the queue's length. Sync delivers it later.
pub const PUBLISH_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded message may wait in a peer's send queue: libp2p's default. The peer has
/// other mesh peers to get it from, and sync.
pub const FORWARD_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Gossipsub leaves the libp2p signature of incoming messages unchecked; the record inside is
/// what the node checks.
///
/// In strict mode gossipsub verifies that signature on every copy it receives, before it drops
/// duplicates: with a mesh of 6 to 12 peers, each message costs every node several ed25519
/// verifications, most of them of copies it then throws away (about 38 % of a node's CPU under
/// load, against 3 % for the record checks). It proves nothing the node relies on: every
/// envelope carries a record signed by its author, which the room checks once, on the first
/// copy, before the verdict that lets gossipsub store or forward it. A record with a forged or
/// broken signature is still rejected, and the peer that sent it loses score (P4, see
/// [`room_topic_score`]); a copy differing in any byte is a different message (content ids).
///
/// What goes: the check that the libp2p `from` field and signature are genuine. The node never
/// reads them (the author is in the record), and it still signs what it publishes, so peers in
/// strict mode (js-libp2p's `StrictSign`, older nodes) accept its messages. Such a peer would
/// refuse a valid record that a hostile member wrapped in a bad libp2p signature, and mark down
/// whoever forwarded it to them.
const GOSSIP_VALIDATION: gossipsub::ValidationMode = gossipsub::ValidationMode::None;

/// Ping interval: libp2p's 15 s default, named here so it is visible beside the other protocols.
const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Kademlia's own refresh of the routing table: every 10 minutes, go-libp2p-kad-dht's default
/// routing-table refresh interval (the DHT IPFS runs), rather than rust-libp2p's 5. The event
/// loop cuts every bootstrap, this one too, to its lookup of the node's own id (see
/// `cut_bootstrap_short`), so a refresh asks some forty peers rather than two hundred; still,
/// the connections it opens cost each node of a quiet 100-peer netsim room 72 ms of CPU, about
/// a sixth of all it spent over the 5 minutes (1.1 ms a second otherwise). Room discovery does not wait on it (room lookups and the anti-entropy dials of
/// remembered members do that work), and libp2p-kad still bootstraps whenever a peer enters a
/// table of fewer than [`kad::K_VALUE`] peers.
/// Public because it is the period of an idle node's cost: netsim measures idle CPU over a
/// window at least this long.
pub const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What one failed sync exchange costs a peer, as a gossipsub application score (weighted ×10 by
/// default): four failures reach the default graylist threshold of -80.
pub(crate) const SYNC_FAULT_SCORE: f64 = -2.0;

/// The gossipsub score thresholds of every node: libp2p's defaults (gossip −10, publish −50,
/// graylist −80). Public so simulations can tell when a peer is graylisted.
pub fn score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds::default()
}

/// How much of a peer's behaviour penalty (P7: broken IWANT promises, GRAFTs during a backoff)
/// is left after each second. libp2p's default, 0.2, forgets a penalty within seconds: in
/// netsim's `control-flood` scenario a peer announcing 10,000 made-up ids a heartbeat was back at
/// a score of zero about 7 s after its 5,000 broken promises were counted, and was then asked for
/// 5,000 more, so it was heard about a third of the time. At 0.99 a penalty halves in about
/// 69 s, and such a peer stays ignored while it keeps at it.
const BEHAVIOUR_PENALTY_DECAY: f64 = 0.99;

/// Behaviour penalties a peer may carry at no cost: one slip of an honest peer (a message it
/// announced and could not deliver in time) does not push it out of meshes for minutes.
const BEHAVIOUR_PENALTY_THRESHOLD: f64 = 1.0;

/// Gossipsub peer scoring for the whole node.
fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        // Honest peers often share an address (NAT at home, loopback in tests and netsim).
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_decay: BEHAVIOUR_PENALTY_DECAY,
        behaviour_penalty_threshold: BEHAVIOUR_PENALTY_THRESHOLD,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// How long it takes a peer's count of invalid messages (P4) to halve. An honest node never
/// forwards an invalid record (it checks before forwarding, and every node gives the same
/// verdict), so invalid messages are remembered as long as gossipsub remembers a disconnected
/// peer's score (`retain_score`, an hour). libp2p's default decay (×0.3 a second) forgot them
/// within two seconds: a graylisted spammer got out of the graylist every second or two and had
/// more records signature-checked each time (netsim `sig-spam`: 148 to 158 checks per spammer
/// after graylisting in 12 s, 8 to 13 escapes).
const INVALID_MESSAGES_HALF_LIFE: Duration = Duration::from_secs(60 * 60);

/// The time in a mesh worth one point of P1. libp2p's default of 1 ms gave a peer 500 points
/// for its first second in a mesh (up to 1,800 after 3.6 s), enough to lift a spammer graylisted
/// by five invalid messages out of the graylist at the next score refresh, before the heartbeat
/// pruned it from the mesh (netsim `sig-spam`: 19 to 20 checks per spammer after graylisting
/// with the slower P4 decay alone). One second per point is the gossipsub specification's usual
/// value: an hour in a mesh is worth the cap.
const TIME_IN_MESH_QUANTUM: Duration = Duration::from_secs(1);

/// Gossipsub scoring of one room topic. Chat rooms are quiet, so the delivery-rate penalties
/// that suit busy topics (P3, P3b) would punish honest members; invalid messages (P4) weigh
/// heavily instead: at topic weight 0.5, more than four of them reach the graylist threshold,
/// and the count halves only every [`INVALID_MESSAGES_HALF_LIFE`], so a graylisted peer stays
/// graylisted; time in the mesh (P1) counts in seconds ([`TIME_IN_MESH_QUANTUM`]), so it
/// cannot outweigh them.
pub(crate) fn room_topic_score() -> gossipsub::TopicScoreParams {
    let decay_interval = peer_score_params().decay_interval;
    gossipsub::TopicScoreParams {
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        time_in_mesh_quantum: TIME_IN_MESH_QUANTUM,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.5f64
            .powf(decay_interval.as_secs_f64() / INVALID_MESSAGES_HALF_LIFE.as_secs_f64()),
        ..gossipsub::TopicScoreParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_messages_are_remembered_for_an_hour() {
        let params = room_topic_score();
        assert!(params.validate().is_ok());
        let seconds = INVALID_MESSAGES_HALF_LIFE.as_secs_f64()
            / peer_score_params().decay_interval.as_secs_f64();
        let left = params.invalid_message_deliveries_decay.powf(seconds);
        assert!((left - 0.5).abs() < 1e-9, "{left}");
    }

    #[test]
    fn only_room_topics_pass_the_subscription_filter() {
        use gossipsub::{TopicHash, TopicSubscriptionFilter};
        let mut filter = subscription_filter();
        assert_eq!(filter.max_subscribed_topics, MAX_PEER_ROOMS);
        assert!(filter.can_subscribe(&room_topic(RoomId([7; 32])).hash()));
        for foreign in [
            "grapevine/room/".to_string(),
            format!("grapevine/room/{}", "AB".repeat(32)),
            format!("grapevine/room/{}0", "ab".repeat(32)),
            format!("grapevine/room/{}", "ag".repeat(32)),
            format!("flood/{}", "x".repeat(200)),
        ] {
            assert!(
                !filter.can_subscribe(&TopicHash::from_raw(foreign.clone())),
                "{foreign}"
            );
        }
    }

    #[test]
    fn room_provider_key_is_a_sha2_256_multihash_of_the_room_id() {
        let room = RoomId([7; 32]);
        let key = room_provider_key(room);
        let bytes = key.as_ref();
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0x12, 0x20]);
        assert_eq!(&bytes[2..], Sha256::digest([7u8; 32]).as_slice());
    }
}
