//! Delivery throughput and latency of one room, side by side with plain gossipsub.
//!
//! One publisher and [`PEERS`] room peers on loopback TCP, all in this process on this machine:
//! first Grapevine nodes (records, signatures, CRDT, fsync), then plain gossipsub swarms carrying
//! payloads of the same size over the same transport and topology. For each, it measures
//! publish-to-deliver latency at a steady rate, and the highest rate at which every peer receives
//! every record within a grace period. Prints a table; run with
//! `cargo bench -p grapevine-node --bench gossip`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grapevine_node::{Config, Node, NodeEvent, NodeHandle, Transport};
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, gossipsub, noise, tcp, yamux};
use sha2::{Digest, Sha256};

/// Room peers besides the publisher.
const PEERS: usize = 20;
/// Each peer dials the publisher and this many other peers (a sparse, connected topology).
const EXTRA_LINKS: usize = 2;
/// The steady rate of the latency run.
const LATENCY_RATE: u32 = 20;
/// How long each rate is held.
const RUN: Duration = Duration::from_secs(4);
/// How long deliveries may trail the end of a run and still count.
const GRACE: Duration = Duration::from_secs(3);
/// Rates tried for the throughput figure, records per second.
const RATES: [u32; 12] = [50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 1000, 1200];
/// A run counts as delivered when at least this share of (record, peer) pairs arrived.
const COMPLETE: f64 = 0.99;
/// A run counts only if the publisher kept up with at least this share of its target rate.
const KEPT_UP: f64 = 0.95;
/// The longest wait for a backlog to clear between runs.
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// When each record was published and when each peer received it.
#[derive(Default)]
struct Ledger {
    sent: HashMap<Vec<u8>, Instant>,
    received: HashMap<Vec<u8>, Vec<Instant>>,
}

impl Ledger {
    /// Delivery share and latency percentiles (ms: p50, p99, max) of the records `keys`.
    fn summary(&self, keys: &[Vec<u8>], peers: usize) -> (f64, f64, f64, f64) {
        let mut latencies = Vec::new();
        let mut delivered = 0;
        for key in keys {
            let Some(sent) = self.sent.get(key) else {
                continue;
            };
            for at in self.received.get(key).into_iter().flatten() {
                delivered += 1;
                latencies.push(at.duration_since(*sent).as_secs_f64() * 1e3);
            }
        }
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let share = delivered as f64 / (keys.len() * peers).max(1) as f64;
        (share, pick(0.5), pick(0.99), pick(1.0))
    }
}

type Shared = Arc<Mutex<Ledger>>;

/// Notes that one peer received the record `key` now.
fn note_received(ledger: &Shared, key: Vec<u8>) {
    if let Ok(mut ledger) = ledger.lock() {
        ledger.received.entry(key).or_default().push(Instant::now());
    }
}

/// What a run at one rate measured.
struct Run {
    rate: u32,
    /// Records actually published per second (the publisher may not keep up with `rate`).
    achieved: f64,
    share: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Sequence numbers of published records, unique across runs so that no two records share a key.
static NEXT_RECORD: AtomicU64 = AtomicU64::new(0);

/// Publishes at `rate` for [`RUN`] with `publish`, waits [`GRACE`], and summarises.
async fn run_at<F, Fut>(ledger: &Shared, rate: u32, mut publish: F) -> Result<Run>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>>>,
{
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut keys = Vec::new();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let key = publish(NEXT_RECORD.fetch_add(1, Ordering::Relaxed)).await?;
        ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .sent
            .insert(key.clone(), sent);
        keys.push(key);
        n += 1;
    }
    let achieved = keys.len() as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(GRACE).await;
    let run = {
        let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let (share, p50, p99, max) = ledger.summary(&keys, PEERS);
        Run {
            rate,
            achieved,
            share,
            p50,
            p99,
            max,
        }
    };
    settle(ledger).await;
    Ok(run)
}

