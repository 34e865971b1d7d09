//! Behaviour of the durable room store: round trips, crash states, damaged
//! files and file permissions.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, ensure};
use grapevine_crdt::store::{
    Corruption, LOG_MAGIC, LoadedEpoch, LoadedRoom, MAX_FRAME_LEN, SNAPSHOT_MAGIC, Store,
    StoreError,
};
use proptest::prelude::*;
use tempfile::TempDir;

const ROOM: &str = "room-1";

fn room_dir(data: &Path, room: &str) -> PathBuf {
    data.join("rooms").join(room)
}

fn log_file(data: &Path, epoch: u32) -> PathBuf {
    room_dir(data, ROOM).join(format!("epoch-{epoch}.log"))
}

fn snap_file(data: &Path, epoch: u32) -> PathBuf {
    room_dir(data, ROOM).join(format!("epoch-{epoch}.snap"))
}

/// Files in the room directory whose name contains `part`, sorted.
fn files_containing(data: &Path, part: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(room_dir(data, ROOM))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().contains(part) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

fn open(data: &Path) -> Result<(grapevine_crdt::store::RoomFiles, LoadedRoom)> {
    Ok(Store::open(data)?.open_room(ROOM)?)
}

/// Distinct, recognisable change chunks of varying length (including empty).
fn change(i: usize) -> Vec<u8> {
    (0..(i * 7) % 23).map(|j| (i * 31 + j) as u8).collect()
}

fn changes(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(change).collect()
}

/// Writes `frames` to epoch 0 of a fresh store, synced, and returns the
/// byte offset at which each frame starts plus the file length.
fn write_log(data: &Path, frames: &[Vec<u8>]) -> Result<Vec<usize>> {
    let (mut room, _) = open(data)?;
    for frame in frames {
        room.append(0, frame)?;
    }
    room.sync()?;
    let mut starts = Vec::new();
    let mut at = LOG_MAGIC.len();
    for frame in frames {
        starts.push(at);
        at += 8 + frame.len();
    }
    starts.push(at);
    ensure!(fs::metadata(log_file(data, 0))?.len() == at as u64);
    Ok(starts)
}

fn epoch_changes(loaded: &LoadedRoom, epoch: u32) -> Vec<Vec<u8>> {
    loaded
        .epochs
        .get(&epoch)
        .map(|e| e.changes.clone())
        .unwrap_or_default()
}

#[test]
fn appended_frames_survive_reopen_in_order_per_epoch() -> Result<()> {
    let tmp = TempDir::new()?;
    {
        let (mut room, loaded) = open(tmp.path())?;
        ensure!(loaded == LoadedRoom::default());
        for i in 0..30 {
            room.append((i % 3) as u32 * 5, &change(i))?;
        }
        room.sync()?;
        ensure!(room.log_frames(0) == 10 && room.log_frames(5) == 10 && room.log_frames(1) == 0);
    }
    let (_room, loaded) = open(tmp.path())?;
    ensure!(loaded.problems.is_empty());
    ensure!(loaded.epochs.keys().copied().collect::<Vec<_>>() == [0, 5, 10]);
    for (k, epoch) in [0u32, 5, 10].into_iter().enumerate() {
        let expected: Vec<_> = (0..30).filter(|i| i % 3 == k).map(change).collect();
        ensure!(loaded.epochs[&epoch].snapshot.is_none());
        ensure!(loaded.epochs[&epoch].changes == expected, "epoch {epoch}");
    }
    Ok(())
}

#[test]
fn appends_are_not_durable_until_sync() -> Result<()> {
    let tmp = TempDir::new()?;
    {
        let (mut room, _) = open(tmp.path())?;
        room.append(0, b"synced")?;
        room.sync()?;
        room.append(0, b"never synced")?;
        room.append(1, b"never synced either")?;
        ensure!(room.log_frames(0) == 2);
    }
    let (room, loaded) = open(tmp.path())?;
    ensure!(loaded.epochs.len() == 1);
    ensure!(epoch_changes(&loaded, 0) == [b"synced".to_vec()]);
    ensure!(room.log_frames(0) == 1);
    Ok(())
}

#[test]
fn only_the_last_unsynced_frame_can_be_taken_back() -> Result<()> {
    let tmp = TempDir::new()?;
    {
        let (mut room, _) = open(tmp.path())?;
        room.append(0, b"synced")?;
        room.sync()?;
        ensure!(!room.unappend(0, b"synced"), "a synced frame stays");
        room.append(0, b"kept")?;
        room.append(0, b"taken back")?;
        ensure!(!room.unappend(0, b"kept"), "only the last frame");
        ensure!(!room.unappend(1, b"taken back"), "only in its own epoch");
        ensure!(room.unappend(0, b"taken back"));
        ensure!(room.log_frames(0) == 2);
        room.sync()?;
    }
    let (_room, loaded) = open(tmp.path())?;
    ensure!(epoch_changes(&loaded, 0) == [b"synced".to_vec(), b"kept".to_vec()]);
    Ok(())
}

#[test]
fn compaction_then_appends_reload_as_snapshot_plus_later_changes() -> Result<()> {
    let tmp = TempDir::new()?;
    {
        let (mut room, _) = open(tmp.path())?;
        for i in 0..5 {
            room.append(0, &change(i))?;
            room.append(1, &change(i + 100))?;
        }
        room.sync()?;
        room.append(0, b"unsynced, but part of the snapshot")?;
        room.compact(0, b"snapshot of epoch 0")?;
        ensure!(room.log_frames(0) == 0 && room.log_frames(1) == 5);
        room.append(0, b"after")?;
        room.sync()?;
    }
    let (mut room, loaded) = open(tmp.path())?;
    ensure!(loaded.problems.is_empty());
    ensure!(
        loaded.epochs[&0]
            == LoadedEpoch {
                snapshot: Some(b"snapshot of epoch 0".to_vec()),
                changes: vec![b"after".to_vec()],
            }
    );
    ensure!(loaded.epochs[&1].snapshot.is_none());
    ensure!(loaded.epochs[&1].changes == changes(100..105));
    ensure!(fs::read(log_file(tmp.path(), 0))?.len() == 8 + 8 + 5);

    // Compacting again replaces the snapshot; an empty snapshot is allowed.
    room.compact(0, b"")?;
    drop(room);
    let (_room, loaded) = open(tmp.path())?;
    ensure!(loaded.epochs[&0].snapshot.as_deref() == Some(&b""[..]));
    ensure!(loaded.epochs[&0].changes.is_empty());
    Ok(())
}

#[test]
fn log_truncated_at_every_offset_keeps_complete_frames() -> Result<()> {
    let frames = changes(1..7);
    let template = TempDir::new()?;
    let starts = write_log(template.path(), &frames)?;
    let full = fs::read(log_file(template.path(), 0))?;
    let first_cut = starts[frames.len() - 3];

    for cut in first_cut..=full.len() {
        let tmp = TempDir::new()?;
        fs::create_dir_all(room_dir(tmp.path(), ROOM))?;
        fs::write(log_file(tmp.path(), 0), &full[..cut])?;

        let (mut room, loaded) = open(tmp.path())?;
        let kept = starts.iter().filter(|&&s| s <= cut).count() - 1;
        ensure!(epoch_changes(&loaded, 0) == frames[..kept], "cut at {cut}");
        ensure!(room.log_frames(0) == kept);
        let boundary = starts[kept];
        if cut == boundary {
            ensure!(
                loaded.problems.is_empty(),
                "cut at {cut}: {:?}",
                loaded.problems
            );
            ensure!(files_containing(tmp.path(), "corrupt")?.is_empty());
        } else {
            ensure!(loaded.problems.len() == 1, "cut at {cut}");
            let problem = &loaded.problems[0];
            ensure!(problem.file == log_file(tmp.path(), 0));
            ensure!(problem.offset == boundary as u64);
            ensure!(problem.bytes == (cut - boundary) as u64);
            ensure!(matches!(problem.reason, Corruption::Truncated { .. }));
            ensure!(fs::read(&problem.set_aside)? == full[boundary..cut]);
            ensure!(
                files_containing(tmp.path(), "corrupt")?
                    == std::slice::from_ref(&problem.set_aside)
            );
            ensure!(problem.to_string().contains("moved to"));
        }
        ensure!(fs::read(log_file(tmp.path(), 0))? == full[..boundary]);

        room.append(0, b"appended after repair")?;
        room.sync()?;
        drop(room);
        let (_room, loaded) = open(tmp.path())?;
        ensure!(loaded.problems.is_empty());
        let mut expected = frames[..kept].to_vec();
        expected.push(b"appended after repair".to_vec());
        ensure!(epoch_changes(&loaded, 0) == expected, "cut at {cut}");
    }
    Ok(())
}

#[test]
fn flipped_bits_in_the_last_frames_are_set_aside_without_panicking() -> Result<()> {
    let frames = changes(1..6);
    let template = TempDir::new()?;
    let starts = write_log(template.path(), &frames)?;
    let full = fs::read(log_file(template.path(), 0))?;
    let first = starts[frames.len() - 3];

    // One data directory, reset for every case: far fewer fsyncs of new dirs.
    let tmp = TempDir::new()?;
    let dir = room_dir(tmp.path(), ROOM);
    for byte in first..full.len() {
        for bit in 0..8 {
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::create_dir_all(&dir)?;
            let mut damaged = full.clone();
            damaged[byte] ^= 1 << bit;
            fs::write(log_file(tmp.path(), 0), &damaged)?;

            let (_room, loaded) = open(tmp.path())?;
            let hit = starts.iter().filter(|&&s| s <= byte).count() - 1;
            let context = format!("byte {byte} bit {bit}");
            ensure!(epoch_changes(&loaded, 0) == frames[..hit], "{context}");
            ensure!(loaded.problems.len() == 1, "{context}");
            let problem = &loaded.problems[0];
            ensure!(problem.offset == starts[hit] as u64, "{context}");
            ensure!(
                fs::read(&problem.set_aside)? == damaged[starts[hit]..],
                "{context}"
            );
            ensure!(fs::read(log_file(tmp.path(), 0))? == full[..starts[hit]]);
        }
    }
    Ok(())
}

#[test]
fn xored_bytes_anywhere_in_a_log_never_panic_and_keep_a_valid_prefix() -> Result<()> {
    let frames = changes(1..5);
    let template = TempDir::new()?;
    write_log(template.path(), &frames)?;
    let full = fs::read(log_file(template.path(), 0))?;

    let tmp = TempDir::new()?;
    let dir = room_dir(tmp.path(), ROOM);
    for byte in 0..full.len() {
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let mut damaged = full.clone();
        damaged[byte] ^= 0xFF;
        fs::write(log_file(tmp.path(), 0), &damaged)?;

        let (_room, loaded) = open(tmp.path())?;
        let kept = epoch_changes(&loaded, 0);
        ensure!(
            frames.starts_with(&kept) && kept.len() < frames.len(),
            "byte {byte}"
        );
        ensure!(loaded.problems.len() == 1, "byte {byte}");
        let problem = &loaded.problems[0];
        // A damaged header moves the whole file aside, leaving no log.
        let mut reassembled = fs::read(log_file(tmp.path(), 0)).unwrap_or_default();
        reassembled.extend(fs::read(&problem.set_aside)?);
        ensure!(reassembled == damaged, "byte {byte}: bytes were lost");
    }
    Ok(())
}

#[test]
fn garbage_log_file_is_set_aside_whole_and_replaced_by_an_empty_log() -> Result<()> {
    for garbage in [
        b"this is not a grapevine log at all".to_vec(),
        b"GVLO".to_vec(),
        b"X".to_vec(),
        vec![0xFF; 4096],
    ] {
        let tmp = TempDir::new()?;
        fs::create_dir_all(room_dir(tmp.path(), ROOM))?;
        fs::write(log_file(tmp.path(), 0), &garbage)?;

        let (mut room, loaded) = open(tmp.path())?;
        ensure!(epoch_changes(&loaded, 0).is_empty());
        ensure!(loaded.problems.len() == 1);
        let problem = &loaded.problems[0];
        ensure!(problem.offset == 0 && problem.bytes == garbage.len() as u64);
        ensure!(fs::read(&problem.set_aside)? == garbage);
        ensure!(!log_file(tmp.path(), 0).exists());

        room.append(0, b"fresh")?;
        room.sync()?;
        drop(room);
        let (_room, loaded) = open(tmp.path())?;
        ensure!(loaded.problems.is_empty());
        ensure!(epoch_changes(&loaded, 0) == [b"fresh".to_vec()]);
    }
    Ok(())
}

#[test]
fn log_with_a_bad_header_but_valid_frames_is_set_aside_whole() -> Result<()> {
    let tmp = TempDir::new()?;
    write_log(tmp.path(), &changes(1..4))?;
    let mut bytes = fs::read(log_file(tmp.path(), 0))?;
    bytes[7] = 0x02; // a future format version
    fs::write(log_file(tmp.path(), 0), &bytes)?;

    let (_room, loaded) = open(tmp.path())?;
    ensure!(epoch_changes(&loaded, 0).is_empty());
    ensure!(loaded.problems.len() == 1);
    ensure!(loaded.problems[0].reason == Corruption::BadMagic);
    ensure!(fs::read(&loaded.problems[0].set_aside)? == bytes);
    Ok(())
}

#[test]
fn empty_headerless_log_loads_as_empty_and_accepts_appends() -> Result<()> {
    let tmp = TempDir::new()?;
    fs::create_dir_all(room_dir(tmp.path(), ROOM))?;
    fs::write(log_file(tmp.path(), 3), b"")?;

    let (mut room, loaded) = open(tmp.path())?;
    ensure!(loaded.problems.is_empty());
    ensure!(loaded.epochs[&3] == LoadedEpoch::default());
    room.append(3, b"first")?;
    room.sync()?;
    room.append(3, b"second")?;
    room.sync()?;
    drop(room);

    let (_room, loaded) = open(tmp.path())?;
    ensure!(loaded.problems.is_empty());
    ensure!(epoch_changes(&loaded, 3) == [b"first".to_vec(), b"second".to_vec()]);
    ensure!(fs::read(log_file(tmp.path(), 3))?.starts_with(&LOG_MAGIC));
    Ok(())
}

#[test]
fn corrupt_snapshot_is_an_error_naming_the_file_which_is_left_untouched() -> Result<()> {
    let good = {
        let tmp = TempDir::new()?;
        let (mut room, _) = open(tmp.path())?;
        room.compact(2, b"a perfectly good snapshot")?;
        fs::read(snap_file(tmp.path(), 2))?
    };
    ensure!(good.starts_with(&SNAPSHOT_MAGIC));

    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    let mut bad_crc = good.clone();
    bad_crc[12] ^= 1;
    let mut bad_payload = good.clone();
    *bad_payload.last_mut().context("empty")? ^= 0x80;
    let mut huge_len = good.clone();
    huge_len[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut trailing = good.clone();
    trailing.push(0);
    let cases = [
        (bad_magic, "bad magic"),
        (bad_crc, "checksum"),
        (bad_payload, "checksum"),
        (huge_len, "exceeds"),
        (trailing, "unexpected bytes"),
        (good[..good.len() - 1].to_vec(), "truncated"),
        (good[..10].to_vec(), "truncated"),
        (good[..5].to_vec(), "truncated"),
        (Vec::new(), "truncated"),
    ];
    for (bytes, expected) in cases {
        let tmp = TempDir::new()?;
        fs::create_dir_all(room_dir(tmp.path(), ROOM))?;
        let path = snap_file(tmp.path(), 2);
        fs::write(&path, &bytes)?;
        fs::write(
            log_file(tmp.path(), 2),
            b"garbage that must not be repaired",
        )?;

        match open(tmp.path())
            .map(|_| ())
            .map_err(|e| e.downcast::<StoreError>())
        {
            Err(Ok(StoreError::CorruptSnapshot {
                path: named,
                reason,
            })) => {
                ensure!(named == path);
                let message = reason.to_string();
                ensure!(message.contains(expected), "{message:?} lacks {expected:?}");
            }
            other => anyhow::bail!("expected CorruptSnapshot, got {other:?}"),
        }
        let err = Store::open(tmp.path())?
            .open_room(ROOM)
            .err()
            .context("loaded a corrupt snapshot")?;
        ensure!(err.to_string().contains(&path.display().to_string()));
        ensure!(fs::read(&path)? == bytes, "snapshot was modified");
        ensure!(fs::read(log_file(tmp.path(), 2))? == b"garbage that must not be repaired");
    }
    Ok(())
}

#[test]
fn crash_mid_compaction_leaves_a_tmp_file_that_is_removed_and_the_old_state_loads() -> Result<()> {
    let tmp = TempDir::new()?;
    {
        let (mut room, _) = open(tmp.path())?;
        room.compact(0, b"old snapshot")?;
        room.append(0, b"old change")?;
        room.sync()?;
    }
    let leftover = room_dir(tmp.path(), ROOM).join("epoch-0.snap.tmp");
    fs::write(&leftover, b"GVSNAP\0\x01 half written")?;
    let leftover_log = room_dir(tmp.path(), ROOM).join("epoch-0.log.tmp");
    fs::write(&leftover_log, b"GVLOG")?;

    let (_room, loaded) = open(tmp.path())?;
    ensure!(loaded.problems.is_empty());
    ensure!(
        loaded.epochs[&0]
            == LoadedEpoch {
                snapshot: Some(b"old snapshot".to_vec()),
                changes: vec![b"old change".to_vec()],
            }
    );
    ensure!(!leftover.exists() && !leftover_log.exists());
    Ok(())
}

#[test]
fn crash_between_snapshot_rename_and_log_reset_loads_both() -> Result<()> {
    let tmp = TempDir::new()?;
    {
        let (mut room, _) = open(tmp.path())?;
        room.append(0, b"change 1")?;
        room.append(0, b"change 2")?;
        room.sync()?;
    }
    let old_log = fs::read(log_file(tmp.path(), 0))?;
    {
        let (mut room, _) = open(tmp.path())?;
        room.compact(0, b"snapshot with changes 1 and 2")?;
    }
    // Put the pre-compaction log back: the state after the snapshot rename
    // but before the log was reset.
    fs::write(log_file(tmp.path(), 0), &old_log)?;

    let (mut room, loaded) = open(tmp.path())?;
    ensure!(loaded.problems.is_empty());
    ensure!(
        loaded.epochs[&0]
            == LoadedEpoch {
                snapshot: Some(b"snapshot with changes 1 and 2".to_vec()),
                changes: vec![b"change 1".to_vec(), b"change 2".to_vec()],
            }
    );
    ensure!(room.log_frames(0) == 2);
    room.append(0, b"change 3")?;
    room.sync()?;
    drop(room);
    let (_room, loaded) = open(tmp.path())?;
    ensure!(epoch_changes(&loaded, 0).len() == 3);
    Ok(())
}

#[cfg(unix)]
#[test]
fn files_are_0600_and_directories_0700() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let tmp = TempDir::new()?;
    let data = tmp.path().join("data");
    let mode = |p: &Path| -> Result<u32> { Ok(fs::metadata(p)?.permissions().mode() & 0o777) };
    {
        let (mut room, _) = open(&data)?;
        room.append(0, b"x")?;
        room.append(1, b"y")?;
        room.sync()?;
        room.compact(1, b"snap")?;
    }
    // Damage a log so a set-aside file is created too.
    let mut bytes = fs::read(log_file(&data, 0))?;
    bytes.push(1);
    fs::write(log_file(&data, 0), &bytes)?;
    let (_room, loaded) = open(&data)?;
    ensure!(loaded.problems.len() == 1);

    for dir in [data.clone(), data.join("rooms"), room_dir(&data, ROOM)] {
        ensure!(mode(&dir)? == 0o700, "{}", dir.display());
    }
    let mut files = 0;
    for entry in fs::read_dir(room_dir(&data, ROOM))? {
        let path = entry?.path();
        ensure!(mode(&path)? == 0o600, "{}", path.display());
        files += 1;
    }
    ensure!(files == 5, "lock, 2 logs, 1 snapshot, 1 set-aside: {files}");
    Ok(())
}

#[test]
fn room_keys_are_validated_and_listed_sorted() -> Result<()> {
    let tmp = TempDir::new()?;
    let store = Store::open(tmp.path())?;
    let long = "a".repeat(129);
    for bad in ["", "..", "a/b", "Room", "a.b", "é", " a", long.as_str()] {
        ensure!(
            matches!(store.open_room(bad), Err(StoreError::InvalidRoomKey { .. })),
            "{bad:?} accepted"
        );
    }
    let max = "z".repeat(128);
    for good in ["b-2", "a", "0-9", max.as_str()] {
        store.open_room(good)?;
    }
    fs::create_dir(tmp.path().join("rooms").join("Not-A-Key"))?;
    fs::write(tmp.path().join("rooms").join("stray-file"), b"")?;
    ensure!(store.room_keys()? == ["0-9", "a", "b-2", max.as_str()]);
    Ok(())
}

#[test]
fn oversized_change_is_rejected_and_nothing_is_written() -> Result<()> {
    let tmp = TempDir::new()?;
    let (mut room, _) = open(tmp.path())?;
    let big = vec![0u8; MAX_FRAME_LEN + 1];
    ensure!(matches!(
        room.append(0, &big),
        Err(StoreError::FrameTooLarge { .. })
    ));
    ensure!(room.log_frames(0) == 0);
    room.sync()?;
    ensure!(!log_file(tmp.path(), 0).exists());
    Ok(())
}

#[test]
fn a_room_can_only_be_opened_once_at_a_time() -> Result<()> {
    let tmp = TempDir::new()?;
    let store = Store::open(tmp.path())?;
    let first = store.open_room(ROOM)?;
    ensure!(matches!(
        store.open_room(ROOM),
        Err(StoreError::RoomBusy { .. })
    ));
    drop(first);
    store.open_room(ROOM)?;
    Ok(())
}

/// Every file in the room directory with its bytes, by name.
fn room_files(data: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(room_dir(data, ROOM))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, fs::read(entry.path())?);
    }
    Ok(files)
}

