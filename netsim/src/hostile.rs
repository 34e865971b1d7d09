//! Hostile peers: spammers (real nodes posting valid records fast), forgers (bare gossipsub
//! peers publishing records signed by the wrong key and invalid Automerge changes on the room
//! topic) and silent peers (bare gossipsub peers that join the mesh and forward nothing).
//!
//! Spammers are room members picked by [`Hostile::spammer_peers`]; their posts are scheduled as
//! [`crate::Step::Spam`] and never measured. Forgers and silent peers come on top of the members
//! and dial [`Hostile::links`] random members each. The report counts what they sent and whether
//! any forged record was stored by a node, which must never happen.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ScalarValue};
use grapevine_node::behaviour::Envelope;
use grapevine_node::crdt::{Identity, RecordId, Room, RoomId, record_object};
use grapevine_node::room_topic;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, gossipsub};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::gossip::{BarePeer, GossipError, GossipSettings, REDIAL_INTERVAL};
use crate::network::SimNetwork;
use crate::sim::ROOM;

/// Records per second of each spammer: five times what one of `steady`'s publishers posts.
pub const DEFAULT_SPAM_RATE: f64 = 10.0;
/// Messages per second of each forger: enough to test rejection at every member it reaches,
/// few enough that the graylist (four rejects) is what stops it, not the rate.
pub const DEFAULT_FORGE_RATE: f64 = 2.0;
/// Members each forger or silent peer dials: about half a gossipsub mesh (`mesh_n` is 6).
pub const DEFAULT_LINKS: usize = 3;

/// Which hostile peers a simulation has, as shares of its room members.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hostile {
    /// Share (0 to 1) of the members that are spammers: real nodes posting valid records at
    /// `spam-rate` each. They are not counted as honest receivers or publishers.
    #[serde(default)]
    pub spammers: f64,
    /// Forgers, as a share of the members, added on top of them.
    #[serde(default)]
    pub forgers: f64,
    /// Silent peers, as a share of the members, added on top of them.
    #[serde(default)]
    pub silent: f64,
    /// Records per second of each spammer.
    #[serde(default = "default_spam_rate")]
    pub spam_rate: f64,
    /// Messages per second of each forger.
    #[serde(default = "default_forge_rate")]
    pub forge_rate: f64,
    /// Members each forger or silent peer dials.
    #[serde(default = "default_links")]
    pub links: usize,
}

fn default_spam_rate() -> f64 {
    DEFAULT_SPAM_RATE
}
fn default_forge_rate() -> f64 {
    DEFAULT_FORGE_RATE
}
fn default_links() -> usize {
    DEFAULT_LINKS
}

impl Default for Hostile {
    fn default() -> Self {
        Self {
            spammers: 0.0,
            forgers: 0.0,
            silent: 0.0,
            spam_rate: DEFAULT_SPAM_RATE,
            forge_rate: DEFAULT_FORGE_RATE,
            links: DEFAULT_LINKS,
        }
    }
}

fn share(members: usize, share: f64) -> usize {
    (members as f64 * share).round() as usize
}

impl Hostile {
    /// Whether there is any hostile peer at all.
    pub fn is_none(&self) -> bool {
        self.spammers == 0.0 && self.forgers == 0.0 && self.silent == 0.0
    }

    /// The spammers among `members` room members of which the first `in_room` are in the room
    /// from the start: the last ones of those, so honest publishers are picked from the rest.
    pub fn spammer_peers(&self, members: usize, in_room: usize) -> Range<usize> {
        let count = share(members, self.spammers).min(in_room);
        in_room - count..in_room
    }

    /// How many forgers a simulation of `members` room members has.
    pub fn forger_count(&self, members: usize) -> usize {
        share(members, self.forgers)
    }

    /// How many silent peers a simulation of `members` room members has.
    pub fn silent_count(&self, members: usize) -> usize {
        share(members, self.silent)
    }

    /// Checks the values make sense.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("spammers", self.spammers),
            ("forgers", self.forgers),
            ("silent", self.silent),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("hostile {name} must be a share between 0 and 1"));
            }
        }
        if self.spam_rate < 0.0 || self.forge_rate < 0.0 {
            return Err("hostile rates must not be negative".into());
        }
        if self.links == 0 && (self.forgers > 0.0 || self.silent > 0.0) {
            return Err("hostile links must be at least 1".into());
        }
        Ok(())
    }
}

