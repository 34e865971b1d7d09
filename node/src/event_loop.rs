//! The one task that owns the swarm and the rooms. Each step of [`EventLoop::run`] handles one
//! thing: a local command first, then a swarm event, then the deadline of a dial someone waits
//! for, then the periodic timers (sync, room lookup, connection pruning), and, when nothing else
//! is ready, the batch of gossip received meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use grapevine_crdt::{Identity, RecordId, Room, RoomId, Store, SyncSession, Written};
use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use libp2p::kad;
use libp2p::metrics::Registry;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use rand::seq::IndexedRandom;
use tokio::sync::mpsc;
use tokio::time::Interval;

use crate::address_range::AddressRange;
use crate::behaviour::{Behaviour, BehaviourEvent, Envelope, room_topic, room_topic_score};
use crate::config::{Config, RangeQuota};
use crate::error::{NodeError, causes};
use crate::handle::{Command, Reply};
use crate::rate_limit::{Rate, TokenBucket};
use crate::{ConnectionCounts, GossipCounts, GossipSource, NodeEvent, PeerConnection};

mod commit;
mod connections;
mod discovery;
mod gossip;
mod nat;
mod shun;
mod sync;

/// Gossip messages held for one batch at most: a batch costs about as much as one change, but
/// verdicts (and so forwarding) wait for it.
const MAX_GOSSIP_BATCH: usize = grapevine_crdt::room::MAX_RECEIVE_BUFFER;

/// Connection pruning runs this many times per idle connection timeout, so a connection outside
/// the room meshes is closed at most a quarter of the timeout late.
const PRUNE_CHECKS_PER_IDLE_TIMEOUT: u32 = 4;
/// The shortest interval between connection prunings, whatever the idle timeout.
const MIN_PRUNE_INTERVAL: Duration = Duration::from_millis(250);

/// Most request/response rounds in one sync exchange. A catch-up needs a few (a history of
/// 100,000 records about six); past that, in a busy room, the two sides only chase the records
/// gossip is still delivering, round after round for as long as the traffic lasts (in netsim's
/// `steady` that took a third of all CPU and quadrupled latency). The next exchange goes on
/// where this one stopped; the bound also stops a peer that never ends an exchange.
const MAX_SYNC_ROUNDS: u32 = 16;
/// From this round on, a sync exchange ends after the first round that moved nothing either
/// side lacked. The first rounds only trade heads and Bloom filters; after them, a round that
/// brings neither side anything means the two held the same history when the exchange started,
/// and differ only by records gossip is delivering meanwhile: chasing those kept exchanges going
/// for all 16 rounds (about 40 s each, 3,388 of 5,432 exchanges in a 100-peer joins run).
const SETTLING_SYNC_ROUNDS: u32 = 3;

/// Which side of an exchange a session serves; each side of a pair of peers keeps one of each,
/// so two exchanges started at once by both peers never share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Initiator,
    Responder,
}

/// The first wait before looking a room short of members up again: members who join at about
/// the same time find each other within seconds, not at the next full interval.
const FIRST_LOOKUP_BACKOFF: Duration = Duration::from_secs(2);
/// Peers found on the local network kept for redialling: a LAN has few peers, and a flood of
/// mDNS answers must not grow the node.
const MAX_LAN_PEERS: usize = 256;
/// How often rooms are checked for a due lookup (and LAN peers redialled).
const LOOKUP_CHECK: Duration = Duration::from_secs(1);

/// Peers a per-peer gossip count holds (signature checks, messages dropped for reading slowly):
/// past it, the counts of disconnected peers are forgotten. Connections are bounded well below
/// it, so a connected peer always has its counts.
const MAX_COUNTED_SOURCES: usize = 4_096;

/// Members of a room remembered after they disconnect, for anti-entropy. Enough that, after a
/// partition heals, a random pick often lands on the other side; few enough to cost nothing.
const REMEMBERED_MEMBERS: usize = 64;

