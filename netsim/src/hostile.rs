//! Hostile peers: spammers (real nodes posting valid records fast), forgers (bare gossipsub
//! peers publishing records signed by the wrong key and invalid Automerge changes on the room
//! topic), silent peers (bare gossipsub peers that join the mesh and forward nothing),
//! invalid-signature spammers (bare gossipsub peers flooding records with bad signatures, see
//! [`crate::sig_spam`]), sybils (silent peers that all surround one member) and flooders
//! (control-message floods, see [`crate::flood`]).
//!
//! Spammers are room members picked by [`Hostile::spammer_peers`]; their posts are scheduled as
//! [`crate::Step::Spam`] and never measured. Forgers, silent peers, invalid-signature spammers and
//! flooders come on top of the members and dial [`Hostile::links`] random members each; sybils
//! dial [`Hostile::target`] only. The report counts what they sent, whether any forged record was
//! stored by a node, which must never happen, what the invalid-signature spam cost the spammers'
//! neighbours, what the members think of the flooders, and what reached the sybils' target.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Change, ExpandedChange, ScalarValue};
use grapevine_node::behaviour::Envelope;
use grapevine_node::crdt::{Identity, RecordId, Room, RoomId, SignedRecord, record_object};
use grapevine_node::room_topic;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, gossipsub};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::flood::{Flood, FloodCounts, FloodKind, FloodPlan, FloodReport, Flooder};
use crate::gossip::{BarePeer, GossipError, GossipSettings, REDIAL_INTERVAL};
use crate::metrics::Percentiles;
use crate::network::SimNetwork;
use crate::sig_spam::{self, BadSignatures, DEFAULT_SIG_SPAM_RATE, SigSpammerReport, SpamSent};
use crate::sim::ROOM;

/// Records per second of each spammer: five times what one of `steady`'s publishers posts.
pub const DEFAULT_SPAM_RATE: f64 = 10.0;
/// Messages per second of each forger: enough to test rejection at every member it reaches,
/// few enough that the graylist (four rejects) is what stops it, not the rate.
pub const DEFAULT_FORGE_RATE: f64 = 2.0;
/// Bytes per second a slow reader takes in over all its connections: about a fiftieth of what a
/// member of `steady`'s room is sent (10 records/s, each copy about 860 bytes of gossip, six to
/// seven copies of each, as netsim's `steady` measured).
pub const DEFAULT_SLOW_READ_RATE: u64 = 1_024;
/// The fastest an invalid-signature spammer may publish: one message per tokio timer tick (1 ms).
pub const MAX_SIG_SPAM_RATE: f64 = 1_000.0;
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
    /// Invalid-signature spammers, as a share of the members, added on top of them.
    #[serde(default)]
    pub sig_spammers: f64,
    /// Share (0 to 1) of the members that read slowly, at `slow-read-rate` over all their
    /// connections, from the end of the warm-up.
    /// They are not counted as honest receivers or publishers.
    #[serde(default)]
    pub slow_readers: f64,
    /// Records per second of each spammer.
    #[serde(default = "default_spam_rate")]
    pub spam_rate: f64,
    /// Messages per second of each forger.
    #[serde(default = "default_forge_rate")]
    pub forge_rate: f64,
    /// Records per second of each invalid-signature spammer.
    #[serde(default = "default_sig_spam_rate")]
    pub sig_spam_rate: f64,
    /// Bytes per second each slow reader reads, over all its connections together.
    #[serde(default = "default_slow_read_rate")]
    pub slow_read_rate: u64,
    /// Members each forger, silent peer, invalid-signature spammer or flooder dials.
    #[serde(default = "default_links")]
    pub links: usize,
    /// Flooders, as a share of the members, added on top of them: bare peers sending
    /// control-message floods (see [`crate::flood`]); the kinds of flood take turns.
    #[serde(default)]
    pub flooders: f64,
    /// What the flooders send.
    #[serde(default)]
    pub flood: Flood,
    /// Sybils around one member (an eclipse attempt): silent peers that all dial `target` and
    /// no one else. A count, not a share: ten times the target's honest neighbours is the
    /// attack of the hardening issue.
    #[serde(default)]
    pub sybils: usize,
    /// The member the sybils surround. It publishes nothing, so the report can say what it
    /// received.
    #[serde(default)]
    pub target: usize,
}

