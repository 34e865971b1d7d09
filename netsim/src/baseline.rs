//! The raw-gossipsub baseline: the same scenario (topology, links, seed, schedule, message size)
//! played by plain gossipsub swarms publishing payloads of the message size (no records, no
//! signatures of ours, no CRDT, no sync, no Kademlia), on a simulated network of its own, so a
//! report can say what Grapevine costs over the protocol it is built on.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use grapevine_node::GossipCounts;
use grapevine_node::behaviour::MESH_N;
use grapevine_node::crdt::RecordId;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::metrics::Registry;
use libp2p::{Multiaddr, gossipsub};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::gossip::GossipError;
use crate::gossip::{BarePeer, GossipSettings, REDIAL_INTERVAL};
use crate::metrics::{CountsAt, DeliveryLog, Percentiles, Report};
use crate::network::SimNetwork;
use crate::resources::{Reading, Usage};
use crate::runner::Progress;
use crate::scenario::{Scenario, Step};
use crate::sim::{SimError, Topology, peer_addr};

/// Commands queued per baseline peer: a burst scenario queues its whole burst at once.
const COMMAND_CAPACITY: usize = 1024;
/// After the traffic, the baseline stops waiting once no delivery arrived for this long:
/// gossipsub has no history sync, so a message missed by then stays missed.
const QUIET: Duration = Duration::from_secs(2);
/// How often the end of the baseline run checks for new deliveries.
const POLL: Duration = Duration::from_millis(250);
/// Payload bytes that make each baseline message unique (a counter).
const COUNTER_BYTES: usize = 8;

/// Which baseline to run beside Grapevine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Plain rust-libp2p gossipsub messages of the same size.
    RawGossipsub,
}

/// The name of a baseline is not known.
#[derive(Debug, thiserror::Error)]
#[error("unknown baseline {0:?} (known: raw-gossipsub)")]
pub struct UnknownBaseline(String);

impl FromStr for Baseline {
    type Err = UnknownBaseline;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw-gossipsub" => Ok(Self::RawGossipsub),
            _ => Err(UnknownBaseline(s.to_string())),
        }
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RawGossipsub => f.write_str("raw-gossipsub"),
        }
    }
}

/// What the baseline run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineReport {
    /// Which baseline.
    pub kind: Baseline,
    /// How the baseline differs from the Grapevine run (how peers were connected, what was
    /// left out).
    pub notes: Vec<String>,
    /// Deliveries and latencies, over the same honest members.
    pub delivery: Report,
    /// CPU and memory of the process over the baseline run.
    pub usage: Usage,
}

/// Grapevine's figure over the baseline's; `None` where either side measured nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    /// Median latency of single deliveries.
    pub latency_per_delivery_p50: Option<f64>,
    /// 99th percentile latency of single deliveries.
    pub latency_per_delivery_p99: Option<f64>,
    /// Median latency to every member.
    pub latency_to_all_p50: Option<f64>,
    /// 99th percentile latency to every member.
    pub latency_to_all_p99: Option<f64>,
    /// Bytes on the wire per delivery.
    pub bytes_per_delivery: Option<f64>,
    /// Payload bytes (gossip messages) per delivery.
    pub payload_bytes_per_delivery: Option<f64>,
    /// Control bytes (everything else on the wire) per delivery.
    pub control_bytes_per_delivery: Option<f64>,
    /// Gossip duplicates per record per peer.
    pub duplicates_per_record_per_peer: Option<f64>,
    /// CPU time per delivery.
    pub cpu_per_delivery: Option<f64>,
}

fn ratio(grapevine: f64, baseline: f64) -> Option<f64> {
    (grapevine > 0.0 && baseline > 0.0).then(|| grapevine / baseline)
}

fn latency_ratio(
    grapevine: &Percentiles,
    baseline: &Percentiles,
    at: fn(&Percentiles) -> f64,
) -> Option<f64> {
    if grapevine.count == 0 || baseline.count == 0 {
        return None;
    }
    ratio(at(grapevine), at(baseline))
}