/// One anti-entropy tick in this many syncs with a remembered member that is not connected (the
/// others with a connected one): often enough that split groups of a room find each other again
/// within a few ticks, rarely enough that a node does not open, sync over and later prune a
/// connection at nearly every tick.
const REMEMBERED_SYNC_EVERY: u64 = 4;
/// Records one received sync message must bring for the node to pass them on at once, by
/// starting exchanges with [`SPREAD_TO`] other room members: a healed partition or a member back
/// from offline brings many, and without this they would spread one anti-entropy interval per
/// hop. In a busy room a sync message often carries the one or two records gossip is still
/// delivering; those spread by gossip.
const SPREAD_AFTER_RECORDS: usize = 8;
/// Room members a node starts exchanges with after a sync message brought it many records.
const SPREAD_TO: usize = 2;
/// At most one such spread per room in this interval.
const SPREAD_INTERVAL: Duration = Duration::from_secs(1);
/// Announced addresses kept per peer.
const ANNOUNCED_ADDRS_PER_PEER: usize = 8;
/// Longest time a room's catch-up exchange runs alone after the room is joined (see
/// [`sync::CatchUp`]); at most half the sync request timeout, so that the exchanges held
/// meanwhile are answered before their requesters give up.
const CATCH_UP_ALONE: Duration = Duration::from_secs(10);
/// Exchanges that wait for a room's catch-up, each way: bounded, since each held request keeps
/// its message; past it they run at once, as without a catch-up.
const MAX_WAITING_ON_CATCH_UP: usize = 64;

/// DHT lookups asked for through the handle that may run at once: each walks the DHT, so a
/// caller looping on them cannot make the node walk without bound.
const MAX_ROOM_LOOKUPS: usize = 16;
/// Dials asked for through [`crate::NodeHandle::connect`] that may wait for their outcome at
/// once: far more than a person types, and a caller looping on them cannot grow the map without
/// bound.
const MAX_CONNECTS: usize = 64;

/// Why a dial failed, for a person: for a transport failure, the causes libp2p keeps in each
/// error's sources (its own text is empty or a generic "Failed to negotiate transport
/// protocol(s)"), e.g. "Connection refused (os error 111)", prefixed by the address when
/// several were tried.
fn dial_failure(error: &DialError) -> String {
    let DialError::Transport(failures) = error else {
        return causes(error);
    };
    let several = failures.len() > 1;
    let reasons: Vec<String> = failures
        .iter()
        .map(|(addr, failure)| {
            if several {
                format!("{addr}: {}", causes(failure))
            } else {
                causes(failure)
            }
        })
        .collect();
    reasons.join("; ")
}

/// Waits until `deadline`, or for ever when there is none: a `select!` arm for a deadline that
/// may be absent.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A dial asked for through [`crate::NodeHandle::connect`], waiting for its outcome.
struct PendingConnect {
    addr: Multiaddr,
    /// When the caller hears that no answer came ([`Config::connect_timeout`]).
    deadline: Instant,
    reply: Reply<PeerId>,
}

/// A provider lookup asked for through the handle: the providers found so far, and who waits
/// for them.
struct RoomLookup {
    found: HashSet<PeerId>,
    reply: Reply<Vec<PeerId>>,
}

/// A joined room and its topic.
struct Joined {
    name: String,
    room: Room,
    topic: gossipsub::TopicHash,
    /// Peers seen subscribed to the room, most recent last, connected or not.
    remembered: VecDeque<PeerId>,
    /// While the room is short of members: the wait before the next lookup, doubled after
    /// each up to [`Config::room_lookup_interval`]…
    lookup_backoff: Duration,
    /// …and when that lookup is due.
    next_lookup: Instant,
    /// Anti-entropy ticks so far: every [`REMEMBERED_SYNC_EVERY`]th one goes to a remembered
    /// member that is not connected.
    sync_ticks: u64,
    /// When records gained by sync were last passed on to other members.
    last_spread: Option<Instant>,
    /// The exchange that brings the room up to date after it was joined, while the others wait
    /// for it.
    catch_up: Option<sync::CatchUp>,
}

impl Joined {
    /// Notes that `peer` is a member, forgetting the longest-unseen one beyond the bound.
    fn remember(&mut self, peer: PeerId) {
        self.remembered.retain(|p| *p != peer);
        self.remembered.push_back(peer);
        if self.remembered.len() > REMEMBERED_MEMBERS {
            self.remembered.pop_front();
        }
    }
}