fn default_spam_rate() -> f64 {
    DEFAULT_SPAM_RATE
}
fn default_forge_rate() -> f64 {
    DEFAULT_FORGE_RATE
}
fn default_sig_spam_rate() -> f64 {
    DEFAULT_SIG_SPAM_RATE
}
fn default_slow_read_rate() -> u64 {
    DEFAULT_SLOW_READ_RATE
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
            sig_spammers: 0.0,
            slow_readers: 0.0,
            spam_rate: DEFAULT_SPAM_RATE,
            forge_rate: DEFAULT_FORGE_RATE,
            sig_spam_rate: DEFAULT_SIG_SPAM_RATE,
            slow_read_rate: DEFAULT_SLOW_READ_RATE,
            links: DEFAULT_LINKS,
            flooders: 0.0,
            flood: Flood::default(),
            sybils: 0,
            target: 0,
        }
    }
}

fn share(members: usize, share: f64) -> usize {
    (members as f64 * share).round() as usize
}

impl Hostile {
    /// Whether there is any hostile peer at all.
    pub fn is_none(&self) -> bool {
        self.spammers == 0.0
            && self.forgers == 0.0
            && self.silent == 0.0
            && self.sig_spammers == 0.0
            && self.slow_readers == 0.0
            && self.flooders == 0.0
            && self.sybils == 0
    }

    /// The member the sybils surround, when there are sybils.
    pub fn eclipse_target(&self) -> Option<usize> {
        (self.sybils > 0).then_some(self.target)
    }

    /// The spammers among `members` room members of which the first `in_room` are in the room
    /// from the start: the last ones of those, so honest publishers are picked from the rest.
    pub fn spammer_peers(&self, members: usize, in_room: usize) -> Range<usize> {
        let count = share(members, self.spammers).min(in_room);
        in_room - count..in_room
    }

    /// The slow readers among `members` room members of which the first `in_room` are in the
    /// room from the start: the ones just before the spammers.
    pub fn slow_reader_peers(&self, members: usize, in_room: usize) -> Range<usize> {
        let spammers = self.spammer_peers(members, in_room);
        let count = share(members, self.slow_readers).min(spammers.start);
        spammers.start - count..spammers.start
    }

    /// The members whose deliveries and posts are not measured: slow readers and spammers.
    pub fn unmeasured_peers(&self, members: usize, in_room: usize) -> Range<usize> {
        self.slow_reader_peers(members, in_room).start..in_room
    }

    /// How many forgers a simulation of `members` room members has.
    pub fn forger_count(&self, members: usize) -> usize {
        share(members, self.forgers)
    }

    /// How many silent peers a simulation of `members` room members has.
    pub fn silent_count(&self, members: usize) -> usize {
        share(members, self.silent)
    }

    /// How many invalid-signature spammers a simulation of `members` room members has.
    pub fn sig_spammer_count(&self, members: usize) -> usize {
        share(members, self.sig_spammers)
    }

    /// How many flooders a simulation of `members` room members has.
    pub fn flooder_count(&self, members: usize) -> usize {
        share(members, self.flooders)
    }

    /// Checks the values make sense.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("spammers", self.spammers),
            ("forgers", self.forgers),
            ("silent", self.silent),
            ("sig-spammers", self.sig_spammers),
            ("slow-readers", self.slow_readers),
            ("flooders", self.flooders),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("hostile {name} must be a share between 0 and 1"));
            }
        }
        if self.spam_rate < 0.0 || self.forge_rate < 0.0 || self.sig_spam_rate < 0.0 {
            return Err("hostile rates must not be negative".into());
        }
        if self.sig_spammers > 0.0 && !(0.1..=MAX_SIG_SPAM_RATE).contains(&self.sig_spam_rate) {
            return Err(format!(
                "hostile sig-spam-rate must be between 0.1 and {MAX_SIG_SPAM_RATE} records/s"
            ));
        }
        if self.links == 0
            && (self.forgers > 0.0
                || self.silent > 0.0
                || self.sig_spammers > 0.0
                || self.flooders > 0.0)
        {
            return Err("hostile links must be at least 1".into());
        }
        self.flood.check()
    }
}

