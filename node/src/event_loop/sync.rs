//! History sync over `/grapevine/sync/1`: exchanges this node starts (on a peer's subscription,
//! on a gap, on the timer, after an exchange brought many records) and answers to the exchanges
//! others start.

use std::time::Instant;

use grapevine_crdt::{RoomId, SyncError};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use rand::seq::{IndexedRandom, SliceRandom};

use super::{
    EventLoop, Exchange, MAX_SYNC_ROUNDS, MAX_WAITING_ON_CATCH_UP, REMEMBERED_SYNC_EVERY, Role,
    SETTLING_SYNC_ROUNDS, SPREAD_AFTER_RECORDS, SPREAD_INTERVAL, SPREAD_TO, SyncBudget,
};
use crate::NodeEvent;
use crate::behaviour::{SYNC_FAULT_SCORE, SyncRequest, SyncResponse};
use crate::error::NodeError;
use crate::rate_limit::TokenBucket;

/// A room's first exchange after it is joined (or rejoined at start), run alone. A newcomer
/// connected to many members would otherwise start an exchange with each at once (and those
/// with lower peer ids one with it), and every one of them would send the whole history, since
/// each starts from the newcomer's empty heads: nine copies of a 100,000-record history at a
/// newcomer with nine members connected. The others wait until it ends, then find little left.
pub(super) struct CatchUp {
    /// The member it runs with, once one is picked: the first one an exchange is started with.
    peer: Option<PeerId>,
    /// Set when it ended with both sides holding the same records.
    completed: bool,
    /// When the others go ahead even though it has not ended (a slow or silent member).
    deadline: Instant,
    /// Members this node meant to start exchanges with meanwhile, started when it ends.
    deferred: Vec<PeerId>,
    /// Exchanges other members started meanwhile, answered when it ends.
    held: Vec<HeldRequest>,
}

/// The first request of an exchange a member started during a catch-up, waiting for its answer.
struct HeldRequest {
    peer: PeerId,
    request: SyncRequest,
    channel: ResponseChannel<SyncResponse>,
}

