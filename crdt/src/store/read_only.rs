//! Reading a room's files without its lock, so that a second process (`grapevine history`) can
//! show a room that a running peer holds open.
//!
//! # Why no lock is taken, and why what is read is consistent
//!
//! A shared lock would make a peer that starts meanwhile find the room busy, so the reader takes
//! none. It never creates, writes, renames, truncates or deletes anything, so the writer cannot
//! tell it is there. What the writer may do under it, and how each case is met:
//!
//! * **Appends** grow a log in place. The log is read to its end as it is at that moment; a frame
//!   cut short or not yet matching its checksum at the end is not read and is reported as an
//!   [`UnreadTail`] (it is also what a damaged tail looks like).
//! * **Atomic replacements** (a log created whole, compaction's new snapshot and emptied log)
//!   rename a complete file over the old one: a file already open keeps its old contents, and a
//!   file opened later is complete. Temporary `.tmp` files are neither read nor removed.
//! * **Compaction** renames the new snapshot into place first and the emptied log second. For each
//!   epoch the log is opened before the snapshot, so the snapshot read is never older than the
//!   one the log continues: the two together hold every change durable when the log was opened,
//!   and possibly some twice, which loading ignores. Snapshots are looked for whatever the
//!   directory listing showed, so one written between the listing and the read is found.
//! * **Repairs** by a peer opening the room meanwhile cut a damaged tail (never read anyway) or
//!   move a log whose header is bad aside (a missing log reads as empty).
//!
//! Epoch files that appear after the directory was listed are not read: they hold later writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{
    Corruption, LoadedEpoch, ROOMS_DIR, Store, StoreError, io_err, is_valid_room_key,
    load_snapshot, log_path, parse_epoch_file, parse_log, snapshot_path,
};

/// The stored contents of one room, as read by [`Store::read_room`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRoom {
    /// Every epoch with a snapshot or log file on disk, by epoch number.
    pub epochs: BTreeMap<u32, LoadedEpoch>,
    /// Log tails that were not read (empty when every log was read to its end).
    pub unread: Vec<UnreadTail>,
}

/// The end of a log that [`Store::read_room`] did not read: damaged, or a frame being written at
/// that moment. Reported so that a caller can say its view may miss something; the bytes are left
/// where they are, for the next [`Store::open_room`] to set aside if they are damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadTail {
    /// The log file.
    pub file: PathBuf,
    /// Byte offset in `file` where the unread part starts.
    pub offset: u64,
    /// What was wrong at `offset` when it was read.
    pub reason: Corruption,
    /// How many bytes were not read.
    pub bytes: u64,
}

impl Store {
    /// Reads a room's stored contents without opening it for writing: no lock is taken and no
    /// file is created, changed or removed, so it works while a [`super::RoomFiles`] of this or
    /// another process holds the room, and the writer never notices. What is read holds every
    /// change stored before this started, and perhaps some stored while it ran (see the module
    /// documentation of `store::read_only`); a log tail that is damaged or still being written is
    /// not read but reported. A damaged snapshot
    /// is [`StoreError::CorruptSnapshot`], as at [`Store::open_room`]; a room with no directory
    /// is an I/O error (not found).
    pub fn read_room(&self, room_key: &str) -> Result<StoredRoom, StoreError> {
        if !is_valid_room_key(room_key) {
            return Err(StoreError::InvalidRoomKey {
                key: room_key.to_owned(),
            });
        }
        let dir = self.dir.join(ROOMS_DIR).join(room_key);
        let mut stored = StoredRoom::default();
        for epoch in list_epochs(&dir)? {
            // The log first: see the module documentation.
            let log = log_path(&dir, epoch);
            let changes = read_log(&log, &mut stored.unread)?;
            let snapshot = load_snapshot(&snapshot_path(&dir, epoch))?;
            stored
                .epochs
                .insert(epoch, LoadedEpoch { snapshot, changes });
        }
        Ok(stored)
    }
}

/// Epochs with a snapshot or a log in the room directory `dir`, leaving every file alone.
fn list_epochs(dir: &Path) -> Result<BTreeSet<u32>, StoreError> {
    let mut epochs = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let file_type = entry.file_type().map_err(io_err(&entry.path()))?;
        if !file_type.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(epoch) =
            parse_epoch_file(&name, ".snap").or_else(|| parse_epoch_file(&name, ".log"))
        {
            epochs.insert(epoch);
        }
    }
    Ok(epochs)
}

/// The changes in the valid prefix of the log at `path` (none if it is missing); a tail past it
/// is reported in `unread`.
fn read_log(path: &Path, unread: &mut Vec<UnreadTail>) -> Result<Vec<Vec<u8>>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let parsed = parse_log(&bytes);
    if let Some(reason) = parsed.damage {
        unread.push(UnreadTail {
            file: path.to_path_buf(),
            offset: parsed.good_len as u64,
            reason,
            bytes: (bytes.len() - parsed.good_len) as u64,
        });
    }
    Ok(parsed.changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interleaving the order of reads is for: a compaction lands after the log was read and
    /// before the snapshot is. Reading the snapshot first would then pair the old snapshot with
    /// the emptied log and miss what the old log held.
    #[test]
    fn a_compaction_between_reading_the_log_and_the_snapshot_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (mut writer, _) = store.open_room("room").unwrap();
        writer.compact(0, b"a").unwrap();
        writer.append(0, b"b").unwrap();
        writer.sync().unwrap();
        let room = dir.path().join(ROOMS_DIR).join("room");

        let mut unread = Vec::new();
        let changes = read_log(&log_path(&room, 0), &mut unread).unwrap();
        writer.compact(0, b"ab").unwrap();
        writer.append(0, b"c").unwrap();
        writer.sync().unwrap();
        let snapshot = load_snapshot(&snapshot_path(&room, 0)).unwrap();

        assert_eq!(changes, [b"b".to_vec()]);
        assert_eq!(snapshot.as_deref(), Some(&b"ab"[..]));
        assert!(unread.is_empty());
    }
}