/// What the hostile peers did, and what it achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostileReport {
    /// Spammers (room members).
    pub spammers: usize,
    /// Slow readers (room members).
    pub slow_readers: usize,
    /// Gossip messages the measured members dropped instead of sending them to the slow readers,
    /// all together (each member's count of what gossipsub dropped for each slow reader): more
    /// than zero when they really read too slowly for their senders.
    pub dropped_for_slow_readers: u64,
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
    /// Changes deleting or overwriting an honest record the forgers published.
    pub tamper_sent: u64,
    /// Honest changes the forgers published again.
    pub replays_sent: u64,
    /// Forged records (including the ones overwrites tried to put) found in a node's room view
    /// or among its received records, counted once per node: must be zero.
    pub forged_stored: usize,
    /// Honest messages the forgers attacked (deleted, overwrote or replayed), checked at every
    /// running member.
    pub targets_checked: usize,
    /// Of the members, those whose view lacks one of those messages or holds it twice: must be
    /// zero.
    pub targets_damaged: usize,
    /// Each invalid-signature spammer: what it sent, when its neighbours graylisted it, and the
    /// signature checks it cost them before and after.
    pub sig_spammers: Vec<SigSpammerReport>,
    /// What the flooders sent and what the members think of them, when there are flooders.
    pub flood: Option<FloodReport>,
    /// What the target of the sybils received, when there are sybils.
    pub eclipse: Option<EclipseReport>,
}

/// An eclipse attempt: what the sybils held around their target, and what reached it anyway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EclipseReport {
    /// The member the sybils surround.
    pub target: usize,
    /// Sybils in the run.
    pub sybils: usize,
    /// Sybils connected to the target at the report.
    pub sybils_connected: usize,
    /// Honest members connected to the target at the report.
    pub honest_connected: usize,
    /// Room-topic mesh links the sybils held at their last check (each reaches only the
    /// target, so this is how many of them sat in its mesh).
    pub sybil_mesh_links: u64,
    /// Records published by the others during the run.
    pub published: usize,
    /// Share of those the target received, by gossip or sync.
    pub delivery_ratio: f64,
    /// The target's latency per delivery.
    pub latency: Percentiles,
}

/// The running hostile peers of a simulation (forgers, silent peers, invalid-signature
/// spammers, sybils, flooders), and what they sent.
#[derive(Debug, Default)]
pub(crate) struct HostilePeers {
    tasks: Vec<JoinHandle<()>>,
    pub(crate) forgers: usize,
    pub(crate) silent: usize,
    pub(crate) sent: Arc<Sent>,
    /// Each invalid-signature spammer's peer id and the members it dials.
    pub(crate) sig_spammers: Vec<(libp2p::PeerId, Vec<usize>)>,
    pub(crate) spam_sent: Arc<SpamSent>,
    /// The sybils' peer ids.
    pub(crate) sybils: Vec<PeerId>,
    /// Each flooder's peer id, kind, and the members it dials.
    pub(crate) flooders: Vec<(PeerId, FloodKind, Vec<usize>)>,
    pub(crate) flood_counts: Arc<FloodCounts>,
}

/// Counters and forged ids shared with the forgers' tasks.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// Each silent peer's mesh links, then each sybil's.
    pub(crate) silent_mesh_links: Vec<AtomicU64>,
    pub(crate) forged: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) forged_ids: Mutex<HashSet<RecordId>>,
    pub(crate) tampered: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) targets: Mutex<HashSet<RecordId>>,
}

