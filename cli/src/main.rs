//! The `grapevine` binary. The terminal client, bootstrap node and scripting mode are built by the
//! CLI issue; until then the binary says so instead of pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "grapevine {}: the chat client is not built yet; `cargo bench -p grapevine-crdt` measures the room layer",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
