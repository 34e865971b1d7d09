//! Durable per-room storage of opaque document bytes.
//!
//! A room's history is split into numbered *epochs* (`u32`). For each epoch
//! the store keeps a compacted snapshot (whatever bytes the caller got from
//! Automerge `save()`) and an append-only log of change chunks received since
//! that snapshot. The store never interprets those bytes; it only guarantees
//! that what it acknowledged as durable comes back after a crash, and that
//! damaged files are reported and preserved rather than silently dropped.
//!
//! # Layout
//!
//! ```text
//! <dir>/rooms/                              mode 0700
//! <dir>/rooms/<room_key>/                   mode 0700
//! <dir>/rooms/<room_key>/lock               mode 0600, empty; flock()ed while a RoomFiles is alive
//!                                           (readers, see [`Store::read_room`], take no lock)
//! <dir>/rooms/<room_key>/epoch-<n>.snap     mode 0600
//! <dir>/rooms/<room_key>/epoch-<n>.log      mode 0600
//! <dir>/rooms/<room_key>/epoch-<n>.log.corrupt-<unix millis>[-<k>]   damaged bytes set aside
//! ```
//!
//! `<n>` is the epoch in canonical decimal (no leading zeros). `<room_key>` is
//! 1 to 128 characters of `[0-9a-z-]`, so it can never name another
//! directory. Files ending in `.tmp` are unfinished atomic writes and are
//! deleted when the room is opened.
//!
//! # File formats
//!
//! All integers are little endian. A *frame* is
//!
//! ```text
//! u32 payload length | u32 crc32 (IEEE, as computed by crc32fast) of payload | payload
//! ```
//!
//! * **Log** (`epoch-<n>.log`): the 8-byte magic [`LOG_MAGIC`], then zero or
//!   more frames, one per appended change chunk. A payload longer than
//!   [`MAX_FRAME_LEN`] is corruption. A missing or zero-length log is an empty
//!   log.
//! * **Snapshot** (`epoch-<n>.snap`): the 8-byte magic [`SNAPSHOT_MAGIC`], then
//!   exactly one frame whose payload (at most [`MAX_SNAPSHOT_LEN`] bytes) is
//!   the snapshot. Nothing may follow it.
//!
//! # Durability contract
//!
//! * [`RoomFiles::append`] only buffers in memory. [`RoomFiles::sync`] is the
//!   group commit: once it returns `Ok`, every frame appended before it
//!   survives a crash. Dropping a [`RoomFiles`] discards unsynced appends.
//! * [`RoomFiles::compact`] durably writes the snapshot (temporary file,
//!   fsync, rename, directory fsync) and then atomically replaces the epoch's
//!   log by an empty one. **The snapshot must contain every change appended
//!   to that epoch so far**, including unsynced ones, which are discarded
//!   rather than written. A crash between the two steps leaves a new
//!   snapshot next to the old log, whose changes are then loaded again; the
//!   caller applies such duplicates idempotently (Automerge does).
//!
//! # Damage handling
//!
//! * A log whose tail is torn or corrupt (short frame, CRC mismatch, declared
//!   length above [`MAX_FRAME_LEN`]) keeps every valid frame before the first
//!   bad one. The bytes from the bad frame to the end are copied to a
//!   `.corrupt-*` file (fsynced), then the log is truncated to the good prefix
//!   (fsynced) and a [`LoadProblem`] is returned. A log whose header is bad is
//!   renamed aside as a whole and the epoch continues with an empty log.
//! * A damaged snapshot makes [`Store::open_room`] fail with
//!   [`StoreError::CorruptSnapshot`]; the file is never modified or deleted.
//! * [`Store::read_room`] repairs nothing: it reads the valid prefix of each
//!   log, reports the rest as an [`UnreadTail`] and leaves every file as it
//!   is (the next [`Store::open_room`] sets the damage aside).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fs::{
    PRIVATE_FILE_MODE, create_new_file, create_private_dir_all, remove_if_exists, sync_dir,
    write_file_atomically, write_file_atomically_parts,
};

