//! A simulation: real Grapevine nodes on a [`SimNetwork`], arranged in a topology, driven by
//! code (publish, partition, repair, crash, restart) and measured as they go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grapevine_node::crdt::RecordId;
use grapevine_node::{Config, GossipCounts, Node, NodeError, NodeEvent, NodeHandle};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::flood::{FloodKind, FloodReport, KindScores};
use crate::gossip::GossipError;
use crate::hostile::{EclipseReport, Hostile, HostilePeers, HostileReport};
use crate::metrics::{ConnectionsPerNode, CountsAt, DeliveryLog, Report};
use crate::network::{LinkFaults, SimNetwork};
use crate::sig_spam::{GraylistWatch, WatchTargets};

/// How often [`Sim::peers_kept`] samples every member's peers.
const KEPT_SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The room every simulated peer joins.
pub const ROOM: &str = "netsim";
/// Ports from here on are the fixed listen ports of peers (`/memory/<port>`), so every address
/// is known before any node starts; lower ports are handed out to connections.
const FIRST_PEER_PORT: u64 = 1 << 40;

/// The listen address of network peer `i`.
pub(crate) fn peer_addr(i: usize) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(FIRST_PEER_PORT + i as u64))
}
/// Collectors count as caught up when no event arrived for this long…
const SETTLE_STEP: Duration = Duration::from_millis(50);
/// …or after this many steps at most.
const SETTLE_ROUNDS: usize = 40;
/// Where peers' stores go by default: memory-backed on Linux.
const MEMORY_BACKED_DIR: &str = "/dev/shm";
/// How often [`Sim::wait_converged`] compares heads.
const CONVERGENCE_POLL: Duration = Duration::from_millis(100);

/// How peers find each other at the start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Topology {
    /// Every peer knows only these bootstrap nodes (not room members) and finds the others
    /// through Kademlia, as users do.
    Bootstrap {
        /// How many bootstrap nodes.
        nodes: usize,
    },
    /// Each peer dials `degree` random others at start.
    RandomRegular {
        /// Links each peer opens.
        degree: usize,
    },
    /// `clusters` groups, random links of `degree` inside each, and only `bridges` links
    /// between neighbouring groups.
    Clusters {
        /// Number of groups.
        clusters: usize,
        /// Links each peer opens inside its group.
        degree: usize,
        /// Links between each pair of neighbouring groups.
        bridges: usize,
    },
}

impl Topology {
    /// Nodes the topology adds on top of the room members (bootstrap nodes).
    pub fn infrastructure_nodes(&self) -> usize {
        match self {
            Topology::Bootstrap { nodes } => *nodes,
            _ => 0,
        }
    }
}