/// What the hostile peers did, and what it achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostileReport {
    /// Spammers (room members).
    pub spammers: usize,
    /// Forgers (bare gossipsub peers).
    pub forgers: usize,
    /// Silent peers (bare gossipsub peers).
    pub silent: usize,
    /// Valid records the spammers posted.
    pub spam_posted: u64,
    /// Records signed by the wrong key (or with a broken signature) the forgers published.
    pub forged_sent: u64,
    /// Invalid Automerge changes the forgers published.
    pub invalid_sent: u64,
    /// Room-topic mesh links the silent peers held at their last heartbeat check, all together:
    /// zero would mean they never joined a mesh and the run tested nothing about them.
    pub silent_mesh_links: u64,
    /// Forged records found in a node's room view or among its received records, counted once
    /// per node: must be zero.
    pub forged_stored: usize,
}

/// The running forgers and silent peers of a simulation, and what they sent.
#[derive(Debug, Default)]
pub(crate) struct HostilePeers {
    tasks: Vec<JoinHandle<()>>,
    pub(crate) forgers: usize,
    pub(crate) silent: usize,
    pub(crate) sent: Arc<Sent>,
}

/// Counters and forged ids shared with the forgers' tasks.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub(crate) silent_mesh_links: Vec<AtomicU64>,
    pub(crate) forged: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) forged_ids: Mutex<HashSet<RecordId>>,
}

impl Sent {
    /// The ids of every forged record published so far.
    pub(crate) fn forged_ids(&self) -> HashSet<RecordId> {
        self.forged_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl HostilePeers {
    /// Starts the forgers and silent peers of `hostile` on [`ROOM`]'s topic as network peers
    /// `first..`, each dialling `links` of `members` (listening at `addr(member)`) picked with
    /// `seed`.
    pub(crate) fn spawn(
        hostile: &Hostile,
        network: &SimNetwork,
        first: usize,
        members: usize,
        addr: impl Fn(usize) -> Multiaddr,
        heartbeat: Duration,
        seed: u64,
    ) -> Result<Self, GossipError> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0bad_0bad);
        let room_id = RoomId::for_public_name(ROOM).map_err(|e| setup(&e))?;
        let topic = room_topic(room_id);
        let (forgers, silent) = (hostile.forger_count(members), hostile.silent_count(members));
        let mut peers = Self {
            forgers,
            silent,
            tasks: Vec::new(),
            sent: Arc::new(Sent {
                silent_mesh_links: (0..silent).map(|_| AtomicU64::new(0)).collect(),
                ..Sent::default()
            }),
        };
        for i in 0..peers.forgers + peers.silent {
            let forger = i < peers.forgers;
            let targets = rand::seq::index::sample(&mut rng, members, hostile.links.min(members))
                .into_iter()
                .map(&addr)
                .collect();
            let key =
                Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>()).map_err(|e| setup(&e))?;
            let settings = GossipSettings {
                heartbeat,
                validate: !forger,
            };
            let mut peer = BarePeer::new(network, first + i, key, settings, targets)?;
            peer.swarm
                .behaviour_mut()
                .subscribe(&topic)
                .map_err(|e| setup(&e))?;
            let task = if forger {
                let forgery = Forgery {
                    room: room_id,
                    honest: Identity::from_secret_bytes(rng.random()),
                    mallory: Identity::from_secret_bytes(rng.random()),
                    count: 0,
                };
                let gap = (hostile.forge_rate > 0.0)
                    .then(|| Duration::from_secs_f64(1.0 / hostile.forge_rate));
                tokio::spawn(forge(peer, topic.clone(), forgery, gap, peers.sent.clone()))
            } else {
                let sent = peers.sent.clone();
                let index = i - peers.forgers;
                tokio::spawn(stay_silent(peer, topic.clone(), sent, index))
            };
            peers.tasks.push(task);
        }
        Ok(peers)
    }

    /// Stops every hostile peer.
    pub(crate) fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for HostilePeers {
    /// A simulation dropped without [`crate::Sim::shutdown`] leaves no hostile peer running.
    fn drop(&mut self) {
        self.stop();
    }
}

fn setup(e: &dyn std::fmt::Display) -> GossipError {
    GossipError::Setup(e.to_string())
}

