//! Convergence of replicas of one room under any order of delivery: a property test over random
//! operations, deliveries and syncs, and the waiting/duplicate rules of `apply_remote`.
#![allow(clippy::unwrap_used)]

use grapevine_crdt::{Identity, Received, RecordId, Rejection, Room, RoomId, SyncSession};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Upper bound on the rounds of one pairwise sync exchange.
const MAX_ROUNDS: usize = 50;
/// Upper bound on the passes of pairwise syncs over all replicas.
const MAX_PASSES: usize = 5;
/// Replica indices and picks are drawn below these bounds (then taken modulo what exists), so
/// that shrunk failing cases stay readable.
const MAX_REPLICAS: usize = 5;
const MAX_PICK: usize = 64;
const REACTIONS: [&str; 3] = ["👍", "🎉", "ok"];

fn lobby() -> RoomId {
    RoomId::for_public_name("lobby").unwrap()
}

fn replica() -> Room {
    Room::in_memory(lobby(), Identity::generate())
}

/// `n` copies of one successful outcome.
fn repeated(received: &Received, n: usize) -> Vec<Result<Received, Rejection>> {
    (0..n).map(|_| Ok(received.clone())).collect()
}

/// Syncs two replicas with fresh sessions until both sides are quiet; panics if that takes more
/// than [`MAX_ROUNDS`] rounds. Returns the number of records that arrived.
fn sync_pair(a: &mut Room, b: &mut Room) -> usize {
    let (mut sa, mut sb) = (SyncSession::new(), SyncSession::new());
    let mut arrived = 0;
    for _ in 0..MAX_ROUNDS {
        let from_a = a.generate_sync_message(&mut sa).unwrap();
        if let Some(m) = &from_a {
            arrived += b
                .receive_sync_message(&mut sb, m)
                .unwrap()
                .new_records
                .len();
        }
        let from_b = b.generate_sync_message(&mut sb).unwrap();
        if let Some(m) = &from_b {
            arrived += a
                .receive_sync_message(&mut sa, m)
                .unwrap()
                .new_records
                .len();
        }
        if from_a.is_none() && from_b.is_none() {
            return arrived;
        }
    }
    panic!("pairwise sync did not finish within {MAX_ROUNDS} rounds");
}

/// Pairwise syncs over every pair until a whole pass moves no record (bounded).
fn sync_all(rooms: &mut [Room]) {
    for _ in 0..MAX_PASSES {
        let mut moved = 0;
        for i in 0..rooms.len() {
            for j in i + 1..rooms.len() {
                let (left, right) = rooms.split_at_mut(j);
                moved += sync_pair(&mut left[i], &mut right[0]);
            }
        }
        if moved == 0 {
            return;
        }
    }
    panic!("replicas still exchanging records after {MAX_PASSES} passes");
}

/// One operation, done at replica `at % replicas`; `pick` chooses among the messages that
/// replica may act on. An operation with nothing to act on posts instead, so every operation
/// writes exactly one record.
#[derive(Debug, Clone)]
enum Op {
    Post {
        at: usize,
    },
    Edit {
        at: usize,
        pick: usize,
    },
    Delete {
        at: usize,
        pick: usize,
    },
    React {
        at: usize,
        pick: usize,
        reaction: usize,
        on: bool,
    },
    Profile {
        at: usize,
        nick: u8,
    },
}

/// Delivers the pool changes `picks[i] % pool.len()` (in that order, so reordered and possibly
/// repeated) to replica `to % replicas`.
#[derive(Debug, Clone)]
struct Delivery {
    to: usize,
    picks: Vec<usize>,
    one_by_one: bool,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    deliveries: Vec<Delivery>,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..MAX_REPLICAS).prop_map(|at| Op::Post { at }),
        2 => (0..MAX_REPLICAS, 0..MAX_PICK).prop_map(|(at, pick)| Op::Edit { at, pick }),
        1 => (0..MAX_REPLICAS, 0..MAX_PICK).prop_map(|(at, pick)| Op::Delete { at, pick }),
        3 => (0..MAX_REPLICAS, 0..MAX_PICK, 0..REACTIONS.len(), any::<bool>())
            .prop_map(|(at, pick, reaction, on)| Op::React { at, pick, reaction, on }),
        1 => (0..MAX_REPLICAS, 0..4u8).prop_map(|(at, nick)| Op::Profile { at, nick }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let delivery = (
        0..MAX_REPLICAS,
        prop::collection::vec(0..MAX_PICK, 0..10),
        any::<bool>(),
    )
        .prop_map(|(to, picks, one_by_one)| Delivery {
            to,
            picks,
            one_by_one,
        });
    (op_strategy(), prop::collection::vec(delivery, 0..3))
        .prop_map(|(op, deliveries)| Step { op, deliveries })
}

