//! Integration tests of history sync between replicas: catch-up, divergence, quiet sync and
//! hostile or damaged sync messages.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Instant;

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use automerge::sync::{BloomFilter, ChunkList, Have, Message, MessageVersion};
use automerge::{Change, ChangeHash};
use grapevine_crdt::room::EPOCH_CAPACITY;
use grapevine_crdt::sync::{SyncProgress, WIRE_FORMAT_DEFLATE};
use grapevine_crdt::{Identity, Room, RoomError, RoomId, SyncError, SyncSession};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteArray, ByteBuf};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Upper bound on the rounds of any sync exchange in these tests.
const MAX_ROUNDS: usize = 50;

/// A mirror of the crate's sync wire format (a format byte, then the CBOR
/// `{"p": [[epoch, deflated part]…], "s": [[epoch, digest]…]}`), with parts inflated, so tests can
/// look inside real messages and build damaged ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    p: Vec<(u32, ByteBuf)>,
    s: Vec<(u32, ByteArray<32>)>,
}

fn decode_wire(bytes: &[u8]) -> Wire {
    assert_eq!(bytes[0], WIRE_FORMAT_DEFLATE);
    let mut wire: Wire = ciborium::from_reader(&bytes[1..]).unwrap();
    for (_, part) in &mut wire.p {
        let mut inflated = Vec::new();
        DeflateDecoder::new(&part[..])
            .read_to_end(&mut inflated)
            .unwrap();
        *part = ByteBuf::from(inflated);
    }
    wire
}

fn encode_wire(wire: &Wire) -> Vec<u8> {
    let mut compressed = wire.clone();
    for (_, part) in &mut compressed.p {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(part).unwrap();
        *part = ByteBuf::from(encoder.finish().unwrap());
    }
    let mut out = vec![WIRE_FORMAT_DEFLATE];
    ciborium::into_writer(&compressed, &mut out).unwrap();
    out
}

/// Number of Automerge changes carried by a sync message.
fn changes_carried(bytes: &[u8]) -> usize {
    decode_wire(bytes)
        .p
        .iter()
        .map(|(_, part)| Message::decode(part).unwrap().changes.len())
        .sum()
}

fn lobby() -> RoomId {
    RoomId::for_public_name("lobby").unwrap()
}

fn replica(room: RoomId) -> Room {
    Room::in_memory(room, Identity::generate())
}

/// A fresh replica of `room` holding exactly the given changes.
fn replica_with(room: RoomId, changes: &[Vec<u8>]) -> Room {
    let mut fresh = replica(room);
    let report = fresh.apply_remote(changes).unwrap();
    assert!(report.outcomes.iter().all(Result::is_ok));
    assert!(!report.has_waiting());
    fresh
}

fn post_many(room: &mut Room, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| room.post(&format!("message {i}")).unwrap().change)
        .collect()
}

/// What one sync exchange cost.
#[derive(Debug, Default, Clone, Copy)]
struct Exchange {
    /// Iterations in which at least one side sent a message (initiator, then responder).
    round_trips: usize,
    /// Messages sent, both ways.
    messages: usize,
    /// Bytes sent, both ways.
    bytes: usize,
    /// Records that arrived, both ways.
    new_records: usize,
}

/// Runs sync between `initiator` and `responder` with the given sessions until both sides
/// return `None`, for at most [`MAX_ROUNDS`] rounds; asserts that it finished.
fn exchange(
    initiator: &mut Room,
    initiator_session: &mut SyncSession,
    responder: &mut Room,
    responder_session: &mut SyncSession,
) -> Exchange {
    let mut cost = Exchange::default();
    for _ in 0..MAX_ROUNDS {
        let mut sent = false;
        if let Some(message) = initiator.generate_sync_message(initiator_session).unwrap() {
            sent = true;
            cost.messages += 1;
            cost.bytes += message.len();
            let progress = responder
                .receive_sync_message(responder_session, &message)
                .unwrap();
            cost.new_records += progress.new_records.len();
        }
        if let Some(message) = responder.generate_sync_message(responder_session).unwrap() {
            sent = true;
            cost.messages += 1;
            cost.bytes += message.len();
            let progress = initiator
                .receive_sync_message(initiator_session, &message)
                .unwrap();
            cost.new_records += progress.new_records.len();
        }
        if !sent {
            return cost;
        }
        cost.round_trips += 1;
    }
    panic!("sync did not finish within {MAX_ROUNDS} rounds: {cost:?}");
}