mod read_only;

pub use read_only::{StoredRoom, UnreadTail};

/// Magic header that starts every log file (format version 1).
pub const LOG_MAGIC: [u8; 8] = *b"GVLOG\0\0\x01";

/// Magic header that starts every snapshot file (format version 1).
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"GVSNAP\0\x01";

/// Largest change chunk a log frame may hold (64 MiB).
///
/// It bounds the memory a corrupt length field can make the loader believe
/// it needs, and lets [`RoomFiles::append`] reject absurd inputs early.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Largest snapshot the store accepts (1 GiB), for the same reasons as
/// [`MAX_FRAME_LEN`].
pub const MAX_SNAPSHOT_LEN: usize = 1024 * 1024 * 1024;

/// Longest accepted room key, so keys stay usable as file names everywhere.
pub const MAX_ROOM_KEY_LEN: usize = 128;

const MAGIC_LEN: usize = 8;
const FRAME_HEADER_LEN: usize = 8;
const ROOMS_DIR: &str = "rooms";
const LOCK_FILE: &str = "lock";

/// Everything that can go wrong while storing or loading rooms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system call on `path` failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The room key could be used to escape the data directory or is not a
    /// portable file name.
    #[error("invalid room key {key:?}: expected 1 to {MAX_ROOM_KEY_LEN} characters of [0-9a-z-]")]
    InvalidRoomKey {
        /// The rejected key.
        key: String,
    },
    /// A snapshot file is damaged. It was left untouched for inspection or
    /// recovery; the room cannot be loaded without deciding what to do.
    #[error("corrupt snapshot {}: {reason}", path.display())]
    CorruptSnapshot {
        /// The damaged snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: Corruption,
    },
    /// A change chunk passed to [`RoomFiles::append`] exceeds [`MAX_FRAME_LEN`].
    #[error("change of {len} bytes exceeds the log frame limit of {max} bytes")]
    FrameTooLarge {
        /// Length of the rejected chunk.
        len: usize,
        /// The limit, [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// A snapshot passed to [`RoomFiles::compact`] exceeds [`MAX_SNAPSHOT_LEN`].
    #[error("snapshot of {len} bytes exceeds the limit of {max} bytes")]
    SnapshotTooLarge {
        /// Length of the rejected snapshot.
        len: usize,
        /// The limit, [`MAX_SNAPSHOT_LEN`].
        max: usize,
    },
    /// Another [`RoomFiles`] (in this or another process) has the room open;
    /// two writers would corrupt its logs.
    #[error("room {room_key} is already open")]
    RoomBusy {
        /// The room that is in use.
        room_key: String,
    },
}

/// Why bytes on disk were not accepted as a valid header or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file does not start with the expected magic bytes.
    #[error("bad magic header")]
    BadMagic,
    /// The file ends in the middle of a header or frame.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the header or frame needs from this offset.
        needed: u64,
        /// Bytes actually present from this offset.
        available: u64,
    },
    /// A frame declares a payload longer than the format allows.
    #[error("declared length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The declared payload length.
        len: u64,
        /// The format's limit.
        max: u64,
    },
    /// The payload does not match its checksum.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum in the frame header.
        stored: u32,
        /// The checksum of the payload as read.
        computed: u32,
    },
    /// Bytes follow the single frame of a snapshot.
    #[error("{extra} unexpected bytes after the snapshot frame")]
    TrailingBytes {
        /// How many bytes follow the frame.
        extra: u64,
    },
}