/// Why a simulation step failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node failed.
    #[error("peer {peer}: {source}")]
    Node {
        /// The peer's index.
        peer: usize,
        /// What failed.
        source: NodeError,
    },
    /// The peer is crashed (or the index is out of range).
    #[error("peer {0} is not running")]
    NotRunning(usize),
    /// The files of the simulation could not be created.
    #[error("simulation directory: {0}")]
    Dir(#[from] std::io::Error),
    /// The peers did not converge in time.
    #[error("not converged after {0:?}")]
    NotConverged(Duration),
    /// A bare gossipsub peer (hostile or baseline) could not start.
    #[error(transparent)]
    Gossip(#[from] GossipError),
}

impl Topology {
    /// Who dials whom among `peers` members: each member's list of members to dial, drawn with
    /// `seed` (empty lists for [`Topology::Bootstrap`], where Kademlia finds the members).
    pub fn links(&self, peers: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut neighbours = vec![Vec::new(); peers];
        match *self {
            Topology::Bootstrap { .. } => {}
            Topology::RandomRegular { degree } => {
                link_randomly(
                    &mut neighbours,
                    &(0..peers).collect::<Vec<_>>(),
                    degree,
                    &mut rng,
                );
            }
            Topology::Clusters {
                clusters,
                degree,
                bridges,
            } => {
                let clusters = clusters.max(1);
                let groups: Vec<Vec<usize>> = (0..clusters)
                    .map(|c| (0..peers).filter(|p| p % clusters == c).collect())
                    .collect();
                for group in &groups {
                    link_randomly(&mut neighbours, group, degree, &mut rng);
                }
                for (c, group) in groups.iter().enumerate() {
                    let next = &groups[(c + 1) % clusters];
                    if clusters > 1 && !group.is_empty() && !next.is_empty() {
                        for _ in 0..bridges {
                            let a = group[rng.random_range(0..group.len())];
                            let b = next[rng.random_range(0..next.len())];
                            neighbours[a].push(b);
                        }
                    }
                }
            }
        }
        neighbours
    }
}

/// Builds a [`Sim`].
#[derive(Debug, Clone)]
pub struct SimBuilder {
    peers: usize,
    seed: u64,
    topology: Topology,
    faults: LinkFaults,
    sync_interval: Duration,
    heartbeat: Duration,
    idle_timeout: Duration,
    late_joiners: usize,
    hostile: Hostile,
    dir: Option<PathBuf>,
}

impl Default for SimBuilder {
    fn default() -> Self {
        Self {
            peers: 10,
            seed: 1,
            topology: Topology::Bootstrap { nodes: 1 },
            faults: LinkFaults::default(),
            sync_interval: grapevine_node::config::DEFAULT_SYNC_INTERVAL,
            heartbeat: grapevine_node::config::DEFAULT_HEARTBEAT,
            idle_timeout: grapevine_node::config::DEFAULT_IDLE_CONNECTION_TIMEOUT,
            late_joiners: 0,
            hostile: Hostile::default(),
            dir: None,
        }
    }
}

impl SimBuilder {
    /// Room members to simulate (bootstrap nodes come on top).
    pub fn peers(mut self, peers: usize) -> Self {
        self.peers = peers;
        self
    }

    /// The seed of every random choice: the same seed gives the same topology and schedule.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How the peers find each other.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Faults of every link.
    pub fn link_faults(mut self, faults: LinkFaults) -> Self {
        self.faults = faults;
        self
    }

    /// Anti-entropy interval of every node.
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// Gossipsub heartbeat of every node.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Idle connection timeout of every member (bootstrap nodes keep their own).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The last `count` members start outside the room and join on [`Sim::join`].
    pub fn late_joiners(mut self, count: usize) -> Self {
        self.late_joiners = count;
        self
    }

    /// Hostile peers: spammers among the members, forgers and silent peers on top of them.
    pub fn hostile(mut self, hostile: Hostile) -> Self {
        self.hostile = hostile;
        self
    }

    /// Keep the peers' data directories under `dir` (a temporary directory otherwise).
    pub fn dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Starts every node, connects them as the topology says and joins them to [`ROOM`].
    pub async fn build(self) -> Result<Sim, SimError> {
        // The simulation measures the network: 50–500 nodes fsyncing on one disk would measure
        // the disk (and stall the runtime's workers), so stores go to memory-backed tmpfs when
        // the machine has one. [`SimBuilder::dir`] puts them anywhere else, on disk too.
        let shm = Path::new(MEMORY_BACKED_DIR);
        let temp = if shm.is_dir() {
            tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())?
        } else {
            tempfile::tempdir()?
        };
        let root = self
            .dir
            .clone()
            .unwrap_or_else(|| temp.path().to_path_buf());
        let network = SimNetwork::new(self.faults, self.seed);
        let infra_count = self.topology.infrastructure_nodes();
        let total = self.peers + infra_count;
        let addr = peer_addr;
        let in_room = self.peers - self.late_joiners.min(self.peers);
        let mut sim = Sim {
            network: network.clone(),
            peers: Vec::new(),
            members: self.peers,
            started: Instant::now(),
            log: Arc::new(Mutex::new(DeliveryLog::default())),
            events_seen: Arc::new(AtomicU64::new(0)),
            room_peers: Arc::new(Mutex::new(HashMap::new())),
            syncs_completed: Arc::new(Mutex::new(HashMap::new())),
            seed: self.seed,
            spammers: self.hostile.spammer_peers(self.peers, in_room),
            slow_readers: self.hostile.slow_reader_peers(self.peers, in_room),
            slow_read_rate: self.hostile.slow_read_rate,
            unmeasured: self.hostile.unmeasured_peers(self.peers, in_room),
            eclipse_target: self.hostile.eclipse_target(),
            spam_posted: AtomicU64::new(0),
            hostile: HostilePeers::default(),
            graylist_watch: None,
            gossip_of_crashed: GossipCounts::default(),
            before_measuring: CountsAt::default(),
            _temp: temp,
        };
        let mut neighbours = self.topology.links(self.peers, self.seed);
        neighbours.resize(total, Vec::new());
        for (i, neighbours) in neighbours.iter().enumerate() {
            let infra = i >= self.peers;
            let mut config = Config {
                data_dir: root.join(format!("peer-{i}")),
                listen_addrs: vec![addr(i)],
                custom_transport: Some(network.transport(i)),
                reachable: true,
                mdns: false,
                heartbeat: self.heartbeat,
                sync_interval: self.sync_interval,
                idle_connection_timeout: self.idle_timeout,
                ..Config::default()
            };
            if infra {
                config = Config {
                    custom_transport: Some(network.transport(i)),
                    heartbeat: self.heartbeat,
                    ..Config::bootstrap_node(root.join(format!("bootstrap-{i}")), vec![addr(i)])
                };
            }
            config.bootstrap = if infra_count > 0 && !infra {
                (self.peers..total).map(addr).collect()
            } else {
                neighbours.iter().map(|&n| addr(n)).collect()
            };
            sim.peers.push(SimPeer {
                config,
                node: None,
                collector: None,
            });
        }
        // Infrastructure first, so members find it listening.
        for i in (self.peers..total).chain(0..self.peers) {
            sim.start(i).await?;
            if i < in_room {
                sim.node(i)?
                    .join(ROOM)
                    .await
                    .map_err(|source| SimError::Node { peer: i, source })?;
            }
        }
        // A member's dials to neighbours that started after it found nobody listening: dialled
        // again now that all are up, by the same member, so that each link keeps its direction
        // (gossipsub's outbound quota counts the links a member dialled).
        if infra_count == 0 {
            for (i, neighbours) in neighbours.iter().enumerate().take(self.peers) {
                for &later in neighbours.iter().filter(|&&n| n > i) {
                    sim.node(i)?
                        .dial(addr(later))
                        .await
                        .map_err(|source| SimError::Node { peer: i, source })?;
                }
            }
        }
        sim.hostile = HostilePeers::spawn(
            &self.hostile,
            &network,
            total,
            self.peers,
            addr,
            self.heartbeat,
            self.seed,
        )?;
        if !sim.hostile.sig_spammers.is_empty() {
            let nodes = (0..self.peers)
                .filter_map(|p| sim.node(p).ok().map(|node| (p, node.clone())))
                .collect();
            sim.graylist_watch = Some(GraylistWatch::spawn(WatchTargets {
                spammers: sim.hostile.sig_spammers.clone(),
                nodes,
            }));
        }
        sim.started = Instant::now();
        Ok(sim)
    }
}