/// [`exchange`] with fresh sessions on both sides.
fn sync_fresh(initiator: &mut Room, responder: &mut Room) -> Exchange {
    exchange(
        initiator,
        &mut SyncSession::new(),
        responder,
        &mut SyncSession::new(),
    )
}

/// Asserts that two replicas hold the same history, the same records and show the same room.
fn assert_converged(a: &Room, b: &Room) {
    assert_eq!(a.heads(), b.heads(), "heads differ");
    assert_eq!(a.len(), b.len(), "record counts differ");
    for record in a.records() {
        assert!(b.record(&record.id).is_some(), "{:?} missing", record.id);
    }
    assert_eq!(a.view(), b.view(), "views differ");
}

/// Runs sync from an empty `receiver` towards `sender` and returns the first message `sender`
/// produced that carries changes, with `receiver` left as it was before that message.
fn first_message_with_changes(sender: &mut Room, receiver: &mut Room) -> Vec<u8> {
    let (mut ss, mut rs) = (SyncSession::new(), SyncSession::new());
    for _ in 0..MAX_ROUNDS {
        if let Some(message) = receiver.generate_sync_message(&mut rs).unwrap() {
            sender.receive_sync_message(&mut ss, &message).unwrap();
        }
        let message = sender
            .generate_sync_message(&mut ss)
            .unwrap()
            .expect("sender went quiet before sending its changes");
        if changes_carried(&message) > 0 {
            return message;
        }
        receiver.receive_sync_message(&mut rs, &message).unwrap();
    }
    panic!("no message with changes within {MAX_ROUNDS} rounds");
}

/// Feeds a message that must be refused; asserts it is, and that the room did not change.
fn assert_rejected(
    room: &mut Room,
    session: &mut SyncSession,
    bytes: &[u8],
    what: &str,
) -> SyncError {
    let heads = room.heads();
    let len = room.len();
    let view = room.view();
    let error = match room.receive_sync_message(session, bytes) {
        Ok(progress) => panic!("{what} was accepted: {progress:?}"),
        Err(error) => error,
    };
    assert_eq!(room.heads(), heads, "{what} ({error}) changed the heads");
    assert_eq!(room.len(), len, "{what} ({error}) changed the records");
    assert_eq!(room.view(), view, "{what} ({error}) changed the view");
    error
}

/// Feeds a message that may be refused or accepted; a refusal must leave the room unchanged.
/// Returns whether it was refused.
fn feed_damaged(room: &mut Room, session: &mut SyncSession, bytes: &[u8], what: &str) -> bool {
    let heads = room.heads();
    let len = room.len();
    match room.receive_sync_message(session, bytes) {
        Ok(SyncProgress { .. }) => false,
        Err(error) => {
            assert_eq!(room.heads(), heads, "{what} ({error}) changed the heads");
            assert_eq!(room.len(), len, "{what} ({error}) changed the records");
            true
        }
    }
}

/// After rejections: resets the session that saw them and checks that it still syncs the
/// receiver with `peer` correctly.
fn assert_reset_session_still_syncs(
    receiver: &mut Room,
    session: &mut SyncSession,
    peer: &mut Room,
) {
    session.reset();
    exchange(receiver, session, peer, &mut SyncSession::new());
    assert_converged(receiver, peer);
}

/// Fixtures built at most before giving up: ten Bloom false positives in a row would mean a bug.
const FIXTURE_ATTEMPTS: usize = 10;

/// The damaged-message fixture: `sender` holds `shared` and then three more records;
/// `template` is every change the receiver starts from; `message` is a real sync message from
/// `sender` carrying the three records the receiver lacks.
struct Fixture {
    room: RoomId,
    sender: Room,
    template: Vec<Vec<u8>>,
    message: Vec<u8>,
}