/// A silent peer: subscribed and in meshes, holding every message for a validation result it
/// never gives, so it forwards (and gossips) nothing. It notes its mesh size as number `index`.
async fn stay_silent(
    mut peer: BarePeer,
    topic: gossipsub::IdentTopic,
    sent: Arc<Sent>,
    index: usize,
) {
    let mut redial = tokio::time::interval(REDIAL_INTERVAL);
    loop {
        tokio::select! {
            event = peer.swarm.select_next_some() => {
                peer.on_event(event);
            }
            _ = redial.tick() => {
                peer.dial_missing();
                let links = peer.swarm.behaviour().mesh_peers(&topic.hash()).count();
                if let Some(slot) = sent.silent_mesh_links.get(index) {
                    slot.store(links as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A forger: publishes a forged message every `gap` once anyone listens.
async fn forge(
    mut peer: BarePeer,
    topic: gossipsub::IdentTopic,
    mut forgery: Forgery,
    gap: Option<Duration>,
    sent: Arc<Sent>,
) {
    let mut redial = tokio::time::interval(REDIAL_INTERVAL);
    // With no rate the forger only connects and subscribes.
    let mut publish = tokio::time::interval(gap.unwrap_or(Duration::from_secs(3600)));
    let mut next = None;
    loop {
        tokio::select! {
            event = peer.swarm.select_next_some() => {
                peer.on_event(event);
            }
            _ = redial.tick() => peer.dial_missing(),
            _ = publish.tick(), if gap.is_some() => {
                if next.is_none() {
                    next = forgery.next().ok();
                }
                if let Some(message) = next.take() {
                    match peer.swarm.behaviour_mut().publish(topic.clone(), message.bytes.clone()) {
                        Ok(_) => sent.count(&message),
                        // Nobody listens yet: keep the message for the next tick.
                        Err(_) => next = Some(message),
                    }
                }
            }
        }
    }
}

/// One forged message and the record id it carries, if any.
struct Forged {
    bytes: Vec<u8>,
    record: Option<RecordId>,
}

impl Sent {
    fn count(&self, message: &Forged) {
        match message.record {
            Some(id) => {
                self.forged.fetch_add(1, Ordering::Relaxed);
                self.forged_ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id);
            }
            None => {
                self.invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Makes forged messages in turn: an honest author's record re-signed by Mallory, the same
/// with one signature bit flipped (both inside well-formed Automerge changes), and a change
/// that is not Automerge at all.
struct Forgery {
    room: RoomId,
    honest: Identity,
    mallory: Identity,
    count: u64,
}

impl Forgery {
    fn next(&mut self) -> Result<Forged, String> {
        self.count += 1;
        let kind = self.count % 3;
        if kind == 0 {
            let junk = format!("not an automerge change #{}", self.count);
            return Ok(Forged {
                bytes: Envelope::encode(junk.as_bytes()),
                record: None,
            });
        }
        let mut replica = Room::in_memory(self.room, self.honest.clone());
        let written = replica
            .post(&format!("forged message #{}", self.count))
            .map_err(|e| e.to_string())?;
        let mut record = written.record.bytes().to_vec();
        let content_len = record.len() - 64;
        if kind == 1 {
            let signature = self.mallory.sign(&record[..content_len]);
            record[content_len..].copy_from_slice(&signature);
        } else {
            record[content_len] ^= 1;
        }
        let id = RecordId(Sha256::digest(&record).into());
        let object = record_object(&self.room, written.record.record().epoch, &id);
        let change = with_record(&written.change, record, id, object)?;
        Ok(Forged {
            bytes: Envelope::encode(&change),
            record: Some(id),
        })
    }
}

/// Re-encodes `change` with `record` (keyed by `id`, in `object`, where a record with that id
/// belongs) in place of its own record.
fn with_record(
    change: &[u8],
    record: Vec<u8>,
    id: RecordId,
    object: ObjectId,
) -> Result<Vec<u8>, String> {
    let mut expanded = Change::try_from(change)
        .map_err(|e| e.to_string())?
        .decode();
    let op = expanded
        .operations
        .first_mut()
        .ok_or("a record change has an operation")?;
    op.obj = object;
    op.action = OpType::Put(ScalarValue::Bytes(record));
    op.key = Key::Map(id.to_string().into());
    Ok(Change::from(expanded).raw_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forged_message_is_rejected_by_a_room_and_names_its_forged_record() {
        let room = RoomId::for_public_name(ROOM).unwrap();
        let mut forgery = Forgery {
            room,
            honest: Identity::generate(),
            mallory: Identity::generate(),
            count: 0,
        };
        let mut replica = Room::in_memory(room, Identity::generate());
        for _ in 0..6 {
            let forged = forgery.next().unwrap();
            let change = Envelope::decode(&forged.bytes).unwrap().c;
            let report = replica.apply_remote(&[change]).unwrap();
            assert!(
                report.outcomes[0].is_err(),
                "accepted: {:?}",
                report.outcomes
            );
            if let Some(id) = forged.record {
                assert!(replica.record(&id).is_none());
            }
        }
        assert!(replica.is_empty());
    }

    #[test]
    fn spammers_are_the_last_members_in_the_room() {
        let hostile = Hostile {
            spammers: 0.2,
            forgers: 0.1,
            ..Hostile::default()
        };
        assert_eq!(hostile.spammer_peers(20, 18), 14..18);
        assert_eq!(hostile.forger_count(20), 2);
        assert_eq!(hostile.silent_count(20), 0);
        assert!(
            Hostile {
                silent: 1.5,
                ..hostile
            }
            .check()
            .is_err()
        );
    }
}
