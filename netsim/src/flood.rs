//! Control-message flooders: hostile peers that speak gossipsub by hand, on raw `/meshsub/1.1.0`
//! streams, and send every heartbeat to each member they reach what an honest swarm never
//! would. Each flooder does one thing, so the report can say which defence caught it:
//!
//! - [`FloodKind::Ihave`]: thousands of made-up message ids announced (IHAVE), which the node
//!   may ask for (IWANT) and never gets;
//! - [`FloodKind::Graft`]: a PRUNE asking for an extreme backoff, then GRAFTs during it;
//! - [`FloodKind::Subscribe`]: thousands of subscriptions to made-up topics.
//!
//! Every flooder first subscribes to the room's topic, as a member would. Its RPCs stay within
//! gossipsub's limit on control bytes per RPC, so each one is decoded and handled rather than
//! refused whole. What the node sends back is read for the ids it asks for (IWANT), then thrown
//! away.

mod rpc;
mod streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use grapevine_node::crdt::RoomId;
use grapevine_node::{RawTransport, room_topic};
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::Stream;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use crate::gossip::{BarePeer, GossipError, REDIAL_INTERVAL};
use streams::{Opened, RawStreams};

/// Made-up message ids each IHAVE flooder announces per heartbeat: the figure of the hardening
/// issue.
pub const DEFAULT_IHAVE_IDS: usize = 10_000;
/// New topics each subscription flooder subscribes to per heartbeat.
pub const DEFAULT_SUBSCRIPTIONS: usize = 2_000;
/// Length of each made-up topic name: a long name costs the node more memory per subscription.
pub const DEFAULT_TOPIC_BYTES: usize = 200;
/// GRAFTs each GRAFT flooder sends per heartbeat, after its PRUNE.
pub const DEFAULT_GRAFTS: usize = 10;
/// The backoff each GRAFT flooder's PRUNE asks for, in seconds: the largest the field holds.
pub const DEFAULT_PRUNE_BACKOFF: u64 = u64::MAX;

/// Control and subscription bytes per RPC the flooders stay under: gossipsub 0.50 refuses an RPC
/// whose subscriptions and control message pass 16 KiB (`max_control_message_size`) and closes
/// the stream; 64 bytes are left for the framing of the nested messages.
const CONTROL_BUDGET: usize = 16 * 1024 - 64;
/// Bytes read at a time from the node's stream.
const READ_CHUNK: usize = 64 * 1024;
/// Length of a gossipsub message id in a room: a SHA-256 of the message.
const MESSAGE_ID_BYTES: usize = 32;

/// How the flooders flood, per heartbeat and per member each one reaches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Flood {
    /// Made-up message ids each IHAVE flooder announces.
    #[serde(default = "default_ihave_ids")]
    pub ihave_ids: usize,
    /// New made-up topics each subscription flooder subscribes to.
    #[serde(default = "default_subscriptions")]
    pub subscriptions: usize,
    /// Length of each made-up topic name in bytes.
    #[serde(default = "default_topic_bytes")]
    pub topic_bytes: usize,
    /// GRAFTs each GRAFT flooder sends after its PRUNE.
    #[serde(default = "default_grafts")]
    pub grafts: usize,
    /// The backoff (seconds) each PRUNE asks for. TOML integers stop at 2^63 - 1; the default,
    /// 2^64 - 1, can only be left unset.
    #[serde(default = "default_prune_backoff")]
    pub prune_backoff: u64,
}

fn default_ihave_ids() -> usize {
    DEFAULT_IHAVE_IDS
}
fn default_subscriptions() -> usize {
    DEFAULT_SUBSCRIPTIONS
}
fn default_topic_bytes() -> usize {
    DEFAULT_TOPIC_BYTES
}
fn default_grafts() -> usize {
    DEFAULT_GRAFTS
}
fn default_prune_backoff() -> u64 {
    DEFAULT_PRUNE_BACKOFF
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            ihave_ids: DEFAULT_IHAVE_IDS,
            subscriptions: DEFAULT_SUBSCRIPTIONS,
            topic_bytes: DEFAULT_TOPIC_BYTES,
            grafts: DEFAULT_GRAFTS,
            prune_backoff: DEFAULT_PRUNE_BACKOFF,
        }
    }
}

