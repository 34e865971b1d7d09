//! Fixtures shared by the benchmarks: realistic message texts and 100,000-record rooms.
#![allow(dead_code)]

use std::path::Path;
use std::time::Instant;

use grapevine_crdt::{Identity, Room, RoomId, Store};

/// Records in the large fixture room.
pub(crate) const BIG_ROOM: usize = 100_000;

/// The room every benchmark uses.
pub(crate) fn room_id() -> RoomId {
    RoomId::for_public_name("bench-lobby").unwrap()
}

/// A realistic chat line of about 100 bytes, different for every `i`.
pub(crate) fn text(i: usize) -> String {
    const WORDS: [&str; 16] = [
        "meeting", "tomorrow", "coffee", "the", "build", "is", "green", "again", "can", "you",
        "review", "my", "patch", "before", "lunch", "thanks",
    ];
    let mut s = format!("#{i}: ");
    let mut k = i.wrapping_mul(2_654_435_761);
    while s.len() < 100 {
        s.push_str(WORDS[k % WORDS.len()]);
        s.push(' ');
        k = k / 3 + 7;
    }
    s.truncate(100);
    s
}

/// Posts `count` messages into `room`, flushing (group commit) every `flush_every` posts.
pub(crate) fn fill(room: &mut Room, start: usize, count: usize, flush_every: usize) {
    for i in start..start + count {
        room.post(&text(i)).unwrap();
        if (i + 1 - start).is_multiple_of(flush_every) {
            room.flush().unwrap();
        }
    }
    room.flush().unwrap();
}

/// An in-memory room holding `count` messages of one author.
pub(crate) fn memory_room(count: usize) -> Room {
    let t = Instant::now();
    let mut room = Room::in_memory(room_id(), Identity::generate());
    fill(&mut room, 0, count, usize::MAX);
    eprintln!(
        "fixture: in-memory room of {count} records built in {:.1?}",
        t.elapsed()
    );
    room
}

/// Writes a persistent room of `count` messages into a store at `dir`, compacted, and returns
/// the identity that wrote it.
pub(crate) fn write_store(dir: &Path, count: usize) -> Identity {
    let t = Instant::now();
    let identity = Identity::generate();
    let store = Store::open(dir).unwrap();
    let (mut room, problems) = Room::open(
        &store,
        room_id(),
        Identity::from_secret_bytes(identity.secret_bytes()),
    )
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    fill(&mut room, 0, count, 1_000);
    room.compact().unwrap();
    assert_eq!(room.len(), count);
    eprintln!(
        "fixture: stored room of {count} records written and compacted in {:.1?} ({} bytes on disk)",
        t.elapsed(),
        dir_size(dir)
    );
    identity
}

/// Copies a directory tree (a store) to `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Total size in bytes of the regular files under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += dir_size(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// A temporary directory on the same disk as the build (not a tmpfs `/tmp`, where fsync is
/// free), so that fsync costs are real.
pub(crate) fn disk_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("grapevine-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The directory of the fixture room's files inside a store at `store_dir`.
pub(crate) fn room_dir(store_dir: &Path) -> std::path::PathBuf {
    store_dir.join("rooms").join(room_id().to_string())
}

/// A compacted store holding a room of [`BIG_ROOM`] records, written once per process, and the
/// identity that wrote it. Benchmarks copy it before opening it (a room is locked while open).
pub(crate) fn big_store() -> &'static (tempfile::TempDir, Identity) {
    static FIXTURE: std::sync::OnceLock<(tempfile::TempDir, Identity)> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = disk_tempdir();
        let identity = write_store(dir.path(), BIG_ROOM);
        (dir, identity)
    })
}

/// A private copy of [`big_store`] in a new directory.
pub(crate) fn copy_of_big_store() -> tempfile::TempDir {
    let copy = disk_tempdir();
    copy_dir(big_store().0.path(), copy.path());
    copy
}

/// Opens the room of the store at `dir` as `identity`, asserting it loaded cleanly.
pub(crate) fn open_room(dir: &Path, identity: &Identity) -> (Store, Room) {
    let store = Store::open(dir).unwrap();
    let (room, problems) = Room::open(
        &store,
        room_id(),
        Identity::from_secret_bytes(identity.secret_bytes()),
    )
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    (store, room)
}
