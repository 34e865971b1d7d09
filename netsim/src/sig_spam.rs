//! Invalid-signature spammers: bare gossipsub peers publishing well-formed record changes whose
//! record signature is wrong, at a set rate (the gossipsub message around each is validly signed,
//! so only the room's record check can refuse it), and the watch that measures what they cost:
//! when each honest neighbour's gossipsub score of a spammer first falls below the graylist
//! threshold, and how many record signatures that neighbour still checked for it afterwards.
//!
//! Each spam record is one honest-looking record whose signature keeps a valid `R` and a
//! canonical `S` with its low bytes replaced by a counter: every message is new (new record id,
//! new change, new gossip id), passes every cheap rule, and fails only the costly signature
//! equation, the worst case for the receiver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use grapevine_node::behaviour::{Envelope, score_thresholds};
use grapevine_node::crdt::{Identity, RecordId, Room, RoomId, record_object};
use grapevine_node::{GossipSource, NodeHandle};
use libp2p::futures::StreamExt;
use libp2p::{PeerId, gossipsub};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::gossip::{BarePeer, REDIAL_INTERVAL};
use crate::hostile::with_record;

/// Records per second of each invalid-signature spammer: the hardening issue's figure.
pub const DEFAULT_SIG_SPAM_RATE: f64 = 100.0;
/// How often the watch reads every neighbour's view of every spammer: the resolution of the
/// graylisting time.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Length of an ed25519 signature, and of its `S` half, at the end of a signed record.
const SIGNATURE_LEN: usize = 64;
const S_LEN: usize = 32;

/// Makes invalid-signature record changes, each one new.
pub(crate) struct BadSignatures {
    room: RoomId,
    epoch: u32,
    /// The honest change and the signed record it carries, edited for each message.
    change: Vec<u8>,
    record: Vec<u8>,
    count: u64,
}

impl BadSignatures {
    /// Spam of `room` in the name of `author` (a key of the spammer's own).
    pub(crate) fn new(room: RoomId, author: Identity) -> Result<Self, String> {
        let mut replica = Room::in_memory(room, author);
        let written = replica
            .post("invalid-signature spam")
            .map_err(|e| e.to_string())?;
        Ok(Self {
            room,
            epoch: written.record.record().epoch,
            change: written.change,
            record: written.record.bytes().to_vec(),
            count: 0,
        })
    }

    /// The next message: the record with the low eight bytes of its signature's `S` set to a
    /// counter (`S` stays below the group order, so it is canonical), in a change keyed by the
    /// new record id, in an envelope.
    pub(crate) fn next(&mut self) -> Result<Vec<u8>, String> {
        self.count += 1;
        let mut record = self.record.clone();
        let s = record.len() - SIGNATURE_LEN + (SIGNATURE_LEN - S_LEN);
        record[s..s + 8].copy_from_slice(&self.count.to_le_bytes());
        let id = RecordId(Sha256::digest(&record).into());
        let object = record_object(&self.room, self.epoch, &id);
        let change = with_record(&self.change, record, id, object)?;
        Ok(Envelope::encode(&change))
    }
}

/// What the spammers sent, shared with their tasks.
#[derive(Debug, Default)]
pub(crate) struct SpamSent {
    /// Messages each spammer published.
    pub(crate) messages: Vec<AtomicU64>,
    /// When each spammer published its first message: the start of its attack.
    pub(crate) started: Vec<OnceLock<Instant>>,
}