impl Sent {
    /// The ids of every forged record published so far.
    pub(crate) fn forged_ids(&self) -> HashSet<RecordId> {
        self.forged_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The honest records the forgers tried to delete, overwrite or replay.
    pub(crate) fn targets(&self) -> HashSet<RecordId> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl HostilePeers {
    /// Starts the hostile peers of `hostile` on [`ROOM`]'s topic as network peers `first..`:
    /// forgers, silent peers, invalid-signature spammers and flooders each dial `links` of
    /// `members` (listening at `addr(member)`) picked with `seed`; sybils dial the target only.
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
        let sybils = hostile.sybils;
        let mut peers = Self {
            tasks: Vec::new(),
            forgers,
            silent,
            sent: Arc::new(Sent {
                silent_mesh_links: (0..silent + sybils).map(|_| AtomicU64::new(0)).collect(),
                ..Sent::default()
            }),
            sig_spammers: Vec::new(),
            spam_sent: Arc::default(),
            sybils: Vec::new(),
            flooders: Vec::new(),
            flood_counts: Arc::default(),
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
            let (mut peer, _) = BarePeer::new(network, first + i, key, settings, targets)?;
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
                    seen: None,
                    tamperings: 0,
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
        let sig_spammers = hostile.sig_spammer_count(members);
        peers.spam_sent = Arc::new(SpamSent::new(sig_spammers));
        for index in 0..sig_spammers {
            let gap = Duration::from_secs_f64(1.0 / hostile.sig_spam_rate);
            let dialled =
                rand::seq::index::sample(&mut rng, members, hostile.links.min(members)).into_vec();
            let key =
                Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>()).map_err(|e| setup(&e))?;
            let settings = GossipSettings {
                heartbeat,
                validate: false,
            };
            let network_index = first + peers.forgers + peers.silent + index;
            let targets = dialled.iter().copied().map(&addr).collect();
            let (mut peer, _) = BarePeer::new(network, network_index, key, settings, targets)?;
            peer.swarm
                .behaviour_mut()
                .subscribe(&topic)
                .map_err(|e| setup(&e))?;
            peers
                .sig_spammers
                .push((*peer.swarm.local_peer_id(), dialled));
            let messages = BadSignatures::new(room_id, Identity::from_secret_bytes(rng.random()))
                .map_err(|e| setup(&e))?;
            let sent = peers.spam_sent.clone();
            peers.tasks.push(tokio::spawn(sig_spam::spam(
                peer,
                topic.clone(),
                messages,
                gap,
                sent,
                index,
            )));
        }
        // Sybils and flooders draw from a stream of their own, so adding them leaves the other
        // hostile peers of a seed as they were.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5b11_f100);
        let mut next = first + peers.forgers + peers.silent + sig_spammers;
        for i in 0..sybils {
            let key =
                Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>()).map_err(|e| setup(&e))?;
            peers.sybils.push(key.public().to_peer_id());
            let settings = GossipSettings {
                heartbeat,
                validate: true,
            };
            let targets = vec![addr(hostile.target)];
            let (mut peer, _) = BarePeer::new(network, next, key, settings, targets)?;
            next += 1;
            peer.swarm
                .behaviour_mut()
                .subscribe(&topic)
                .map_err(|e| setup(&e))?;
            let sent = peers.sent.clone();
            let slot = peers.silent + i;
            peers
                .tasks
                .push(tokio::spawn(stay_silent(peer, topic.clone(), sent, slot)));
        }
        let plan = FloodPlan {
            flood: hostile.flood,
            topic: topic.hash().into_string(),
            heartbeat,
            counts: peers.flood_counts.clone(),
        };
        for index in 0..hostile.flooder_count(members) {
            let key =
                Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>()).map_err(|e| setup(&e))?;
            let kind = FloodKind::of(index);
            let reached = rand::seq::index::sample(&mut rng, members, hostile.links.min(members));
            let targets = reached.iter().map(&addr).collect();
            peers
                .flooders
                .push((key.public().to_peer_id(), kind, reached.into_vec()));
            let flooder = Flooder {
                index,
                key,
                kind,
                targets,
                seed: rng.random(),
            };
            peers
                .tasks
                .push(flooder.spawn(network.raw_transport(next), plan.clone())?);
            next += 1;
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

/// A silent peer (or sybil): subscribed and in meshes, holding every message for a validation
/// result it never gives, so it forwards (and gossips) nothing. It notes its mesh size in slot
/// `index` of the silent peers' mesh links.
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

/// How long a forger waits to see an honest record before forging anything else: tampering
/// with honest records must reach members before the other forgeries get the forger graylisted.
const FORGER_PATIENCE: Duration = Duration::from_secs(5);

/// A forger: publishes a forged message every `gap` once anyone listens, starting once it has
/// seen an honest record (or after [`FORGER_PATIENCE`] in a silent room).
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
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            event = peer.swarm.select_next_some() => {
                if let Some(gossipsub::Event::Message { message, .. }) = peer.on_event(event)
                    && let Ok(envelope) = Envelope::decode(&message.data)
                {
                    forgery.observe(envelope.c);
                }
            }
            _ = redial.tick() => peer.dial_missing(),
            _ = publish.tick(), if gap.is_some() => {
                if forgery.seen.is_none() && started.elapsed() < FORGER_PATIENCE {
                    continue;
                }
                if next.is_none() {
                    next = forgery.next().ok();
                }
                if let Some(message) = next.take() {
                    match peer.swarm.behaviour_mut().publish(topic.clone(), message.bytes.clone()) {
                        Ok(_) => sent.count(&message),
                        // Already seen here (a forgery identical to an earlier one): dropped.
                        Err(gossipsub::PublishError::Duplicate) => {}
                        // Nobody listens yet: keep the message for the next tick.
                        Err(_) => next = Some(message),
                    }
                }
            }
        }
    }
}

