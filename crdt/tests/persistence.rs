//! A room kept in a store survives restarts, compaction and damaged log tails.
#![allow(clippy::unwrap_used)]

use std::fs;

use grapevine_crdt::room::EPOCH_CAPACITY;
use grapevine_crdt::{Identity, ReadOnlyRoom, Room, RoomId, Store, SyncSession};

fn lobby() -> RoomId {
    RoomId::for_public_name("lobby").unwrap()
}

fn log_path(store: &Store, epoch: u32) -> std::path::PathBuf {
    store
        .dir()
        .join("rooms")
        .join(lobby().to_string())
        .join(format!("epoch-{epoch}.log"))
}

#[test]
fn flushed_records_are_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = Identity::generate();
    let (mut room, problems) = Room::open(&store, lobby(), identity.clone()).unwrap();
    assert!(problems.is_empty());
    let first = room.post("hello").unwrap();
    room.set_profile("ana").unwrap();
    room.react(first.id, "👍", true).unwrap();
    room.edit(first.id, "hello, world").unwrap();
    room.flush().unwrap();
    let view = room.view();
    let heads = room.heads();
    drop(room);

    let (mut reopened, problems) = Room::open(&store, lobby(), identity).unwrap();
    assert!(problems.is_empty());
    assert_eq!(reopened.view(), view);
    assert_eq!(reopened.heads(), heads);
    assert_eq!(reopened.view().messages[0].text, "hello, world");
    // A new session writes under a new actor and continues the history.
    reopened.post("again").unwrap();
    assert_eq!(reopened.len(), 5);
}

#[test]
fn remote_records_are_stored_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sender = Room::in_memory(lobby(), Identity::generate());
    let changes: Vec<Vec<u8>> = (0..20)
        .map(|i| sender.post(&format!("message {i}")).unwrap().change)
        .collect();
    let identity = Identity::generate();
    let (mut room, _) = Room::open(&store, lobby(), identity.clone()).unwrap();
    let report = room.apply_remote(&changes).unwrap();
    assert_eq!(report.new_records().count(), 20);
    room.flush().unwrap();
    drop(room);
    let (reopened, _) = Room::open(&store, lobby(), identity).unwrap();
    assert_eq!(reopened.view(), sender.view());
}

#[test]
fn compacted_room_reloads_with_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = Identity::generate();
    let (mut room, _) = Room::open(&store, lobby(), identity.clone()).unwrap();
    for i in 0..50 {
        room.post(&format!("before {i}")).unwrap();
    }
    room.compact().unwrap();
    for i in 0..5 {
        room.post(&format!("after {i}")).unwrap();
    }
    room.flush().unwrap();
    let view = room.view();
    drop(room);
    let (reopened, problems) = Room::open(&store, lobby(), identity).unwrap();
    assert!(problems.is_empty());
    assert_eq!(reopened.len(), 55);
    assert_eq!(reopened.view(), view);
}

#[test]
fn torn_log_tail_is_reported_and_the_rest_of_the_room_loads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = Identity::generate();
    let (mut room, _) = Room::open(&store, lobby(), identity.clone()).unwrap();
    for i in 0..10 {
        room.post(&format!("message {i}")).unwrap();
    }
    room.flush().unwrap();
    drop(room);
    let log = log_path(&store, 0);
    let len = fs::metadata(&log).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 7).unwrap();
    drop(file);

    let (room, problems) = Room::open(&store, lobby(), identity).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].set_aside.exists());
    assert_eq!(room.len(), 9);
}

#[test]
fn unflushed_writes_are_not_reported_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = Identity::generate();
    let (mut room, _) = Room::open(&store, lobby(), identity.clone()).unwrap();
    room.post("durable").unwrap();
    room.flush().unwrap();
    room.post("not yet flushed").unwrap();
    drop(room);
    let (reopened, _) = Room::open(&store, lobby(), identity).unwrap();
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened.view().messages[0].text, "durable");
}