/// The replicas, every change written so far, and every message with its author's index.
struct Harness {
    rooms: Vec<Room>,
    pool: Vec<Vec<u8>>,
    messages: Vec<(RecordId, usize)>,
    written: Vec<RecordId>,
}

impl Harness {
    fn new(replicas: usize) -> Self {
        Self {
            rooms: (0..replicas).map(|_| replica()).collect(),
            pool: Vec::new(),
            messages: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Messages replica `at` holds and may act on (`own`: only its own).
    fn targets(&self, at: usize, own: bool) -> Vec<RecordId> {
        self.messages
            .iter()
            .filter(|(id, author)| (!own || *author == at) && self.rooms[at].record(id).is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn run(&mut self, step_index: usize, op: &Op) {
        let n = self.rooms.len();
        let choose = |targets: Vec<RecordId>, pick: usize| {
            (!targets.is_empty()).then(|| targets[pick % targets.len()])
        };
        let text = format!("step {step_index}");
        let (at, written) = match *op {
            Op::Post { at } => (at % n, None),
            Op::Edit { at, pick } => {
                let at = at % n;
                let target = choose(self.targets(at, true), pick);
                (at, target.map(|t| self.rooms[at].edit(t, &text).unwrap()))
            }
            Op::Delete { at, pick } => {
                let at = at % n;
                let target = choose(self.targets(at, true), pick);
                (at, target.map(|t| self.rooms[at].delete(t).unwrap()))
            }
            Op::React {
                at,
                pick,
                reaction,
                on,
            } => {
                let at = at % n;
                let target = choose(self.targets(at, false), pick);
                let room = &mut self.rooms[at];
                (
                    at,
                    target.map(|t| room.react(t, REACTIONS[reaction], on).unwrap()),
                )
            }
            Op::Profile { at, nick } => {
                let at = at % n;
                (
                    at,
                    Some(self.rooms[at].set_profile(&format!("nick{nick}")).unwrap()),
                )
            }
        };
        let written = match written {
            Some(written) => written,
            None => {
                let written = self.rooms[at].post(&text).unwrap();
                self.messages.push((written.id, at));
                written
            }
        };
        self.written.push(written.id);
        self.pool.push(written.change);
    }

    fn deliver(&mut self, delivery: &Delivery) {
        if self.pool.is_empty() {
            return;
        }
        let to = delivery.to % self.rooms.len();
        let room = &mut self.rooms[to];
        let batch: Vec<&Vec<u8>> = delivery
            .picks
            .iter()
            .map(|p| &self.pool[p % self.pool.len()])
            .collect();
        let report = if delivery.one_by_one {
            for change in &batch {
                room.receive(change).unwrap();
            }
            room.apply_received().unwrap()
        } else {
            room.apply_remote(&batch).unwrap()
        };
        assert_eq!(report.outcomes.len(), batch.len());
        for outcome in &report.outcomes {
            assert!(
                outcome.is_ok(),
                "an honest change was rejected: {outcome:?}"
            );
        }
        assert_eq!(report.dropped, 0);
    }

    fn assert_converged(&self) {
        let first = &self.rooms[0];
        for (i, room) in self.rooms.iter().enumerate() {
            assert_eq!(room.len(), self.written.len(), "replica {i} record count");
            for id in &self.written {
                assert!(room.record(id).is_some(), "replica {i} lacks {id:?}");
            }
            assert_eq!(room.heads(), first.heads(), "replica {i} heads");
            assert_eq!(room.view(), first.view(), "replica {i} view");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn replicas_converge_whatever_the_operations_and_the_order_of_delivery(
        replicas in 3usize..=5,
        steps in prop::collection::vec(step_strategy(), 1..=40),
    ) {
        let mut harness = Harness::new(replicas);
        for (i, step) in steps.iter().enumerate() {
            harness.run(i, &step.op);
            for delivery in &step.deliveries {
                harness.deliver(delivery);
            }
        }
        sync_all(&mut harness.rooms);
        harness.assert_converged();
        // Once converged, every pair is quiet.
        for i in 1..replicas {
            let (left, right) = harness.rooms.split_at_mut(i);
            prop_assert_eq!(sync_pair(&mut left[0], &mut right[0]), 0);
        }
    }
}

#[test]
fn changes_delivered_in_reverse_wait_then_are_released_and_duplicates_are_reported() {
    let mut author = replica();
    let written: Vec<_> = (0..5)
        .map(|i| author.post(&format!("m{i}")).unwrap())
        .collect();
    let ids: Vec<RecordId> = written.iter().map(|w| w.id).collect();

    // One by one, newest first: each waits for its predecessor until the first arrives.
    let mut reader = replica();
    for w in written[1..].iter().rev() {
        let report = reader.apply_remote(&[&w.change]).unwrap();
        assert_eq!(report.outcomes, vec![Ok(Received::Waiting)]);
        assert!(report.has_waiting());
        assert!(report.released.is_empty());
        assert!(reader.record(&w.id).is_none());
    }
    assert!(reader.is_empty());
    // A waiting change delivered again is a duplicate, and still waits.
    let report = reader.apply_remote(&[&written[4].change]).unwrap();
    assert_eq!(report.outcomes, vec![Ok(Received::Duplicate)]);
    assert!(reader.is_empty());

    let report = reader.apply_remote(&[&written[0].change]).unwrap();
    assert_eq!(report.outcomes, vec![Ok(Received::Applied(ids[0]))]);
    let mut released = report.released.clone();
    released.sort();
    let mut expected = ids[1..].to_vec();
    expected.sort();
    assert_eq!(released, expected);
    let mut new: Vec<_> = report.new_records().collect();
    new.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(new, all);
    assert_eq!(reader.len(), 5);
    assert_eq!(reader.heads(), author.heads());
    assert_eq!(reader.view(), author.view());

    // Everything again, through both entry points: all duplicates, nothing changes.
    let changes: Vec<&Vec<u8>> = written.iter().map(|w| &w.change).collect();
    let report = reader.apply_remote(&changes).unwrap();
    assert_eq!(report.outcomes, repeated(&Received::Duplicate, 5));
    assert!(report.released.is_empty());
    for change in &changes {
        reader.receive(change).unwrap();
    }
    let report = reader.apply_received().unwrap();
    assert_eq!(report.outcomes, repeated(&Received::Duplicate, 5));
    assert_eq!(reader.len(), 5);

    // A whole batch in reverse order, with a change repeated inside it, is applied at once.
    let mut batch_reader = replica();
    let mut batch: Vec<&Vec<u8>> = changes.iter().rev().copied().collect();
    batch.push(&written[2].change);
    let report = batch_reader.apply_remote(&batch).unwrap();
    let mut expected: Vec<_> = ids
        .iter()
        .rev()
        .map(|id| Ok(Received::Applied(*id)))
        .collect();
    expected.push(Ok(Received::Duplicate));
    assert_eq!(report.outcomes, expected);
    assert!(report.released.is_empty());
    assert_eq!(batch_reader.heads(), author.heads());

    // The same through `receive`: outcomes in the order received, released ones reported.
    let mut receiving = replica();
    for w in written[1..].iter().rev() {
        receiving.receive(&w.change).unwrap();
    }
    let report = receiving.apply_received().unwrap();
    assert_eq!(report.outcomes, repeated(&Received::Waiting, 4));
    receiving.receive(&written[0].change).unwrap();
    receiving.receive(&written[0].change).unwrap();
    let report = receiving.apply_received().unwrap();
    assert_eq!(
        report.outcomes,
        vec![Ok(Received::Applied(ids[0])), Ok(Received::Duplicate)]
    );
    assert_eq!(report.released.len(), 4);
    assert_eq!(receiving.view(), author.view());
}

#[test]
fn a_waiting_change_that_sync_delivers_is_reported_new_only_once() {
    let mut author = replica();
    let first = author.post("first").unwrap();
    let second = author.post("second").unwrap();
    let mut reader = replica();
    let report = reader.apply_remote(&[&second.change]).unwrap();
    assert_eq!(report.outcomes, vec![Ok(Received::Waiting)]);

    // Sync brings the missing dependency; the waiting change must end up in the room, once.
    let (mut sa, mut sr) = (SyncSession::new(), SyncSession::new());
    let mut reported = Vec::new();
    let mut finished = false;
    for _ in 0..MAX_ROUNDS {
        let from_reader = reader.generate_sync_message(&mut sr).unwrap();
        if let Some(m) = &from_reader {
            author.receive_sync_message(&mut sa, m).unwrap();
        }
        let from_author = author.generate_sync_message(&mut sa).unwrap();
        if let Some(m) = &from_author {
            reported.extend(reader.receive_sync_message(&mut sr, m).unwrap().new_records);
        }
        if from_reader.is_none() && from_author.is_none() {
            finished = true;
            break;
        }
    }
    assert!(finished);
    assert_eq!(reader.heads(), author.heads());
    assert_eq!(reader.len(), 2);
    // Any later batch must not report the synced records as new again.
    let report = reader
        .apply_remote(&[&first.change, &second.change])
        .unwrap();
    reported.extend(report.new_records());
    let empty: [&[u8]; 0] = [];
    reported.extend(reader.apply_remote(&empty).unwrap().new_records());
    reported.sort();
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(reported, expected, "each record reported new exactly once");
    assert_eq!(reader.view(), author.view());
}

/// Automerge always lists an actor's previous change among the dependencies of its next one, but
/// `EpochDoc::write_local` signs `deps = heads()`. Once someone else's change builds on our last
/// change (so it is no longer a head), our next write's signed header differs from the change
/// Automerge builds and the write fails with `RoomError::Internal`; the change stays committed
/// in the epoch document anyway, so every later write there fails too and sync offers a change
/// that every peer's validator rejects.
#[test]
fn a_replica_writes_again_after_another_replica_built_on_its_last_message() {
    let mut alice = replica();
    let mut bob = replica();
    let first = alice.post("hello").unwrap();
    bob.apply_remote(&[&first.change]).unwrap();
    let reply = bob.react(first.id, "👍", true).unwrap();
    alice.apply_remote(&[&reply.change]).unwrap();
    let heads = alice.heads();

    let second = alice.post("hello again");
    assert!(second.is_ok(), "{:?}", second.err());
    let second = second.unwrap();
    assert_eq!(alice.len(), 3);
    let report = bob.apply_remote(&[&second.change]).unwrap();
    assert_eq!(report.outcomes, vec![Ok(Received::Applied(second.id))]);
    assert_ne!(alice.heads(), heads);
    sync_pair(&mut alice, &mut bob);
    assert_eq!(alice.heads(), bob.heads());
    assert_eq!(alice.view(), bob.view());
}

/// An author with a modified client signs two different records on the same change header (the
/// same dependencies and start operation). Replicas that receive them in opposite orders must
/// both hold both, with identical heads, and a record built on one replica's heads must apply at
/// the other. When a device's records shared one Automerge actor, the two changes shared an
/// actor and sequence number: each replica kept the one it saw first and held the other back
/// for good, every later record built on it waited for good at the other replicas, and the
/// room never converged again.
#[test]
fn two_records_signed_on_the_same_header_do_not_split_the_replicas() {
    let author = Identity::generate();
    let one = Room::in_memory(lobby(), author.clone())
        .post("one")
        .unwrap();
    let two = Room::in_memory(lobby(), author).post("two").unwrap();
    assert_eq!(one.record.record().change, two.record.record().change);

    let mut first = replica();
    let mut second = replica();
    for (replica, order) in [(&mut first, [&one, &two]), (&mut second, [&two, &one])] {
        for written in order {
            let report = replica.apply_remote(&[&written.change]).unwrap();
            assert_eq!(report.outcomes, vec![Ok(Received::Applied(written.id))]);
        }
    }
    assert_eq!(first.len(), 2);
    assert_eq!(first.heads(), second.heads());

    let reply = first.post("after the fork").unwrap();
    let report = second.apply_remote(&[&reply.change]).unwrap();
    assert_eq!(report.outcomes, vec![Ok(Received::Applied(reply.id))]);
    assert_eq!(first.heads(), second.heads());
    assert_eq!(first.view(), second.view());
}
