//! Writing and receiving records in a stored room that already holds 100,000 records.
//!
//! - `post_100k/group_commit_64`: 64 posts, then one `flush()` (one fsync per touched log).
//! - `post_100k/fsync_each`: one post and one `flush()`.
//! - `apply_remote_100k/N/durable`: changes from another replica arrive one by one
//!   (`receive`), are applied every N (`apply_received`) and made durable (`flush`).
//! - `apply_remote_100k/N/no_flush`: the same without the `flush`.
//!
//! Throughput is in records, so criterion reports records/s.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use grapevine_crdt::{Identity, Room};

fn post(c: &mut Criterion) {
    let (_, identity) = common::big_store();
    let dir = common::copy_of_big_store();
    let (_store, mut room) = common::open_room(dir.path(), identity);
    assert_eq!(room.len(), common::BIG_ROOM);
    let mut next = common::BIG_ROOM;

    let mut group = c.benchmark_group("post_100k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.throughput(Throughput::Elements(64));
    group.bench_function("group_commit_64", |b| {
        b.iter(|| {
            for _ in 0..64 {
                room.post(&common::text(next)).unwrap();
                next += 1;
            }
            room.flush().unwrap();
        });
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_each", |b| {
        b.iter(|| {
            room.post(&common::text(next)).unwrap();
            next += 1;
            room.flush().unwrap();
        });
    });
    group.finish();
    eprintln!("post_100k: room holds {} records at the end", room.len());
}

/// Receives `batch` fresh changes of `sender` one by one into `receiver`, applying them in one
/// batch; returns the time spent in the receiver.
fn receive_batch(
    sender: &mut Room,
    receiver: &mut Room,
    batch: usize,
    durable: bool,
    next: &mut usize,
) -> Duration {
    let changes: Vec<Vec<u8>> = (0..batch)
        .map(|_| {
            *next += 1;
            sender.post(&common::text(*next)).unwrap().change
        })
        .collect();
    sender.flush().unwrap();
    let start = Instant::now();
    for change in &changes {
        receiver.receive(change).unwrap();
    }
    let report = receiver.apply_received().unwrap();
    if durable {
        receiver.flush().unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(
        report.new_records().count(),
        batch,
        "not every change was applied"
    );
    elapsed
}

fn apply_remote(c: &mut Criterion) {
    let (_, identity) = common::big_store();
    let sender_dir = common::copy_of_big_store();
    let receiver_dir = common::copy_of_big_store();
    // Both replicas start from the same stored history; the receiver is another device.
    let (_s1, mut sender) = common::open_room(sender_dir.path(), identity);
    let (_s2, mut receiver) = common::open_room(receiver_dir.path(), &Identity::generate());
    assert_eq!(receiver.len(), common::BIG_ROOM);
    let mut next = 10 * common::BIG_ROOM;

    let mut group = c.benchmark_group("apply_remote_100k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for batch in [64, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        for durable in [true, false] {
            let name = format!("{batch}/{}", if durable { "durable" } else { "no_flush" });
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            receive_batch(&mut sender, &mut receiver, batch, durable, &mut next)
                        })
                        .sum()
                });
            });
        }
    }
    group.finish();
    receiver.flush().unwrap();
    eprintln!(
        "apply_remote_100k: receiver holds {} records at the end",
        receiver.len()
    );
}

criterion_group!(benches, post, apply_remote);
criterion_main!(benches);
