//! A Kademlia range attack on loopback TCP: many sybil ids from one address range (127.0.9.0/24),
//! ground so their XOR distance to a room's provider key is small, join the DHT before the room's
//! members announce themselves, drop every provider record they are given and answer every
//! lookup with one another only. Honest nodes, each on its own 127.0.x.0/24, must still find the
//! room's members, and no routing table may hold more peers of one range than the quota.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use grapevine_node::behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, room_provider_key};
use grapevine_node::crdt::{Identity, RoomId};
use grapevine_node::{
    Config, IDENTITY_FILE, Limits, Node, NodeEvent, NodeHandle, RangeQuota, Transport,
};
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad, noise, tcp, yamux};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const ROOM: &str = "lobby";
/// The sybils' /24: every one of them listens on an address of it.
const SYBIL_RANGE: [u8; 3] = [127, 0, 9];
/// Bits of the room key's Kademlia hash that every sybil id shares: 256 key pairs per sybil on
/// average, and far closer to the key than any honest id among a few tens.
const GROUND_BITS: u32 = 8;
/// A bound on the key pairs tried for one sybil: 2^8 are expected, this many fail with
/// probability e^-4096.
const MAX_GRIND_TRIES: u32 = 1 << 20;
/// Provider lookups each honest node makes, at once, after everyone has announced the room.
const LOOKUPS_PER_NODE: usize = 3;
/// The longest a lookup may take before it counts as failed: longer than Kademlia's query
/// timeout (60 s), which ends a lookup that waits on peers that never answer.
const LOOKUP_WAIT: Duration = Duration::from_secs(70);
/// Share of honest lookups that must find an honest provider.
const REQUIRED_SUCCESS: f64 = 0.95;
/// Time for the members' announcements (a DHT walk, then the records sent) to complete.
const ANNOUNCE_TIME: Duration = Duration::from_secs(3);

/// The sybils' protocols: identify (so honest nodes learn their addresses and that they serve
/// the DHT) and Kademlia in server mode.
#[derive(NetworkBehaviour)]
struct SybilBehaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
}

/// Kademlia hash of the room's provider key: what sybil ids are ground towards.
fn room_target() -> Result<kad::KBucketKey<kad::RecordKey>> {
    Ok(kad::KBucketKey::new(room_provider_key(
        RoomId::for_public_name(ROOM)?,
    )))
}

/// A key pair whose peer id shares the first [`GROUND_BITS`] bits with `target`.
fn ground_keypair(rng: &mut StdRng, target: &kad::KBucketKey<kad::RecordKey>) -> Result<Keypair> {
    for _ in 0..MAX_GRIND_TRIES {
        let keypair = Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>())?;
        let distance = kad::KBucketKey::from(keypair.public().to_peer_id()).distance(target);
        if distance.ilog2().is_none_or(|log| log < 256 - GROUND_BITS) {
            return Ok(keypair);
        }
    }
    bail!("no key pair near the room key in {MAX_GRIND_TRIES} tries")
}

/// A sybil listening on `ip`: Kademlia server that adds peers to its table only when told (so
/// it knows only other sybils and answers every lookup with them) and never stores a record.
async fn sybil(keypair: Keypair, ip: Ipv4Addr) -> Result<(Swarm<SybilBehaviour>, Multiaddr)> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let mut config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            config.set_kbucket_inserts(kad::BucketInserts::Manual);
            config.set_record_filtering(kad::StoreInserts::FilterBoth);
            let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), config);
            kad.set_mode(Some(kad::Mode::Server));
            let identify = identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.to_string(),
                key.public(),
            ));
            Ok(SybilBehaviour { identify, kad })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm.listen_on(
        Multiaddr::empty()
            .with(Protocol::Ip4(ip))
            .with(Protocol::Tcp(0)),
    )?;
    let addr = tokio::time::timeout(common::WAIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .context("a sybil never reported its listen address")?;
    Ok((swarm, addr))
}

/// Starts `count` sybils: they know one another, dial every address of `targets`, and run until
/// their tasks are aborted.
async fn spawn_sybils(
    rng: &mut StdRng,
    count: usize,
    targets: &[Multiaddr],
) -> Result<Vec<JoinHandle<()>>> {
    let target = room_target()?;
    let mut swarms = Vec::new();
    for i in 0..count {
        let host = u8::try_from(i + 1).context("at most 254 sybils per /24")?;
        let [a, b, c] = SYBIL_RANGE;
        let keypair = ground_keypair(rng, &target)?;
        swarms.push(sybil(keypair, Ipv4Addr::new(a, b, c, host)).await?);
    }
    let known: Vec<(PeerId, Multiaddr)> = swarms
        .iter()
        .map(|(swarm, addr)| (*swarm.local_peer_id(), addr.clone()))
        .collect();
    let mut tasks = Vec::new();
    for (mut swarm, _) in swarms {
        for (peer, addr) in &known {
            if peer != swarm.local_peer_id() {
                swarm.behaviour_mut().kad.add_address(peer, addr.clone());
            }
        }
        for addr in targets {
            swarm.dial(addr.clone())?;
        }
        tasks.push(tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        }));
    }
    Ok(tasks)
}

