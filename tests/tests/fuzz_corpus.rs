//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same bodies libFuzzer
//! runs, so every input that ever found a crash or new coverage keeps being checked by
//! `cargo test`, without cargo-fuzz or a nightly toolchain.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grapevine_tests::fuzz::{TARGETS, seeds};

/// The whole replay must finish within this (in a debug build); it takes a few seconds.
const REPLAY_BUDGET: Duration = Duration::from_secs(120);

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus file").path())
        .collect();
    files.sort();
    files
}

/// Prints a panic's message and place without a backtrace: Automerge panics on crafted inputs
/// and the room catches it, and with `RUST_BACKTRACE` set each caught panic would print (and
/// slowly symbolise) a backtrace.
fn print_panics_briefly() {
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
}

#[test]
fn every_committed_fuzz_input_runs_through_its_target_without_a_failure() {
    print_panics_briefly();
    let started = Instant::now();
    for (target, body) in TARGETS {
        let files = corpus_files(target);
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in files {
            let input = std::fs::read(&file).unwrap();
            eprintln!("{target}: {}", file.display());
            body(&input);
        }
    }
    assert!(
        started.elapsed() < REPLAY_BUDGET,
        "the replay took {:?}",
        started.elapsed()
    );
}

#[test]
fn every_target_has_its_committed_seeds_for_each_malformed_class() {
    print_panics_briefly();
    for (target, _) in TARGETS {
        let files = corpus_files(target);
        for (name, _) in seeds::for_target(target) {
            let file = format!("seed-{name}");
            assert!(
                files.iter().any(|f| f.ends_with(&file)),
                "{target}: seed {file} is not committed (run the fuzz_seeds example)"
            );
        }
    }
}
