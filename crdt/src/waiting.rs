//! Changes that passed validation but arrived before their dependencies: held, boundedly, until
//! the dependencies arrive (by gossip or sync).

use std::collections::{HashSet, VecDeque};

use automerge::ChangeHash;

use crate::room::MAX_WAITING_CHANGES;
use crate::validate::ValidChange;

/// Valid changes whose dependencies have not arrived, oldest first, at most
/// [`MAX_WAITING_CHANGES`].
#[derive(Debug, Default)]
pub(crate) struct WaitingChanges {
    order: VecDeque<ValidChange>,
    hashes: HashSet<ChangeHash>,
}

impl WaitingChanges {
    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether the change is held.
    pub(crate) fn contains(&self, hash: &ChangeHash) -> bool {
        self.hashes.contains(hash)
    }

    /// Empties the queue, oldest first.
    pub(crate) fn take_all(&mut self) -> Vec<ValidChange> {
        self.hashes.clear();
        self.order.drain(..).collect()
    }

    /// Takes one change out, if it is held.
    pub(crate) fn take(&mut self, hash: &ChangeHash) -> Option<ValidChange> {
        if !self.hashes.remove(hash) {
            return None;
        }
        let position = self.order.iter().position(|v| v.hash() == *hash)?;
        self.order.remove(position)
    }

    /// Holds `changes`, dropping the oldest beyond the bound; returns how many were dropped.
    pub(crate) fn hold(&mut self, changes: Vec<ValidChange>) -> usize {
        let mut dropped = 0;
        for valid in changes {
            if !self.hashes.insert(valid.hash()) {
                continue;
            }
            self.order.push_back(valid);
            if self.order.len() > MAX_WAITING_CHANGES {
                if let Some(oldest) = self.order.pop_front() {
                    self.hashes.remove(&oldest.hash());
                }
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::record::RoomId;
    use crate::room::Room;
    use crate::validate::validate_change;

    #[test]
    fn the_queue_keeps_the_newest_changes_within_its_bound() {
        let room_id = RoomId::for_public_name("lobby").unwrap();
        let mut room = Room::in_memory(room_id, Identity::generate());
        let changes: Vec<ValidChange> = (0..MAX_WAITING_CHANGES + 3)
            .map(|i| {
                let written = room.post(&format!("message {i}")).unwrap();
                validate_change(&room_id, &written.change).unwrap()
            })
            .collect();
        let oldest = changes[0].hash();
        let newest = changes[changes.len() - 1].hash();
        let mut waiting = WaitingChanges::default();
        assert_eq!(waiting.hold(changes.clone()), 3);
        assert_eq!(waiting.hold(changes[changes.len() - 2..].to_vec()), 0);
        assert!(!waiting.contains(&oldest));
        assert!(waiting.contains(&newest));
        assert_eq!(waiting.take(&newest).map(|v| v.hash()), Some(newest));
        assert!(waiting.take(&newest).is_none());
        assert_eq!(waiting.take_all().len(), MAX_WAITING_CHANGES - 1);
        assert!(waiting.is_empty());
    }
}
