//! A room's records read from the store without opening the room, for showing the history of a
//! room that a running peer may hold open.

use std::collections::HashMap;

use super::{RoomError, load_epoch};
use crate::record::{IndexedRecord, RecordId, RoomId};
use crate::store::{Store, UnreadTail};
use crate::view::RoomView;

/// A room's records as its files held them when read, taken without the room's lock (see
/// [`Store::read_room`]), so that `grapevine history` works while `grapevine chat` holds the same
/// data directory. It keeps the record index only: there is nothing to write to, and every epoch
/// document is dropped once its records are read.
#[derive(Debug, Clone)]
pub struct ReadOnlyRoom {
    records: HashMap<RecordId, IndexedRecord>,
}

impl ReadOnlyRoom {
    /// Reads the room `id` from `store`, changing no file. Log tails that are damaged or being
    /// written at that moment are not read; they are returned so the caller can say so.
    pub fn read(store: &Store, id: RoomId) -> Result<(Self, Vec<UnreadTail>), RoomError> {
        let stored = store.read_room(&id.to_string())?;
        let mut records = HashMap::new();
        for (number, epoch) in stored.epochs {
            let (_, signed) = load_epoch(&id, number, &epoch)?;
            records.extend(signed.into_iter().map(|s| (s.id(), s.into())));
        }
        Ok((Self { records }, stored.unread))
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &IndexedRecord> {
        self.records.values()
    }

    /// The room as people see it.
    pub fn view(&self) -> RoomView {
        RoomView::build(self.records.values())
    }
}