impl Fixture {
    /// Built again (with new keys, so new change hashes) while the message carries fewer than
    /// the three changes the receiver lacks: a Bloom filter false positive (about 1 % per
    /// change) makes the sender hold one back until a later round.
    fn new() -> Self {
        for _ in 0..FIXTURE_ATTEMPTS {
            let room = lobby();
            let mut sender = replica(room);
            let mut other = replica(room);
            let mut template = post_many(&mut other, 2);
            sender.apply_remote(&template).unwrap();
            template.extend(post_many(&mut sender, 2));
            let _ = post_many(&mut sender, 3);
            let mut receiver = replica_with(room, &template);
            let message = first_message_with_changes(&mut sender, &mut receiver);
            if changes_carried(&message) == 3 {
                return Self {
                    room,
                    sender,
                    template,
                    message,
                };
            }
        }
        panic!("no first sync message carried all three changes in {FIXTURE_ATTEMPTS} attempts");
    }

    /// A receiver in the state the message was made for (without the session history).
    fn receiver(&self) -> Room {
        replica_with(self.room, &self.template)
    }
}

// ---------------------------------------------------------------------------------------------
// Catch-up, divergence, quiet sync
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_replica_catches_up_from_ten_thousand_records_in_at_most_four_round_trips() {
    let room = lobby();
    let mut full = replica(room);
    let started = Instant::now();
    post_many(&mut full, 10_000);
    let written_in = started.elapsed();
    assert_eq!(
        full.heads().len(),
        10_000 / EPOCH_CAPACITY,
        "10,000 records should fill whole epochs"
    );

    let mut empty = replica(room);
    let started = Instant::now();
    let cost = sync_fresh(&mut empty, &mut full);
    let synced_in = started.elapsed();
    println!(
        "catch-up of 10,000 records: {} round trips, {} messages, {} bytes, {} records arrived, \
         sync took {synced_in:?} (writing took {written_in:?})",
        cost.round_trips, cost.messages, cost.bytes, cost.new_records
    );
    assert!(cost.round_trips <= 4, "{cost:?}");
    assert_eq!(cost.new_records, 10_000);
    assert_eq!(empty.len(), 10_000);
    assert_converged(&empty, &full);
}

#[test]
fn diverged_replicas_converge_including_edits_deletes_and_reactions_across() {
    let room = lobby();
    let mut alice = replica(room);
    let mut bob = replica(room);
    let a1 = alice.post("alice one").unwrap();
    let a2 = alice.post("alice two").unwrap();
    let b1 = bob.post("bob one").unwrap();
    let b2 = bob.post("bob two").unwrap();
    sync_fresh(&mut alice, &mut bob);
    assert_converged(&alice, &bob);

    // Only a message's author may edit or delete it; anyone may react.
    assert!(matches!(
        bob.edit(a1.id, "no"),
        Err(RoomError::NotYourMessage(_))
    ));
    assert!(matches!(
        bob.delete(a1.id),
        Err(RoomError::NotYourMessage(_))
    ));

    // Each side now writes records the other lacks, some acting on the other's messages.
    let mut writes = 4;
    alice.edit(a1.id, "alice one, edited").unwrap();
    alice.delete(a2.id).unwrap();
    alice.react(b1.id, "👍", true).unwrap();
    alice.react(b2.id, "🎉", true).unwrap();
    alice.react(b2.id, "🎉", false).unwrap();
    alice.set_profile("alice").unwrap();
    let a3 = alice.post("alice three").unwrap();
    writes += 7;
    bob.edit(b1.id, "bob one, edited").unwrap();
    bob.delete(b2.id).unwrap();
    bob.react(a1.id, "👀", true).unwrap();
    bob.react(a2.id, "👍", true).unwrap();
    bob.set_profile("bob").unwrap();
    bob.set_profile("robert").unwrap();
    bob.post("bob three").unwrap();
    writes += 7;
    assert!(bob.record(&a3.id).is_none());
    assert_ne!(alice.heads(), bob.heads());

    let cost = sync_fresh(&mut bob, &mut alice);
    assert_eq!(cost.new_records, 14, "{cost:?}");
    assert_converged(&alice, &bob);
    assert_eq!(alice.len(), writes);

    let view = alice.view();
    let message = |id| view.messages.iter().find(|m| m.id == id).unwrap();
    assert_eq!(view.messages.len(), 6);
    assert_eq!(message(a1.id).text, "alice one, edited");
    assert!(message(a2.id).deleted);
    assert_eq!(message(b1.id).text, "bob one, edited");
    assert!(message(b2.id).deleted);
    assert!(
        message(b2.id)
            .reactions
            .values()
            .all(|who| !who.contains(&alice.author()))
    );
    assert!(message(b1.id).reactions["👍"].contains(&alice.author()));
    assert!(message(a1.id).reactions["👀"].contains(&bob.author()));
    assert_eq!(view.nickname(&alice.author()), Some("alice"));
    assert_eq!(view.nickname(&bob.author()), Some("robert"));
}