#[test]
fn a_reader_sees_what_the_writer_holding_the_room_synced_and_changes_no_file() -> Result<()> {
    let tmp = TempDir::new()?;
    let store = Store::open(tmp.path())?;
    let (mut writer, _) = store.open_room(ROOM)?;
    for i in 0..5 {
        writer.append(0, &change(i))?;
    }
    writer.compact(1, b"snapshot of epoch 1")?;
    writer.append(1, &change(5))?;
    writer.append(2, &change(6))?;
    writer.sync()?;
    writer.append(0, b"appended, not synced")?;
    // A frame being written to epoch 2 (its header and half its payload), a log whose header is
    // damaged, and an atomic write under way.
    let torn = {
        let mut frame = 100u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0xAB; 54]);
        frame
    };
    fs::OpenOptions::new()
        .append(true)
        .open(log_file(tmp.path(), 2))?
        .write_all(&torn)?;
    fs::write(log_file(tmp.path(), 3), b"not a log")?;
    fs::write(room_dir(tmp.path(), ROOM).join("epoch-4.snap.tmp"), b"half")?;
    let before = room_files(tmp.path())?;

    let read = store.read_room(ROOM)?;

    ensure!(room_files(tmp.path())? == before, "a file changed");
    ensure!(read.epochs[&0].changes == changes(0..5) && read.epochs[&0].snapshot.is_none());
    ensure!(read.epochs[&1].snapshot.as_deref() == Some(&b"snapshot of epoch 1"[..]));
    ensure!(read.epochs[&1].changes == [change(5)]);
    ensure!(read.epochs[&2].changes == [change(6)]);
    ensure!(read.epochs[&3] == LoadedEpoch::default());
    ensure!(!read.epochs.contains_key(&4));
    let unread: Vec<_> = read
        .unread
        .iter()
        .map(|tail| (tail.file.clone(), tail.offset, tail.bytes))
        .collect();
    let epoch_2_len = fs::metadata(log_file(tmp.path(), 2))?.len();
    ensure!(
        unread
            == [
                (
                    log_file(tmp.path(), 2),
                    epoch_2_len - torn.len() as u64,
                    torn.len() as u64
                ),
                (log_file(tmp.path(), 3), 0, 9),
            ],
        "{unread:?}"
    );
    // The writer still holds the room and goes on writing where it was.
    ensure!(matches!(
        store.open_room(ROOM),
        Err(StoreError::RoomBusy { .. })
    ));
    writer.sync()?;
    drop(writer);
    let (_room, loaded) = store.open_room(ROOM)?;
    ensure!(
        epoch_changes(&loaded, 0).last().map(Vec::as_slice) == Some(&b"appended, not synced"[..])
    );
    Ok(())
}