/// One forged message and what it is.
struct Forged {
    bytes: Vec<u8>,
    kind: ForgedKind,
}

/// What a forged message tries.
enum ForgedKind {
    /// To get a record with a bad signature stored.
    Record(RecordId),
    /// To get bytes that are no Automerge change applied.
    Invalid,
    /// To delete or overwrite the honest record `target`; an overwrite puts Mallory's `record`.
    Tamper {
        target: RecordId,
        record: Option<RecordId>,
    },
    /// To get the honest record `target` applied twice.
    Replay { target: RecordId },
}

impl Sent {
    fn count(&self, message: &Forged) {
        let insert = |set: &Mutex<HashSet<RecordId>>, id: RecordId| {
            set.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        };
        match message.kind {
            ForgedKind::Record(id) => {
                self.forged.fetch_add(1, Ordering::Relaxed);
                insert(&self.forged_ids, id);
            }
            ForgedKind::Invalid => {
                self.invalid.fetch_add(1, Ordering::Relaxed);
            }
            ForgedKind::Tamper { target, record } => {
                self.tampered.fetch_add(1, Ordering::Relaxed);
                insert(&self.targets, target);
                if let Some(id) = record {
                    insert(&self.forged_ids, id);
                }
            }
            ForgedKind::Replay { target } => {
                self.replayed.fetch_add(1, Ordering::Relaxed);
                insert(&self.targets, target);
            }
        }
    }
}

/// Makes forged messages in turn: an honest author's record re-signed by Mallory (signing as
/// someone else), the same with one signature bit flipped (both inside well-formed Automerge
/// changes), a change that is not Automerge at all, and, once the forger has seen an honest
/// record go by, a change deleting it, a change overwriting it with a record Mallory signed, and
/// the honest change itself published again (a replay).
struct Forgery {
    room: RoomId,
    honest: Identity,
    mallory: Identity,
    count: u64,
    /// The honest change being tampered with, and the record it carries.
    seen: Option<(Vec<u8>, RecordId)>,
    /// How many of the three tamperings (delete, overwrite, replay) `seen` has had.
    tamperings: u8,
}

impl Forgery {
    /// Notes an honest change seen on the topic: the next target of tampering once the current
    /// one has had all three.
    fn observe(&mut self, change: Vec<u8>) {
        if self.seen.is_some() && self.tamperings < 3 {
            return;
        }
        let Ok(parsed) = Change::try_from(&change[..]) else {
            return;
        };
        let record = parsed
            .decode()
            .operations
            .into_iter()
            .find_map(|op| match op.action {
                OpType::Put(ScalarValue::Bytes(record)) => Some(record),
                _ => None,
            });
        if let Some(record) = record {
            let id = RecordId(Sha256::digest(&record).into());
            self.seen = Some((change, id));
            self.tamperings = 0;
        }
    }