#[test]
fn sync_after_convergence_is_quiet() {
    let room = lobby();
    let mut alice = replica(room);
    let mut bob = replica(room);
    post_many(&mut alice, 20);
    post_many(&mut bob, 20);
    let (mut sa, mut sb) = (SyncSession::new(), SyncSession::new());
    exchange(&mut alice, &mut sa, &mut bob, &mut sb);
    assert_converged(&alice, &bob);
    assert!(sa.is_in_sync(&alice) && sb.is_in_sync(&bob));

    // The same sessions have nothing more to say.
    assert_eq!(alice.generate_sync_message(&mut sa).unwrap(), None);
    assert_eq!(bob.generate_sync_message(&mut sb).unwrap(), None);

    // Fresh sessions (a reconnect) cost at most one summary each way, carrying no parts.
    let heads = alice.heads();
    let (mut sa, mut sb) = (SyncSession::new(), SyncSession::new());
    let mut messages = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let from_bob = bob.generate_sync_message(&mut sb).unwrap();
        if let Some(m) = &from_bob {
            let progress = alice.receive_sync_message(&mut sa, m).unwrap();
            assert!(progress.new_records.is_empty());
            messages.push(m.clone());
        }
        let from_alice = alice.generate_sync_message(&mut sa).unwrap();
        if let Some(m) = &from_alice {
            let progress = bob.receive_sync_message(&mut sb, m).unwrap();
            assert!(progress.new_records.is_empty());
            messages.push(m.clone());
        }
        if from_bob.is_none() && from_alice.is_none() {
            break;
        }
    }
    assert!(
        messages.len() <= 2,
        "{} messages after convergence",
        messages.len()
    );
    for message in &messages {
        let wire = decode_wire(message);
        assert!(wire.p.is_empty(), "a summary exchange carried parts");
        assert_eq!(wire.s.len(), heads.len());
    }
    assert_eq!(alice.generate_sync_message(&mut sa).unwrap(), None);
    assert_eq!(bob.generate_sync_message(&mut sb).unwrap(), None);
    assert_eq!(alice.heads(), heads);
    assert_converged(&alice, &bob);
}

// ---------------------------------------------------------------------------------------------
// Damaged and hostile messages
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_and_garbage_sync_messages_are_rejected_and_leave_the_room_unchanged() {
    let mut fixture = Fixture::new();
    let mut receiver = fixture.receiver();
    let mut session = SyncSession::new();
    assert_rejected(&mut receiver, &mut session, &[], "an empty message");
    let mut rng = StdRng::seed_from_u64(0x6772_6170);
    for i in 0..500 {
        let len = rng.random_range(1..2_000);
        let mut garbage = vec![0u8; len];
        rng.fill(&mut garbage[..]);
        assert_rejected(
            &mut receiver,
            &mut session,
            &garbage,
            &format!("garbage #{i}"),
        );
    }
    for byte in 0..=255u8 {
        assert_rejected(&mut receiver, &mut session, &[byte; 64], "a repeated byte");
    }
    assert_reset_session_still_syncs(&mut receiver, &mut session, &mut fixture.sender);
}