#[test]
fn a_reader_racing_a_writer_that_appends_and_compacts_sees_every_synced_change() -> Result<()> {
    const CHANGES: usize = 400;
    let tmp = TempDir::new()?;
    let store = Store::open(tmp.path())?;
    let (mut writer, _) = store.open_room(ROOM)?;
    let synced = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let writing = scope.spawn(|| -> Result<()> {
            let mut doc = Vec::new();
            for i in 0..CHANGES {
                writer.append(0, &change(i))?;
                doc.push(change(i));
                writer.sync()?;
                synced.store(i + 1, Ordering::SeqCst);
                if i % 7 == 6 {
                    writer.compact(0, &encode(&doc))?;
                }
            }
            Ok(())
        });
        let mut reads = 0;
        while reads < 20 || synced.load(Ordering::SeqCst) < CHANGES {
            let durable = synced.load(Ordering::SeqCst);
            let read = store.read_room(ROOM)?;
            reads += 1;
            let mut seen = Vec::new();
            if let Some(epoch) = read.epochs.get(&0) {
                if let Some(snapshot) = &epoch.snapshot {
                    seen.extend(decode(snapshot)?);
                }
                seen.extend(epoch.changes.iter().cloned());
            }
            for i in 0..durable {
                ensure!(
                    seen.contains(&change(i)),
                    "read {reads}: change {i} of {durable} missing"
                );
            }
            ensure!(
                read.unread.iter().all(|tail| tail.offset > 0),
                "{:?}",
                read.unread
            );
        }
        writing.join().expect("the writer thread panicked")
    })?;
    Ok(())
}