    /// Tampering with a newly seen honest record comes first (before the forger is graylisted
    /// and nobody listens to it any more); the other kinds fill the gaps in turn.
    fn next(&mut self) -> Result<Forged, String> {
        self.count += 1;
        if let Some((change, target)) = self.seen.clone()
            && self.tamperings < 3
        {
            self.tamperings += 1;
            return match self.tamperings {
                1 => self.deletion(&change, target),
                2 => self.overwrite(&change, target),
                _ => Ok(Forged {
                    bytes: replay_envelope(&change, self.count)?,
                    kind: ForgedKind::Replay { target },
                }),
            };
        }
        match self.count % 3 {
            0 => {
                let junk = format!("not an automerge change #{}", self.count);
                Ok(Forged {
                    bytes: Envelope::encode(junk.as_bytes()),
                    kind: ForgedKind::Invalid,
                })
            }
            kind => self.resigned(kind == 1),
        }
    }

    /// An honest author's record signed by Mallory (`by_mallory`), or with one signature bit
    /// flipped.
    fn resigned(&mut self, by_mallory: bool) -> Result<Forged, String> {
        let mut replica = Room::in_memory(self.room, self.honest.clone());
        let written = replica
            .post(&format!("forged message #{}", self.count))
            .map_err(|e| e.to_string())?;
        let mut record = written.record.bytes().to_vec();
        let content_len = record.len() - 64;
        if by_mallory {
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
            kind: ForgedKind::Record(id),
        })
    }

    /// Mallory's own well-formed change, turned into a delete of the record `honest_change`
    /// inserted.
    fn deletion(&mut self, honest_change: &[u8], target: RecordId) -> Result<Forged, String> {
        let change = self.tamper(honest_change, |op| op.action = OpType::Delete)?;
        Ok(Forged {
            bytes: Envelope::encode(&change),
            kind: ForgedKind::Tamper {
                target,
                record: None,
            },
        })
    }

    /// Mallory's own validly signed record put at the key of the record `honest_change`
    /// inserted, overwriting it.
    fn overwrite(&mut self, honest_change: &[u8], target: RecordId) -> Result<Forged, String> {
        let mut mallorys = None;
        let change = self.tamper(honest_change, |op| {
            if let OpType::Put(ScalarValue::Bytes(record)) = &op.action {
                mallorys = Some(RecordId(Sha256::digest(record).into()));
            }
        })?;
        Ok(Forged {
            bytes: Envelope::encode(&change),
            kind: ForgedKind::Tamper {
                target,
                record: mallorys,
            },
        })
    }

    /// A change of Mallory's own (one record she signed) whose operation is moved onto the key
    /// and object of the record `honest_change` inserted, naming that insertion as its
    /// predecessor (what a real delete or overwrite does), then changed by `edit`.
    fn tamper(
        &mut self,
        honest_change: &[u8],
        edit: impl FnOnce(&mut automerge::legacy::Op),
    ) -> Result<Vec<u8>, String> {
        let honest = Change::try_from(honest_change).map_err(|e| e.to_string())?;
        let target_op = OpId::new(honest.start_op().get(), honest.actor_id());
        let honest_op = honest
            .decode()
            .operations
            .into_iter()
            .next()
            .ok_or("an honest change has an operation")?;
        let mut replica = Room::in_memory(self.room, self.mallory.clone());
        let written = replica
            .post(&format!("tampering #{}", self.count))
            .map_err(|e| e.to_string())?;
        edit_record_op(&written.change, |op| {
            op.obj = honest_op.obj;
            op.key = honest_op.key;
            op.pred = vec![target_op].into();
            edit(op);
        })
    }
}