#[test]
fn every_truncation_of_a_real_sync_message_is_rejected_and_leaves_the_room_unchanged() {
    let mut fixture = Fixture::new();
    let mut receiver = fixture.receiver();
    let mut session = SyncSession::new();
    let message = fixture.message.clone();
    for len in 0..message.len() {
        assert_rejected(
            &mut receiver,
            &mut session,
            &message[..len],
            &format!("truncation to {len} of {} bytes", message.len()),
        );
    }
    assert_eq!(receiver.len(), fixture.template.len());
    assert_reset_session_still_syncs(&mut receiver, &mut session, &mut fixture.sender);
}

#[test]
fn bit_flips_in_a_real_sync_message_never_panic_and_rejections_leave_the_room_unchanged() {
    let mut fixture = Fixture::new();
    let message = fixture.message.clone();
    let mut receiver = fixture.receiver();
    let mut session = SyncSession::new();
    let (mut refused, mut accepted) = (0, 0);
    // One bit per byte, cycling through the bit positions, over the whole message.
    for (i, bit) in (0..message.len()).map(|i| (i, i % 8)) {
        let mut damaged = message.clone();
        damaged[i] ^= 1 << bit;
        if feed_damaged(
            &mut receiver,
            &mut session,
            &damaged,
            &format!("flip of bit {bit} of byte {i}"),
        ) {
            refused += 1;
        } else {
            accepted += 1;
            // A flip outside the changes (a digest, a bloom filter bit) can be harmless; start
            // again from the state the message was made for, with a clean session.
            if receiver.len() != fixture.template.len() {
                receiver = fixture.receiver();
            }
            session.reset();
        }
    }
    println!(
        "bit flips: {refused} refused, {accepted} accepted of {}",
        message.len()
    );
    assert!(refused > 0);
    assert_reset_session_still_syncs(&mut receiver, &mut session, &mut fixture.sender);
}

#[test]
fn bit_flips_inside_carried_changes_are_always_rejected() {
    let mut fixture = Fixture::new();
    let wire = decode_wire(&fixture.message);
    let mut receiver = fixture.receiver();
    let mut session = SyncSession::new();
    let mut flips = 0;
    for (part_index, (_, part)) in wire.p.iter().enumerate() {
        let message = Message::decode(part).unwrap();
        let chunks: Vec<Vec<u8>> = message.changes.iter().map(<[u8]>::to_vec).collect();
        for (chunk_index, chunk) in chunks.iter().enumerate() {
            for offset in 0..chunk.len() {
                let mut damaged_chunks = chunks.clone();
                damaged_chunks[chunk_index][offset] ^= 1 << (offset % 8);
                let mut damaged_message = message.clone();
                damaged_message.changes = ChunkList::from(damaged_chunks);
                let mut damaged_wire = wire.clone();
                damaged_wire.p[part_index].1 = ByteBuf::from(damaged_message.encode());
                assert_rejected(
                    &mut receiver,
                    &mut session,
                    &encode_wire(&damaged_wire),
                    &format!("flip at byte {offset} of carried change {chunk_index}"),
                );
                flips += 1;
            }
        }
    }
    assert!(flips > 0);
    assert_reset_session_still_syncs(&mut receiver, &mut session, &mut fixture.sender);
}