/// The honest side: a bootstrap node and members, each on its own /24 of loopback.
struct Honest {
    nodes: Vec<NodeHandle>,
    addrs: Vec<Multiaddr>,
    _dirs: Vec<TempDir>,
    _events: Vec<mpsc::Receiver<NodeEvent>>,
}

/// Loopback address of honest node `i` (0 is the bootstrap node): 127.0.(20 + i).1.
fn honest_ip(i: usize) -> Result<Ipv4Addr> {
    Ok(Ipv4Addr::new(127, 0, u8::try_from(20 + i)?, 1))
}

fn listen_on(ip: Ipv4Addr) -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(ip))
        .with(Protocol::Tcp(0))
}

/// A data directory holding a device key drawn from `rng`, so a seed gives the same peer ids.
fn seeded_dir(rng: &mut StdRng) -> Result<TempDir> {
    let dir = tempfile::tempdir()?;
    Identity::from_secret_bytes(rng.random()).save(&dir.path().join(IDENTITY_FILE))?;
    Ok(dir)
}

/// Starts a bootstrap node and `members` nodes that serve the DHT and know only it; `quota`
/// is every honest node's routing-table quota per address range.
async fn honest_nodes(rng: &mut StdRng, members: usize, quota: RangeQuota) -> Result<Honest> {
    let limits = |base: Limits| Limits {
        kad_range_quota: quota,
        ..base
    };
    let dir = seeded_dir(rng)?;
    let config = Config::bootstrap_node(dir.path(), vec![listen_on(honest_ip(0)?)]);
    let config = Config {
        limits: limits(config.limits),
        ..config
    };
    let (bootstrap, rx) = Node::spawn(config).await?;
    let bootstrap_addr = common::first_addr(&bootstrap).await?;
    let mut honest = Honest {
        nodes: vec![bootstrap.clone()],
        addrs: vec![bootstrap_addr.clone()],
        _dirs: vec![dir],
        _events: vec![rx],
    };
    for i in 1..=members {
        let dir = seeded_dir(rng)?;
        let config = Config {
            listen_addrs: vec![listen_on(honest_ip(i)?)],
            bootstrap: vec![bootstrap_addr.clone()],
            reachable: true,
            limits: limits(Limits::default()),
            ..common::config(dir.path(), Transport::Tcp)
        };
        let (node, rx) = Node::spawn(config).await?;
        honest.addrs.push(common::first_addr(&node).await?);
        honest.nodes.push(node);
        honest._dirs.push(dir);
        honest._events.push(rx);
    }
    Ok(honest)
}

/// The /24 of an address's first IPv4 address, as the test sees it.
fn slash_24(addr: &Multiaddr) -> Option<[u8; 3]> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => {
            let [a, b, c, _] = ip.octets();
            Some([a, b, c])
        }
        _ => None,
    })
}

/// The most peers of one /24 in one node's routing table, in one k-bucket and in all, and how
/// many sybils it holds.
struct TableShape {
    most_in_bucket: usize,
    most_in_table: usize,
    sybils: usize,
}

async fn table_shape(node: &NodeHandle) -> Result<TableShape> {
    let local = kad::KBucketKey::from(node.peer_id());
    let mut per_bucket: HashMap<([u8; 3], Option<u32>), usize> = HashMap::new();
    let mut per_table: HashMap<[u8; 3], usize> = HashMap::new();
    for entry in node.routing_table().await? {
        let Some(range) = entry.addresses.iter().find_map(slash_24) else {
            continue;
        };
        let bucket = local.distance(&kad::KBucketKey::from(entry.peer)).ilog2();
        *per_bucket.entry((range, bucket)).or_default() += 1;
        *per_table.entry(range).or_default() += 1;
    }
    Ok(TableShape {
        most_in_bucket: per_bucket.values().copied().max().unwrap_or(0),
        most_in_table: per_table.values().copied().max().unwrap_or(0),
        sybils: per_table.get(&SYBIL_RANGE).copied().unwrap_or(0),
    })
}

/// What one attack run measured.
struct Outcome {
    lookups: usize,
    found_honest: usize,
    shapes: Vec<TableShape>,
}

impl Outcome {
    fn success(&self) -> f64 {
        self.found_honest as f64 / self.lookups as f64
    }
}

