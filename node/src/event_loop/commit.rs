//! Group commit: records gained from gossip or sync are held until the loop has nothing more
//! ready, made durable with one fsync per room, and only then reported (or, when the disk
//! refuses the writes, reported unstored after a [`NodeEvent::StorageFailed`]).

use std::time::{Duration, Instant};

use grapevine_crdt::{RecordId, RoomError, RoomId};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::EventLoop;
use crate::NodeEvent;

/// Gained records held for one commit at most: under a steady stream of gossip the loop may not
/// fall idle for a while, and a commit of this many costs about as much as a commit of one.
const MAX_UNFLUSHED: usize = grapevine_crdt::room::MAX_RECEIVE_BUFFER;

/// The longest a gained record waits for its commit while the loop stays busy: short beside the
/// latency a person notices, long beside one fsync (a fraction of a millisecond on an SSD).
const MAX_FLUSH_DELAY: Duration = Duration::from_millis(10);

impl EventLoop {
    /// Holds records a room gained for the next commit; commits at once when too many are held
    /// or the oldest has waited [`MAX_FLUSH_DELAY`].
    pub(super) fn gained(&mut self, room_id: RoomId, new: impl IntoIterator<Item = RecordId>) {
        let held = self.unflushed.entry(room_id).or_default();
        let before = held.len();
        held.extend(new);
        self.unflushed_count += held.len() - before;
        if self.unflushed_count == 0 {
            return;
        }
        let since = *self.unflushed_since.get_or_insert_with(Instant::now);
        if self.unflushed_count >= MAX_UNFLUSHED || since.elapsed() >= MAX_FLUSH_DELAY {
            self.handle_flush();
        }
    }

    /// Commits every room holding gained records, and reports them.
    pub(super) fn handle_flush(&mut self) {
        for room_id in self.unflushed.keys().copied().collect::<Vec<_>>() {
            // A failure is logged and reported by `flush_room`, once until a flush succeeds.
            let _ = self.flush_room(room_id);
        }
    }

    /// Makes every write to a room durable, then reports the records it gained meanwhile. When
    /// the files cannot be written (a full disk, a read-only file system) the node goes on
    /// without them: the first failure is reported as [`NodeEvent::StorageFailed`], the records
    /// are reported all the same, and they stay buffered, so a later flush that succeeds stores
    /// them (else sync brings them back after a restart).
    pub(super) fn flush_room(&mut self, room_id: RoomId) -> Result<(), RoomError> {
        let held = self.unflushed.remove(&room_id).unwrap_or_default();
        self.unflushed_count -= held.len();
        if self.unflushed.is_empty() {
            self.unflushed_since = None;
        }
        let Some(joined) = self.rooms.get_mut(&room_id) else {
            return Ok(());
        };
        let result = off_the_runtime(|| joined.room.flush());
        let records: Vec<_> = held
            .iter()
            .filter_map(|id| joined.room.record(id).cloned())
            .collect();
        let name = joined.name.clone();
        match &result {
            Ok(()) => {
                self.storage_failing.remove(&room_id);
            }
            Err(error) if self.storage_failing.insert(room_id) => {
                tracing::error!(room = name, %error, "storing failed; going on without");
                self.emit(NodeEvent::StorageFailed {
                    reason: format!(
                        "room {name}: storing failed ({error}); until the disk takes writes \
                         again, messages received are shown but not stored and messages posted \
                         are not sent"
                    ),
                });
            }
            Err(error) => tracing::debug!(room = name, %error, "storing failed again"),
        }
        if !records.is_empty() {
            self.emit(NodeEvent::RecordsReceived {
                room: room_id,
                records,
            });
        }
        result
    }
}

/// Runs `work` that waits on the disk (an fsync) without holding up the runtime's other tasks:
/// on a multi-threaded runtime the worker hands its queued tasks (other connections, other
/// nodes of the same process) to another thread first. A current-thread runtime has no other
/// worker, so there the work simply runs.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