impl Flood {
    /// Checks the values make sense.
    pub fn check(&self) -> Result<(), String> {
        if self.topic_bytes == 0 || subscription_len(self.topic_bytes) > CONTROL_BUDGET {
            return Err(format!(
                "flood topic-bytes must be at least 1 and let one subscription fit in {CONTROL_BUDGET} bytes"
            ));
        }
        Ok(())
    }
}

/// The bytes one subscription to a topic of `topic_bytes` takes in an RPC: its flag (2 bytes) and
/// its topic, in a field of the RPC.
fn subscription_len(topic_bytes: usize) -> usize {
    rpc::field_len(2 + rpc::field_len(topic_bytes))
}

/// What a flooder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloodKind {
    /// IHAVEs of made-up message ids.
    Ihave,
    /// A PRUNE with an extreme backoff, then GRAFTs during the backoff.
    Graft,
    /// Subscriptions to made-up topics.
    Subscribe,
}

impl FloodKind {
    /// The kind of flooder number `index`: the kinds take turns.
    pub fn of(index: usize) -> Self {
        [Self::Ihave, Self::Graft, Self::Subscribe][index % 3]
    }
}

/// What the flooders sent and got, counted as they go.
#[derive(Debug, Default)]
pub(crate) struct FloodCounts {
    rpcs: AtomicU64,
    bytes: AtomicU64,
    ihave_ids: AtomicU64,
    prunes: AtomicU64,
    grafts: AtomicU64,
    subscriptions: AtomicU64,
    received_bytes: AtomicU64,
    iwant_ids: AtomicU64,
    most_iwant_ids_per_heartbeat: AtomicU64,
    streams_lost: AtomicU64,
}

/// What the flooders did, and what the members they reached think of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FloodReport {
    /// Flooders.
    pub flooders: usize,
    /// RPCs written, all flooders and members together.
    pub rpcs_sent: u64,
    /// Bytes of those RPCs (before Noise and Yamux).
    pub bytes_sent: u64,
    /// Made-up message ids announced (IHAVE).
    pub ihave_ids_sent: u64,
    /// PRUNEs with an extreme backoff.
    pub prunes_sent: u64,
    /// GRAFTs sent after those PRUNEs.
    pub grafts_sent: u64,
    /// Subscriptions to made-up topics.
    pub subscriptions_sent: u64,
    /// Bytes the members sent the flooders (IWANTs, PRUNEs, their own subscriptions).
    pub bytes_received: u64,
    /// Message ids the members asked the flooders for (IWANT).
    pub iwant_ids_received: u64,
    /// The most ids one member asked of one flooder within one heartbeat's time (counted in the
    /// flooder's heartbeats, which straddle at most two of the member's).
    pub most_iwant_ids_per_heartbeat: u64,
    /// Flooding streams a member closed (a write failed).
    pub streams_lost: u64,
    /// For each kind of flooder, the members' scores of it.
    pub scores: Vec<KindScores>,
}

/// What the members think of the flooders of one kind, at the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindScores {
    /// The kind.
    pub kind: FloodKind,
    /// (flooder, member) pairs, the flooder dialling the member and the member running.
    pub pairs: usize,
    /// Of those, the pairs with a negative score: the member neither grafts the flooder nor
    /// keeps it in a mesh.
    pub negative: usize,
    /// Of those, the pairs below gossipsub's graylist threshold (-80): the member drops every
    /// RPC of the flooder (subscriptions aside) unread.
    pub graylisted: usize,
    /// The best score any member gives a flooder of this kind.
    pub highest: Option<f64>,
}

/// gossipsub's default graylist threshold, which the node keeps.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

impl KindScores {
    /// Tallies the scores `scores` (one per flooder and member it dials) of flooders of `kind`.
    pub fn of(kind: FloodKind, scores: &[f64]) -> Self {
        Self {
            kind,
            pairs: scores.len(),
            negative: scores.iter().filter(|&&s| s < 0.0).count(),
            graylisted: scores.iter().filter(|&&s| s < GRAYLIST_THRESHOLD).count(),
            highest: scores.iter().copied().reduce(f64::max),
        }
    }
}