/// A gossip message handed to its room, waiting for the batch that decides its verdict.
struct PendingGossip {
    id: gossipsub::MessageId,
    source: PeerId,
}

/// What one peer may still ask of this node's sync responder.
struct SyncBudget {
    exchanges: TokenBucket,
    requests: TokenBucket,
    /// Over budget since the last request allowed: warned about once per episode.
    throttled: bool,
}

/// One established connection.
struct OpenConnection {
    peer: PeerId,
    info: PeerConnection,
    /// The peer dialled this node.
    inbound: bool,
    since: Instant,
}

/// An exchange this node started and is waiting on.
struct Exchange {
    peer: PeerId,
    room: RoomId,
    rounds: u32,
}

/// Owns the swarm and every joined room; nothing else touches either.
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// What gossipsub records into, read by [`Command::GossipCounts`].
    metrics: Registry,
    store: Store,
    identity: Identity,
    max_message_size: usize,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
    /// Anti-entropy: one sync per room with a random member at each tick.
    sync_timer: Interval,
    /// Kademlia lookup and announcement, at each tick, of every joined room short of members.
    room_lookup_timer: Interval,
    /// The longest wait between two lookups of a room short of members.
    room_lookup_interval: Duration,
    /// Closing of connections outside the room meshes at each tick.
    prune_timer: Interval,
    /// Listen addresses are advertised as external addresses (see [`Config::reachable`]).
    reachable: bool,
    /// Reachability and relay reservations.
    nat: nat::Nat,
    /// Every open connection: what the program is told about it, which way it was opened and
    /// when, for pruning and for making room.
    connections: HashMap<ConnectionId, OpenConnection>,
    /// Above this many established connections, or [`EventLoop::incoming_trim_above`] incoming
    /// ones, the node closes its least useful connections so a newcomer is never refused.
    trim_above: usize,
    incoming_trim_above: usize,
    /// Peers whose connections this node is closing to make room, until they are gone.
    closing: HashSet<PeerId>,
    /// Connections younger than this are never pruned.
    idle_connection_timeout: Duration,
    /// Peers outside every room mesh kept connected (see [`crate::Limits::routing_contacts`]).
    routing_contacts: usize,
    /// The peers named in [`Config::bootstrap`]: kept first among routing contacts.
    bootstrap_peers: HashSet<PeerId>,
    /// The bootstrap addresses, dialled again while none of them is connected.
    bootstrap_addrs: Vec<Multiaddr>,
    /// The wait before the next redial of the bootstrap peers, doubled after each…
    bootstrap_backoff: Duration,
    /// …and when it is due.
    next_bootstrap_dial: Instant,
    /// Room members dialled so far by each running provider lookup.
    provider_dials: HashMap<kad::QueryId, usize>,
    /// Provider lookups asked for through the handle, by query.
    room_lookups: HashMap<kad::QueryId, RoomLookup>,
    /// Dials asked for through [`crate::NodeHandle::connect`], by the connection they open,
    /// answered when it is established or fails, or at their deadline.
    connects: HashMap<ConnectionId, PendingConnect>,
    /// How long a caller of [`crate::NodeHandle::connect`] waits at most.
    connect_timeout: Duration,
    /// Kademlia routing-table peers kept per address range.
    kad_range_quota: RangeQuota,
    /// The address range each routing-table peer was admitted under (peers whose addresses
    /// have no range are not listed); entries leave with their peer.
    routing_ranges: HashMap<PeerId, Option<AddressRange>>,
    rooms: HashMap<RoomId, Joined>,
    topics: HashMap<gossipsub::TopicHash, RoomId>,
    /// Sync state per peer, room and role; dropped when the peer disconnects.
    sessions: HashMap<(PeerId, RoomId, Role), SyncSession>,
    /// Sync requests in flight, tied to the exchange they belong to.
    exchanges: HashMap<OutboundRequestId, Exchange>,
    /// Exchanges this node is running, at most one per peer and room.
    syncing: HashSet<(PeerId, RoomId)>,
    /// Running exchanges to start again once they end (asked for while they ran).
    rerun: HashSet<(PeerId, RoomId)>,
    /// Gossip waiting for its room's next batch, in arrival order.
    pending_gossip: HashMap<RoomId, Vec<PendingGossip>>,
    pending_count: usize,
    /// Records gained but not yet durable, per room, in the order gained: made durable together
    /// (group commit) and only then reported.
    unflushed: HashMap<RoomId, Vec<RecordId>>,
    unflushed_count: usize,
    /// When the oldest of them was gained.
    unflushed_since: Option<Instant>,
    /// Rooms whose last flush failed, already reported by [`NodeEvent::StorageFailed`].
    storage_failing: HashSet<RoomId>,
    /// Record signatures checked for gossip each peer forwarded (see [`GossipSource`]); kept
    /// after a disconnect, as gossipsub keeps scores, up to [`MAX_COUNTED_SOURCES`] peers.
    signature_checks: HashMap<PeerId, u64>,
    /// Gossip messages dropped for each peer that read too slowly (see [`GossipSource`]); kept
    /// like `signature_checks`.
    dropped_for_slowness: HashMap<PeerId, u64>,
    /// Bad sync messages per connected peer, which set its gossipsub application score.
    sync_faults: HashMap<PeerId, u32>,
    /// Peers found by mDNS and not expired, with their addresses.
    lan_peers: HashMap<PeerId, Vec<Multiaddr>>,
    /// Each joined room's connected members, as last reported.
    room_peers: HashMap<RoomId, Vec<PeerId>>,
    /// Each connected peer's remaining budget of sync requests.
    sync_budgets: HashMap<PeerId, SyncBudget>,
    /// The listen addresses peers announced (identify), kept while they are connected or a
    /// room remembers them: a remembered member is dialled with them, as Kademlia forgets the
    /// addresses of peers it failed to reach (all of them, on the other side of a partition).
    announced_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    sync_exchange_rate: Rate,
    sync_request_rate: Rate,
    /// How long a joined room's catch-up exchange runs alone at most.
    catch_up_alone: Duration,
    dropped_events: u64,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        metrics: Registry,
        store: Store,
        identity: Identity,
        config: &Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NodeEvent>,
    ) -> Self {
        // Each node's anti-entropy ticks start at a random phase: nodes started together (many
        // restarted at once, a simulation) would otherwise sync, and dial remembered members,
        // all in step, and a healed partition would wait for their common next turn.
        let phase = config.sync_interval.mul_f64(rand::random::<f64>());
        let mut sync_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + phase, config.sync_interval);
        sync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut room_lookup_timer =
            tokio::time::interval(config.room_lookup_interval.min(LOOKUP_CHECK));
        room_lookup_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let prune_interval = (config.idle_connection_timeout / PRUNE_CHECKS_PER_IDLE_TIMEOUT)
            .max(MIN_PRUNE_INTERVAL);
        let mut prune_timer = tokio::time::interval(prune_interval);
        prune_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let bootstrap_peers = config
            .bootstrap
            .iter()
            .filter_map(|addr| match addr.iter().last() {
                Some(Protocol::P2p(peer)) => Some(peer),
                _ => None,
            })
            .collect();
        Self {
            swarm,
            metrics,
            store,
            identity,
            max_message_size: config.max_message_size,
            commands,
            events,
            sync_timer,
            room_lookup_timer,
            room_lookup_interval: config.room_lookup_interval,
            prune_timer,
            reachable: config.reachable,
            nat: nat::Nat::new(&config.bootstrap),
            connections: HashMap::new(),
            closing: HashSet::new(),
            trim_above: connections::trim_threshold(config.limits.max_established),
            incoming_trim_above: connections::trim_threshold(
                config.limits.max_established_incoming,
            ),
            idle_connection_timeout: config.idle_connection_timeout,
            routing_contacts: config.limits.routing_contacts as usize,
            bootstrap_peers,
            bootstrap_addrs: config.bootstrap.clone(),
            bootstrap_backoff: FIRST_LOOKUP_BACKOFF,
            next_bootstrap_dial: Instant::now() + FIRST_LOOKUP_BACKOFF,
            provider_dials: HashMap::new(),
            room_lookups: HashMap::new(),
            connects: HashMap::new(),
            connect_timeout: config.connect_timeout,
            kad_range_quota: config.limits.kad_range_quota,
            routing_ranges: HashMap::new(),
            rooms: HashMap::new(),
            topics: HashMap::new(),
            sessions: HashMap::new(),
            exchanges: HashMap::new(),
            syncing: HashSet::new(),
            rerun: HashSet::new(),
            pending_gossip: HashMap::new(),
            pending_count: 0,
            unflushed: HashMap::new(),
            unflushed_count: 0,
            unflushed_since: None,
            storage_failing: HashSet::new(),
            signature_checks: HashMap::new(),
            dropped_for_slowness: HashMap::new(),
            sync_faults: HashMap::new(),
            sync_budgets: HashMap::new(),
            announced_addrs: HashMap::new(),
            room_peers: HashMap::new(),
            lan_peers: HashMap::new(),
            sync_exchange_rate: config.limits.sync_exchanges_per_peer,
            sync_request_rate: config.limits.sync_requests_per_peer,
            catch_up_alone: CATCH_UP_ALONE.min(config.sync_request_timeout / 2),
            dropped_events: 0,
        }
    }

    /// Runs until a shutdown command arrives or every handle is dropped; rooms are flushed first.
    pub(crate) async fn run(mut self) {
        loop {
            let connect_deadline = self.connects.values().map(|c| c.deadline).min();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if self.handle_command(command).is_break() {
                            return;
                        }
                    }
                    None => {
                        self.handle_last_handle_dropped();
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                () = sleep_until(connect_deadline) => self.handle_connect_deadline(),
                _ = self.sync_timer.tick() => self.handle_sync_tick(),
                _ = self.room_lookup_timer.tick() => {
                    self.end_overdue_catch_ups();
                    self.make_room_for_newcomers();
                    self.handle_room_lookup_tick();
                }
                _ = self.prune_timer.tick() => self.handle_prune_tick(),
                // Only once the swarm has nothing more ready: gossip arriving together is
                // applied together.
                _ = std::future::ready(()), if self.pending_count > 0 => {
                    self.handle_gossip_batch();
                }
                // Last: records gained meanwhile become durable together, once the verdicts that
                // let gossipsub forward them have reached the connections.
                _ = std::future::ready(()), if self.unflushed_count > 0 => self.handle_flush(),
            }
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        match self.events.try_send(event) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped_events += 1;
                tracing::warn!(
                    dropped = self.dropped_events,
                    "event reader is slow: event dropped"
                );
            }
        }
    }

    fn warn(&mut self, peer: Option<PeerId>, reason: String) {
        tracing::warn!(?peer, %reason, "warning");
        self.emit(NodeEvent::Warning { peer, reason });
    }

    fn handle_last_handle_dropped(&mut self) {
        if let Err(e) = self.close_rooms() {
            tracing::error!(error = %e, "storing rooms at shutdown failed");
        }
    }

    /// Flushes and releases every room, so a new node can open the same data directory.
    fn close_rooms(&mut self) -> Result<(), NodeError> {
        let mut result = Ok(());
        for id in self.rooms.keys().copied().collect::<Vec<_>>() {
            if let Err(e) = self.flush_room(id) {
                result = Err(e.into());
            }
        }
        self.rooms.clear();
        result
    }

    // ---- local commands ----

    /// Answers one command; breaks when the command was to shut down.
    fn handle_command(&mut self, command: Command) -> ControlFlow<()> {
        match command {
            Command::Join(name, reply) => {
                let _ = reply.send(self.join(&name));
            }
            Command::Leave(name, reply) => {
                let _ = reply.send(self.leave(&name));
            }
            Command::Post(name, text, reply) => {
                let _ = reply.send(self.write(&name, |room| room.post(&text)));
            }
            Command::Edit(name, target, text, reply) => {
                let _ = reply.send(self.write(&name, |room| room.edit(target, &text)));
            }
            Command::Delete(name, target, reply) => {
                let _ = reply.send(self.write(&name, |room| room.delete(target)));
            }
            Command::React(name, target, reaction, on, reply) => {
                let _ = reply.send(self.write(&name, |room| room.react(target, &reaction, on)));
            }
            Command::SetNickname(name, nickname, reply) => {
                let _ = reply.send(self.write(&name, |room| room.set_profile(&nickname)));
            }
            Command::View(name, reply) => {
                let _ = reply.send(self.joined(&name).map(|j| j.room.view()));
            }
            Command::Heads(name, reply) => {
                let _ = reply.send(self.joined(&name).map(|j| j.room.heads()));
            }
            Command::SyncNow(name, reply) => {
                let _ = reply.send(self.sync_now(&name));
            }
            Command::Rooms(reply) => {
                let _ = reply.send(Ok(self.room_names()));
            }
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.swarm.connected_peers().copied().collect()));
            }
            Command::Connections(reply) => {
                let counters = self.swarm.network_info().connection_counters().clone();
                let _ = reply.send(Ok(counters.num_established()));
            }
            Command::ConnectionCounts(reply) => {
                let info = self.swarm.network_info();
                let counters = info.connection_counters();
                let _ = reply.send(Ok(ConnectionCounts {
                    pending_incoming: counters.num_pending_incoming(),
                    pending_outgoing: counters.num_pending_outgoing(),
                    established_incoming: counters.num_established_incoming(),
                    established_outgoing: counters.num_established_outgoing(),
                }));
            }
            Command::RoutingTable(reply) => {
                let _ = reply.send(Ok(self.routing_table()));
            }
            Command::LookUpRoom(name, reply) => self.look_up_room(&name, reply),
            Command::GossipCounts(reply) => {
                let _ = reply.send(Ok(GossipCounts::from_registry(&self.metrics)));
            }
            Command::PeerScore(peer, reply) => {
                let _ = reply.send(Ok(self.swarm.behaviour().gossipsub.peer_score(&peer)));
            }
            Command::GossipSource(peer, reply) => {
                let _ = reply.send(Ok(GossipSource {
                    score: self.swarm.behaviour().gossipsub.peer_score(&peer),
                    signature_checks: self.signature_checks.get(&peer).copied().unwrap_or(0),
                    dropped_for_slowness: self
                        .dropped_for_slowness
                        .get(&peer)
                        .copied()
                        .unwrap_or(0),
                }));
            }
            Command::PeerConnections(peer, reply) => {
                let connections = self
                    .connections
                    .values()
                    .filter(|c| c.peer == peer)
                    .map(|c| c.info.clone())
                    .collect();
                let _ = reply.send(Ok(connections));
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(Ok(self.swarm.listeners().cloned().collect()));
            }
            Command::Dial(addr, reply) => {
                let result = self
                    .swarm
                    .dial(addr)
                    .map_err(|e| NodeError::Dial(e.to_string()));
                let _ = reply.send(result);
            }
            Command::Connect(addr, reply) => self.handle_connect(addr, reply),
            Command::Block(peer, reply) => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                let _ = reply.send(Ok(()));
            }
            Command::Unblock(peer, reply) => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(self.close_rooms());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Joins the rooms saved by a previous run; one that fails is reported and skipped.
    pub(crate) fn rejoin(&mut self, names: &[String]) {
        for name in names {
            if let Err(e) = self.join(name) {
                self.warn(None, format!("rejoining room {name}: {e}"));
            }
        }
    }

    /// The joined rooms' names, sorted.
    fn room_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.rooms.values().map(|j| j.name.clone()).collect();
        names.sort();
        names
    }

    /// Saves the joined rooms' names, so the next start rejoins them. A failure does not undo
    /// the join or leave that changed them: it is reported, saying what `follows` from it.
    fn save_room_list(&mut self, follows: &str) {
        if let Err(error) = crate::room_list::save(self.store.dir(), &self.room_names()) {
            tracing::error!(%error, "saving the joined rooms failed");
            self.emit(NodeEvent::StorageFailed {
                reason: format!("{error}: {follows}"),
            });
        }
    }

    /// The connected peers subscribed to a room's topic, sorted.
    fn room_members(&self, topic: &gossipsub::TopicHash) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&topic))
            .map(|(peer, _)| *peer)
            .collect();
        members.sort();
        members
    }

    fn joined(&mut self, name: &str) -> Result<&mut Joined, NodeError> {
        let id = RoomId::for_public_name(name)?;
        self.rooms
            .get_mut(&id)
            .ok_or_else(|| NodeError::NotJoined(name.to_string()))
    }

    fn join(&mut self, name: &str) -> Result<(), NodeError> {
        let id = RoomId::for_public_name(name)?;
        if self.rooms.contains_key(&id) {
            return Ok(());
        }
        let (room, problems) = Room::open(&self.store, id, self.identity.clone())?;
        for problem in problems {
            self.warn(
                None,
                format!(
                    "room {name}: {} bytes of {} set aside at offset {} ({:?})",
                    problem.bytes,
                    problem.file.display(),
                    problem.offset,
                    problem.reason
                ),
            );
        }
        let topic = room_topic(id);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .set_topic_params(topic.clone(), room_topic_score())
        {
            tracing::warn!(error = %e, "room topic scoring not set");
        }
        let hash = topic.hash();
        self.topics.insert(hash.clone(), id);
        self.rooms.insert(
            id,
            Joined {
                name: name.to_string(),
                room,
                topic: hash.clone(),
                remembered: VecDeque::new(),
                // Nodes started together tick in step (within one interval): started at the
                // same count, their remembered turns would all fall in the same interval of
                // every REMEMBERED_SYNC_EVERY, and a partition that heals just after it would
                // wait that long for the first dial across.
                sync_ticks: rand::random_range(0..REMEMBERED_SYNC_EVERY),
                last_spread: None,
                catch_up: Some(sync::CatchUp::new(Instant::now() + self.catch_up_alone)),
                lookup_backoff: FIRST_LOOKUP_BACKOFF,
                next_lookup: Instant::now() + FIRST_LOOKUP_BACKOFF,
            },
        );
        // One member brings the room up to date; the others wait for it (see `CatchUp`).
        if let Some(&peer) = self.room_members(&hash).choose(&mut rand::rng()) {
            self.start_sync(peer, id);
        }
        self.refresh_room_peers();
        self.discover_room(id);
        self.save_room_list(&format!(
            "room {name} is joined but will not be rejoined at the next start"
        ));
        Ok(())
    }

    fn leave(&mut self, name: &str) -> Result<(), NodeError> {
        let id = self.joined(name)?.room.id();
        self.flush_room(id)?;
        if let Some(joined) = self.rooms.remove(&id) {
            self.topics.remove(&joined.topic);
        }
        for message in self.pending_gossip.remove(&id).unwrap_or_default() {
            self.pending_count -= 1;
            self.report_verdict(&message.id, &message.source, MessageAcceptance::Ignore);
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .unsubscribe(&room_topic(id));
        self.sessions.retain(|(_, room, _), _| *room != id);
        self.syncing.retain(|(_, room)| *room != id);
        self.rerun.retain(|(_, room)| *room != id);
        self.room_peers.remove(&id);
        self.forget_room(id);
        self.save_room_list(&format!(
            "room {name} is left but will be rejoined at the next start"
        ));
        Ok(())
    }

    /// Writes a record, stores it durably, then publishes its change. A record that cannot be
    /// stored is taken back before anything else can happen in the room, so no peer ever gets it.
    fn write(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut Room) -> Result<Written, grapevine_crdt::RoomError>,
    ) -> Result<RecordId, NodeError> {
        let joined = self.joined(name)?;
        let written = write(&mut joined.room)?;
        let (room, topic) = (joined.room.id(), joined.topic.clone());
        if let Err(error) = self.flush_room(room) {
            let taken_back = self.joined(name)?.room.unwrite(&written)?;
            if taken_back {
                return Err(NodeError::NotStored(error));
            }
        }
        self.emit(NodeEvent::RecordWritten {
            room,
            record: written.record.clone().into(),
        });
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, Envelope::encode(&written.change))
        {
            // Nobody to tell yet, or already told: sync delivers the record later.
            Ok(_) | Err(PublishError::NoPeersSubscribedToTopic | PublishError::Duplicate) => {}
            Err(e) => {
                tracing::warn!(error = %e, "publishing a record failed; sync will deliver it")
            }
        }
        Ok(written.id)
    }

    // ---- swarm events ----

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.handle_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.handle_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.handle_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.handle_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.handle_mdns(event),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(event)) => self.handle_autonat(event),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                self.handle_relay_client(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => self.handle_relay_server(event),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => self.handle_dcutr(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(_) | BehaviourEvent::AutonatServer(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Handshakes(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Memory(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.handle_connection_established(
                peer_id,
                connection_id,
                &endpoint,
                num_established.get(),
            ),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.handle_peer_gone(peer_id);
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                self.handle_external_addr_confirmed(address)
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.handle_external_addr_expired(address)
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                self.handle_listener_closed(listener_id)
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.reachable {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.handle_dial_failed(connection_id, peer_id, &error),
            _ => {}
        }
    }

    /// Starts a dial whose outcome the caller waits for (see [`MAX_CONNECTS`]).
    fn handle_connect(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        if self.connects.len() >= MAX_CONNECTS {
            let _ = reply.send(Err(NodeError::Dial(format!(
                "{MAX_CONNECTS} dials are still waiting for an answer"
            ))));
            return;
        }
        // Set before the dial starts, so it passes before libp2p's own transport timeout, as
        // long as the default deadline (see `handle_dial_failed`).
        let deadline = Instant::now() + self.connect_timeout;
        let opts = DialOpts::from(addr.clone());
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.connects.insert(
                    connection,
                    PendingConnect {
                        addr,
                        deadline,
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial(dial_failure(&e))));
            }
        }
    }

    /// Answers every [`crate::NodeHandle::connect`] whose deadline passed: no answer came. The
    /// dial itself goes on (libp2p cannot call off a dial in progress) until its transport gives
    /// up; its outcome then finds no caller and is ignored, and a connection it opens is kept as
    /// any other.
    fn handle_connect_deadline(&mut self) {
        let now = Instant::now();
        let timeout = self.connect_timeout;
        for (_, pending) in self
            .connects
            .extract_if(|_, pending| pending.deadline <= now)
        {
            let _ = pending.reply.send(Err(NodeError::ConnectTimeout {
                addr: pending.addr,
                after: timeout,
            }));
        }
    }

    /// A dial failed: answers the caller who waits for it, and forgets a routing-table peer that
    /// cannot be reached. A failure that comes after the caller's deadline is the deadline's:
    /// libp2p's transport timeout, as long as the default deadline but started just after it,
    /// says no more than that no answer came.
    fn handle_dial_failed(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        error: &DialError,
    ) {
        tracing::debug!(?peer, %error, "dial failed");
        if let Some(pending) = self.connects.remove(&connection) {
            let failure = if Instant::now() >= pending.deadline {
                NodeError::ConnectTimeout {
                    addr: pending.addr,
                    after: self.connect_timeout,
                }
            } else {
                NodeError::Dial(dial_failure(error))
            };
            let _ = pending.reply.send(Err(failure));
        }
        if let Some(peer) = peer {
            self.forget_unreachable_routing_peer(peer, error);
        }
    }

    fn handle_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        established: u32,
    ) {
        if let Some(pending) = self.connects.remove(&connection) {
            let _ = pending.reply.send(Ok(peer));
        }
        let info = PeerConnection {
            remote_addr: endpoint.get_remote_address().clone(),
            relayed: endpoint.is_relayed(),
        };
        self.connections.insert(
            connection,
            OpenConnection {
                peer,
                info,
                inbound: !endpoint.is_dialer(),
                since: Instant::now(),
            },
        );
        if established == 1 {
            self.emit(NodeEvent::PeerConnected(peer));
        }
        self.make_room_for_newcomers();
    }

    fn handle_peer_gone(&mut self, peer: PeerId) {
        self.closing.remove(&peer);
        self.nat.forget_peer(&peer);
        self.sync_faults.remove(&peer);
        self.sync_budgets.remove(&peer);
        self.sessions.retain(|(p, _, _), _| *p != peer);
        self.syncing.retain(|(p, _)| *p != peer);
        self.rerun.retain(|(p, _)| *p != peer);
        self.exchanges.retain(|_, exchange| exchange.peer != peer);
        // Its exchanges will never report their end: a catch-up with it passes on now.
        self.catch_up_peer_gone(peer);
        self.emit(NodeEvent::PeerDisconnected(peer));
        self.refresh_room_peers();
    }
}