impl SpamSent {
    pub(crate) fn new(spammers: usize) -> Self {
        Self {
            messages: (0..spammers).map(|_| AtomicU64::new(0)).collect(),
            started: (0..spammers).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// An invalid-signature spammer (number `index`): publishes one of `messages` every `gap` once
/// anyone listens.
pub(crate) async fn spam(
    mut peer: BarePeer,
    topic: gossipsub::IdentTopic,
    mut messages: BadSignatures,
    gap: Duration,
    sent: Arc<SpamSent>,
    index: usize,
) {
    let mut redial = tokio::time::interval(REDIAL_INTERVAL);
    let mut publish = tokio::time::interval(gap);
    // Behind schedule (a busy machine), it publishes at its rate from then on, not in bursts.
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = None;
    loop {
        tokio::select! {
            event = peer.swarm.select_next_some() => {
                peer.on_event(event);
            }
            _ = redial.tick() => peer.dial_missing(),
            _ = publish.tick() => {
                if next.is_none() {
                    next = messages.next().ok();
                }
                let Some(message) = next.take() else { continue };
                match peer.swarm.behaviour_mut().publish(topic.clone(), message.clone()) {
                    Ok(_) => {
                        if let Some(count) = sent.messages.get(index) {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(started) = sent.started.get(index) {
                            started.get_or_init(Instant::now);
                        }
                    }
                    // Nobody listens yet, or every queue towards them is full: kept for the
                    // next tick.
                    Err(_) => next = Some(message),
                }
            }
        }
    }
}

/// One honest neighbour's view of one spammer over the run.
#[derive(Debug, Clone, Copy, Default)]
struct NeighbourView {
    /// The spammer's score and the signatures checked for it, at the last reading.
    last: GossipSource,
    /// When the score was first read below the graylist threshold, and the signatures checked
    /// for the spammer by then.
    graylisted: Option<(Instant, u64)>,
    /// Readings above the threshold after a reading below it: the spammer got out of the
    /// graylist.
    escapes: u32,
}

/// Each spammer (by number) and the honest members it dials, with their nodes.
pub(crate) struct WatchTargets {
    /// Each spammer's peer id and the member numbers it dials.
    pub(crate) spammers: Vec<(PeerId, Vec<usize>)>,
    /// The running members' nodes, by member number.
    pub(crate) nodes: HashMap<usize, NodeHandle>,
}

/// The running watch of the spammers' neighbours.
pub(crate) struct GraylistWatch {
    views: Arc<Mutex<Vec<HashMap<usize, NeighbourView>>>>,
    targets: Arc<WatchTargets>,
    task: Option<JoinHandle<()>>,
}

impl GraylistWatch {
    /// Starts reading, every [`WATCH_INTERVAL`], each spammer's score and signature checks at
    /// every member it dials.
    pub(crate) fn spawn(targets: WatchTargets) -> Self {
        let views = Arc::new(Mutex::new(vec![HashMap::new(); targets.spammers.len()]));
        let targets = Arc::new(targets);
        let task = tokio::spawn({
            let (views, targets) = (views.clone(), targets.clone());
            async move {
                let mut tick = tokio::time::interval(WATCH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    read_all(&targets, &views).await;
                }
            }
        });
        Self {
            views,
            targets,
            task: Some(task),
        }
    }

    /// Stops the periodic readings, takes a last one and reports each spammer, given what the
    /// spammers sent.
    pub(crate) async fn finish(&mut self, sent: &SpamSent) -> Vec<SigSpammerReport> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        read_all(&self.targets, &self.views).await;
        let views = lock(&self.views);
        views
            .iter()
            .enumerate()
            .map(|(index, neighbours)| {
                let started = sent.started.get(index).and_then(|s| s.get().copied());
                SigSpammerReport::of(
                    neighbours,
                    started,
                    sent.messages
                        .get(index)
                        .map_or(0, |m| m.load(Ordering::Relaxed)),
                )
            })
            .collect()
    }
}

impl Drop for GraylistWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One reading of every spammer at every member it dials; a member that no longer answers (it
/// crashed) is skipped.
async fn read_all(targets: &WatchTargets, views: &Mutex<Vec<HashMap<usize, NeighbourView>>>) {
    let graylist = score_thresholds().graylist_threshold;
    for (index, (spammer, members)) in targets.spammers.iter().enumerate() {
        for member in members {
            let Some(node) = targets.nodes.get(member) else {
                continue;
            };
            let Ok(source) = node.gossip_source(*spammer).await else {
                continue;
            };
            let now = Instant::now();
            let mut views = lock(views);
            let Some(view) = views.get_mut(index).map(|v| v.entry(*member).or_default()) else {
                continue;
            };
            let below = source.score.is_some_and(|s| s < graylist);
            let was_below = view.last.score.is_some_and(|s| s < graylist);
            if below && view.graylisted.is_none() {
                view.graylisted = Some((now, source.signature_checks));
            }
            if !below && was_below {
                view.escapes += 1;
            }
            view.last = source;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one invalid-signature spammer achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SigSpammerReport {
    /// Messages it published.
    pub sent: u64,
    /// Members it dials whose gossipsub came to know it (its honest neighbours).
    pub neighbours: usize,
    /// Of those, the ones whose score of it fell below the graylist threshold.
    pub graylisted_by: usize,
    /// Seconds from its first message until the last of its neighbours graylisted it; `None`
    /// when one never did (or it never sent anything).
    pub graylisted_after_s: Option<f64>,
    /// Record signatures its neighbours checked for it before graylisting it.
    pub checks_before: u64,
    /// Record signatures its neighbours checked for it after graylisting it: must be zero.
    pub checks_after: u64,
    /// Times a neighbour's score of it came back above the threshold after graylisting it.
    pub escapes: u32,
}

impl SigSpammerReport {
    fn of(neighbours: &HashMap<usize, NeighbourView>, started: Option<Instant>, sent: u64) -> Self {
        let known: Vec<&NeighbourView> = neighbours
            .values()
            .filter(|v| v.last.score.is_some() || v.graylisted.is_some())
            .collect();
        let graylisted: Vec<(Instant, u64, u64)> = known
            .iter()
            .filter_map(|v| {
                v.graylisted
                    .map(|(at, checks)| (at, checks, v.last.signature_checks))
            })
            .collect();
        let graylisted_after_s = match started {
            Some(start) if graylisted.len() == known.len() && !known.is_empty() => graylisted
                .iter()
                .map(|(at, _, _)| at.saturating_duration_since(start).as_secs_f64())
                .reduce(f64::max),
            _ => None,
        };
        let checks_before = known
            .iter()
            .map(|v| v.graylisted.map_or(v.last.signature_checks, |(_, c)| c))
            .sum();
        Self {
            sent,
            neighbours: known.len(),
            graylisted_by: graylisted.len(),
            graylisted_after_s,
            checks_before,
            checks_after: graylisted
                .iter()
                .map(|(_, at_graylist, at_end)| at_end.saturating_sub(*at_graylist))
                .sum(),
            escapes: known.iter().map(|v| v.escapes).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grapevine_node::crdt::{RecordError, Rejection};

    #[test]
    fn every_spam_message_is_new_and_refused_only_for_its_signature() {
        let room = RoomId::for_public_name("spam").unwrap();
        let mut spam = BadSignatures::new(room, Identity::generate()).unwrap();
        let mut replica = Room::in_memory(room, Identity::generate());
        let changes: Vec<Vec<u8>> = (0..3)
            .map(|_| Envelope::decode(&spam.next().unwrap()).unwrap().c)
            .collect();
        assert!(changes[0] != changes[1] && changes[1] != changes[2]);
        let report = replica.apply_remote(&changes).unwrap();
        for outcome in &report.outcomes {
            assert_eq!(
                outcome.as_ref().err(),
                Some(&Rejection::Record(RecordError::BadSignature))
            );
        }
        assert_eq!(replica.len(), 0);
    }
}
