//! A raw gossipsub peer publishing junk, invalid Automerge changes and forged records on a room
//! topic is refused, and the node keeps working.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use automerge::legacy::{Key, OpType};
use automerge::transaction::Transactable;
use automerge::{ActorId, Change, ExpandedChange, ScalarValue};
use grapevine_node::behaviour::Envelope;
use grapevine_node::behaviour::{SYNC_PROTOCOL, SyncCodec, SyncRequest};
use grapevine_node::crdt::{Identity, RecordId, Room, RoomId, SignedRecord, record_object};
use grapevine_node::{Node, NodeEvent, NodeHandle, Transport, room_topic};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport as _, gossipsub, noise, yamux};
use sha2::{Digest, Sha256};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The memory transport with Noise and Yamux, as the node builds it.
fn memory_transport(
    key: &Keypair,
) -> Result<libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    Ok(MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .boxed())
}

/// A bare gossipsub peer on the memory transport that dials `target`, subscribes to `topic`, and
/// publishes one payload every `gap` once anyone there listens. Runs until the returned task is
/// aborted.
fn spawn_hostile_peer(
    target: Multiaddr,
    topic: gossipsub::IdentTopic,
    payloads: Vec<Vec<u8>>,
    gap: Duration,
) -> Result<(libp2p::PeerId, tokio::task::JoinHandle<()>)> {
    spawn_hostile_peer_as(Keypair::generate_ed25519(), target, topic, payloads, gap)
}

/// A bare gossipsub swarm on the memory transport under `key`, subscribed to `topic`.
fn bare_gossip_peer(
    key: Keypair,
    topic: &gossipsub::IdentTopic,
) -> Result<Swarm<gossipsub::Behaviour>> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(memory_transport)?
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .heartbeat_initial_delay(Duration::from_millis(50))
                .heartbeat_interval(Duration::from_millis(100))
                .build()?;
            let behaviour: gossipsub::Behaviour = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                config,
            )?;
            Ok(behaviour)
        })?
        .build();
    swarm.behaviour_mut().subscribe(topic)?;
    Ok(swarm)
}

/// [`spawn_hostile_peer`] under the identity `key`.
fn spawn_hostile_peer_as(
    key: Keypair,
    target: Multiaddr,
    topic: gossipsub::IdentTopic,
    payloads: Vec<Vec<u8>>,
    gap: Duration,
) -> Result<(libp2p::PeerId, tokio::task::JoinHandle<()>)> {
    let mut swarm = bare_gossip_peer(key, &topic)?;
    let peer = *swarm.local_peer_id();
    swarm.dial(target)?;
    let task = tokio::spawn(async move {
        let mut pending = payloads.into_iter().rev().collect::<Vec<_>>();
        let mut tick = tokio::time::interval(gap);
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                _ = tick.tick() => {
                    if let Some(payload) = pending.last()
                        && swarm.behaviour_mut().publish(topic.clone(), payload.clone()).is_ok()
                    {
                        pending.pop();
                    }
                }
            }
        }
    });
    Ok((peer, task))
}

/// A bare peer on the memory transport that speaks only `/grapevine/sync/1`.
fn raw_sync_peer() -> Result<Swarm<request_response::Behaviour<SyncCodec>>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(memory_transport)?
        .with_behaviour(|_| {
            request_response::Behaviour::<SyncCodec>::new(
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })?
        .build())
}

/// Re-encodes a change after `edit` alters its decoded form: how a hostile peer crafts changes
/// that are valid Automerge but carry a forged record.
fn tamper(change: &[u8], edit: impl FnOnce(&mut ExpandedChange)) -> Result<Vec<u8>> {
    let mut expanded = Change::try_from(change)?.decode();
    edit(&mut expanded);
    Ok(Change::from(expanded).raw_bytes().to_vec())
}

/// Puts `record` (signed bytes, of `room`'s epoch 0) into the change in place of its own record,
/// keyed by its id in the object its id names, under the actor a record of those bytes has, as a
/// forger who knows the format would.
fn with_record_bytes(room: &RoomId, change: &[u8], record: Vec<u8>) -> Result<Vec<u8>> {
    let id = RecordId(Sha256::digest(&record).into());
    let object = record_object(room, 0, &id);
    let actor = SignedRecord::decode_trusted(&record)?.actor_id();
    tamper(change, |expanded| {
        expanded.actor_id = ActorId::from(&actor[..]);
        let op = &mut expanded.operations[0];
        op.obj = object;
        op.action = OpType::Put(ScalarValue::Bytes(record));
        op.key = Key::Map(id.to_string().into());
    })
}

