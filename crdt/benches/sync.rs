//! Syncing an empty replica from a stored room of 100,000 records, with `SyncSession`s run to
//! quiescence in-process (no network latency: the time is CPU only).
//!
//! - `sync_100k/to_empty_memory`: the new replica is an in-memory room.
//! - `sync_100k/to_empty_stored`: the new replica is a stored room, flushed once at the end.
//!
//! Criterion reports time (and records/s); round trips and bytes on the wire, against the size
//! of the source room's compacted snapshot files, are printed before the measurements.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use grapevine_crdt::{Identity, Room, SyncSession};

#[derive(Debug, Default)]
struct Exchange {
    /// Round trips: pairs of turns, a turn being one side sending everything it has to say.
    round_trips: usize,
    /// Round trips after which the new replica held every record.
    round_trips_to_complete: Option<usize>,
    messages: usize,
    bytes_from_new: usize,
    bytes_from_source: usize,
    largest_message: usize,
    /// Time spent generating messages, both sides.
    generating: Duration,
    /// Time spent receiving messages, both sides.
    receiving: Duration,
}

/// One turn: `from` sends every message it has (it may split a large answer over several
/// messages), `to` receives them all. Returns the bytes sent, or `None` if `from` had nothing.
fn turn(
    from: &mut Room,
    from_session: &mut SyncSession,
    to: &mut Room,
    to_session: &mut SyncSession,
    x: &mut Exchange,
) -> Option<usize> {
    let mut bytes = 0;
    let mut sent = false;
    loop {
        let start = Instant::now();
        let Some(m) = from.generate_sync_message(from_session).unwrap() else {
            x.generating += start.elapsed();
            break;
        };
        x.generating += start.elapsed();
        sent = true;
        x.messages += 1;
        bytes += m.len();
        x.largest_message = x.largest_message.max(m.len());
        let start = Instant::now();
        to.receive_sync_message(to_session, &m).unwrap();
        x.receiving += start.elapsed();
        assert!(x.messages < 1_000, "sync does not converge");
    }
    sent.then_some(bytes)
}

/// Runs sync between `source` and `fresh` until neither has anything to say.
fn sync(source: &mut Room, fresh: &mut Room) -> Exchange {
    let (mut at_source, mut at_fresh) = (SyncSession::new(), SyncSession::new());
    let mut x = Exchange::default();
    loop {
        let up = turn(fresh, &mut at_fresh, source, &mut at_source, &mut x);
        x.bytes_from_new += up.unwrap_or(0);
        let down = turn(source, &mut at_source, fresh, &mut at_fresh, &mut x);
        x.bytes_from_source += down.unwrap_or(0);
        if up.is_none() && down.is_none() {
            break;
        }
        x.round_trips += 1;
        if x.round_trips_to_complete.is_none() && fresh.len() == source.len() {
            x.round_trips_to_complete = Some(x.round_trips);
        }
        assert!(x.round_trips < 100, "sync does not converge");
    }
    assert_eq!(fresh.heads(), source.heads());
    x
}

fn bench(c: &mut Criterion) {
    let (dir, identity) = common::big_store();
    let room_dir = common::room_dir(dir.path());
    let snapshots: u64 = std::fs::read_dir(&room_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let source_dir = common::copy_of_big_store();
    let (_store, mut source) = common::open_room(source_dir.path(), identity);
    let change_bytes: usize = source
        .changes_since(&Default::default())
        .unwrap()
        .iter()
        .map(Vec::len)
        .sum();

    let mut fresh = Room::in_memory(common::room_id(), Identity::generate());
    let start = Instant::now();
    let x = sync(&mut source, &mut fresh);
    let wire = x.bytes_from_new + x.bytes_from_source;
    eprintln!(
        "sync_100k: one run took {:.2?}; {x:?}\n  snapshot files {snapshots} bytes, sum of change chunks {change_bytes} bytes\n  bytes on the wire {wire} = {:.2}x the snapshot files ({:.2}x the change chunks)",
        start.elapsed(),
        wire as f64 / snapshots as f64,
        wire as f64 / change_bytes as f64,
    );
    drop(fresh);

    // Where the time goes: full validation of every change alone, and validation plus applying.
    let all = source.changes_since(&Default::default()).unwrap();
    let start = Instant::now();
    let valid = grapevine_crdt::validate::validate_batch(&common::room_id(), &all);
    let validate_time = start.elapsed();
    assert!(valid.iter().all(Result::is_ok));
    drop(valid);
    let mut fresh = Room::in_memory(common::room_id(), Identity::generate());
    let start = Instant::now();
    fresh.apply_remote(&all).unwrap();
    eprintln!(
        "sync_100k: for reference, validate_batch of all {} changes takes {validate_time:.2?}; apply_remote of them into an empty room {:.2?}",
        all.len(),
        start.elapsed()
    );
    drop((fresh, all));

    let mut group = c.benchmark_group("sync_100k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(common::BIG_ROOM as u64));
    group.bench_function("to_empty_memory", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut fresh = Room::in_memory(common::room_id(), Identity::generate());
                let start = Instant::now();
                sync(&mut source, &mut fresh);
                total += start.elapsed();
            }
            total
        });
    });
    group.bench_function("to_empty_stored", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = common::disk_tempdir();
                let (_store, mut fresh) = common::open_room(dir.path(), &Identity::generate());
                let start = Instant::now();
                sync(&mut source, &mut fresh);
                fresh.flush().unwrap();
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