/// Waits (at most [`SETTLE_MAX`]) until no delivery has arrived for a second, so that one run's
/// backlog does not burden the next.
async fn settle(ledger: &Shared) {
    let deliveries = || {
        ledger
            .lock()
            .map(|l| l.received.values().map(Vec::len).sum::<usize>())
            .unwrap_or(0)
    };
    let start = Instant::now();
    let mut last = deliveries();
    while start.elapsed() < SETTLE_MAX {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = deliveries();
        if now == last {
            return;
        }
        last = now;
    }
}

/// The latency run, then rising rates until one is not delivered.
async fn run_all<F, Fut>(ledger: &Shared, mut publish: F) -> Result<(Vec<Run>, Run)>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>>>,
{
    let latency = run_at(ledger, LATENCY_RATE, &mut publish).await?;
    let mut runs = Vec::new();
    for rate in RATES {
        let run = run_at(ledger, rate, &mut publish).await?;
        let delivered = run.counts();
        runs.push(run);
        if !delivered {
            break;
        }
    }
    Ok((runs, latency))
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")
}

/// Which peers peer `i` dials besides the publisher.
fn links(i: usize) -> impl Iterator<Item = usize> {
    (1..=EXTRA_LINKS)
        .map(move |k| (i + k) % PEERS)
        .filter(move |j| *j != i)
}

/// The text of the `n`th record published.
fn text(n: u64) -> String {
    format!("{n:08} {}", "x".repeat(90))
}

/// Size of the gossip payload of one such record: the envelope of its Automerge change.
fn envelope_len() -> Result<usize> {
    let room_id = grapevine_node::crdt::RoomId::for_public_name("bench")?;
    let mut room =
        grapevine_node::crdt::Room::in_memory(room_id, grapevine_node::crdt::Identity::generate());
    room.post(&text(0))?;
    let written = room.post(&text(1))?;
    Ok(grapevine_node::behaviour::Envelope::encode(&written.change).len())
}

async fn grapevine(ledger: &Shared) -> Result<(Vec<Run>, Run)> {
    let dirs: Vec<tempfile::TempDir> = (0..=PEERS)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for dir in &dirs {
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            listen_addrs: vec![loopback()],
            transport: Transport::Tcp,
            // Multicast discovery would reach beyond this machine; the peers dial each other.
            mdns: false,
            ..Config::default()
        };
        let (node, mut events) = Node::spawn(config).await?;
        node.join("bench").await?;
        if !nodes.is_empty() {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let NodeEvent::RecordsReceived { records, .. } = event {
                        for record in records {
                            note_received(&ledger, record.id.0.to_vec());
                        }
                    }
                }
            });
        }
        nodes.push(node);
    }
    let addrs: Vec<Multiaddr> = dial_addrs(&nodes).await?;
    for i in 0..PEERS {
        let node = &nodes[i + 1];
        node.dial(addrs[0].clone()).await?;
        for j in links(i) {
            node.dial(addrs[j + 1].clone()).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let publisher = nodes[0].clone();
    let mut publish = |n: u64| {
        let publisher = publisher.clone();
        async move { Ok(publisher.post("bench", &text(n)).await?.0.to_vec()) }
    };
    let (runs, latency) = run_all(ledger, &mut publish).await?;
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok((runs, latency))
}

async fn dial_addrs(nodes: &[NodeHandle]) -> Result<Vec<Multiaddr>> {
    let mut out = Vec::new();
    for node in nodes {
        let addr = node
            .listen_addrs()
            .await?
            .into_iter()
            .next()
            .context("no address")?;
        out.push(addr.with(libp2p::multiaddr::Protocol::P2p(node.peer_id())));
    }
    Ok(out)
}

/// A plain gossipsub swarm like the node's (content ids, heartbeat, transmit size), except that it
/// checks the libp2p signature of every message (strict mode, libp2p's default): without records
/// signed inside, that signature is what authenticates plain gossipsub's messages.
fn plain_swarm() -> Result<libp2p::Swarm<gossipsub::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec())
                })
                .max_transmit_size(64 * 1024)
                .build()
                .map_err(|e| anyhow::anyhow!(e))?;
            Ok(gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                config,
            )
            .map_err(|e| anyhow::anyhow!(e))?)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

