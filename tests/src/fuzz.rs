//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`: each takes the fuzzer's bytes, runs
//! them through the real code, and panics only when that code breaks a promise (a panic of its
//! own, or an invariant checked here). They live in the workspace so that `cargo test` replays
//! the committed corpus through exactly the code libFuzzer runs (`tests/tests/fuzz_corpus.rs`);
//! the `fuzz/` crate only wraps each in `fuzz_target!`.
//!
//! # Layout
//! - [`frames`]: several inputs (changes, sync messages, files) in one fuzz input.
//! - [`forge`]: deterministic hand-built records and changes, as a hostile peer builds them.
//! - [`seeds`]: the seed corpus: real inputs and, on purpose, every malformed class.

pub mod forge;
pub mod frames;
pub mod seeds;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use grapevine_cli::config_file::ConfigFile;
use grapevine_cli::sanitize::for_terminal;
use grapevine_crdt::room::ApplyReport;
use grapevine_crdt::{
    Identity, ReadOnlyRoom, Received, RecordId, Room, SignedRecord, Store, SyncSession,
};
use grapevine_node::behaviour::Envelope;
use sha2::{Digest, Sha256};

use forge::{Author, lobby};

/// A fuzz target: its name (the file in `fuzz/fuzz_targets/` and the folder in `fuzz/corpus/`)
/// and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, for the corpus replay and the seed writer.
pub const TARGETS: [Target; 7] = [
    ("record", record),
    ("envelope", envelope),
    ("apply_remote", apply_remote),
    ("sync_receive", sync_receive),
    ("store_load", store_load),
    ("config_file", config_file),
    ("sanitize", sanitize),
];

/// libFuzzer's Rust glue installs a panic hook that aborts on every panic, caught or not. The
/// room catches Automerge's panics on crafted input on purpose (with `panic = "unwind"`, as in
/// production), so the targets that reach Automerge put back a hook that lets a caught panic
/// unwind; one from Automerge is not printed, since the room catches those. A panic that escapes
/// a body still ends the run: the glue catches it at the top and aborts.
pub fn let_caught_panics_unwind() {
    std::panic::set_hook(Box::new(|info| {
        let in_automerge = info
            .location()
            .is_some_and(|at| at.file().contains("automerge"));
        if !in_automerge {
            eprintln!("{info}");
        }
    }));
}

/// The device key of the room under test.
fn local_identity() -> Identity {
    Identity::from_secret_bytes([0x11; 32])
}

/// Record decoding and verification: whatever the bytes, `decode` answers; what it accepts is
/// byte-for-byte what it was given, keeps the id of those bytes, and decodes the same trusted.
pub fn record(data: &[u8]) {
    let Ok(signed) = SignedRecord::decode(data) else {
        return;
    };
    assert_eq!(signed.bytes(), data, "an accepted record is its own bytes");
    assert_eq!(signed.id(), RecordId(Sha256::digest(data).into()));
    assert_eq!(SignedRecord::decode_trusted(data).as_ref(), Ok(&signed));
}

/// Gossip envelope decoding, then what the node does with a decoded envelope: its change goes
/// to the room's receive buffer and is applied with the next batch.
pub fn envelope(data: &[u8]) {
    let Ok(envelope) = Envelope::decode(data) else {
        return;
    };
    let mut room = Room::in_memory(lobby(), local_identity());
    room.receive(&envelope.c)
        .expect("buffering a change in memory");
    let report = room
        .apply_received()
        .expect("an in-memory room applies any batch");
    check_report(&room, &report);
    check_document(&mut room);
}

/// `Room::apply_remote` with arbitrary change bytes: frames are changes, and an empty frame ends
/// a batch, so a batch can release changes an earlier one left waiting.
pub fn apply_remote(data: &[u8]) {
    let mut room = Room::in_memory(lobby(), local_identity());
    for batch in frames::split(data).split(|frame| frame.is_empty()) {
        let report = room
            .apply_remote(batch)
            .expect("an in-memory room applies any batch");
        assert_eq!(report.outcomes.len(), batch.len(), "one outcome per change");
        check_report(&room, &report);
    }
    check_document(&mut room);
}

/// A room that already holds an honest history, so that the peer's Bloom filter, heads and
/// needs are checked against real changes.
fn synced_room() -> Room {
    static HISTORY: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let history = HISTORY.get_or_init(seeds::sync_history);
    let mut room = Room::in_memory(lobby(), local_identity());
    let report = room
        .apply_remote(history)
        .expect("an in-memory room applies any batch");
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, Ok(Received::Applied(_)))),
        "the honest history applies"
    );
    room
}