#[test]
fn a_valid_wrapper_around_garbage_parts_is_rejected_and_leaves_the_room_unchanged() {
    let mut fixture = Fixture::new();
    let mut receiver = fixture.receiver();
    let mut session = SyncSession::new();
    let real = decode_wire(&fixture.message);
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..200 {
        let len = rng.random_range(0..600);
        let mut garbage = vec![0u8; len];
        rng.fill(&mut garbage[..]);
        // Keep the real summary so only the part is wrong; use an epoch the receiver lacks on
        // odd iterations (a garbage part must not create it).
        let epoch = if i % 2 == 0 { 0 } else { 7 };
        let wire = Wire {
            p: vec![(epoch, ByteBuf::from(garbage))],
            s: real.s.clone(),
        };
        let error = assert_rejected(
            &mut receiver,
            &mut session,
            &encode_wire(&wire),
            &format!("garbage part #{i}"),
        );
        assert!(matches!(error, SyncError::Malformed(_)), "{error}");
    }

    // A well-formed Automerge sync message whose change chunks are garbage.
    let (_, part) = &real.p[0];
    let mut inner = Message::decode(part).unwrap();
    let mut chunks: Vec<Vec<u8>> = inner.changes.iter().map(<[u8]>::to_vec).collect();
    chunks[1] = b"not an automerge change at all".to_vec();
    inner.changes = ChunkList::from(chunks);
    let wire = Wire {
        p: vec![(real.p[0].0, ByteBuf::from(inner.encode()))],
        s: real.s.clone(),
    };
    let error = assert_rejected(
        &mut receiver,
        &mut session,
        &encode_wire(&wire),
        "a garbage chunk",
    );
    assert!(matches!(error, SyncError::Rejected(_)), "{error}");

    // Real changes, but in the part of another epoch.
    let mut wire = real.clone();
    wire.p[0].0 = 1;
    let error = assert_rejected(
        &mut receiver,
        &mut session,
        &encode_wire(&wire),
        "changes in the wrong epoch",
    );
    assert!(
        matches!(error, SyncError::WrongEpoch { part: 1, found: 0 }),
        "{error}"
    );

    assert_reset_session_still_syncs(&mut receiver, &mut session, &mut fixture.sender);
}

#[test]
fn a_sync_message_carrying_another_rooms_changes_is_rejected() {
    let mut fixture = Fixture::new();
    let elsewhere = RoomId::for_public_name("elsewhere").unwrap();
    let mut foreign_sender = replica(elsewhere);
    post_many(&mut foreign_sender, 3);
    let mut foreign_receiver = replica(elsewhere);
    let foreign = first_message_with_changes(&mut foreign_sender, &mut foreign_receiver);

    let mut receiver = fixture.receiver();
    let mut session = SyncSession::new();
    let error = assert_rejected(
        &mut receiver,
        &mut session,
        &foreign,
        "another room's changes",
    );
    assert!(
        matches!(
            error,
            SyncError::Rejected(grapevine_crdt::Rejection::WrongRoom)
        ),
        "{error}"
    );
    // Also from an empty receiver, which has no epoch the part could have been checked against.
    let mut empty = replica(fixture.room);
    let error = assert_rejected(
        &mut empty,
        &mut SyncSession::new(),
        &foreign,
        "another room's changes",
    );
    assert!(matches!(error, SyncError::Rejected(_)), "{error}");

    assert_reset_session_still_syncs(&mut receiver, &mut session, &mut fixture.sender);
}

// A replica whose epoch document holds a change the validator rejects (so sync would offer it
// again and again) cannot be built through the public API: every way in validates first. That
// case ("the first invalid change ends the session") needs crate internals and is not covered
// here.

// ---------------------------------------------------------------------------------------------
// Known bug
// ---------------------------------------------------------------------------------------------