impl FloodCounts {
    /// The counts so far, with the members' scores of each kind.
    pub(crate) fn report(&self, flooders: usize, scores: Vec<KindScores>) -> FloodReport {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FloodReport {
            flooders,
            rpcs_sent: get(&self.rpcs),
            bytes_sent: get(&self.bytes),
            ihave_ids_sent: get(&self.ihave_ids),
            prunes_sent: get(&self.prunes),
            grafts_sent: get(&self.grafts),
            subscriptions_sent: get(&self.subscriptions),
            bytes_received: get(&self.received_bytes),
            iwant_ids_received: get(&self.iwant_ids),
            most_iwant_ids_per_heartbeat: get(&self.most_iwant_ids_per_heartbeat),
            streams_lost: get(&self.streams_lost),
            scores,
        }
    }
}

/// One flooder, before it runs.
pub(crate) struct Flooder {
    /// Its number among the flooders, which names its made-up topics.
    pub(crate) index: usize,
    /// Its key.
    pub(crate) key: Keypair,
    /// What it sends.
    pub(crate) kind: FloodKind,
    /// The members it dials.
    pub(crate) targets: Vec<Multiaddr>,
    /// Seeds its made-up ids.
    pub(crate) seed: u64,
}

/// What every flooder of a simulation shares.
#[derive(Clone)]
pub(crate) struct FloodPlan {
    /// How much to send.
    pub(crate) flood: Flood,
    /// The room's topic.
    pub(crate) topic: String,
    /// How often to send it: the nodes' heartbeat, the period of gossipsub's per-heartbeat
    /// limits.
    pub(crate) heartbeat: Duration,
    /// Where the counts go.
    pub(crate) counts: Arc<FloodCounts>,
}

impl Flooder {
    /// Starts the flooder on `raw` (a network peer's simulated links, or loopback TCP): it dials
    /// its targets (and again after a cut), floods on every stream it opens and drains every
    /// stream a member opens.
    pub(crate) fn spawn(
        self,
        raw: RawTransport,
        plan: FloodPlan,
    ) -> Result<JoinHandle<()>, GossipError> {
        let peer = BarePeer::with_behaviour(
            raw,
            self.key.clone(),
            RawStreams::default(),
            self.targets.clone(),
        )?;
        Ok(tokio::spawn(self.run(peer, plan)))
    }

    async fn run(self, mut peer: BarePeer<RawStreams>, plan: FloodPlan) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        // Dropped with this task, which aborts every stream's task.
        let mut streams = JoinSet::new();
        let mut rng = StdRng::seed_from_u64(self.seed);
        loop {
            tokio::select! {
                event = peer.swarm.select_next_some() => {
                    let Some(Opened { stream, outbound }) = peer.on_event(event) else {
                        continue;
                    };
                    let counts = plan.counts.clone();
                    if outbound {
                        let frames = Frames {
                            kind: self.kind,
                            plan: plan.clone(),
                            flooder: self.index,
                            next_topic: 0,
                            rng: StdRng::seed_from_u64(rng.random()),
                        };
                        streams.spawn(frames.write(stream));
                    } else {
                        streams.spawn(drain(stream, counts, plan.heartbeat));
                    }
                }
                _ = redial.tick() => peer.dial_missing(),
                // Reaps finished stream tasks, so the set does not grow over a long run.
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
            }
        }
    }
}

/// Flooders started outside a simulation, on a transport the caller builds. netsim's
/// `flood_memory` bench runs the member they flood in a process of its own and floods it over
/// loopback TCP, so the member's resident memory is read apart from the flooders' buffers and
/// the bytes on the wire, which one netsim process counts together. Dropping them stops them.
pub struct Flooders {
    peers: Vec<(PeerId, FloodKind)>,
    counts: Arc<FloodCounts>,
    tasks: Vec<JoinHandle<()>>,
}

impl Flooders {
    /// Starts one flooder of each kind in `kinds`, each dialling every
    /// address in `targets` over a transport `raw` builds (one per flooder) and flooding
    /// `room`'s topic with `flood` every `heartbeat`; `seed` gives their keys and made-up ids.
    pub fn spawn(
        kinds: &[FloodKind],
        flood: Flood,
        room: &str,
        heartbeat: Duration,
        targets: &[Multiaddr],
        seed: u64,
        raw: impl Fn() -> RawTransport,
    ) -> Result<Self, GossipError> {
        let setup = |e: &dyn std::fmt::Display| GossipError::Setup(e.to_string());
        let room_id = RoomId::for_public_name(room).map_err(|e| setup(&e))?;
        let counts = Arc::new(FloodCounts::default());
        let plan = FloodPlan {
            flood,
            topic: room_topic(room_id).hash().into_string(),
            heartbeat,
            counts: counts.clone(),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut flooders = Self {
            peers: Vec::with_capacity(kinds.len()),
            counts,
            tasks: Vec::with_capacity(kinds.len()),
        };
        for (index, &kind) in kinds.iter().enumerate() {
            let key =
                Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>()).map_err(|e| setup(&e))?;
            flooders.peers.push((key.public().to_peer_id(), kind));
            let flooder = Flooder {
                index,
                key,
                kind,
                targets: targets.to_vec(),
                seed: rng.random(),
            };
            flooders.tasks.push(flooder.spawn(raw(), plan.clone())?);
        }
        Ok(flooders)
    }