#[test]
fn files_that_are_not_canonical_epoch_names_are_ignored() -> Result<()> {
    let tmp = TempDir::new()?;
    fs::create_dir_all(room_dir(tmp.path(), ROOM))?;
    for name in [
        "epoch-01.log",
        "epoch-.log",
        "epoch-4294967296.log",
        "notes.txt",
    ] {
        fs::write(room_dir(tmp.path(), ROOM).join(name), b"junk")?;
    }
    let (_room, loaded) = open(tmp.path())?;
    ensure!(loaded == LoadedRoom::default());
    Ok(())
}

// --- model-based property test -------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append(u32, Vec<u8>),
    Sync,
    Compact(u32),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3, proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(e, c)| Op::Append(e, c)),
        2 => Just(Op::Sync),
        1 => (0u32..3).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// What the caller's document and the disk should hold for one epoch.
#[derive(Debug, Default, Clone)]
struct ModelEpoch {
    /// Every change the caller's document holds (what a snapshot contains).
    doc: Vec<Vec<u8>>,
    snapshot: Option<Vec<u8>>,
    durable_log: Vec<Vec<u8>>,
    pending: Vec<Vec<u8>>,
}

/// A stand-in for Automerge `save()`: length-prefixed concatenation.
fn encode(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in changes {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes.get(..4).context("short")?.try_into()?) as usize;
        out.push(bytes.get(4..4 + len).context("short")?.to_vec());
        bytes = &bytes[4 + len..];
    }
    Ok(out)
}