/// An envelope carrying `change` with an extra field `r` = `nonce`: readers ignore unknown
/// fields, so members get the honest change again, under a new gossip message id (the same bytes
/// would be a gossip duplicate, dropped before the room sees it).
fn replay_envelope(change: &[u8], nonce: u64) -> Result<Vec<u8>, String> {
    let envelope = ciborium::Value::Map(vec![
        ("c".into(), ciborium::Value::Bytes(change.to_vec())),
        ("r".into(), nonce.into()),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&envelope, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Re-encodes `change` with `record` (keyed by `id`, in `object`, where a record with that id
/// belongs) in place of its own record, under the actor a record of those bytes has when they
/// decode as one: as a forger who knows the layout builds it, so that it fails only on what is
/// forged (a change under any other actor fails on its actor, before its signature is checked).
pub(crate) fn with_record(
    change: &[u8],
    record: Vec<u8>,
    id: RecordId,
    object: ObjectId,
) -> Result<Vec<u8>, String> {
    let actor = SignedRecord::decode_trusted(&record).map(|signed| signed.actor_id());
    edit_change(change, |expanded| {
        if let Ok(actor) = actor {
            expanded.actor_id = ActorId::from(&actor[..]);
        }
        let op = expanded
            .operations
            .first_mut()
            .ok_or("a record change has an operation")?;
        op.obj = object;
        op.action = OpType::Put(ScalarValue::Bytes(record));
        op.key = Key::Map(id.to_string().into());
        Ok(())
    })
}

/// Re-encodes the record change `change` after `edit` changed its (only) operation.
fn edit_record_op(
    change: &[u8],
    edit: impl FnOnce(&mut automerge::legacy::Op),
) -> Result<Vec<u8>, String> {
    edit_change(change, |expanded| {
        let op = expanded
            .operations
            .first_mut()
            .ok_or("a record change has an operation")?;
        edit(op);
        Ok(())
    })
}

/// Re-encodes `change` after `edit` changed its decoded form.
fn edit_change(
    change: &[u8],
    edit: impl FnOnce(&mut ExpandedChange) -> Result<(), &'static str>,
) -> Result<Vec<u8>, String> {
    let mut expanded = Change::try_from(change)
        .map_err(|e| e.to_string())?
        .decode();
    edit(&mut expanded)?;
    Ok(Change::from(expanded).raw_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forgery_is_rejected_by_a_room_and_leaves_the_honest_record_it_attacks_intact() {
        let room = RoomId::for_public_name(ROOM).unwrap();
        let mut forgery = Forgery {
            room,
            honest: Identity::generate(),
            mallory: Identity::generate(),
            count: 0,
            seen: None,
            tamperings: 0,
        };
        let mut author = Room::in_memory(room, Identity::generate());
        let honest = author.post("an honest message").unwrap();
        let honest_id = honest.record.id();
        let mut replica = Room::in_memory(room, Identity::generate());
        let applied = replica
            .apply_remote(std::slice::from_ref(&honest.change))
            .unwrap();
        assert!(applied.outcomes[0].is_ok());
        let heads = replica.heads();
        forgery.observe(honest.change.clone());
        let mut kinds = Vec::new();
        for _ in 0..6 {
            let forged = forgery.next().unwrap();
            let change = Envelope::decode(&forged.bytes).unwrap().c;
            let report = replica.apply_remote(&[change]).unwrap();
            match forged.kind {
                ForgedKind::Replay { target } => {
                    assert_eq!(target, honest_id);
                    kinds.push("replay");
                }
                ForgedKind::Record(id) => {
                    assert!(
                        report.outcomes[0].is_err(),
                        "accepted: {:?}",
                        report.outcomes
                    );
                    assert!(replica.record(&id).is_none());
                    kinds.push("record");
                }
                ForgedKind::Tamper { target, record } => {
                    assert_eq!(target, honest_id);
                    assert!(
                        report.outcomes[0].is_err(),
                        "accepted: {:?}",
                        report.outcomes
                    );
                    if let Some(id) = record {
                        assert!(replica.record(&id).is_none());
                    }
                    kinds.push("tamper");
                }
                ForgedKind::Invalid => {
                    assert!(
                        report.outcomes[0].is_err(),
                        "accepted: {:?}",
                        report.outcomes
                    );
                    kinds.push("invalid");
                }
            }
            assert!(replica.record(&honest_id).is_some());
            assert_eq!(replica.heads(), heads, "a forgery changed the document");
        }
        assert_eq!(
            kinds,
            ["tamper", "tamper", "replay", "record", "record", "invalid"]
        );
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