    /// Each flooder's peer id and kind.
    pub fn peers(&self) -> &[(PeerId, FloodKind)] {
        &self.peers
    }

    /// What the flooders sent so far, with `scores`, the members' scores of them read by the
    /// caller.
    pub fn report(&self, scores: Vec<KindScores>) -> FloodReport {
        self.counts.report(self.peers.len(), scores)
    }
}

impl Drop for Flooders {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads a member's stream to the end, counting what it says and the ids it asks for in each
/// `heartbeat`, and throwing it away.
async fn drain(mut stream: Stream, counts: Arc<FloodCounts>, heartbeat: Duration) {
    let mut buffer = vec![0; READ_CHUNK];
    let mut unread = Vec::new();
    let mut window_start = Instant::now();
    let mut window_ids = 0u64;
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            return;
        }
        counts
            .received_bytes
            .fetch_add(read as u64, Ordering::Relaxed);
        unread.extend_from_slice(&buffer[..read]);
        if window_start.elapsed() >= heartbeat {
            window_start = Instant::now();
            window_ids = 0;
        }
        for frame in rpc::take_frames(&mut unread) {
            let ids = rpc::iwant_ids(&frame) as u64;
            counts.iwant_ids.fetch_add(ids, Ordering::Relaxed);
            window_ids += ids;
        }
        counts
            .most_iwant_ids_per_heartbeat
            .fetch_max(window_ids, Ordering::Relaxed);
    }
}

/// The RPCs one flooder writes to one member, heartbeat after heartbeat.
struct Frames {
    kind: FloodKind,
    plan: FloodPlan,
    flooder: usize,
    next_topic: u64,
    rng: StdRng,
}