/// A sync message may carry a change before its dependency: Automerge's sync protocol does this
/// whenever the dependency is a false positive of the receiver's Bloom filter (measured: about 1
/// in 400 syncs of three records into an empty replica). Automerge queues the early changes
/// inside the epoch document and applies them when the dependency arrives in a later message,
/// but `receive_sync_message` only indexes the changes of the message being received, so the
/// queued ones reach the document (and its heads) but never the room's records, view or
/// `len()`; as heads then agree, no later sync repairs it.
///
/// The test makes the false positive deterministic: it adds the first record's change to the
/// Bloom filter the receiver sends, so the sender leaves that change out exactly as a false
/// positive would make it.
#[test]
fn records_that_sync_delivers_ahead_of_their_dependencies_are_indexed_once_these_arrive() {
    let room = lobby();
    for _attempt in 0..20 {
        let mut sender = replica(room);
        let written: Vec<_> = (0..3)
            .map(|i| sender.post(&format!("m{i}")).unwrap())
            .collect();
        let hashes: Vec<ChangeHash> = written
            .iter()
            .map(|w| Change::try_from(&w.change[..]).unwrap().hash())
            .collect();
        let mut receiver = replica(room);
        let (mut ss, mut rs) = (SyncSession::new(), SyncSession::new());
        let mut tampered = false;
        let mut finished = false;
        for _ in 0..MAX_ROUNDS {
            let mut from_receiver = receiver.generate_sync_message(&mut rs).unwrap();
            if let Some(m) = &mut from_receiver {
                let mut wire = decode_wire(m);
                if let Some((_, part)) = wire.p.first_mut() {
                    let mut inner = Message::decode(part).unwrap();
                    if !tampered && !inner.have.is_empty() {
                        tampered = true;
                        // The first record's only dependency is the epoch's genesis.
                        let genesis = Change::try_from(&written[0].change[..]).unwrap().deps()[0];
                        let bloom = BloomFilter::from_hashes([genesis, hashes[0]].into_iter());
                        if hashes[1..].iter().any(|h| bloom.contains_hash(h)) {
                            break; // a real false positive on the others: try other keys
                        }
                        inner.have[0].bloom = bloom;
                        *part = ByteBuf::from(inner.encode());
                        *m = encode_wire(&wire);
                    }
                }
                sender.receive_sync_message(&mut ss, m).unwrap();
            }
            let from_sender = sender.generate_sync_message(&mut ss).unwrap();
            if let Some(m) = &from_sender {
                receiver.receive_sync_message(&mut rs, m).unwrap();
            }
            if from_receiver.is_none() && from_sender.is_none() {
                finished = true;
                break;
            }
        }
        if !(tampered && finished) {
            continue;
        }
        assert_eq!(
            receiver.heads(),
            sender.heads(),
            "the histories did converge"
        );
        for w in &written {
            assert!(
                receiver.record(&w.id).is_some(),
                "record {:?} is in the epoch document (heads agree) but not in the room's \
                 records: len() is {} of 3",
                w.id,
                receiver.len()
            );
        }
        assert_converged(&receiver, &sender);
        return;
    }
    panic!("could not set up the false positive");
}

#[test]
fn a_poisoned_bloom_filter_is_refused_before_the_room_probes_it() {
    // Found by the sync_receive fuzz target's seeds: Automerge probes a peer's Bloom filter when
    // it picks the changes to send, dividing by the filter's bit count (zero here) and
    // allocating the probe list up front (2^32 - 1 probes here): a panic outside any
    // `catch_unwind`, or 16 GiB, from a message of a few bytes.
    let mut receiver = replica(lobby());
    post_many(&mut receiver, 3);
    let leb = |n: u32| {
        let mut out = Vec::new();
        leb128_u32(&mut out, n);
        out
    };
    for (what, filter) in [
        ("zero bits per entry", [leb(1), leb(0), leb(7)].concat()),
        (
            "2^32 - 1 probes",
            [leb(1), leb(10), leb(u32::MAX), vec![0xff; 2]].concat(),
        ),
    ] {
        let message = Message {
            heads: vec![ChangeHash([0xcd; 32])],
            need: Vec::new(),
            have: vec![Have {
                last_sync: Vec::new(),
                bloom: BloomFilter::try_from(&filter[..]).unwrap(),
            }],
            changes: ChunkList::empty(),
            flags: None,
            version: MessageVersion::V1,
        };
        let wire = Wire {
            p: vec![(0, ByteBuf::from(message.encode()))],
            s: Vec::new(),
        };
        let mut session = SyncSession::new();
        let error = assert_rejected(&mut receiver, &mut session, &encode_wire(&wire), what);
        assert!(matches!(error, SyncError::Malformed(_)), "{what}: {error}");
        session.reset();
        receiver.generate_sync_message(&mut session).unwrap();
    }
}

/// Appends `n` in unsigned LEB128, the integer encoding of Automerge's Bloom filter header.
fn leb128_u32(out: &mut Vec<u8>, mut n: u32) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