fn check_loaded(model: &BTreeMap<u32, ModelEpoch>, loaded: &LoadedRoom) -> Result<()> {
    ensure!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let expected: BTreeMap<u32, LoadedEpoch> = model
        .iter()
        .filter(|(_, m)| m.snapshot.is_some() || !m.durable_log.is_empty())
        .map(|(&e, m)| {
            let epoch = LoadedEpoch {
                snapshot: m.snapshot.clone(),
                changes: m.durable_log.clone(),
            };
            (e, epoch)
        })
        .collect();
    ensure!(loaded.epochs == expected);
    Ok(())
}

fn run_ops(ops: &[Op]) -> Result<()> {
    let tmp = TempDir::new()?;
    let store = Store::open(tmp.path())?;
    let mut model: BTreeMap<u32, ModelEpoch> = BTreeMap::new();
    let (mut room, loaded) = store.open_room(ROOM)?;
    check_loaded(&model, &loaded)?;
    for op in ops {
        match op {
            Op::Append(epoch, change) => {
                room.append(*epoch, change)?;
                let m = model.entry(*epoch).or_default();
                m.doc.push(change.clone());
                m.pending.push(change.clone());
            }
            Op::Sync => {
                room.sync()?;
                for m in model.values_mut() {
                    let pending = std::mem::take(&mut m.pending);
                    m.durable_log.extend(pending);
                }
            }
            Op::Compact(epoch) => {
                let m = model.entry(*epoch).or_default();
                let snapshot = encode(&m.doc);
                room.compact(*epoch, &snapshot)?;
                m.snapshot = Some(snapshot);
                m.durable_log.clear();
                m.pending.clear();
            }
            Op::Reopen => {
                drop(room);
                let reopened = store.open_room(ROOM)?;
                room = reopened.0;
                check_loaded(&model, &reopened.1)?;
                // Restart: unsynced changes are gone and the document is
                // rebuilt from what was on disk.
                for m in model.values_mut() {
                    m.pending.clear();
                    let mut doc = match &m.snapshot {
                        Some(s) => decode(s)?,
                        None => Vec::new(),
                    };
                    doc.extend(m.durable_log.iter().cloned());
                    m.doc = doc;
                }
            }
        }
        for (&epoch, m) in &model {
            ensure!(room.log_frames(epoch) == m.durable_log.len() + m.pending.len());
        }
        let read = store.read_room(ROOM)?;
        ensure!(read.unread.is_empty(), "{:?}", read.unread);
        check_loaded(
            &model,
            &LoadedRoom {
                epochs: read.epochs,
                problems: Vec::new(),
            },
        )?;
    }
    drop(room);
    let (_room, loaded) = store.open_room(ROOM)?;
    for m in model.values_mut() {
        m.pending.clear();
    }
    check_loaded(&model, &loaded)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_append_sync_compact_reopen_sequences_match_a_model(
        ops in proptest::collection::vec(op(), 0..40)
    ) {
        run_ops(&ops).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