impl Ratios {
    /// Grapevine's `delivery` and `usage` over the baseline's.
    pub fn of(delivery: &Report, usage: &Usage, baseline: &BaselineReport) -> Self {
        let b = &baseline.delivery;
        Self {
            latency_per_delivery_p50: latency_ratio(
                &delivery.latency_per_delivery,
                &b.latency_per_delivery,
                |p| p.p50_ms,
            ),
            latency_per_delivery_p99: latency_ratio(
                &delivery.latency_per_delivery,
                &b.latency_per_delivery,
                |p| p.p99_ms,
            ),
            latency_to_all_p50: latency_ratio(&delivery.latency_to_all, &b.latency_to_all, |p| {
                p.p50_ms
            }),
            latency_to_all_p99: latency_ratio(&delivery.latency_to_all, &b.latency_to_all, |p| {
                p.p99_ms
            }),
            bytes_per_delivery: ratio(delivery.bytes_per_delivery, b.bytes_per_delivery),
            payload_bytes_per_delivery: ratio(
                delivery.payload_bytes_per_delivery,
                b.payload_bytes_per_delivery,
            ),
            control_bytes_per_delivery: ratio(
                delivery.control_bytes_per_delivery,
                b.control_bytes_per_delivery,
            ),
            duplicates_per_record_per_peer: delivery
                .duplicates_per_record_per_peer
                .zip(b.duplicates_per_record_per_peer)
                .and_then(|(g, b)| ratio(g, b)),
            cpu_per_delivery: ratio(
                usage.cpu_ms_per_delivery,
                baseline.usage.cpu_ms_per_delivery,
            ),
        }
    }
}

/// A command to a baseline peer's task.
enum Command {
    Publish(Vec<u8>),
    Subscribe,
}

/// One baseline peer: its key and room state (kept for restarts) and, while up, its task.
struct Peer {
    key: Keypair,
    targets: Vec<Multiaddr>,
    subscribed: bool,
    running: Option<Running>,
}

/// A baseline peer's running task, and what its gossipsub counts into.
struct Running {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    metrics: Arc<Registry>,
}

/// The baseline's swarms and what they share.
struct Swarms {
    network: SimNetwork,
    peers: Vec<Peer>,
    topic: gossipsub::IdentTopic,
    heartbeat: Duration,
    log: Arc<Mutex<DeliveryLog>>,
    deliveries: Arc<AtomicU64>,
    /// What the gossipsub of crashed peers counted before they went down.
    gossip_of_crashed: GossipCounts,
    /// The counts at the end of the warm-up, left out of the report.
    before_measuring: CountsAt,
    next_message: u64,
    size: usize,
}

fn lock(log: &Mutex<DeliveryLog>) -> MutexGuard<'_, DeliveryLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// The id under which a baseline payload is logged.
fn message_id(payload: &[u8]) -> RecordId {
    RecordId(Sha256::digest(payload).into())
}

impl Swarms {
    /// Builds peer `i`'s swarm (listening at once, so others can dial it) without running it.
    /// Gossipsub counts into the registry handed back with it.
    fn build(&self, i: usize) -> Result<(BarePeer, Arc<Registry>), SimError> {
        let peer = &self.peers[i];
        let settings = GossipSettings {
            heartbeat: self.heartbeat,
            validate: false,
        };
        let (mut bare, metrics) = BarePeer::new(
            &self.network,
            i,
            peer.key.clone(),
            settings,
            peer.targets.clone(),
        )?;
        bare.swarm
            .listen_on(peer_addr(i))
            .map_err(|e| GossipError::Setup(e.to_string()))?;
        if peer.subscribed {
            bare.swarm
                .behaviour_mut()
                .subscribe(&self.topic)
                .map_err(|e| GossipError::Setup(e.to_string()))?;
        }
        Ok((bare, metrics))
    }