/// Runs the attack: honest nodes up, sybils in their tables, then the members announce the room
/// and every member looks it up [`LOOKUPS_PER_NODE`] times. Every key comes from `seed`.
async fn attack(seed: u64, members: usize, sybils: usize, quota: RangeQuota) -> Result<Outcome> {
    println!("seed {seed}");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let honest = honest_nodes(&mut rng, members, quota).await?;
    let sybil_tasks = spawn_sybils(&mut rng, sybils, &honest.addrs).await?;
    // The sybils are in the DHT before the members announce the room: every honest table holds
    // some of them (at most the quota).
    common::eventually("every honest routing table holds sybils", || async {
        for node in &honest.nodes {
            if table_shape(node).await?.sybils == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let members_nodes = &honest.nodes[1..];
    for member in members_nodes {
        member.join(ROOM).await?;
    }
    tokio::time::sleep(ANNOUNCE_TIME).await;
    let honest_peers: Vec<PeerId> = honest.nodes.iter().map(NodeHandle::peer_id).collect();
    let mut lookups = Vec::new();
    for member in members_nodes {
        for _ in 0..LOOKUPS_PER_NODE {
            let member = member.clone();
            let honest_peers = honest_peers.clone();
            lookups.push(tokio::spawn(async move {
                // A lookup still running after the wait found nobody in time: a failure.
                let Ok(providers) =
                    tokio::time::timeout(LOOKUP_WAIT, member.look_up_room(ROOM)).await
                else {
                    return anyhow::Ok(false);
                };
                anyhow::Ok(
                    providers?
                        .iter()
                        .any(|p| *p != member.peer_id() && honest_peers.contains(p)),
                )
            }));
        }
    }
    let mut found_honest = 0;
    for lookup in lookups {
        found_honest += usize::from(lookup.await??);
    }
    let mut shapes = Vec::new();
    for node in &honest.nodes {
        shapes.push(table_shape(node).await?);
    }
    for task in sybil_tasks {
        task.abort();
    }
    for node in &honest.nodes {
        node.shutdown().await?;
    }
    let outcome = Outcome {
        lookups: members * LOOKUPS_PER_NODE,
        found_honest,
        shapes,
    };
    println!(
        "seed {seed}: {members} members, {sybils} sybils, quota {} per bucket / {} per table: {}/{} lookups \
         found an honest member ({:.1} %); sybils per table {:?}; most of one /24 in a bucket {:?}, \
         in a table {:?}; {:.1} s",
        quota.per_bucket,
        quota.per_table,
        outcome.found_honest,
        outcome.lookups,
        outcome.success() * 100.0,
        outcome.shapes.iter().map(|s| s.sybils).collect::<Vec<_>>(),
        outcome
            .shapes
            .iter()
            .map(|s| s.most_in_bucket)
            .collect::<Vec<_>>(),
        outcome
            .shapes
            .iter()
            .map(|s| s.most_in_table)
            .collect::<Vec<_>>(),
        started.elapsed().as_secs_f64(),
    );
    Ok(outcome)
}

/// The pass criteria: at least [`REQUIRED_SUCCESS`] of the lookups find an honest member, and
/// no routing table holds more of one /24 than the quota.
fn check(outcome: &Outcome, quota: RangeQuota) -> Result<()> {
    ensure!(
        outcome.success() >= REQUIRED_SUCCESS,
        "only {}/{} lookups found an honest member",
        outcome.found_honest,
        outcome.lookups
    );
    for (i, shape) in outcome.shapes.iter().enumerate() {
        ensure!(
            shape.most_in_bucket <= quota.per_bucket && shape.most_in_table <= quota.per_table,
            "node {i} holds {} peers of one /24 in a bucket and {} in its table",
            shape.most_in_bucket,
            shape.most_in_table
        );
    }
    Ok(())
}

/// A quota so large that it never refuses: routing tables as they were without one.
const NO_QUOTA: RangeQuota = RangeQuota {
    per_bucket: usize::MAX,
    per_table: usize::MAX,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_from_one_range_near_a_room_key_do_not_stop_honest_lookups() -> Result<()> {
    let quota = RangeQuota::default();
    let outcome = attack(1, 8, 30, quota).await?;
    check(&outcome, quota)
}

/// The same attack against nodes without the quota: the sybils fill the buckets lookups of the
/// room go through, and lookups fail. Shows the attack above is one the quota stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_quota_the_same_sybils_stop_most_lookups() -> Result<()> {
    let outcome = attack(1, 8, 30, NO_QUOTA).await?;
    ensure!(
        outcome.success() < REQUIRED_SUCCESS,
        "{}/{} lookups found an honest member without the quota",
        outcome.found_honest,
        outcome.lookups
    );
    Ok(())
}

/// Full size, run by hand (`cargo test -p grapevine-node --release --test kademlia_sybils --
/// --ignored --nocapture`): 20 members and 100 sybils, with the quota and without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full size: run by hand"]
async fn full_size_range_attack() -> Result<()> {
    let quota = RangeQuota::default();
    let outcome = attack(2, 20, 100, quota).await?;
    check(&outcome, quota)?;
    let without = attack(2, 20, 100, NO_QUOTA).await?;
    println!("without the quota: {:.1} %", without.success() * 100.0);
    Ok(())
}