/// Sync-session `receive` with arbitrary bytes: frames are the peer's messages in one session.
/// After each, the room answers as the node does (reset after an error, then the next message),
/// so what the peer said (heads, needs, Bloom filters) is used, not only parsed.
pub fn sync_receive(data: &[u8]) {
    let mut room = synced_room();
    let mut session = SyncSession::new();
    for message in frames::split(data) {
        if room.receive_sync_message(&mut session, message).is_err() {
            session.reset();
        }
        room.generate_sync_message(&mut session)
            .expect("an in-memory room always answers");
    }
    check_document(&mut room);
}

/// Longest file name the store target writes; longer names are cut.
const MAX_FILE_NAME: usize = 64;

/// Store loading from arbitrary file contents: frames come in pairs, a file name (anything that
/// is not a plain name is skipped) and its contents, written into a room's directory. A room
/// that loads once (repairing damaged logs) loads again with nothing left to repair, and its
/// resting epochs wake.
pub fn store_load(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("a new store");
    let room_dir = store.dir().join("rooms").join(lobby().to_string());
    std::fs::create_dir_all(&room_dir).expect("the room's directory");
    for pair in frames::split(data).chunks(2) {
        let [name, contents] = pair else { break };
        let Some(name) = plain_file_name(name) else {
            continue;
        };
        std::fs::write(room_dir.join(name), contents).expect("writing a file");
    }
    // Reading without the lock (as `history` beside a running chat) first: it must leave every
    // file as it is, and when both load, find the records the writing open keeps.
    let files = files_in(&room_dir);
    let read = ReadOnlyRoom::read(&store, lobby());
    assert_eq!(
        files_in(&room_dir),
        files,
        "reading without the lock changed a file"
    );
    let Ok((mut room, _problems)) = Room::open(&store, lobby(), local_identity()) else {
        return;
    };
    if let Ok((read, _unread)) = read {
        let read_ids: BTreeSet<RecordId> = read.records().map(|record| record.id).collect();
        let opened_ids: BTreeSet<RecordId> = room.records().map(|record| record.id).collect();
        assert_eq!(
            read_ids, opened_ids,
            "a read without the lock and the writing open found different records"
        );
    }
    let _ = room.changes_since(&BTreeMap::new());
    room.view();
    drop(room);
    let (_room, problems) =
        Room::open(&store, lobby(), local_identity()).expect("a room that loaded loads again");
    assert!(
        problems.is_empty(),
        "the first load repaired everything: {problems:?}"
    );
}

/// Every file of `dir` with its contents, by name.
fn files_in(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("the room's directory")
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into();
            (name, std::fs::read(&path).unwrap_or_default())
        })
        .collect()
}

/// `name` if it is a plain file name: `[0-9A-Za-z._-]`, not `.` or `..`, cut to
/// [`MAX_FILE_NAME`].
fn plain_file_name(name: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(&name[..name.len().min(MAX_FILE_NAME)]).ok()?;
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    plain.then_some(name)
}

/// The config file parser, on any bytes.
pub fn config_file(data: &[u8]) {
    let _ = ConfigFile::parse(data);
}

/// The terminal sanitiser: on any text, nothing that a terminal acts on (controls, escape
/// introducers, bidirectional overrides) comes out, and each character maps to exactly one.
pub fn sanitize(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for keep_newlines in [false, true] {
        let safe = for_terminal(&text, keep_newlines);
        assert_eq!(safe.chars().count(), text.chars().count());
        for c in safe.chars() {
            let allowed_newline = keep_newlines && c == '\n';
            assert!(
                !c.is_control() || allowed_newline,
                "{c:?} reached the terminal"
            );
            assert!(
                !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'),
                "bidirectional control {c:?} reached the terminal"
            );
        }
    }
}

/// What a report promises: every record it calls new is in the room.
fn check_report(room: &Room, report: &ApplyReport) {
    for id in report.new_records() {
        assert!(
            room.record(&id).is_some(),
            "record {id} reported but not in the room"
        );
    }
}

/// What a room promises whatever it was sent: every change in its documents passed validation,
/// so each one validates again, and the room's view can be built.
fn check_document(room: &mut Room) {
    let changes = room
        .changes_since(&BTreeMap::new())
        .expect("an in-memory room lists its changes");
    for change in &changes {
        if let Err(rejection) = grapevine_crdt::validate_change(&lobby(), change) {
            panic!("the room holds a change that fails validation: {rejection}");
        }
    }
    room.view();
}

/// An author other than the room's own device, for building changes the room receives.
pub fn peer() -> Author {
    Author::new(0x22)
}