impl CatchUp {
    /// A catch-up with no member picked yet, running alone until `deadline` at most.
    pub(super) fn new(deadline: Instant) -> Self {
        Self {
            peer: None,
            completed: false,
            deadline,
            deferred: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl EventLoop {
    /// Anti-entropy: syncs each room with one member picked at random among those connected, or,
    /// at every [`REMEMBERED_SYNC_EVERY`]th tick and whenever none is connected, among those
    /// remembered from before and not connected now. A remembered member is dialled by the sync
    /// request, so two groups of a room that were split apart find each other again and
    /// converge; not near the connection limit, though, where a new connection would only push
    /// another one out.
    pub(super) fn handle_sync_tick(&mut self) {
        let mut rng = rand::rng();
        let mut picks = Vec::new();
        let may_dial = !self.near_connection_limit();
        let mut rooms: Vec<(RoomId, Vec<PeerId>)> = Vec::new();
        for (&room, joined) in &self.rooms {
            rooms.push((room, self.room_members(&joined.topic)));
        }
        for (room, connected) in rooms {
            let Some(joined) = self.rooms.get_mut(&room) else {
                continue;
            };
            joined.sync_ticks += 1;
            let remembered_turn =
                connected.is_empty() || joined.sync_ticks.is_multiple_of(REMEMBERED_SYNC_EVERY);
            let away: Vec<PeerId> = joined
                .remembered
                .iter()
                .filter(|p| !connected.contains(p))
                .copied()
                .collect();
            let pool = if may_dial && remembered_turn && !away.is_empty() {
                away
            } else {
                connected
            };
            if let Some(&peer) = pool.choose(&mut rng) {
                picks.push((peer, room));
            }
        }
        for (peer, room) in picks {
            self.start_sync(peer, room);
        }
    }

    /// Starts an exchange about the room `name` with each of its connected members.
    pub(super) fn sync_now(&mut self, name: &str) -> Result<usize, NodeError> {
        let joined = self.joined(name)?;
        let room = joined.room.id();
        let topic = joined.topic.clone();
        let members = self.room_members(&topic);
        for &peer in &members {
            if self.syncing.contains(&(peer, room)) {
                // The running exchange may have sent its last message already.
                self.rerun.insert((peer, room));
            } else {
                self.start_sync(peer, room);
            }
        }
        Ok(members.len())
    }

    /// Ends an exchange, and starts the next one if [`EventLoop::sync_now`] asked for it meanwhile.
    fn end_exchange(&mut self, peer: PeerId, room: RoomId) {
        self.syncing.remove(&(peer, room));
        let catching_up = self
            .rooms
            .get(&room)
            .and_then(|joined| joined.catch_up.as_ref())
            .is_some_and(|catch_up| catch_up.peer == Some(peer));
        if catching_up {
            self.catch_up_ended(room);
        }
        if self.rerun.remove(&(peer, room)) {
            self.start_sync(peer, room);
        }
    }

    /// After a room's catch-up exchange ended: when it did not complete (the member failed,
    /// or the exchange ran out of rounds) and there is time left, the next waiting member takes
    /// over; otherwise every waiting exchange goes ahead.
    fn catch_up_ended(&mut self, room: RoomId) {
        let Some(catch_up) = self.rooms.get_mut(&room).and_then(|j| j.catch_up.as_mut()) else {
            return;
        };
        if !catch_up.completed
            && Instant::now() < catch_up.deadline
            && !catch_up.deferred.is_empty()
        {
            let next = catch_up.deferred.remove(0);
            catch_up.peer = Some(next);
            tracing::debug!(peer = %next, "catch-up handed over");
            self.start_sync(next, room);
        } else {
            self.release_catch_up(room);
        }
    }

    /// Ends a room's catch-up: the exchanges held for it are answered and the deferred ones
    /// started.
    fn release_catch_up(&mut self, room: RoomId) {
        let Some(catch_up) = self.rooms.get_mut(&room).and_then(|j| j.catch_up.take()) else {
            return;
        };
        tracing::debug!(
            completed = catch_up.completed,
            held = catch_up.held.len(),
            deferred = catch_up.deferred.len(),
            "catch-up over"
        );
        for HeldRequest {
            peer,
            request,
            channel,
        } in catch_up.held
        {
            let response = self.answer_sync(peer, request);
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, response);
        }
        for peer in catch_up.deferred {
            self.start_sync(peer, room);
        }
    }

    /// Passes on the catch-ups running with `peer`, which disconnected.
    pub(super) fn catch_up_peer_gone(&mut self, peer: PeerId) {
        for room in self.rooms_catching_up(|c| c.peer == Some(peer)) {
            self.catch_up_ended(room);
        }
    }

    /// Lets the exchanges waiting on a catch-up that ran past its deadline go ahead.
    pub(super) fn end_overdue_catch_ups(&mut self) {
        let now = Instant::now();
        for room in self.rooms_catching_up(|c| c.deadline <= now) {
            self.release_catch_up(room);
        }
    }

    /// The rooms whose running catch-up `matches`.
    fn rooms_catching_up(&self, matches: impl Fn(&CatchUp) -> bool) -> Vec<RoomId> {
        self.rooms
            .iter()
            .filter(|(_, joined)| joined.catch_up.as_ref().is_some_and(&matches))
            .map(|(&room, _)| room)
            .collect()
    }

    /// Keeps the first request of an exchange `peer` started while the room catches up, to be
    /// answered once it has; gives the request back when it is to be answered now. A request
    /// from a node catching up too is held only by the side with the lower peer id: nodes
    /// holding each other's requests in a cycle would all wait for the deadline, and a cycle of
    /// ever lower ids cannot close. When the room has no catch-up member yet, `peer` becomes it.
    fn hold_during_catch_up(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) -> Option<(SyncRequest, ResponseChannel<SyncResponse>)> {
        let room = request.room;
        let Some(catch_up) = self.rooms.get_mut(&room).and_then(|j| j.catch_up.as_mut()) else {
            return Some((request, channel));
        };
        if !request.start {
            return Some((request, channel));
        }
        let unpicked = catch_up.peer.is_none();
        let answer_now = (request.catching_up && *self.swarm.local_peer_id() > peer)
            || catch_up.held.len() >= MAX_WAITING_ON_CATCH_UP;
        let given_back = if answer_now {
            Some((request, channel))
        } else {
            catch_up.held.push(HeldRequest {
                peer,
                request,
                channel,
            });
            None
        };
        if unpicked {
            self.start_sync(peer, room);
        }
        given_back
    }

    /// Starts an exchange with `peer` about `room` unless one is already running.
    /// While the room catches up, an exchange with another member than the catch-up's waits.
    pub(super) fn start_sync(&mut self, peer: PeerId, room: RoomId) {
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        if self.syncing.contains(&(peer, room)) {
            return;
        }
        if let Some(catch_up) = joined.catch_up.as_mut() {
            match catch_up.peer {
                None => catch_up.peer = Some(peer),
                Some(picked) if picked != peer => {
                    if !catch_up.deferred.contains(&peer)
                        && catch_up.deferred.len() < MAX_WAITING_ON_CATCH_UP
                    {
                        catch_up.deferred.push(peer);
                    }
                    return;
                }
                Some(_) => {}
            }
        }
        self.syncing.insert((peer, room));
        let session = self
            .sessions
            .entry((peer, room, Role::Initiator))
            .or_default();
        session.reset();
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        match joined.room.generate_sync_message(session) {
            Ok(message) => {
                tracing::debug!(%peer, "sync exchange started");
                self.send_sync(peer, room, true, message, 0);
            }
            Err(e) => {
                self.end_exchange(peer, room);
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
        let catching_up = self
            .rooms
            .get(&room)
            .is_some_and(|joined| joined.catch_up.is_some());
        let request = SyncRequest {
            room,
            start,
            message,
            catching_up,
        };
        let addresses = self.announced_addrs.get(&peer).cloned().unwrap_or_default();
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request_with_addresses(&peer, request, addresses);
        self.exchanges.insert(id, Exchange { peer, room, rounds });
    }

    pub(super) fn handle_sync(
        &mut self,
        event: request_response::Event<SyncRequest, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let answer = if self.within_sync_budget(peer, request.start) {
                        self.hold_during_catch_up(peer, request, channel)
                            .map(|(request, channel)| (self.answer_sync(peer, request), channel))
                    } else {
                        Some((SyncResponse::default(), channel))
                    };
                    if let Some((response, channel)) = answer {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, response);
                    }
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
                    self.end_exchange(exchange.peer, exchange.room);
                    tracing::debug!(peer = %exchange.peer, %error, "sync request failed");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn report_sync_progress(&mut self, room: RoomId, peer: PeerId, new_records: usize) {
        if new_records > 0 {
            tracing::debug!(%peer, new_records, "sync message applied");
            self.emit(NodeEvent::SyncProgress {
                room,
                peer,
                new_records,
            });
        }
        if new_records >= SPREAD_AFTER_RECORDS {
            self.spread_synced_records(room, peer);
        }
    }

    /// Starts exchanges about `room` with a few connected members other than `from` (which
    /// just sent many records), at most once per [`SPREAD_INTERVAL`]: records that sync brought
    /// reach the rest of the room within round trips, not anti-entropy intervals.
    fn spread_synced_records(&mut self, room: RoomId, from: PeerId) {
        let Some(joined) = self.rooms.get_mut(&room) else {
            return;
        };
        let now = Instant::now();
        if joined
            .last_spread
            .is_some_and(|last| now.duration_since(last) < SPREAD_INTERVAL)
        {
            return;
        }
        joined.last_spread = Some(now);
        let topic = joined.topic.clone();
        let mut others: Vec<PeerId> = self
            .room_members(&topic)
            .into_iter()
            .filter(|p| *p != from && !self.syncing.contains(&(*p, room)))
            .collect();
        others.shuffle(&mut rand::rng());
        for peer in others.into_iter().take(SPREAD_TO) {
            self.start_sync(peer, room);
        }
    }

    /// Spends one request (and, for a fresh exchange, one exchange) of `peer`'s sync budget;
    /// `false` when it is spent, warned about once until the peer is within budget again.
    fn within_sync_budget(&mut self, peer: PeerId, start: bool) -> bool {
        let now = Instant::now();
        let (exchange_rate, request_rate) = (self.sync_exchange_rate, self.sync_request_rate);
        let budget = self.sync_budgets.entry(peer).or_insert_with(|| SyncBudget {
            exchanges: TokenBucket::new(exchange_rate, now),
            requests: TokenBucket::new(request_rate, now),
            throttled: false,
        });
        let allowed = budget.requests.try_take(now) && (!start || budget.exchanges.try_take(now));
        let first_refusal = !allowed && !budget.throttled;
        budget.throttled = !allowed;
        if first_refusal {
            self.warn(
                Some(peer),
                "too many sync requests: answering with nothing until the rate drops".into(),
            );
        }
        allowed
    }

    /// Reports a bad sync message and lowers the sender's gossipsub score, so repeat offenders
    /// end up graylisted.
    fn sync_fault(&mut self, peer: PeerId, error: &SyncError) {
        let faults = self.sync_faults.entry(peer).or_default();
        *faults += 1;
        let score = SYNC_FAULT_SCORE * f64::from(*faults);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        self.warn(Some(peer), format!("bad sync message: {error}"));
        self.shun_if_graylisted(peer);
    }

    /// Answers one sync request as the responder.
    fn answer_sync(&mut self, peer: PeerId, request: SyncRequest) -> SyncResponse {
        let room_id = request.room;
        let Some(joined) = self.rooms.get_mut(&room_id) else {
            return SyncResponse::default();
        };
        let session = self
            .sessions
            .entry((peer, room_id, Role::Responder))
            .or_default();
        if request.start {
            tracing::debug!(%peer, "answering a sync exchange");
            session.reset();
        }
        let mut new = Vec::new();
        let mut gained = 0;
        if let Some(message) = &request.message {
            match joined.room.receive_sync_message(session, message) {
                Ok(progress) => {
                    new = progress.new_records;
                    gained = u32::try_from(progress.unseen_changes).unwrap_or(u32::MAX);
                }
                Err(e) => {
                    session.forget();
                    self.sync_fault(peer, &e);
                    return SyncResponse::default();
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
        let count = new.len();
        self.gained(room_id, new);
        self.report_sync_progress(room_id, peer, count);
        SyncResponse {
            message: reply,
            gained,
        }
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
            self.end_exchange(peer, room);
            return;
        };
        let mut new = Vec::new();
        let mut moved = response.gained > 0;
        if let Some(message) = &response.message {
            match joined.room.receive_sync_message(session, message) {
                Ok(progress) => {
                    moved |= progress.unseen_changes > 0;
                    new = progress.new_records;
                }
                Err(e) => {
                    session.forget();
                    self.end_exchange(peer, room);
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
        let records = joined.room.len();
        let count = new.len();
        self.gained(room, new);
        self.report_sync_progress(room, peer, count);
        let done = next.is_none() && response.message.is_none();
        let settled = !moved && rounds + 1 >= SETTLING_SYNC_ROUNDS;
        if done || settled || rounds + 1 >= MAX_SYNC_ROUNDS {
            // A settled exchange brought everything the member held when it started: a
            // catch-up needs no other member's history.
            if (done || settled)
                && let Some(catch_up) = self.rooms.get_mut(&room).and_then(|j| j.catch_up.as_mut())
                && catch_up.peer == Some(peer)
            {
                catch_up.completed = true;
            }
            if done {
                tracing::debug!(%peer, rounds = rounds + 1, records, "sync exchange completed");
                // The records of the exchange are reported (once durable) before its end; a
                // failure is logged and reported by `flush_room`.
                let _ = self.flush_room(room);
                self.emit(NodeEvent::SyncCompleted {
                    room,
                    peer,
                    records,
                });
            } else if settled {
                tracing::debug!(%peer, rounds = rounds + 1, "sync exchange settled");
            } else {
                tracing::debug!(%peer, "sync exchange ended after {MAX_SYNC_ROUNDS} rounds");
            }
            self.end_exchange(peer, room);
        } else {
            self.send_sync(peer, room, false, next, rounds + 1);
        }
    }
}
