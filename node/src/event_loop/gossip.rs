//! Room gossip: cheap checks on arrival, then one batch per room decides every verdict.

use std::collections::{HashMap, HashSet};

use grapevine_crdt::{ApplyReport, Received, RecordError, Rejection};
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::{PeerId, Swarm};

use super::{EventLoop, MAX_COUNTED_SOURCES, MAX_GOSSIP_BATCH, PendingGossip};
use crate::NodeEvent;
use crate::behaviour::{Behaviour, Envelope};

impl EventLoop {
    pub(super) fn handle_gossip(&mut self, event: gossipsub::Event) {
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
                    if let Some(joined) = self.rooms.get_mut(&room) {
                        joined.remember(peer_id);
                    }
                    // One exchange brings both sides up to date, and both see the other
                    // subscribe: the side with the lower peer id starts it.
                    if *self.swarm.local_peer_id() < peer_id {
                        self.start_sync(peer_id, room);
                    }
                    self.refresh_room_peers();
                }
            }
            gossipsub::Event::Unsubscribed { topic, .. } if self.topics.contains_key(&topic) => {
                self.refresh_room_peers();
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                let dropped = failed_messages.priority + failed_messages.non_priority;
                count_for(
                    &mut self.dropped_for_slowness,
                    &self.swarm,
                    peer_id,
                    dropped as u64,
                );
            }
            _ => {}
        }
    }

    /// Compares each joined room's connected members with the last ones reported, and reports
    /// the rooms whose members changed.
    pub(super) fn refresh_room_peers(&mut self) {
        let mut changed = Vec::new();
        for (&room, joined) in &self.rooms {
            let peers = self.room_members(&joined.topic);
            if self.room_peers.get(&room) != Some(&peers) {
                changed.push((room, peers));
            }
        }
        for (room, peers) in changed {
            self.room_peers.insert(room, peers.clone());
            self.emit(NodeEvent::RoomPeersChanged { room, peers });
        }
    }

    pub(super) fn report_verdict(
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
        if verdict == MessageAcceptance::Reject {
            self.shun_if_graylisted(*source);
        }
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
                self.warn(Some(peer), e.to_string());
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

    /// Counts one record signature checked for gossip `source` forwarded.
    fn count_signature_check(&mut self, source: PeerId) {
        count_for(&mut self.signature_checks, &self.swarm, source, 1);
    }

    /// Applies every room's held gossip in one batch per room (the room's validation drops
    /// duplicates before checking any signature), then reports each message's verdict: applied
    /// or waiting → accept, duplicate → ignore, invalid → reject.
    pub(super) fn handle_gossip_batch(&mut self) {
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
                let outcome = report.outcomes.get(i);
                if outcome.is_some_and(cost_a_signature_check) {
                    self.count_signature_check(message.source);
                }
                let verdict = match outcome {
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
            self.gained(room_id, report.new_records());
            for peer in waiting_on {
                self.start_sync(peer, room_id);
            }
        }
    }
}

/// Whether a change's outcome took a record signature check: the signature is the room's last
/// rule, so every change that got past the others (applied, waiting for dependencies, or refused
/// for its signature) was checked, and duplicates and changes refused earlier were not.
fn cost_a_signature_check(outcome: &Result<Received, Rejection>) -> bool {
    matches!(
        outcome,
        Ok(Received::Applied(_) | Received::Waiting)
            | Err(Rejection::Record(RecordError::BadSignature))
    )
}

/// Adds `n` to `peer`'s count in `counts`, which holds at most [`MAX_COUNTED_SOURCES`] peers:
/// when a new peer would pass that, the counts of disconnected peers are forgotten first.
fn count_for(counts: &mut HashMap<PeerId, u64>, swarm: &Swarm<Behaviour>, peer: PeerId, n: u64) {
    if counts.len() >= MAX_COUNTED_SOURCES && !counts.contains_key(&peer) {
        counts.retain(|counted, _| swarm.is_connected(counted));
    }
    *counts.entry(peer).or_default() += n;
}
