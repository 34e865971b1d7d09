//! Writes the seed corpus of every fuzz target (or of the targets named as arguments) into
//! `fuzz/corpus/<target>/seed-<name>`, replacing earlier seeds and leaving the inputs the fuzzer
//! found. Run it after changing a wire format:
//! `cargo run -p grapevine-tests --example fuzz_seeds [TARGET…]`.

use std::path::Path;

use anyhow::{Context, Result};
use grapevine_tests::fuzz::{TARGETS, seeds};

fn main() -> Result<()> {
    // Building the seeds makes Automerge panic (caught) on crafted changes: print only the
    // message, not a backtrace for each.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    for (target, _) in TARGETS {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == target) {
            continue;
        }
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let is_seed = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"));
            if is_seed {
                std::fs::remove_file(&path)?;
            }
        }
        let seeds = seeds::for_target(target);
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}
