//! Loading a stored, compacted room of 100,000 records (`Room::open`): time, and peak resident
//! memory against the size of the room's files.
//!
//! The time is measured by criterion (`load_100k/open`, files in the page cache). The memory is
//! measured afterwards in a child process of this binary that does nothing but the load, reading
//! `VmHWM` and `VmRSS` from `/proc/self/status` before and after.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use grapevine_crdt::{Identity, Room, Store};

/// Set in the child process to the store directory it must load.
const CHILD_ENV: &str = "GRAPEVINE_BENCH_LOAD_ONLY";

fn open_bench(c: &mut Criterion) {
    let (dir, _) = common::big_store();
    let mut group = c.benchmark_group("load_100k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(common::BIG_ROOM as u64));
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Store::open(dir.path()).unwrap();
                let start = Instant::now();
                let (room, problems) =
                    Room::open(&store, common::room_id(), Identity::generate()).unwrap();
                total += start.elapsed();
                assert!(problems.is_empty());
                assert_eq!(room.len(), common::BIG_ROOM);
                drop(room);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, open_bench);

/// `VmHWM` and `VmRSS` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The child: loads the room at `dir` and prints one `LOAD` line.
fn child(dir: &Path) {
    let identity = Identity::generate();
    let store = Store::open(dir).unwrap();
    let (base_hwm, base_rss) = memory_kib();
    let start = Instant::now();
    let (room, problems) = Room::open(&store, common::room_id(), identity).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let (hwm, rss) = memory_kib();
    assert!(problems.is_empty());
    println!(
        "LOAD records={} secs={secs:.3} base_hwm_kib={base_hwm} base_rss_kib={base_rss} hwm_kib={hwm} rss_kib={rss}",
        room.len()
    );
}

fn memory_report() {
    let (dir, _) = common::big_store();
    let files = common::dir_size(&common::room_dir(dir.path()));
    let snapshots: u64 = std::fs::read_dir(common::room_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    eprintln!(
        "load_100k memory: room directory {files} bytes ({:.1} MiB), of which snapshots {snapshots} bytes",
        files as f64 / 1048576.0
    );
    for run in 1..=3 {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let value = |key: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .unwrap()
                .parse()
                .unwrap()
        };
        let kib = files as f64 / 1024.0;
        eprintln!(
            "load_100k memory run {run}: {line}\n  peak RSS (VmHWM) / files = {:.2}x, RSS after load / files = {:.2}x, (VmHWM - RSS before load) / files = {:.2}x",
            value("hwm_kib") / kib,
            value("rss_kib") / kib,
            (value("hwm_kib") - value("base_rss_kib")) / kib,
        );
    }
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    memory_report();
}