/// A damaged log found while loading a room, and where its bytes went.
///
/// Returned instead of an error because the room is still usable: every
/// valid frame before the damage was loaded. Callers should surface it (and
/// may try to recover the set-aside bytes from peers or by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    /// The log file that was damaged (it now holds only the good prefix).
    pub file: PathBuf,
    /// Byte offset in `file` where the damage starts.
    pub offset: u64,
    /// What was wrong at `offset`.
    pub reason: Corruption,
    /// The file now holding the bytes from `offset` to the former end.
    pub set_aside: PathBuf,
    /// How many bytes were set aside.
    pub bytes: u64,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at offset {}; {} bytes moved to {}",
            self.file.display(),
            self.reason,
            self.offset,
            self.bytes,
            self.set_aside.display()
        )
    }
}

/// The stored contents of one epoch, as found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedEpoch {
    /// The latest compacted snapshot, if the epoch was ever compacted.
    pub snapshot: Option<Vec<u8>>,
    /// Change chunks appended (and synced) since, in append order. After a
    /// crash during compaction they may also be contained in `snapshot`.
    pub changes: Vec<Vec<u8>>,
}

/// The stored contents of one room, as returned by [`Store::open_room`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedRoom {
    /// Every epoch with a snapshot or log file on disk, by epoch number.
    pub epochs: BTreeMap<u32, LoadedEpoch>,
    /// Damaged logs that were repaired while loading (empty when all is well).
    pub problems: Vec<LoadProblem>,
}