impl Frames {
    /// Subscribes to the room, then writes a heartbeat's flood every heartbeat until the member
    /// closes the stream.
    async fn write(mut self, mut stream: Stream) {
        let counts = self.plan.counts.clone();
        let room = rpc::subscribe(std::slice::from_ref(&self.plan.topic));
        if self.send(&mut stream, &[room]).await.is_err() {
            counts.streams_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut heartbeat = tokio::time::interval(self.plan.heartbeat);
        // A member that reads slowly gets fewer floods, not a backlog of them.
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            heartbeat.tick().await;
            let rpcs = self.next_heartbeat();
            if self.send(&mut stream, &rpcs).await.is_err() {
                counts.streams_lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Writes `rpcs`, each framed, and counts them.
    async fn send(&self, stream: &mut Stream, rpcs: &[Vec<u8>]) -> std::io::Result<()> {
        for rpc in rpcs {
            let frame = rpc::frame(rpc);
            stream.write_all(&frame).await?;
            let counts = &self.plan.counts;
            counts.rpcs.fetch_add(1, Ordering::Relaxed);
            counts
                .bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        stream.flush().await
    }

    /// One heartbeat's RPCs, counted as sent.
    fn next_heartbeat(&mut self) -> Vec<Vec<u8>> {
        match self.kind {
            FloodKind::Ihave => self.ihaves(),
            FloodKind::Graft => self.grafts(),
            FloodKind::Subscribe => self.subscriptions(),
        }
    }

    /// IHAVEs of made-up ids, as many per RPC as gossipsub decodes.
    fn ihaves(&mut self) -> Vec<Vec<u8>> {
        let (flood, topic) = (self.plan.flood, &self.plan.topic);
        let per_rpc =
            (CONTROL_BUDGET - rpc::field_len(topic.len())) / rpc::field_len(MESSAGE_ID_BYTES);
        let mut rpcs = Vec::new();
        let mut left = flood.ihave_ids;
        while left > 0 {
            let count = left.min(per_rpc);
            let ids: Vec<[u8; MESSAGE_ID_BYTES]> = (0..count).map(|_| self.rng.random()).collect();
            rpcs.push(rpc::ihave(topic, &ids));
            left -= count;
        }
        self.plan
            .counts
            .ihave_ids
            .fetch_add(flood.ihave_ids as u64, Ordering::Relaxed);
        rpcs
    }

    /// A PRUNE asking for the extreme backoff, then GRAFTs during it.
    fn grafts(&self) -> Vec<Vec<u8>> {
        let (flood, topic, counts) = (self.plan.flood, &self.plan.topic, &self.plan.counts);
        let mut rpcs = vec![rpc::prune(topic, flood.prune_backoff)];
        rpcs.extend((0..flood.grafts).map(|_| rpc::graft(topic)));
        counts.prunes.fetch_add(1, Ordering::Relaxed);
        counts
            .grafts
            .fetch_add(flood.grafts as u64, Ordering::Relaxed);
        rpcs
    }

    /// Subscriptions to new made-up topics, as many per RPC as gossipsub decodes.
    fn subscriptions(&mut self) -> Vec<Vec<u8>> {
        let flood = self.plan.flood;
        let topics: Vec<String> = (0..flood.subscriptions)
            .map(|_| self.made_up_topic(flood.topic_bytes))
            .collect();
        self.plan
            .counts
            .subscriptions
            .fetch_add(topics.len() as u64, Ordering::Relaxed);
        let per_rpc = (CONTROL_BUDGET / subscription_len(flood.topic_bytes)).max(1);
        topics.chunks(per_rpc).map(rpc::subscribe).collect()
    }

    /// A topic nobody uses, `bytes` long, never the same twice on one stream (unless `bytes` is
    /// too short to hold the count).
    fn made_up_topic(&mut self, bytes: usize) -> String {
        self.next_topic += 1;
        let mut topic = format!("flood/{}/{}/", self.flooder, self.next_topic);
        topic.truncate(bytes);
        while topic.len() < bytes {
            topic.push('x');
        }
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gossipsub 0.50's `max_control_message_size`: an RPC with more control and subscription
    /// bytes is refused whole.
    const GOSSIPSUB_CONTROL_LIMIT: usize = 16 * 1024;

    #[test]
    fn a_heartbeats_flood_is_all_sent_in_rpcs_gossipsub_decodes() {
        let counts = Arc::new(FloodCounts::default());
        let plan = FloodPlan {
            flood: Flood::default(),
            topic: format!("grapevine/room/{}", "ab".repeat(32)),
            heartbeat: Duration::from_secs(1),
            counts: counts.clone(),
        };
        let mut per_kind = Vec::new();
        for kind in [FloodKind::Ihave, FloodKind::Graft, FloodKind::Subscribe] {
            let mut frames = Frames {
                kind,
                plan: plan.clone(),
                flooder: 0,
                next_topic: 0,
                rng: StdRng::seed_from_u64(1),
            };
            let rpcs = frames.next_heartbeat();
            assert!(
                rpcs.iter().all(|rpc| rpc.len() <= GOSSIPSUB_CONTROL_LIMIT),
                "{kind:?}: an RPC passes the limit"
            );
            per_kind.push(rpcs.len());
        }
        let report = counts.report(3, Vec::new());
        assert_eq!(report.ihave_ids_sent, 10_000);
        assert_eq!((report.prunes_sent, report.grafts_sent), (1, 10));
        assert_eq!(report.subscriptions_sent, 2_000);
        // 477 ids or 78 topics of 200 bytes fit in an RPC.
        assert_eq!(per_kind, [21, 11, 26]);
    }

    #[test]
    fn made_up_topics_have_the_asked_length_and_never_repeat() {
        let mut frames = Frames {
            kind: FloodKind::Subscribe,
            plan: FloodPlan {
                flood: Flood::default(),
                topic: "t".into(),
                heartbeat: Duration::from_secs(1),
                counts: Arc::default(),
            },
            flooder: 7,
            next_topic: 0,
            rng: StdRng::seed_from_u64(1),
        };
        let topics: std::collections::HashSet<String> =
            (0..1000).map(|_| frames.made_up_topic(40)).collect();
        assert_eq!(topics.len(), 1000);
        assert!(topics.iter().all(|t| t.len() == 40 && t.is_ascii()));
        assert!(
            Flood {
                topic_bytes: 20_000,
                ..Flood::default()
            }
            .check()
            .is_err()
        );
    }
}
