//! The one task that owns the swarm and the rooms. Each step of [`EventLoop::run`] handles one
//! thing: a local command first, then a swarm event, then the periodic sync timer, and, when
//! nothing else is ready, the batch of gossip received meanwhile.

use std::collections::{HashMap, HashSet};

use grapevine_crdt::{
    ApplyReport, Identity, Received, RecordId, Room, RoomId, Store, SyncSession, Written,
};
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm};
use rand::seq::IndexedRandom;
use tokio::sync::mpsc;
use tokio::time::Interval;

use crate::NodeEvent;
use crate::behaviour::{
    Behaviour, BehaviourEvent, Envelope, SYNC_FAULT_SCORE, SyncRequest, SyncResponse, room_topic,
    room_topic_score,
};
use crate::config::Config;
use crate::error::NodeError;
use crate::handle::Command;

/// Gossip messages held for one batch at most: a batch costs about as much as one change, but
/// verdicts (and so forwarding) wait for it.
const MAX_GOSSIP_BATCH: usize = grapevine_crdt::room::MAX_RECEIVE_BUFFER;

/// Most request/response rounds in one sync exchange: a bound against a peer that never stops.
const MAX_SYNC_ROUNDS: u32 = 1_000;

/// Which side of an exchange a session serves; each side of a pair of peers keeps one of each,
/// so two exchanges started at once by both peers never share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Initiator,
    Responder,
}

/// A joined room and its topic.
struct Joined {
    name: String,
    room: Room,
    topic: gossipsub::TopicHash,
}

/// A gossip message handed to its room, waiting for the batch that decides its verdict.
struct PendingGossip {
    id: gossipsub::MessageId,
    source: PeerId,
}