/// A data directory holding the durable state of every room.
///
/// Exists so that the rest of the node deals with rooms by key and never
/// builds paths itself.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed, with mode 0700) the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let rooms = dir.join(ROOMS_DIR);
        create_private_dir_all(&rooms).map_err(io_err(&rooms))?;
        Ok(Store { dir })
    }

    /// The data directory this store was opened on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keys of the rooms present on disk, sorted, so a node can reload every
    /// room at startup. Entries that are not valid room directories are
    /// ignored.
    pub fn room_keys(&self) -> Result<Vec<String>, StoreError> {
        let rooms = self.dir.join(ROOMS_DIR);
        let mut keys = Vec::new();
        for entry in fs::read_dir(&rooms).map_err(io_err(&rooms))? {
            let entry = entry.map_err(io_err(&rooms))?;
            let file_type = entry.file_type().map_err(io_err(&entry.path()))?;
            if !file_type.is_dir() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str()
                && is_valid_room_key(name)
            {
                keys.push(name.to_owned());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Loads a room (creating its directory if it is new) and returns the
    /// handle for writing to it together with its stored contents.
    ///
    /// Leftover temporary files are deleted and damaged logs are repaired
    /// (see the module documentation); a damaged snapshot is an error. Only
    /// one [`RoomFiles`] per room may exist at a time, across processes.
    pub fn open_room(&self, room_key: &str) -> Result<(RoomFiles, LoadedRoom), StoreError> {
        if !is_valid_room_key(room_key) {
            return Err(StoreError::InvalidRoomKey {
                key: room_key.to_owned(),
            });
        }
        let dir = self.dir.join(ROOMS_DIR).join(room_key);
        create_private_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock_room(&dir, room_key)?;

        let files = scan_room_dir(&dir)?;
        let mut loaded = LoadedRoom::default();
        // Check every snapshot before repairing any log, so that a failed
        // load changes nothing but leftover temporary files.
        for &epoch in &files.snapshots {
            let path = snapshot_path(&dir, epoch);
            if let Some(snapshot) = load_snapshot(&path)? {
                loaded.epochs.entry(epoch).or_default().snapshot = Some(snapshot);
            }
        }
        let mut logs = BTreeMap::new();
        for &epoch in &files.logs {
            let path = log_path(&dir, epoch);
            let (changes, log) = load_log(&dir, &path, &mut loaded.problems)?;
            loaded.epochs.entry(epoch).or_default().changes = changes;
            logs.insert(epoch, log);
        }
        let room = RoomFiles {
            room_key: room_key.to_owned(),
            dir,
            logs,
            _lock: lock,
        };
        Ok((room, loaded))
    }
}

/// Whether `key` is acceptable as a room key: 1 to [`MAX_ROOM_KEY_LEN`]
/// characters of `[0-9a-z-]`. Lets callers validate keys before deriving
/// anything else from them.
pub fn is_valid_room_key(key: &str) -> bool {
    (1..=MAX_ROOM_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// Write access to one room's files, obtained from [`Store::open_room`].
///
/// Holds the room's lock, one open handle per epoch log that has been
/// written to, and the frames appended since the last [`RoomFiles::sync`].
pub struct RoomFiles {
    room_key: String,
    dir: PathBuf,
    logs: BTreeMap<u32, EpochLog>,
    _lock: Option<File>,
}

/// Write state of one epoch's log.
#[derive(Default)]
struct EpochLog {
    /// Open handle on the log, opened on first write after load/compaction.
    file: Option<File>,
    /// Length of the log prefix known to be durable and valid. Zero means the
    /// log is missing or empty (or superseded by a snapshot) and the next
    /// sync recreates it atomically with a header.
    durable_len: u64,
    /// Encoded frames appended but not yet synced.
    pending: Vec<u8>,
    /// Frames in the log since the last compaction, including pending ones.
    frames: usize,
}

impl fmt::Debug for RoomFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomFiles")
            .field("room_key", &self.room_key)
            .field("dir", &self.dir)
            .field("epochs", &self.logs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RoomFiles {
    /// The room these files belong to.
    pub fn room_key(&self) -> &str {
        &self.room_key
    }

    /// The room's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a change chunk to `epoch`'s log.
    ///
    /// The frame is only buffered in memory: it is not durable until
    /// [`RoomFiles::sync`] returns `Ok`, and is lost if this handle is dropped
    /// first. Buffering lets many appends share one fsync.
    pub fn append(&mut self, epoch: u32, change: &[u8]) -> Result<(), StoreError> {
        if change.len() > MAX_FRAME_LEN {
            return Err(StoreError::FrameTooLarge {
                len: change.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let log = self.logs.entry(epoch).or_default();
        push_frame(&mut log.pending, change);
        log.frames += 1;
        Ok(())
    }

    /// Takes back the last frame appended to `epoch`'s log if it is `change`
    /// and not yet synced; returns whether it did. `false` means the frame is
    /// already durable (or was never appended). Lets a caller whose
    /// [`RoomFiles::sync`] failed withdraw its own write, so that a later sync
    /// does not store what it reported as not stored.
    pub fn unappend(&mut self, epoch: u32, change: &[u8]) -> bool {
        let Some(log) = self.logs.get_mut(&epoch) else {
            return false;
        };
        let mut frame = Vec::new();
        push_frame(&mut frame, change);
        if !log.pending.ends_with(&frame) {
            return false;
        }
        log.pending.truncate(log.pending.len() - frame.len());
        log.frames -= 1;
        true
    }

    /// Group commit: writes every buffered frame and fsyncs each log written
    /// to (and the directory when a log file is created).
    ///
    /// After `Ok`, every frame appended so far survives a crash. After an
    /// error, frames not yet synced stay buffered and the next call retries
    /// them, rewriting from the last durable offset.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        for (&epoch, log) in &mut self.logs {
            sync_log(&self.dir, epoch, log)?;
        }
        Ok(())
    }

    /// Replaces `epoch`'s snapshot by `snapshot` and empties its log.
    ///
    /// `snapshot` must contain every change appended to `epoch` so far,
    /// synced or not: unsynced frames of that epoch are discarded, not
    /// written. Other epochs are unaffected. Once this returns `Ok` the new
    /// snapshot is durable; a crash before the log is emptied only means the
    /// old log's changes are loaded again next to it.
    pub fn compact(&mut self, epoch: u32, snapshot: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(snapshot.len())
            .ok()
            .filter(|&len| len as usize <= MAX_SNAPSHOT_LEN)
            .ok_or(StoreError::SnapshotTooLarge {
                len: snapshot.len(),
                max: MAX_SNAPSHOT_LEN,
            })?;
        let snap_path = snapshot_path(&self.dir, epoch);
        let crc = crc32fast::hash(snapshot);
        write_file_atomically_parts(
            &snap_path,
            &[
                &SNAPSHOT_MAGIC,
                &len.to_le_bytes(),
                &crc.to_le_bytes(),
                snapshot,
            ],
            PRIVATE_FILE_MODE,
        )
        .map_err(io_err(&snap_path))?;

        // The snapshot now covers everything the log held or would have held.
        // If resetting the log fails, `durable_len == 0` makes the next sync
        // replace whatever is there, which is equally correct.
        let log = self.logs.entry(epoch).or_default();
        log.file = None;
        log.pending.clear();
        log.frames = 0;
        log.durable_len = 0;
        let log_path = log_path(&self.dir, epoch);
        write_file_atomically(&log_path, &LOG_MAGIC, PRIVATE_FILE_MODE)
            .map_err(io_err(&log_path))?;
        log.durable_len = MAGIC_LEN as u64;
        Ok(())
    }

    /// Reads `epoch`'s snapshot back (checked as at load), or `None` if the
    /// epoch has none. Lets a caller drop a compacted epoch from memory and
    /// bring it back when it is needed again.
    pub fn read_snapshot(&self, epoch: u32) -> Result<Option<Vec<u8>>, StoreError> {
        load_snapshot(&snapshot_path(&self.dir, epoch))
    }

    /// Frames in `epoch`'s log since its last compaction (including unsynced
    /// ones), so callers can decide when to compact.
    pub fn log_frames(&self, epoch: u32) -> usize {
        self.logs.get(&epoch).map_or(0, |log| log.frames)
    }

    /// Bytes in `epoch`'s log (header and frames, including unsynced ones),
    /// a second measure for deciding when to compact.
    pub fn log_bytes(&self, epoch: u32) -> u64 {
        self.logs.get(&epoch).map_or(0, |log| {
            let header = if log.durable_len == 0 && !log.pending.is_empty() {
                MAGIC_LEN as u64
            } else {
                0
            };
            log.durable_len + header + log.pending.len() as u64
        })
    }
}

fn sync_log(dir: &Path, epoch: u32, log: &mut EpochLog) -> Result<(), StoreError> {
    if log.pending.is_empty() {
        return Ok(());
    }
    let path = log_path(dir, epoch);
    if log.durable_len == 0 {
        // No usable log file: create it whole, atomically (this also fsyncs
        // the directory, making the new entry durable).
        write_file_atomically_parts(&path, &[&LOG_MAGIC, &log.pending], PRIVATE_FILE_MODE)
            .map_err(io_err(&path))?;
        log.durable_len = (MAGIC_LEN + log.pending.len()) as u64;
        log.pending.clear();
        return Ok(());
    }
    let file = match &mut log.file {
        Some(file) => file,
        None => {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            log.file.insert(file)
        }
    };
    // Write at the durable offset rather than the file's end: after a failed
    // attempt this overwrites whatever partial frame it left behind.
    let written = file
        .seek(SeekFrom::Start(log.durable_len))
        .and_then(|_| file.write_all(&log.pending))
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        // Best effort: cut off what reached the file (a torn frame when the
        // disk filled up), so that neither a damaged tail nor frames the
        // caller was told are not stored turn up at the next load.
        let _ = file
            .set_len(log.durable_len)
            .and_then(|()| file.sync_data());
        return Err(io_err(&path)(e));
    }
    log.durable_len += log.pending.len() as u64;
    log.pending.clear();
    Ok(())
}

fn push_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    // Callers bound payloads by MAX_FRAME_LEN / MAX_SNAPSHOT_LEN, both < 2^32.
    let len = payload.len() as u32;
    buf.reserve(FRAME_HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Decodes the frame at the start of `buf`, returning its payload and the
/// number of bytes it occupies.
fn decode_frame(buf: &[u8], max_len: usize) -> Result<(&[u8], usize), Corruption> {
    let (Some(len_bytes), Some(crc_bytes)) = (read_u32(buf, 0), read_u32(buf, 4)) else {
        return Err(Corruption::Truncated {
            needed: FRAME_HEADER_LEN as u64,
            available: buf.len() as u64,
        });
    };
    let len = len_bytes as usize;
    if len > max_len {
        return Err(Corruption::TooLarge {
            len: u64::from(len_bytes),
            max: max_len as u64,
        });
    }
    let total = FRAME_HEADER_LEN + len;
    let Some(payload) = buf.get(FRAME_HEADER_LEN..total) else {
        return Err(Corruption::Truncated {
            needed: total as u64,
            available: buf.len() as u64,
        });
    };
    let computed = crc32fast::hash(payload);
    if computed != crc_bytes {
        return Err(Corruption::ChecksumMismatch {
            stored: crc_bytes,
            computed,
        });
    }
    Ok((payload, total))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn check_magic(buf: &[u8], magic: &[u8; MAGIC_LEN]) -> Result<(), Corruption> {
    match buf.get(..MAGIC_LEN) {
        Some(header) if header == magic => Ok(()),
        // A short file that is a prefix of the magic is a torn header.
        None if magic.starts_with(buf) => Err(Corruption::Truncated {
            needed: MAGIC_LEN as u64,
            available: buf.len() as u64,
        }),
        _ => Err(Corruption::BadMagic),
    }
}

/// Result of parsing a log file's bytes.
struct ParsedLog {
    changes: Vec<Vec<u8>>,
    /// Length of the valid prefix (0 when the header itself is bad).
    good_len: usize,
    /// Why parsing stopped before the end, if it did.
    damage: Option<Corruption>,
}

fn parse_log(bytes: &[u8]) -> ParsedLog {
    let mut parsed = ParsedLog {
        changes: Vec::new(),
        good_len: 0,
        damage: None,
    };
    if bytes.is_empty() {
        return parsed;
    }
    if let Err(damage) = check_magic(bytes, &LOG_MAGIC) {
        parsed.damage = Some(damage);
        return parsed;
    }
    let mut at = MAGIC_LEN;
    while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
        match decode_frame(rest, MAX_FRAME_LEN) {
            Ok((payload, used)) => {
                parsed.changes.push(payload.to_vec());
                at += used;
            }
            Err(damage) => {
                parsed.damage = Some(damage);
                break;
            }
        }
    }
    parsed.good_len = at;
    parsed
}

fn parse_snapshot(bytes: &[u8]) -> Result<&[u8], Corruption> {
    check_magic(bytes, &SNAPSHOT_MAGIC)?;
    let rest = bytes.get(MAGIC_LEN..).unwrap_or_default();
    let (payload, used) = decode_frame(rest, MAX_SNAPSHOT_LEN)?;
    match rest.len() - used {
        0 => Ok(payload),
        extra => Err(Corruption::TrailingBytes {
            extra: extra as u64,
        }),
    }
}

/// Loads and checks the snapshot at `path`, or `None` if there is none. The file is opened once,
/// so its length and its contents are those of one file even when a compaction renames a new
/// snapshot over it meanwhile.
fn load_snapshot(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let max_file_len = (MAGIC_LEN + FRAME_HEADER_LEN + MAX_SNAPSHOT_LEN) as u64;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    if file_len > max_file_len {
        return Err(StoreError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason: Corruption::TooLarge {
                len: file_len,
                max: max_file_len,
            },
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    match parse_snapshot(&bytes) {
        Ok(payload) => Ok(Some(payload.to_vec())),
        Err(reason) => Err(StoreError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// Loads one log, repairing a damaged tail, and returns its changes and the
/// write state continuing at its (possibly truncated) end.
fn load_log(
    dir: &Path,
    path: &Path,
    problems: &mut Vec<LoadProblem>,
) -> Result<(Vec<Vec<u8>>, EpochLog), StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(path)(e)),
    };
    let parsed = parse_log(&bytes);
    let log = EpochLog {
        durable_len: parsed.good_len as u64,
        frames: parsed.changes.len(),
        ..EpochLog::default()
    };
    if let Some(reason) = parsed.damage {
        let set_aside = corrupt_path(path)?;
        let offset = parsed.good_len;
        let damaged = bytes.get(offset..).unwrap_or_default();
        if offset == 0 {
            // Nothing in the file is usable: move it aside whole; the epoch
            // continues with a missing (empty) log.
            fs::rename(path, &set_aside).map_err(io_err(path))?;
            sync_dir(dir).map_err(io_err(dir))?;
        } else {
            // Preserve the damaged bytes durably before cutting them off.
            write_file_atomically(&set_aside, damaged, PRIVATE_FILE_MODE)
                .map_err(io_err(&set_aside))?;
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            file.set_len(offset as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err(path))?;
        }
        let problem = LoadProblem {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason,
            set_aside,
            bytes: damaged.len() as u64,
        };
        tracing::warn!(%problem, "damaged room log repaired");
        problems.push(problem);
    }
    Ok((parsed.changes, log))
}

/// A fresh name next to `path` for setting damaged bytes aside.
fn corrupt_path(path: &Path) -> Result<PathBuf, StoreError> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0..1000u32 {
        let candidate = if attempt == 0 {
            path.with_file_name(format!("{name}.corrupt-{millis}"))
        } else {
            path.with_file_name(format!("{name}.corrupt-{millis}-{attempt}"))
        };
        match fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(candidate),
            Err(e) => return Err(io_err(&candidate)(e)),
            Ok(_) => {}
        }
    }
    // Only reachable if a thousand repairs happened within one millisecond.
    Err(io_err(path)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name to set damaged bytes aside",
    )))
}

/// Epoch files found in a room directory.
#[derive(Default)]
struct RoomDirScan {
    snapshots: Vec<u32>,
    logs: Vec<u32>,
}

/// Lists a room's epoch files and deletes leftover temporary files.
fn scan_room_dir(dir: &Path) -> Result<RoomDirScan, StoreError> {
    let mut scan = RoomDirScan::default();
    let mut removed_tmp = false;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_err(&path))?;
        if !file_type.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".tmp") {
            // An atomic write that never reached its rename: the target still
            // holds the previous, complete contents.
            tracing::info!(path = %path.display(), "removing unfinished temporary file");
            remove_if_exists(&path).map_err(io_err(&path))?;
            removed_tmp = true;
        } else if let Some(epoch) = parse_epoch_file(&name, ".snap") {
            scan.snapshots.push(epoch);
        } else if let Some(epoch) = parse_epoch_file(&name, ".log") {
            scan.logs.push(epoch);
        }
    }
    if removed_tmp {
        sync_dir(dir).map_err(io_err(dir))?;
    }
    scan.snapshots.sort_unstable();
    scan.logs.sort_unstable();
    Ok(scan)
}

/// Parses `epoch-<n><suffix>` with `<n>` in canonical decimal.
fn parse_epoch_file(name: &str, suffix: &str) -> Option<u32> {
    let digits = name.strip_prefix("epoch-")?.strip_suffix(suffix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

fn snapshot_path(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("epoch-{epoch}.snap"))
}

fn log_path(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("epoch-{epoch}.log"))
}

/// Takes the room's exclusive lock, held until the returned file is dropped.
/// Returns `None` where the file system does not support locking.
fn lock_room(dir: &Path, room_key: &str) -> Result<Option<File>, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = match create_new_file(&path, PRIVATE_FILE_MODE) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?,
        Err(e) => return Err(io_err(&path)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::RoomBusy {
            room_key: room_key.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), "file locking unsupported; not locking room");
            Ok(None)
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