/// Links each peer of `group` to `degree` random others in it (dialled by the peer).
fn link_randomly(neighbours: &mut [Vec<usize>], group: &[usize], degree: usize, rng: &mut StdRng) {
    for &peer in group {
        let mut others: Vec<usize> = group.iter().copied().filter(|&p| p != peer).collect();
        others.shuffle(rng);
        neighbours[peer].extend(others.into_iter().take(degree));
    }
}

/// One simulated peer: its configuration (kept for restarts) and, while running, its node.
struct SimPeer {
    config: Config,
    node: Option<NodeHandle>,
    collector: Option<JoinHandle<()>>,
}

/// A running simulation.
pub struct Sim {
    network: SimNetwork,
    /// Room members first (indices `0..members`), then bootstrap nodes.
    peers: Vec<SimPeer>,
    members: usize,
    started: Instant,
    log: Arc<Mutex<DeliveryLog>>,
    /// Events read by all collectors, to tell when they have caught up.
    events_seen: Arc<AtomicU64>,
    /// Each member's connected room members, from its events.
    room_peers: Arc<Mutex<HashMap<usize, usize>>>,
    /// Each member's completed sync exchanges: when, and how many records its room held then.
    syncs_completed: Arc<Mutex<SyncsCompleted>>,
    seed: u64,
    /// Members that spam.
    spammers: Range<usize>,
    /// Members that read slowly.
    slow_readers: Range<usize>,
    /// Bytes per second they read once [`Sim::start_slow_reading`] is called.
    slow_read_rate: u64,
    /// Spammers and slow readers: not honest receivers or publishers.
    unmeasured: Range<usize>,
    /// The member sybils surround, if any.
    eclipse_target: Option<usize>,
    spam_posted: AtomicU64,
    hostile: HostilePeers,
    /// Reads the invalid-signature spammers' neighbours, when there are such spammers.
    graylist_watch: Option<GraylistWatch>,
    /// What the gossipsub of crashed nodes counted before they went down (a node's counts
    /// start again at zero when it restarts).
    gossip_of_crashed: GossipCounts,
    /// What the network carried and gossipsub counted before [`Sim::measure_from_now`]: left
    /// out of the report.
    before_measuring: CountsAt,
    _temp: TempDir,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("members", &self.members)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A builder with ten peers, one bootstrap node, seed 1 and perfect links.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// How many room members there are.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The simulated network, for faults.
    pub fn network(&self) -> &SimNetwork {
        &self.network
    }

