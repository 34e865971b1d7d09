//! The raw store: appending change chunks to a room's log and making them durable
//! (`RoomFiles::append` + `RoomFiles::sync`), without any Automerge work.
//!
//! - `store_append/fsync_each`: one append, one sync (fsync).
//! - `store_append/group_commit_64`: 64 appends, one sync.
//!
//! The chunks are real ~0.5 KB changes of ~100-byte messages. Throughput is in records.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use grapevine_crdt::Store;

fn bench(c: &mut Criterion) {
    let mut room = common::memory_room(256);
    let changes = room.changes_since(&Default::default()).unwrap();
    let average = changes.iter().map(Vec::len).sum::<usize>() / changes.len();
    eprintln!("store_append: change chunks of {average} bytes on average");

    let dir = common::disk_tempdir();
    let store = Store::open(dir.path()).unwrap();
    let (mut files, loaded) = store.open_room("bench-store").unwrap();
    assert!(loaded.problems.is_empty());
    let mut next = 0usize;

    let mut group = c.benchmark_group("store_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_each", |b| {
        b.iter(|| {
            files.append(0, &changes[next % changes.len()]).unwrap();
            next += 1;
            files.sync().unwrap();
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("group_commit_64", |b| {
        b.iter(|| {
            for _ in 0..64 {
                files.append(0, &changes[next % changes.len()]).unwrap();
                next += 1;
            }
            files.sync().unwrap();
        });
    });
    group.finish();
    eprintln!(
        "store_append: {next} frames, log of {} bytes",
        files.log_bytes(0)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