#[test]
fn a_write_taken_back_after_a_failed_flush_is_neither_stored_nor_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = Identity::generate();
    let (mut room, _) = Room::open(&store, lobby(), identity.clone()).unwrap();
    let kept = room.post("kept").unwrap();
    room.flush().unwrap();
    let mut other = Room::in_memory(lobby(), Identity::generate());
    let received = other.post("received, not yet flushed").unwrap();
    room.apply_remote(&[&received.change]).unwrap();

    let taken = room.post("taken back").unwrap();
    assert!(room.unwrite(&taken).unwrap());
    assert!(room.record(&taken.id).is_none());
    assert!(room.view().messages.iter().all(|m| m.text != "taken back"));
    // The room goes on as if the write had never happened.
    let next = room.post("next").unwrap();
    room.flush().unwrap();
    let stored = room.post("stored").unwrap();
    room.flush().unwrap();
    assert!(!room.unwrite(&stored).unwrap(), "a stored write stays");
    assert!(room.record(&stored.id).is_some());

    let mut peer = Room::in_memory(lobby(), Identity::generate());
    sync(&mut room, &mut peer);
    let texts = |room: &Room| -> Vec<String> {
        let mut texts: Vec<String> = room.view().messages.into_iter().map(|m| m.text).collect();
        texts.sort();
        texts
    };
    let expected = ["kept", "next", "received, not yet flushed", "stored"];
    assert_eq!(texts(&peer), expected);
    assert!(peer.record(&taken.id).is_none());
    drop(room);
    let (reopened, problems) = Room::open(&store, lobby(), identity).unwrap();
    assert!(problems.is_empty());
    assert_eq!(texts(&reopened), expected);
    for id in [kept.id, next.id, stored.id, received.id] {
        assert!(reopened.record(&id).is_some());
    }
}

/// Runs sync between two rooms until both are quiet (bounded).
fn sync(a: &mut Room, b: &mut Room) {
    let (mut sa, mut sb) = (SyncSession::new(), SyncSession::new());
    for _ in 0..20 {
        let from_a = a.generate_sync_message(&mut sa).unwrap();
        if let Some(m) = &from_a {
            b.receive_sync_message(&mut sb, m).unwrap();
        }
        let from_b = b.generate_sync_message(&mut sb).unwrap();
        if let Some(m) = &from_b {
            a.receive_sync_message(&mut sa, m).unwrap();
        }
        if from_a.is_none() && from_b.is_none() {
            return;
        }
    }
    panic!("sync did not finish within 20 rounds");
}

#[test]
fn full_epochs_rest_on_disk_and_wake_for_late_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = Identity::generate();
    let (mut busy, _) = Room::open(&store, lobby(), identity.clone()).unwrap();
    let mut offline = Room::in_memory(lobby(), Identity::generate());
    let first = busy.post("first").unwrap();
    offline.apply_remote(&[first.change]).unwrap();
    // While offline, a member keeps writing into the first epoch...
    for i in 0..10 {
        offline.post(&format!("written offline {i}")).unwrap();
    }
    // ...while the busy member fills it and moves on to the next one.
    for i in 0..EPOCH_CAPACITY {
        busy.post(&format!("busy {i}")).unwrap();
    }
    busy.flush().unwrap();
    busy.flush().unwrap();
    assert_eq!(
        busy.epochs_in_memory(),
        1,
        "the full epoch should rest on disk"
    );

    sync(&mut busy, &mut offline);
    assert_eq!(busy.len(), 1 + EPOCH_CAPACITY + 10);
    assert_eq!(busy.heads(), offline.heads());
    assert_eq!(busy.view(), offline.view());
    busy.flush().unwrap();
    let view = busy.view();
    drop(busy);

    let (mut reopened, problems) = Room::open(&store, lobby(), identity).unwrap();
    assert!(problems.is_empty());
    // The woken epoch took records since its snapshot: it stays in memory until a flush
    // compacts it.
    assert_eq!(reopened.epochs_in_memory(), 2);
    reopened.flush().unwrap();
    assert_eq!(reopened.epochs_in_memory(), 1);
    assert_eq!(reopened.view(), view);
    assert_eq!(reopened.heads(), offline.heads());
}

#[test]
fn a_read_only_copy_shows_what_the_room_open_elsewhere_flushed_and_leaves_its_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mut room, _) = Room::open(&store, lobby(), Identity::generate()).unwrap();
    let hello = room.post("hello").unwrap();
    room.set_profile("ana").unwrap();
    room.react(hello.id, "👍", true).unwrap();
    room.flush().unwrap();
    room.post("not flushed yet").unwrap();
    let mut log = fs::read(log_path(&store, 0)).unwrap();
    // A frame being written: its header, and part of its payload.
    log.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 5]);
    fs::write(log_path(&store, 0), &log).unwrap();

    let (copy, unread) = ReadOnlyRoom::read(&store, lobby()).unwrap();

    assert_eq!(fs::read(log_path(&store, 0)).unwrap(), log);
    assert_eq!(unread.len(), 1);
    assert_eq!(unread[0].bytes, 9);
    assert_eq!(copy.records().count(), 3);
    let view = copy.view();
    assert_eq!(view.messages.len(), 1);
    assert_eq!(view.messages[0].text, "hello");
    assert_eq!(view.nickname(&room.author()), Some("ana"));
    // The room stays open and writable.
    room.flush().unwrap();
    let (copy, unread) = ReadOnlyRoom::read(&store, lobby()).unwrap();
    assert!(unread.is_empty());
    assert_eq!(copy.view().messages.len(), 2);
    assert_eq!(copy.view(), room.view());
}