/// Records that must never be accepted, each inside a well-formed Automerge change on `room`:
/// the honest author's text rewritten by Mallory and signed by her key, and a signature with one
/// bit flipped.
fn forged_changes(room: &str) -> Result<Vec<Vec<u8>>> {
    let honest = Identity::generate();
    let mallory = Identity::generate();
    let room = RoomId::for_public_name(room)?;
    let mut replica = Room::in_memory(room, honest);
    let written = replica.post("an honest message")?;
    let signed: &SignedRecord = &written.record;
    let content_len = signed.bytes().len() - 64;

    let mut rewritten = signed.bytes().to_vec();
    let signature = mallory.sign(&rewritten[..content_len]);
    rewritten[content_len..].copy_from_slice(&signature);

    let mut flipped = signed.bytes().to_vec();
    flipped[content_len] ^= 1;

    Ok(vec![
        with_record_bytes(&room, &written.change, rewritten)?,
        with_record_bytes(&room, &written.change, flipped)?,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_forgeries_on_a_room_topic_are_rejected_and_the_node_keeps_working() -> Result<()>
{
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, mut events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    b.join("lobby").await?;

    let mut junk_change = Vec::new();
    ciborium::into_writer(
        &ciborium::Value::Map(vec![(
            ciborium::Value::Text("c".into()),
            ciborium::Value::Bytes(b"not an automerge change".to_vec()),
        )]),
        &mut junk_change,
    )?;
    let mut not_a_record = automerge::AutoCommit::new();
    not_a_record.put(automerge::ROOT, "text", "not a record")?;
    let not_a_record = not_a_record
        .get_last_local_change()
        .context("a change was made")?
        .raw_bytes()
        .to_vec();
    let forged = forged_changes("lobby")?;
    let mut payloads = vec![
        b"\xff\x00 garbage".to_vec(),
        junk_change,
        Envelope::encode(&not_a_record),
    ];
    payloads.extend(forged.iter().map(|change| Envelope::encode(change)));
    let target = a.listen_addrs().await?.remove(0);
    let topic = room_topic(RoomId::for_public_name("lobby")?);
    let payloads_sent = payloads.len();
    let (hostile, task) = spawn_hostile_peer(target, topic, payloads, Duration::from_millis(50))?;

    let mut reasons = Vec::new();
    for _ in 0..payloads_sent {
        reasons.push(
            common::next_matching(&mut events_a, |e| match e {
                NodeEvent::Warning { peer, reason } if *peer == Some(hostile) => {
                    Some(reason.clone())
                }
                _ => None,
            })
            .await?,
        );
    }
    let forgeries_caught = reasons.iter().filter(|r| r.contains("signature")).count();
    assert_eq!(forgeries_caught, forged.len(), "warnings: {reasons:?}");
    // Rejected messages cost the sender gossipsub score.
    common::eventually("the hostile peer's score is negative", || async {
        Ok(a.peer_score(hostile)
            .await?
            .is_some_and(|score| score < 0.0))
    })
    .await?;

    common::connect(&b, &a).await?;
    let id = b.post("lobby", "still here").await?;
    common::next_matching(&mut events_a, |e| match e {
        NodeEvent::RecordsReceived { records, .. } if records.iter().any(|r| r.id == id) => {
            Some(())
        }
        _ => None,
    })
    .await?;
    assert_eq!(a.view("lobby").await?.messages.len(), 1);
    task.abort();
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

/// `count` different records of `room` whose signature is wrong only in the low bytes of `S`
/// (canonical, with a valid `R`), each in a well-formed change in an envelope: every one passes
/// the cheap rules and costs a full signature check.
fn bad_signature_spam(room: &str, count: u64) -> Result<Vec<Vec<u8>>> {
    let room = RoomId::for_public_name(room)?;
    let mut replica = Room::in_memory(room, Identity::generate());
    let written = replica.post("spam")?;
    let record = written.record.bytes();
    let low_s = record.len() - 32;
    (1..=count)
        .map(|i| {
            let mut bad = record.to_vec();
            bad[low_s..low_s + 8].copy_from_slice(&i.to_le_bytes());
            Ok(Envelope::encode(&with_record_bytes(
                &room,
                &written.change,
                bad,
            )?))
        })
        .collect()
}

/// Waits (bounded) until `node` scores `spammer` below the graylist threshold.
async fn until_graylisted(node: &NodeHandle, spammer: PeerId) -> Result<()> {
    let graylist = grapevine_node::behaviour::score_thresholds().graylist_threshold;
    common::eventually("the spammer is graylisted", || async {
        Ok(node
            .gossip_source(spammer)
            .await?
            .score
            .is_some_and(|score| score < graylist))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graylisted_spammer_stays_graylisted_and_costs_no_more_signature_checks() -> Result<()> {
    /// How long the spammer is watched once graylisted: gossipsub's default P4 decay (0.3 a
    /// second) let a spammer out of the graylist within about two seconds.
    const WATCHED: Duration = Duration::from_secs(8);
    let graylist = grapevine_node::behaviour::score_thresholds().graylist_threshold;
    let dir = tempfile::tempdir()?;
    let (a, _events) = Node::spawn(common::config(dir.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    // About 100 records a second for longer than the test runs.
    let spam = bad_signature_spam("lobby", 3_000)?;
    let target = a.listen_addrs().await?.remove(0);
    let topic = room_topic(RoomId::for_public_name("lobby")?);
    let (spammer, task) = spawn_hostile_peer(target, topic, spam, Duration::from_millis(10))?;

    until_graylisted(&a, spammer).await?;
    let at_graylisting = a.gossip_source(spammer).await?;
    assert!(at_graylisting.signature_checks > 0, "{at_graylisting:?}");
    let until = tokio::time::Instant::now() + WATCHED;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = a.gossip_source(spammer).await?;
        assert!(
            now.score.is_some_and(|score| score < graylist),
            "the spammer got out of the graylist: {now:?}"
        );
        assert_eq!(
            now.signature_checks, at_graylisting.signature_checks,
            "a signature was checked for the graylisted spammer"
        );
    }
    task.abort();
    a.shutdown().await?;
    Ok(())
}

/// What became of one connection a peer opened.
#[derive(Debug, PartialEq, Eq)]
enum Dialled {
    /// The connection opened and was still open when the watch ended.
    KeptOpen,
    /// It opened, then the other side closed it.
    ClosedByTheOtherSide,
    /// It never opened.
    Failed(String),
}

/// Dials `target` from a bare gossipsub peer under `key` and watches that one connection for
/// `watch` at most.
async fn dial_and_watch(
    key: Keypair,
    target: Multiaddr,
    topic: &gossipsub::IdentTopic,
    watch: Duration,
) -> Result<Dialled> {
    let mut swarm = bare_gossip_peer(key, topic)?;
    swarm.dial(target)?;
    let watched = tokio::time::timeout(watch, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionClosed { .. } => return Dialled::ClosedByTheOtherSide,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Dialled::Failed(error.to_string());
                }
                _ => {}
            }
        }
    })
    .await;
    Ok(watched.unwrap_or(Dialled::KeptOpen))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graylisted_spammer_is_disconnected_and_refused_when_it_comes_back() -> Result<()> {
    /// Long enough for a refused connection to be closed many times over (it is closed as soon
    /// as it is established), short enough for the test.
    const WATCH: Duration = Duration::from_secs(3);
    let graylist = grapevine_node::behaviour::score_thresholds().graylist_threshold;
    let dir = tempfile::tempdir()?;
    let (a, _events) = Node::spawn(common::config(dir.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    let target = a.listen_addrs().await?.remove(0);
    let topic = room_topic(RoomId::for_public_name("lobby")?);
    let key = Keypair::generate_ed25519();

    // An honest-looking peer under the key stays connected while it sends nothing invalid.
    let quiet = dial_and_watch(key.clone(), target.clone(), &topic, WATCH).await?;
    assert_eq!(quiet, Dialled::KeptOpen);

    let spam = bad_signature_spam("lobby", 3_000)?;
    let (spammer, task) = spawn_hostile_peer_as(
        key.clone(),
        target.clone(),
        topic.clone(),
        spam,
        Duration::from_millis(10),
    )?;
    until_graylisted(&a, spammer).await?;
    common::eventually("the spammer is disconnected", || async {
        Ok(a.peer_connections(spammer).await?.is_empty())
    })
    .await?;
    task.abort();
    let checks = a.gossip_source(spammer).await?.signature_checks;

    // Back under the same identity: its connections are closed as they open.
    let again = dial_and_watch(key, target, &topic, WATCH).await?;
    assert_eq!(again, Dialled::ClosedByTheOtherSide);
    let after = a.gossip_source(spammer).await?;
    assert!(
        after.score.is_some_and(|score| score < graylist),
        "{after:?}"
    );
    assert_eq!(after.signature_checks, checks);
    assert!(a.peer_connections(spammer).await?.is_empty());
    a.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sync_message_is_refused_and_sync_keeps_working() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a, mut events_a) = Node::spawn(common::config(dir_a.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    for i in 0..3 {
        a.post("lobby", &format!("message {i}")).await?;
    }

    let mut hostile = raw_sync_peer()?;
    let hostile_id = *hostile.local_peer_id();
    hostile.dial(a.listen_addrs().await?.remove(0))?;
    let request = SyncRequest {
        room: RoomId::for_public_name("lobby")?,
        start: true,
        message: Some(b"\x01 not a sync message".to_vec()),
        catching_up: false,
    };
    let response = tokio::time::timeout(common::WAIT, async {
        loop {
            match hostile.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    hostile
                        .behaviour_mut()
                        .send_request(&peer_id, request.clone());
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return response,
                _ => {}
            }
        }
    })
    .await?;
    assert!(
        response.message.is_none(),
        "a refused message gets no answer"
    );
    common::next_matching(&mut events_a, |e| match e {
        NodeEvent::Warning { peer, reason } if *peer == Some(hostile_id) => Some(reason.clone()),
        _ => None,
    })
    .await?;
    drop(hostile);

    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    common::connect(&b, &a).await?;
    b.join("lobby").await?;
    common::wait_for_messages(&b, "lobby", 3).await?;
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_sync_requests_is_answered_only_within_its_budget() -> Result<()> {
    const REQUESTS: usize = 200;
    let dir = tempfile::tempdir()?;
    let (a, mut events_a) = Node::spawn(common::config(dir.path(), Transport::Memory)).await?;
    a.join("lobby").await?;
    a.post("lobby", "worth asking for").await?;

    let mut flooder = raw_sync_peer()?;
    let flooder_id = *flooder.local_peer_id();
    flooder.dial(a.listen_addrs().await?.remove(0))?;
    // Each request starts a fresh exchange, asking for the whole history again.
    let request = SyncRequest {
        room: RoomId::for_public_name("lobby")?,
        start: true,
        message: None,
        catching_up: false,
    };
    let started = std::time::Instant::now();
    let (mut sent, mut answered, mut refused) = (0, 0, 0);
    tokio::time::timeout(common::WAIT, async {
        while answered + refused < REQUESTS {
            match flooder.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    flooder
                        .behaviour_mut()
                        .send_request(&peer_id, request.clone());
                    sent += 1;
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    peer,
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => {
                    if response.message.is_some() {
                        answered += 1;
                    } else {
                        refused += 1;
                    }
                    if sent < REQUESTS {
                        flooder.behaviour_mut().send_request(&peer, request.clone());
                        sent += 1;
                    }
                }
                _ => {}
            }
        }
    })
    .await?;
    let budget = grapevine_node::config::DEFAULT_SYNC_EXCHANGES_PER_PEER;
    let allowed =
        f64::from(budget.burst) + started.elapsed().as_secs_f64() * budget.per_second + 1.0;
    assert!(answered >= 1, "the first requests are answered");
    assert!(
        (answered as f64) <= allowed,
        "{answered} of {REQUESTS} fresh exchanges answered, budget {allowed:.1}"
    );
    let reason = common::next_matching(&mut events_a, |e| match e {
        NodeEvent::Warning { peer, reason } if *peer == Some(flooder_id) => Some(reason.clone()),
        _ => None,
    })
    .await?;
    assert!(reason.contains("too many sync requests"), "{reason}");
    drop(flooder);

    // Other peers have budgets of their own.
    let dir_b = tempfile::tempdir()?;
    let (b, _events_b) = Node::spawn(common::config(dir_b.path(), Transport::Memory)).await?;
    common::connect(&b, &a).await?;
    b.join("lobby").await?;
    common::wait_for_messages(&b, "lobby", 1).await?;
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

/// A member whose first dial to its bootstrap node failed, and whom a peer serving no DHT dialled
/// meanwhile (a spammer, say), keeps redialling the bootstrap node: that connection gives it
/// nobody to look its rooms up through. (With the redial stopped by any connection, 31 of the
/// 80 members of netsim's `sig-spam` stayed stranded among spammers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dialled_only_by_a_stranger_still_redials_its_bootstrap_node() -> Result<()> {
    let bootstrap_addr: Multiaddr =
        format!("/memory/{}", rand::random::<u32>() | 1 << 31).parse()?;
    let (dir_member, dir_bootstrap) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut config = common::config(dir_member.path(), Transport::Memory);
    config.bootstrap = vec![bootstrap_addr.clone()];
    let (member, _events) = Node::spawn(config).await?;
    member.join("lobby").await?;
    let target = member.listen_addrs().await?.remove(0);
    let topic = room_topic(RoomId::for_public_name("lobby")?);
    let (stranger, _stranger_task) =
        spawn_hostile_peer(target, topic, Vec::new(), Duration::from_millis(50))?;
    common::eventually("the stranger is connected", || async {
        Ok(member.peers().await?.contains(&stranger))
    })
    .await?;

    // Only now does the bootstrap node listen: the member's first dial found nobody.
    let bootstrap_config = grapevine_node::Config {
        transport: Transport::Memory,
        ..grapevine_node::Config::bootstrap_node(dir_bootstrap.path(), vec![bootstrap_addr])
    };
    let (bootstrap, _bootstrap_events) = Node::spawn(bootstrap_config).await?;
    common::eventually("the member reaches its bootstrap node", || async {
        Ok(member.peers().await?.contains(&bootstrap.peer_id()))
    })
    .await?;
    Ok(())
}