    /// The seed the simulation was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The node of a running peer.
    pub fn node(&self, peer: usize) -> Result<&NodeHandle, SimError> {
        self.peers
            .get(peer)
            .and_then(|p| p.node.as_ref())
            .ok_or(SimError::NotRunning(peer))
    }

    /// Whether a peer is running.
    pub fn is_running(&self, peer: usize) -> bool {
        self.peers.get(peer).is_some_and(|p| p.node.is_some())
    }

    async fn start(&mut self, peer: usize) -> Result<(), SimError> {
        let config = self.peers[peer].config.clone();
        let (node, mut events) = Node::spawn(config)
            .await
            .map_err(|source| SimError::Node { peer, source })?;
        tracing::info!(peer, id = %node.peer_id(), "simulated peer started");
        let log = self.log.clone();
        let events_seen = self.events_seen.clone();
        let room_peers = self.room_peers.clone();
        let syncs_completed = self.syncs_completed.clone();
        let collector = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    NodeEvent::RecordsReceived { records, .. } => {
                        let now = Instant::now();
                        let mut log = lock(&log);
                        for record in records {
                            log.received(record.id, peer, now);
                        }
                    }
                    NodeEvent::RoomPeersChanged { peers, .. } => {
                        lock_counts(&room_peers).insert(peer, peers.len());
                    }
                    NodeEvent::SyncCompleted { records, .. } => {
                        lock_syncs(&syncs_completed)
                            .entry(peer)
                            .or_default()
                            .push((Instant::now(), records));
                    }
                    _ => {}
                }
                events_seen.fetch_add(1, Ordering::Relaxed);
            }
        });
        self.peers[peer].node = Some(node);
        self.peers[peer].collector = Some(collector);
        Ok(())
    }

    /// Posts a message of `size` bytes from `peer`; returns its id once stored there.
    pub async fn publish(&self, peer: usize, size: usize) -> Result<RecordId, SimError> {
        let node = self.node(peer)?;
        let text = message_text(size);
        let at = Instant::now();
        let id = node
            .post(ROOM, &text)
            .await
            .map_err(|source| SimError::Node { peer, source })?;
        lock(&self.log).published(id, peer, at);
        Ok(id)
    }

    /// Posts a valid record of `size` bytes from spammer `peer`, unmeasured.
    pub async fn spam(&self, peer: usize, size: usize) -> Result<(), SimError> {
        self.node(peer)?
            .post(ROOM, &message_text(size))
            .await
            .map_err(|source| SimError::Node { peer, source })?;
        self.spam_posted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the slow readers read slowly from now on. They join and find the room at full
    /// speed: a slow reader is a member that cannot keep up with the room's traffic, and one
    /// reading 1 KiB/s over all its connections from the start would spend the run on its
    /// handshakes and never be sent any of it.
    pub fn start_slow_reading(&self) {
        for peer in self.slow_readers.clone() {
            self.network.set_read_rate(peer, Some(self.slow_read_rate));
        }
    }

    /// Gossip messages the running members dropped for the slow readers because they read too
    /// slowly, all together.
    async fn dropped_for_slow_readers(&self) -> Result<u64, SimError> {
        let slow: Vec<_> = self
            .slow_readers
            .clone()
            .filter_map(|peer| self.node(peer).ok().map(NodeHandle::peer_id))
            .collect();
        let mut dropped = 0;
        for peer in self.honest_members() {
            let node = self.node(peer)?;
            for &slow in &slow {
                dropped += node
                    .gossip_source(slow)
                    .await
                    .map_err(|source| SimError::Node { peer, source })?
                    .dropped_for_slowness;
            }
        }
        Ok(dropped)
    }

    /// The members that are spammers.
    pub fn spammers(&self) -> Range<usize> {
        self.spammers.clone()
    }

    /// What the hostile peers sent, and whether any forged record was stored by a running
    /// member: each one's room view and received records are searched for the forged ids. The
    /// watch of the invalid-signature spammers ends here, with a last reading.
    pub async fn hostile_report(&mut self) -> Result<HostileReport, SimError> {
        self.settle().await?;
        let forged = self.hostile.sent.forged_ids();
        // The attacked records that are messages published in the run (a forger may also have
        // attacked a nickname record, which is in no view's messages).
        let targets: Vec<RecordId> = {
            let log = lock(&self.log);
            let targets = self.hostile.sent.targets();
            targets
                .into_iter()
                .filter(|t| log.was_published(t))
                .collect()
        };
        let sig_spammers = match &mut self.graylist_watch {
            Some(watch) => watch.finish(&self.hostile.spam_sent).await,
            None => Vec::new(),
        };
        let mut stored = 0;
        let mut damaged = 0;
        for peer in 0..self.members {
            let Ok(node) = self.node(peer) else {
                continue;
            };
            let view = node
                .view(ROOM)
                .await
                .map_err(|source| SimError::Node { peer, source })?;
            let in_view = view.messages.iter().any(|m| forged.contains(&m.id));
            if in_view || lock(&self.log).received_any(peer, &forged) {
                stored += 1;
            }
            let intact = targets
                .iter()
                .all(|t| view.messages.iter().filter(|m| m.id == *t).count() == 1);
            if !intact {
                damaged += 1;
            }
        }
        let flood = self.flood_report().await?;
        let eclipse = self.eclipse_report().await?;
        Ok(HostileReport {
            spammers: self.spammers.len(),
            slow_readers: self.slow_readers.len(),
            dropped_for_slow_readers: self.dropped_for_slow_readers().await?,
            forgers: self.hostile.forgers,
            silent: self.hostile.silent,
            spam_posted: self.spam_posted.load(Ordering::Relaxed),
            forged_sent: self.hostile.sent.forged.load(Ordering::Relaxed),
            invalid_sent: self.hostile.sent.invalid.load(Ordering::Relaxed),
            silent_mesh_links: self.mesh_links(0..self.hostile.silent),
            tamper_sent: self.hostile.sent.tampered.load(Ordering::Relaxed),
            replays_sent: self.hostile.sent.replayed.load(Ordering::Relaxed),
            forged_stored: stored,
            targets_checked: targets.len(),
            targets_damaged: damaged,
            sig_spammers,
            flood,
            eclipse,
        })
    }

    /// Mesh links the silent peers (and then the sybils) in `slots` held at their last check.
    fn mesh_links(&self, slots: Range<usize>) -> u64 {
        let links = &self.hostile.sent.silent_mesh_links;
        links
            .get(slots)
            .unwrap_or_default()
            .iter()
            .map(|links| links.load(Ordering::Relaxed))
            .sum()
    }

    /// What the flooders sent, and each running member's score of each flooder that dials it.
    async fn flood_report(&self) -> Result<Option<FloodReport>, SimError> {
        if self.hostile.flooders.is_empty() {
            return Ok(None);
        }
        let mut scores: Vec<(FloodKind, Vec<f64>)> = Vec::new();
        for kind in [FloodKind::Ihave, FloodKind::Graft, FloodKind::Subscribe] {
            let mut of_kind = Vec::new();
            for (flooder, _, reached) in self.hostile.flooders.iter().filter(|f| f.1 == kind) {
                for &peer in reached {
                    let Ok(node) = self.node(peer) else {
                        continue;
                    };
                    let score = node
                        .peer_score(*flooder)
                        .await
                        .map_err(|source| SimError::Node { peer, source })?;
                    of_kind.extend(score);
                }
            }
            scores.push((kind, of_kind));
        }
        let scores = scores
            .into_iter()
            .map(|(kind, of_kind)| KindScores::of(kind, &of_kind))
            .collect();
        Ok(Some(
            self.hostile
                .flood_counts
                .report(self.hostile.flooders.len(), scores),
        ))
    }

    /// Who the sybils' target is connected to, and what it received of the records the others
    /// published.
    async fn eclipse_report(&self) -> Result<Option<EclipseReport>, SimError> {
        let Some(target) = self.eclipse_target else {
            return Ok(None);
        };
        let node = self.node(target)?;
        let connected = node.peers().await.map_err(|source| SimError::Node {
            peer: target,
            source,
        })?;
        let members: HashSet<PeerId> = (0..self.members)
            .filter_map(|peer| self.node(peer).ok().map(NodeHandle::peer_id))
            .collect();
        let sybils: HashSet<PeerId> = self.hostile.sybils.iter().copied().collect();
        let spammers: Vec<usize> = self.spammers.clone().collect();
        let delivery = lock(&self.log).report(
            &[target],
            &spammers,
            self.started.elapsed(),
            self.network.traffic(),
            GossipCounts::default(),
        );
        let first_sybil = self.hostile.silent;
        Ok(Some(EclipseReport {
            target,
            sybils: sybils.len(),
            sybils_connected: connected.iter().filter(|p| sybils.contains(p)).count(),
            honest_connected: connected.iter().filter(|p| members.contains(p)).count(),
            sybil_mesh_links: self.mesh_links(first_sybil..first_sybil + sybils.len()),
            published: delivery.published,
            delivery_ratio: delivery.delivery_ratio,
            latency: delivery.latency_per_delivery,
        }))
    }

    /// Posts `count` records of `size` bytes from `peer` without measuring them: history for
    /// late joiners to fetch.
    pub async fn preload(&self, peer: usize, count: usize, size: usize) -> Result<(), SimError> {
        let node = self.node(peer)?;
        let text = message_text(size);
        for _ in 0..count {
            node.post(ROOM, &text)
                .await
                .map_err(|source| SimError::Node { peer, source })?;
        }
        Ok(())
    }

    /// A member joins the room (a late joiner, or one that left).
    pub async fn join(&self, peer: usize) -> Result<(), SimError> {
        self.node(peer)?
            .join(ROOM)
            .await
            .map_err(|source| SimError::Node { peer, source })
    }

    /// Connected room members of each running member, as last reported by its node.
    pub fn room_peer_counts(&self) -> HashMap<usize, usize> {
        lock_counts(&self.room_peers).clone()
    }

    /// Splits the network into `groups` of peers (see [`SimNetwork::partition`]).
    pub fn partition(&self, groups: &[Vec<usize>]) {
        self.network.partition(groups);
    }

    /// Ends a partition.
    pub fn repair(&self) {
        self.network.repair();
    }

    /// Crashes a peer: it leaves the network at once and its node stops.
    pub async fn crash(&mut self, peer: usize) -> Result<(), SimError> {
        let node = self.peers.get_mut(peer).and_then(|p| p.node.take());
        let node = node.ok_or(SimError::NotRunning(peer))?;
        self.network.take_down(peer);
        lock_counts(&self.room_peers).remove(&peer);
        self.gossip_of_crashed += node
            .gossip_counts()
            .await
            .map_err(|source| SimError::Node { peer, source })?;
        node.shutdown()
            .await
            .map_err(|source| SimError::Node { peer, source })?;
        if let Some(collector) = self.peers[peer].collector.take() {
            collector.abort();
        }
        Ok(())
    }

    /// Restarts a crashed peer from its data directory; it rejoins its rooms and catches up.
    pub async fn restart(&mut self, peer: usize) -> Result<(), SimError> {
        if self.is_running(peer) {
            return Ok(());
        }
        self.network.bring_up(peer);
        self.start(peer).await
    }

    /// Lets the simulation run for `duration`.
    pub async fn run_for(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Waits until every running member holds the same heads; returns how long it took.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Duration, SimError> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.converged().await? {
                return Ok(start.elapsed());
            }
            tokio::time::sleep(CONVERGENCE_POLL).await;
        }
        Err(SimError::NotConverged(timeout))
    }

    /// Whether every running member in the room holds the same heads now (a late joiner counts
    /// once it joined).
    pub async fn converged(&self) -> Result<bool, SimError> {
        let mut first: Option<BTreeMap<u32, Vec<grapevine_node::crdt::ChangeHash>>> = None;
        for peer in 0..self.members {
            let Ok(node) = self.node(peer) else {
                continue;
            };
            let heads = match node.heads(ROOM).await {
                Ok(heads) => heads,
                Err(NodeError::NotJoined(_)) => continue,
                Err(source) => return Err(SimError::Node { peer, source }),
            };
            match &first {
                None => first = Some(heads),
                Some(expected) if *expected != heads => return Ok(false),
                Some(_) => {}
            }
        }
        Ok(true)
    }

    /// Waits until the events every node emitted so far are logged: each node answers a query
    /// only after emitting the events before it, and then the collectors get a moment (bounded)
    /// to drain their channels.
    async fn settle(&self) -> Result<(), SimError> {
        for peer in 0..self.peers.len() {
            if let Ok(node) = self.node(peer) {
                node.rooms()
                    .await
                    .map_err(|source| SimError::Node { peer, source })?;
            }
        }
        let mut seen = self.events_seen.load(Ordering::Relaxed);
        for _ in 0..SETTLE_ROUNDS {
            tokio::time::sleep(SETTLE_STEP).await;
            let now = self.events_seen.load(Ordering::Relaxed);
            if now == seen {
                break;
            }
            seen = now;
        }
        Ok(())
    }

    /// Leaves what happened so far (a warm-up: the joins' handshakes, lookups and syncs) out of
    /// the report's bytes, connections and gossip counts.
    pub async fn measure_from_now(&mut self) -> Result<(), SimError> {
        self.before_measuring = CountsAt::now(self.network.traffic(), self.gossip_counts().await?);
        Ok(())
    }

    /// How long after `at` a sync exchange of `peer` completed with its room holding at least
    /// `records` records (a late joiner catching up on a long history); `None` if none did.
    pub fn synced_history_after(
        &self,
        peer: usize,
        at: Instant,
        records: usize,
    ) -> Option<Duration> {
        lock_syncs(&self.syncs_completed)
            .get(&peer)?
            .iter()
            .find(|(when, held)| *when >= at && *held >= records)
            .map(|(when, _)| when.duration_since(at))
    }

    /// How long after `at` the running honest `peers` (all of them when `None`) held every
    /// record published before `at`; `None` while one is missing.
    pub fn caught_up_after(&self, at: Instant, peers: Option<&[usize]>) -> Option<Duration> {
        let honest: Vec<usize> = match peers {
            Some(peers) => peers.to_vec(),
            None => self.honest_members(),
        };
        lock(&self.log).caught_up_after(at, &honest)
    }

    /// What was measured so far, over honest members: spammers and slow readers neither count as
    /// receivers nor as publishers.
    pub async fn report(&self) -> Result<Report, SimError> {
        self.settle().await?;
        let honest = self.honest_members();
        let unmeasured: Vec<usize> = self.unmeasured.clone().collect();
        let (traffic, gossip) = self
            .before_measuring
            .since(self.network.traffic(), self.gossip_counts().await?);
        let mut connections = Vec::with_capacity(honest.len());
        for &peer in &honest {
            let node = self.node(peer)?;
            connections.push(
                node.connections()
                    .await
                    .map_err(|source| SimError::Node { peer, source })?,
            );
        }
        let mut report = lock(&self.log).report(
            &honest,
            &unmeasured,
            self.started.elapsed(),
            &traffic,
            gossip,
        );
        report.connections_per_node = ConnectionsPerNode::of(&connections);
        Ok(report)
    }

    /// The running members that are measured: neither spammers nor slow readers.
    fn honest_members(&self) -> Vec<usize> {
        (0..self.members)
            .filter(|&p| self.is_running(p) && !self.unmeasured.contains(&p))
            .collect()
    }

    /// How many peers each running honest member stayed connected to at every sample taken
    /// over `window` (one sample per [`KEPT_SAMPLE_EVERY`]): connections opened for one lookup
    /// or one sync exchange come and go, the kept ones are in every sample.
    pub async fn peers_kept(&self, window: Duration) -> Result<Vec<u32>, SimError> {
        let honest = self.honest_members();
        let mut kept: Vec<Option<HashSet<PeerId>>> = vec![None; honest.len()];
        let end = Instant::now() + window;
        while Instant::now() < end {
            for (&peer, kept) in honest.iter().zip(&mut kept) {
                let node = self.node(peer)?;
                let now: HashSet<PeerId> = node
                    .peers()
                    .await
                    .map_err(|source| SimError::Node { peer, source })?
                    .into_iter()
                    .collect();
                *kept = Some(match kept.take() {
                    Some(before) => before.intersection(&now).copied().collect(),
                    None => now,
                });
            }
            tokio::time::sleep(KEPT_SAMPLE_EVERY).await;
        }
        Ok(kept
            .into_iter()
            .map(|k| k.map_or(0, |k| u32::try_from(k.len()).unwrap_or(u32::MAX)))
            .collect())
    }

    /// What the gossipsub of every node counted, crashed ones included; hostile peers are no
    /// nodes and are left out.
    pub async fn gossip_counts(&self) -> Result<GossipCounts, SimError> {
        let mut total = self.gossip_of_crashed;
        for (peer, sim_peer) in self.peers.iter().enumerate() {
            if let Some(node) = &sim_peer.node {
                total += node
                    .gossip_counts()
                    .await
                    .map_err(|source| SimError::Node { peer, source })?;
            }
        }
        Ok(total)
    }

    /// Stops every node, storing their rooms.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        self.graylist_watch = None;
        self.hostile.stop();
        for (peer, sim_peer) in self.peers.iter_mut().enumerate() {
            if let Some(node) = sim_peer.node.take() {
                node.shutdown()
                    .await
                    .map_err(|source| SimError::Node { peer, source })?;
            }
            if let Some(collector) = sim_peer.collector.take() {
                collector.abort();
            }
        }
        Ok(())
    }
}

fn lock_counts(
    counts: &Mutex<HashMap<usize, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<usize, usize>> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

/// Each member's completed sync exchanges: when, and the records its room held then.
type SyncsCompleted = HashMap<usize, Vec<(Instant, usize)>>;

fn lock_syncs(syncs: &Mutex<SyncsCompleted>) -> std::sync::MutexGuard<'_, SyncsCompleted> {
    syncs.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock(log: &Mutex<DeliveryLog>) -> std::sync::MutexGuard<'_, DeliveryLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message body of `size` bytes (at least one).
fn message_text(size: usize) -> String {
    "x".repeat(size.max(1))
}