/// An exchange this node started and is waiting on.
struct Exchange {
    peer: PeerId,
    room: RoomId,
    rounds: u32,
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    store: Store,
    identity: Identity,
    max_message_size: usize,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
    sync_timer: Interval,
    rooms: HashMap<RoomId, Joined>,
    topics: HashMap<gossipsub::TopicHash, RoomId>,
    sessions: HashMap<(PeerId, RoomId, Role), SyncSession>,
    exchanges: HashMap<OutboundRequestId, Exchange>,
    syncing: HashSet<(PeerId, RoomId)>,
    pending_gossip: HashMap<RoomId, Vec<PendingGossip>>,
    pending_count: usize,
    sync_faults: HashMap<PeerId, u32>,
    dropped_events: u64,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        store: Store,
        identity: Identity,
        config: &Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NodeEvent>,
    ) -> Self {
        let mut sync_timer = tokio::time::interval(config.sync_interval);
        sync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            swarm,
            store,
            identity,
            max_message_size: config.max_message_size,
            commands,
            events,
            sync_timer,
            rooms: HashMap::new(),
            topics: HashMap::new(),
            sessions: HashMap::new(),
            exchanges: HashMap::new(),
            syncing: HashSet::new(),
            pending_gossip: HashMap::new(),
            pending_count: 0,
            sync_faults: HashMap::new(),
            dropped_events: 0,
        }
    }

    /// Runs until a shutdown command arrives or every handle is dropped; rooms are flushed first.
    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(self.close_rooms());
                        return;
                    }
                    Some(command) => self.handle_command(command),
                    None => {
                        self.handle_last_handle_dropped();
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = self.sync_timer.tick() => self.handle_sync_tick(),
                // Only once the swarm has nothing more ready: gossip arriving together is
                // applied together.
                _ = std::future::ready(()), if self.pending_count > 0 => {
                    self.handle_gossip_batch();
                }
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
        for (_, mut joined) in self.rooms.drain() {
            if let Err(e) = joined.room.flush() {
                result = Err(e.into());
            }
        }
        result
    }

    // ---- local commands ----

    fn handle_command(&mut self, command: Command) {
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
            Command::Rooms(reply) => {
                let mut names: Vec<String> = self.rooms.values().map(|j| j.name.clone()).collect();
                names.sort();
                let _ = reply.send(Ok(names));
            }
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.swarm.connected_peers().copied().collect()));
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
            // The loop answers shutdown itself, since it ends there.
            Command::Shutdown(reply) => {
                let _ = reply.send(self.close_rooms());
            }
        }
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
            },
        );
        let members: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in members {
            self.start_sync(peer, id);
        }
        Ok(())
    }

    fn leave(&mut self, name: &str) -> Result<(), NodeError> {
        let id = RoomId::for_public_name(name)?;
        let Some(mut joined) = self.rooms.remove(&id) else {
            return Err(NodeError::NotJoined(name.to_string()));
        };
        self.topics.remove(&joined.topic);
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
        joined.room.flush()?;
        Ok(())
    }

    /// Writes a record, stores it durably, then publishes its change.
    fn write(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut Room) -> Result<Written, grapevine_crdt::RoomError>,
    ) -> Result<RecordId, NodeError> {
        let joined = self.joined(name)?;
        let written = write(&mut joined.room)?;
        joined.room.flush()?;
        let topic = joined.topic.clone();
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
            SwarmEvent::Behaviour(BehaviourEvent::Identify(_) | BehaviourEvent::Ping(_)) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => self.emit(NodeEvent::PeerConnected(peer_id)),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.handle_peer_gone(peer_id),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    fn handle_peer_gone(&mut self, peer: PeerId) {
        self.sync_faults.remove(&peer);
        self.sessions.retain(|(p, _, _), _| *p != peer);
        self.syncing.retain(|(p, _)| *p != peer);
        self.exchanges.retain(|_, exchange| exchange.peer != peer);
        self.emit(NodeEvent::PeerDisconnected(peer));
    }

    fn handle_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                if let Some(verdict) = self.check_gossip(propagation_source, &message_id, &message)
                {
                    self.report_verdict(&message_id, &propagation_source, verdict);
                }
                if self.pending_count >= MAX_GOSSIP_BATCH {
                    self.handle_gossip_batch();
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(&room) = self.topics.get(&topic) {
                    self.start_sync(peer_id, room);
                }
            }
            _ => {}
        }
    }

    fn report_verdict(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        verdict: MessageAcceptance,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }

    /// The cheap checks of one gossip message (size, topic, envelope). A message that passes is
    /// handed to its room and gets its verdict with the next batch (`None` here).
    fn check_gossip(
        &mut self,
        peer: PeerId,
        id: &gossipsub::MessageId,
        message: &gossipsub::Message,
    ) -> Option<MessageAcceptance> {
        if message.data.len() > self.max_message_size {
            let reason = format!("gossip of {} bytes is too large", message.data.len());
            self.warn(Some(peer), reason);
            return Some(MessageAcceptance::Reject);
        }
        let Some(&room_id) = self.topics.get(&message.topic) else {
            return Some(MessageAcceptance::Ignore);
        };
        let envelope = match Envelope::decode(&message.data) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.warn(Some(peer), format!("undecodable gossip envelope: {e}"));
                return Some(MessageAcceptance::Reject);
            }
        };
        let Some(joined) = self.rooms.get_mut(&room_id) else {
            return Some(MessageAcceptance::Ignore);
        };
        if let Err(e) = joined.room.receive(&envelope.c) {
            tracing::error!(error = %e, "applying gossiped changes failed");
            return Some(MessageAcceptance::Ignore);
        }
        self.pending_gossip
            .entry(room_id)
            .or_default()
            .push(PendingGossip {
                id: id.clone(),
                source: peer,
            });
        self.pending_count += 1;
        None
    }

    /// Applies every room's held gossip in one batch per room (the room's validation drops
    /// duplicates before checking any signature), then reports each message's verdict: applied
    /// or waiting → accept, duplicate → ignore, invalid → reject.
    fn handle_gossip_batch(&mut self) {
        self.pending_count = 0;
        for (room_id, pending) in std::mem::take(&mut self.pending_gossip) {
            let Some(joined) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            let report = match joined.room.apply_received() {
                Ok(report) => report,
                Err(e) => {
                    tracing::error!(error = %e, "applying gossiped changes failed");
                    ApplyReport::default()
                }
            };
            let mut waiting_on = HashSet::new();
            for (i, message) in pending.iter().enumerate() {
                let verdict = match report.outcomes.get(i) {
                    Some(Ok(Received::Applied(_))) => MessageAcceptance::Accept,
                    Some(Ok(Received::Waiting)) => {
                        waiting_on.insert(message.source);
                        MessageAcceptance::Accept
                    }
                    Some(Ok(Received::Duplicate)) | None => MessageAcceptance::Ignore,
                    Some(Err(rejection)) => {
                        let reason = format!("invalid change gossiped: {rejection}");
                        self.warn(Some(message.source), reason);
                        MessageAcceptance::Reject
                    }
                };
                self.report_verdict(&message.id, &message.source, verdict);
            }
            self.stored(room_id, &report.new_records().collect::<Vec<_>>());
            for peer in waiting_on {
                self.start_sync(peer, room_id);
            }
        }
    }

    /// Flushes a room that gained records and reports them.
    fn stored(&mut self, room_id: RoomId, new: &[RecordId]) {
        if new.is_empty() {
            return;
        }
        let Some(joined) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if let Err(e) = joined.room.flush() {
            tracing::error!(error = %e, "storing received records failed");
            return;
        }
        let records: Vec<_> = new
            .iter()
            .filter_map(|id| joined.room.record(id).cloned())
            .collect();
        for record in records {
            self.emit(NodeEvent::RecordReceived {
                room: room_id,
                record,
            });
        }
    }

    // ---- history sync ----

    fn handle_sync_tick(&mut self) {
        let mut rng = rand::rng();
        let mut picks = Vec::new();
        for (&room, joined) in &self.rooms {
            let members: Vec<PeerId> = self
                .swarm
                .behaviour()
                .gossipsub
                .all_peers()
                .filter(|(_, topics)| topics.contains(&&joined.topic))
                .map(|(peer, _)| *peer)
                .collect();
            if let Some(&peer) = members.choose(&mut rng) {
                picks.push((peer, room));
            }
        }
        for (peer, room) in picks {
            self.start_sync(peer, room);
        }
    }

    /// Starts an exchange with `peer` about `room` unless one is already running.
    fn start_sync(&mut self, peer: PeerId, room: RoomId) {
        if !self.rooms.contains_key(&room) || !self.syncing.insert((peer, room)) {
            return;
        }
        let session = self
            .sessions
            .entry((peer, room, Role::Initiator))
            .or_default();
        session.reset();
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        match joined.room.generate_sync_message(session) {
            Ok(message) => self.send_sync(peer, room, true, message, 0),
            Err(e) => {
                self.syncing.remove(&(peer, room));
                tracing::error!(error = %e, "generating a sync message failed");
            }
        }
    }

    fn send_sync(
        &mut self,
        peer: PeerId,
        room: RoomId,
        start: bool,
        message: Option<Vec<u8>>,
        rounds: u32,
    ) {
        let request = SyncRequest {
            room,
            start,
            message,
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        self.exchanges.insert(id, Exchange { peer, room, rounds });
    }

    fn handle_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let response = self.answer_sync(peer, request);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.continue_sync(request_id, response),
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(exchange) = self.exchanges.remove(&request_id) {
                    self.syncing.remove(&(exchange.peer, exchange.room));
                    tracing::debug!(peer = %exchange.peer, %error, "sync request failed");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Reports a bad sync message and lowers the sender's gossipsub score, so repeat offenders
    /// end up graylisted.
    fn sync_fault(&mut self, peer: PeerId, error: &grapevine_crdt::SyncError) {
        let faults = self.sync_faults.entry(peer).or_default();
        *faults += 1;
        let score = SYNC_FAULT_SCORE * f64::from(*faults);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        self.warn(Some(peer), format!("bad sync message: {error}"));
    }

    /// Answers one sync request as the responder.
    fn answer_sync(&mut self, peer: PeerId, request: SyncRequest) -> SyncResponse {
        let room_id = request.room;
        let Some(joined) = self.rooms.get_mut(&room_id) else {
            return SyncResponse { message: None };
        };
        let session = self
            .sessions
            .entry((peer, room_id, Role::Responder))
            .or_default();
        if request.start {
            session.reset();
        }
        let mut new = Vec::new();
        if let Some(message) = &request.message {
            match joined.room.receive_sync_message(session, message) {
                Ok(progress) => new = progress.new_records,
                Err(e) => {
                    session.reset();
                    self.sync_fault(peer, &e);
                    return SyncResponse { message: None };
                }
            }
        }
        let reply = match joined.room.generate_sync_message(session) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, "generating a sync message failed");
                None
            }
        };
        self.stored(room_id, &new);
        SyncResponse { message: reply }
    }

    /// Takes a response as the initiator and sends the next request, or ends the exchange.
    fn continue_sync(&mut self, request_id: OutboundRequestId, response: SyncResponse) {
        let Some(Exchange { peer, room, rounds }) = self.exchanges.remove(&request_id) else {
            return;
        };
        let (Some(joined), Some(session)) = (
            self.rooms.get_mut(&room),
            self.sessions.get_mut(&(peer, room, Role::Initiator)),
        ) else {
            self.syncing.remove(&(peer, room));
            return;
        };
        let mut new = Vec::new();
        if let Some(message) = &response.message {
            match joined.room.receive_sync_message(session, message) {
                Ok(progress) => new = progress.new_records,
                Err(e) => {
                    session.reset();
                    self.syncing.remove(&(peer, room));
                    self.sync_fault(peer, &e);
                    return;
                }
            }
        }
        let next = match joined.room.generate_sync_message(session) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "generating a sync message failed");
                None
            }
        };
        self.stored(room, &new);
        let done = next.is_none() && response.message.is_none();
        if done || rounds + 1 >= MAX_SYNC_ROUNDS {
            if !done {
                tracing::warn!(%peer, "sync exchange cut off after {MAX_SYNC_ROUNDS} rounds");
            }
            self.syncing.remove(&(peer, room));
        } else {
            self.send_sync(peer, room, false, next, rounds + 1);
        }
    }
}