    /// Runs peer `i`'s built swarm, whose gossipsub counts into `metrics`.
    fn run(&mut self, i: usize, (mut bare, metrics): (BarePeer, Arc<Registry>)) {
        let (commands, mut inbox) = mpsc::channel(COMMAND_CAPACITY);
        let topic = self.topic.clone();
        let log = self.log.clone();
        let deliveries = self.deliveries.clone();
        let task = tokio::spawn(async move {
            let mut redial = tokio::time::interval(REDIAL_INTERVAL);
            loop {
                tokio::select! {
                    command = inbox.recv() => match command {
                        Some(Command::Publish(payload)) => {
                            // Nobody to send to: the message is lost, as it would be.
                            let _ = bare.swarm.behaviour_mut().publish(topic.clone(), payload);
                        }
                        Some(Command::Subscribe) => {
                            let _ = bare.swarm.behaviour_mut().subscribe(&topic);
                        }
                        None => return,
                    },
                    event = bare.swarm.select_next_some() => {
                        if let Some(gossipsub::Event::Message { message, .. }) = bare.on_event(event) {
                            lock(&log).received(message_id(&message.data), i, Instant::now());
                            deliveries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ = redial.tick() => bare.dial_missing(),
                }
            }
        });
        self.peers[i].running = Some(Running {
            commands,
            task,
            metrics,
        });
    }

    fn send(&self, i: usize, command: Command) {
        if let Some(running) = &self.peers[i].running {
            // A full queue drops the command: the run could not keep up, which the report shows.
            let _ = running.commands.try_send(command);
        }
    }

    /// A payload of the scenario's size, unique thanks to a counter.
    fn payload(&mut self) -> Vec<u8> {
        self.next_message += 1;
        let mut payload = vec![b'x'; self.size.max(COUNTER_BYTES)];
        payload[..COUNTER_BYTES].copy_from_slice(&self.next_message.to_be_bytes());
        payload
    }

    fn is_running(&self, i: usize) -> bool {
        self.peers.get(i).is_some_and(|p| p.running.is_some())
    }

    fn play(&mut self, step: Step) -> Result<(), SimError> {
        match step {
            Step::Publish(i) if self.is_running(i) => {
                let payload = self.payload();
                lock(&self.log).published(message_id(&payload), i, Instant::now());
                self.send(i, Command::Publish(payload));
            }
            Step::Spam(i) if self.is_running(i) => {
                let payload = self.payload();
                self.send(i, Command::Publish(payload));
            }
            Step::Publish(_) | Step::Spam(_) => {}
            Step::Partition(groups) => self.network.partition(&groups),
            Step::Repair => self.network.repair(),
            Step::Hold(a, b) => self.network.hold(a, b),
            Step::Release(a, b) => self.network.release(a, b),
            Step::Crash(i) => {
                if let Some(running) = self.peers.get_mut(i).and_then(|p| p.running.take()) {
                    running.task.abort();
                    self.gossip_of_crashed += GossipCounts::from_registry(&running.metrics);
                    self.network.take_down(i);
                }
            }
            Step::Restart(i) => {
                if !self.is_running(i) && i < self.peers.len() {
                    self.network.bring_up(i);
                    let bare = self.build(i)?;
                    self.run(i, bare);
                }
            }
            Step::Join(i) => {
                if let Some(peer) = self.peers.get_mut(i) {
                    peer.subscribed = true;
                }
                self.send(i, Command::Subscribe);
            }
        }
        Ok(())
    }

    /// What every peer's gossipsub counted so far, crashed peers included.
    fn gossip_counts(&self) -> GossipCounts {
        let mut gossip = self.gossip_of_crashed;
        for running in self.peers.iter().filter_map(|p| p.running.as_ref()) {
            gossip += GossipCounts::from_registry(&running.metrics);
        }
        gossip
    }

    fn report(&self, spammers: &[usize], elapsed: Duration) -> Report {
        let honest: Vec<usize> = (0..self.peers.len())
            .filter(|&p| self.is_running(p) && !spammers.contains(&p))
            .collect();
        let (traffic, gossip) = self
            .before_measuring
            .since(self.network.traffic(), self.gossip_counts());
        lock(&self.log).report(&honest, spammers, elapsed, &traffic, gossip)
    }

    fn stop(&mut self) {
        for peer in &mut self.peers {
            if let Some(running) = peer.running.take() {
                running.task.abort();
            }
        }
    }
}

impl Drop for Swarms {
    /// A run that fails half-way leaves no swarm running.
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the baseline's peers are connected, and what it leaves out of the scenario.
fn plan(scenario: &Scenario) -> (Vec<Vec<usize>>, Vec<String>) {
    let mut notes = Vec::new();
    let links = match scenario.topology {
        Topology::Bootstrap { .. } => {
            notes.push(format!(
                "bootstrap topology: the baseline has no Kademlia; each peer dials {MESH_N} \
                 random members directly (seeded)"
            ));
            Topology::RandomRegular { degree: MESH_N }.links(scenario.peers, scenario.seed)
        }
        ref topology => {
            notes.push("same neighbour lists as the Grapevine run".into());
            topology.links(scenario.peers, scenario.seed)
        }
    };
    if scenario.preload > 0 {
        notes.push("preload skipped: plain gossipsub keeps no history".into());
    }
    if scenario.late_joiners > 0 {
        notes.push("late joiners only get messages published after they join".into());
    }
    let hostile = &scenario.hostile;
    if hostile.forgers > 0.0
        || hostile.silent > 0.0
        || hostile.sig_spammers > 0.0
        || hostile.flooders > 0.0
        || hostile.sybils > 0
    {
        notes.push(
            "no forgers, silent peers, invalid-signature spammers, flooders or sybils in the \
             baseline"
                .into(),
        );
    }
    if hostile.slow_readers > 0.0 {
        notes.push("slow readers read at full speed in the baseline, unmeasured".into());
    }
    if hostile.spammers > 0.0 {
        notes.push("spammers publish plain messages on their schedule, unmeasured".into());
    }
    notes.push(
        "crashed peers lose their state; peers redial their neighbours every 2 s when cut off"
            .into(),
    );
    (links, notes)
}

/// Runs the raw-gossipsub baseline of `scenario`; `progress` hears the run's time.
pub async fn run(scenario: &Scenario, progress: Progress<'_>) -> Result<BaselineReport, SimError> {
    let before: Reading = Usage::now();
    let (links, notes) = plan(scenario);
    let mut rng = StdRng::seed_from_u64(scenario.seed ^ 0xba5e_11fe);
    let in_room = scenario.peers - scenario.late_joiners;
    let mut peers = Vec::with_capacity(scenario.peers);
    for (i, targets) in links.into_iter().enumerate() {
        let key = Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>())
            .map_err(|e| GossipError::Setup(e.to_string()))?;
        peers.push(Peer {
            key,
            targets: targets.into_iter().map(peer_addr).collect(),
            subscribed: i < in_room,
            running: None,
        });
    }
    let room = grapevine_node::crdt::RoomId::for_public_name(crate::sim::ROOM)
        .map_err(|e| GossipError::Setup(e.to_string()))?;
    let mut swarms = Swarms {
        network: SimNetwork::new(scenario.link, scenario.seed),
        peers,
        topic: grapevine_node::room_topic(room),
        heartbeat: grapevine_node::config::DEFAULT_HEARTBEAT,
        log: Arc::new(Mutex::new(DeliveryLog::default())),
        deliveries: Arc::new(AtomicU64::new(0)),
        gossip_of_crashed: GossipCounts::default(),
        before_measuring: CountsAt::default(),
        next_message: 0,
        size: scenario.traffic.size,
    };
    // Every peer listens before any dials.
    let built = (0..scenario.peers)
        .map(|i| swarms.build(i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, bare) in built.into_iter().enumerate() {
        swarms.run(i, bare);
    }

    tokio::time::sleep(scenario.warmup).await;
    swarms.before_measuring = CountsAt::now(swarms.network.traffic(), swarms.gossip_counts());
    let cpu_from = Usage::now();
    let start = Instant::now();
    for (at, step) in scenario.schedule() {
        let due = start + at;
        while Instant::now() < due {
            progress(start.elapsed());
            tokio::time::sleep(POLL.min(due.saturating_duration_since(Instant::now()))).await;
        }
        swarms.play(step)?;
    }
    tokio::time::sleep_until(start + scenario.duration).await;
    progress(scenario.duration);

    let spammers: Vec<usize> = scenario
        .hostile
        .unmeasured_peers(scenario.peers, in_room)
        .collect();
    let settle_end = Instant::now() + scenario.settle;
    let mut seen = swarms.deliveries.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < settle_end && quiet_since.elapsed() < QUIET {
        if swarms.report(&spammers, start.elapsed()).delivery_ratio >= 1.0 {
            break;
        }
        tokio::time::sleep(POLL).await;
        let now = swarms.deliveries.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
    }
    let delivery = swarms.report(&spammers, start.elapsed());
    swarms.stop();
    let usage = crate::runner::steady_usage(
        &before,
        &cpu_from,
        scenario.peers,
        delivery.latency_per_delivery.count as u64,
    );
    Ok(BaselineReport {
        kind: Baseline::RawGossipsub,
        notes,
        delivery,
        usage,
    })
}