async fn plain(ledger: &Shared, payload_len: usize) -> Result<(Vec<Run>, Run)> {
    let topic = gossipsub::IdentTopic::new("bench");
    let mut swarms = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..=PEERS {
        let mut swarm = plain_swarm()?;
        swarm.behaviour_mut().subscribe(&topic)?;
        swarm.listen_on(loopback())?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        addrs.push(addr.with(libp2p::multiaddr::Protocol::P2p(*swarm.local_peer_id())));
        swarms.push(swarm);
    }
    for i in 0..PEERS {
        swarms[i + 1].dial(addrs[0].clone())?;
        for j in links(i) {
            swarms[i + 1].dial(addrs[j + 1].clone())?;
        }
    }
    let mut publisher = swarms.remove(0);
    for mut swarm in swarms {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                    swarm.select_next_some().await
                {
                    note_received(&ledger, message.data[..8].to_vec());
                }
            }
        });
    }
    let (to_publisher, mut publish_requests) =
        tokio::sync::mpsc::channel::<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                request = publish_requests.recv() => {
                    let Some((data, done)) = request else { break };
                    let _ = publisher.behaviour_mut().publish(topic.clone(), data);
                    let _ = done.send(());
                }
                _ = publisher.select_next_some() => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut publish = |n: u64| {
        let to_publisher = to_publisher.clone();
        async move {
            let mut data = n.to_be_bytes().to_vec();
            data.resize(payload_len, b'x');
            let key = data[..8].to_vec();
            let (done, wait) = tokio::sync::oneshot::channel();
            to_publisher
                .send((data, done))
                .await
                .map_err(|_| anyhow::anyhow!("publisher ended"))?;
            wait.await?;
            Ok(key)
        }
    };
    let (runs, latency) = run_all(ledger, &mut publish).await?;
    Ok((runs, latency))
}

impl Run {
    /// Whether every peer got (nearly) every record and the publisher kept up with the rate.
    fn counts(&self) -> bool {
        self.share >= COMPLETE && self.achieved >= KEPT_UP * f64::from(self.rate)
    }
}

/// The highest achieved rate among the runs that count.
fn best(runs: &[Run]) -> f64 {
    runs.iter()
        .filter(|r| r.counts())
        .map(|r| r.achieved)
        .fold(0.0, f64::max)
}

fn print(name: &str, runs: &[Run], latency: &Run) {
    println!(
        "{name}: latency at {} rec/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, delivered {:.1} %",
        latency.rate,
        latency.p50,
        latency.p99,
        latency.max,
        latency.share * 100.0
    );
    for run in runs {
        println!(
            "{name}: {:>4} rec/s (achieved {:>6.1}) to {PEERS} peers: delivered {:>5.1} %, p50 {:>7.1} ms, p99 {:>7.1} ms",
            run.rate,
            run.achieved,
            run.share * 100.0,
            run.p50,
            run.p99
        );
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ledger: Shared = Arc::default();
        let payload = envelope_len()?;
        println!("{PEERS} room peers and a publisher on loopback TCP; gossip payload {payload} bytes");
        let (g_runs, g_latency) = grapevine(&ledger).await?;
        let ledger: Shared = Arc::default();
        let (p_runs, p_latency) = plain(&ledger, payload).await?;
        print("grapevine", &g_runs, &g_latency);
        print("plain gossipsub", &p_runs, &p_latency);
        let (g, p) = (best(&g_runs), best(&p_runs));
        let plain_ceiling = p_runs.iter().all(Run::counts);
        println!(
            "highest rate delivered to every peer: grapevine {g:.0} rec/s, plain gossipsub {p:.0} rec/s{}, ratio {:.2}",
            if plain_ceiling { " (every rate tried)" } else { "" },
            if p == 0.0 { f64::NAN } else { g / p }
        );
        if g == 0.0 && p == 0.0 {
            bail!("neither delivered at the lowest rate");
        }
        Ok(())
    })
}
