//! A room: its epoch documents, an index of its records, the changes waiting for dependencies, and
//! (optionally) its files in the store. Everything a node does to a room goes through here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use std::panic::catch_unwind;

use automerge::{AutomergeError, Change, ChangeHash};

use crate::clock::{HlcClock, wall_clock_millis};
use crate::epoch::{EpochDoc, EpochError, RestingEpoch};
use crate::identity::{Identity, PublicKey};
use crate::parallel::parallel_map;
use crate::record::{
    Body, IndexedRecord, RECORD_VERSION, Record, RecordError, RecordId, RoomId, SignedRecord,
};
use crate::store::{LoadProblem, LoadedEpoch, RoomFiles, Store, StoreError};
use crate::validate::{Rejection, Unverified, ValidChange, check_all, record_in, verify_all};
use crate::view::RoomView;
use crate::waiting::WaitingChanges;

mod read_only;

pub use read_only::ReadOnlyRoom;

/// Records per epoch document before new records go to the next epoch. Applying a batch of remote
/// changes costs time that grows with the document, so this bounds the cost of every receive.
/// Concurrent writers may overfill an epoch slightly; nothing depends on the exact count.
pub const EPOCH_CAPACITY: usize = 1_000;
/// Bytes of signed records per epoch document before new records go to the next epoch, whatever
/// the record count: keeps one epoch's changes (each a record plus at most about as much header)
/// well inside one sync message.
pub const EPOCH_MAX_BYTES: usize = 12 * 1024 * 1024;
/// Valid changes held while their dependencies are missing. Beyond this the oldest are dropped
/// (sync fetches them again later), so a peer sending orphans cannot grow memory without bound.
pub const MAX_WAITING_CHANGES: usize = 4_096;
/// Changes buffered by [`Room::receive`] before they are applied without waiting for
/// [`Room::apply_received`].
pub const MAX_RECEIVE_BUFFER: usize = 1_024;
/// Log frames of one epoch after which [`Room::flush`] rewrites its snapshot: loading a long log
/// is slower than loading a snapshot.
pub const COMPACT_AFTER_FRAMES: usize = 2_000;

/// Why an operation on a room failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The record to write breaks a limit.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Reading or writing the room's files failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored epoch could not be rebuilt.
    #[error(transparent)]
    Epoch(#[from] EpochError),
    /// Automerge refused a local operation.
    #[error("automerge: {0}")]
    Automerge(Box<AutomergeError>),
    /// The record acted on is not in this room.
    #[error("no record {0} in this room")]
    UnknownRecord(RecordId),
    /// Only a message's author can edit or delete it.
    #[error("record {0} is not a message of yours")]
    NotYourMessage(RecordId),
    /// Edits, deletes and reactions act on messages only.
    #[error("record {0} is not a message")]
    NotAMessage(RecordId),
    /// A bug: an invariant of this crate did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// A record written by this device: its id, and the Automerge change to publish.
#[derive(Debug, Clone)]
pub struct Written {
    /// The new record's id.
    pub id: RecordId,
    /// The change bytes to send to the room's other members.
    pub change: Vec<u8>,
    /// The record itself.
    pub record: SignedRecord,
}

/// What became of one remote change that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Now in the room.
    Applied(RecordId),
    /// Already in the room (or earlier in the same batch).
    Duplicate,
    /// Valid, but its dependencies are missing: held until they arrive (sync will fetch them).
    Waiting,
}

/// The result of [`Room::apply_remote`]: one outcome per change given, in order, plus the waiting
/// changes that the batch released.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// For each change given, what became of it or why it was rejected.
    pub outcomes: Vec<Result<Received, Rejection>>,
    /// Changes that had been waiting and are now applied, with their records.
    pub released: Vec<RecordId>,
    /// Waiting changes dropped because the waiting queue was full.
    pub dropped: usize,
}

impl ApplyReport {
    /// Ids of every record this batch added to the room.
    pub fn new_records(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(Received::Applied(id)) => Some(*id),
                _ => None,
            })
            .chain(self.released.iter().copied())
    }

    /// Appends a later report's outcomes to this one's.
    fn merge(&mut self, later: ApplyReport) {
        self.outcomes.extend(later.outcomes);
        self.released.extend(later.released);
        self.dropped += later.dropped;
    }

    /// Whether some change is waiting for dependencies, so the caller should start a sync.
    pub fn has_waiting(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Ok(Received::Waiting)))
    }
}

/// Splits changes into those whose dependencies are present (`present(epoch, hash)`, or earlier
/// in the returned order) and those still missing some.
pub(crate) fn split_ready(
    mut pending: Vec<ValidChange>,
    present: impl Fn(u32, &ChangeHash) -> bool,
) -> (Vec<ValidChange>, Vec<ValidChange>) {
    let mut ready = Vec::new();
    let mut ready_hashes = HashSet::new();
    loop {
        let before = pending.len();
        let mut blocked = Vec::new();
        for valid in pending {
            let deps_present = valid
                .change
                .deps()
                .iter()
                .all(|dep| ready_hashes.contains(dep) || present(valid.epoch(), dep));
            if deps_present {
                ready_hashes.insert(valid.hash());
                ready.push(valid);
            } else {
                blocked.push(valid);
            }
        }
        pending = blocked;
        if pending.is_empty() || pending.len() == before {
            return (ready, pending);
        }
    }
}

/// The snapshot of each of `epochs` whose log holds at least `min_frames` frames, saved on every
/// core: Automerge's save compresses each column, the costly part of a compaction, and a
/// newcomer's first flushes compact dozens of epochs.
fn save_all<'a>(
    epochs: impl IntoIterator<Item = (&'a u32, &'a EpochDoc)>,
    files: &RoomFiles,
    min_frames: usize,
) -> Vec<(u32, Vec<u8>)> {
    let logged: Vec<(u32, &EpochDoc)> = epochs
        .into_iter()
        .filter(|(number, _)| files.log_frames(**number) >= min_frames)
        .map(|(number, epoch)| (*number, epoch))
        .collect();
    parallel_map(logged, 2, |chunk| {
        chunk
            .into_iter()
            .map(|(number, epoch)| (number, epoch.save()))
            .collect()
    })
}

/// Rebuilds epoch `number` of the room `id` from what the store holds of it (its snapshot, or its
/// genesis, with the logged changes applied; a change Automerge cannot parse is skipped) and
/// decodes its records, which were validated before they were stored.
fn load_epoch(
    id: &RoomId,
    number: u32,
    stored: &LoadedEpoch,
) -> Result<(EpochDoc, Vec<SignedRecord>), RoomError> {
    let mut epoch = match &stored.snapshot {
        Some(snapshot) => EpochDoc::load(id, number, snapshot)?,
        None => EpochDoc::new(id, number),
    };
    let changes: Vec<Change> = stored
        .changes
        .iter()
        .filter_map(|bytes| catch_unwind(|| Change::try_from(&bytes[..])).ok()?.ok())
        .collect();
    if let Some(source) = epoch.apply(&changes) {
        return Err(EpochError::Automerge {
            epoch: number,
            source: Box::new(source),
        }
        .into());
    }
    let records = epoch
        .record_bytes()
        .map(|bytes| SignedRecord::decode_trusted(&bytes))
        .collect::<Result<_, _>>()?;
    Ok((epoch, records))
}

/// One chat room on this device.
pub struct Room {
    id: RoomId,
    identity: Identity,
    epochs: BTreeMap<u32, EpochDoc>,
    resting: BTreeMap<u32, RestingEpoch>,
    touched: BTreeSet<u32>,
    records: HashMap<RecordId, IndexedRecord>,
    waiting: WaitingChanges,
    received: Vec<Vec<u8>>,
    received_report: ApplyReport,
    clock: HlcClock,
    files: Option<RoomFiles>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.id)
            .field("records", &self.records.len())
            .field("loaded_epochs", &self.epochs.len())
            .field("resting_epochs", &self.resting.len())
            .finish_non_exhaustive()
    }
}

impl Room {
    /// A room held in memory only (tests, simulations, and rooms not yet joined for good).
    pub fn in_memory(id: RoomId, identity: Identity) -> Self {
        Self {
            id,
            identity,
            epochs: BTreeMap::new(),
            resting: BTreeMap::new(),
            touched: BTreeSet::new(),
            records: HashMap::new(),
            waiting: WaitingChanges::default(),
            received: Vec::new(),
            received_report: ApplyReport::default(),
            clock: HlcClock::new(),
            files: None,
        }
    }

    /// Opens the room's files in `store` (creating them for a new room) and rebuilds it. Damaged
    /// log tails are set aside by the store and returned, so the caller can report them. Every
    /// epoch is read to index its records, then every compacted epoch but the newest is dropped
    /// from memory again: only the newest takes new records, and the others are brought back
    /// from their snapshots when sync or a late record needs them.
    pub fn open(
        store: &Store,
        id: RoomId,
        identity: Identity,
    ) -> Result<(Self, Vec<LoadProblem>), RoomError> {
        let (files, loaded) = store.open_room(&id.to_string())?;
        let mut room = Self::in_memory(id, identity);
        let newest = loaded.epochs.keys().next_back().copied();
        for (number, stored) in loaded.epochs {
            let (mut epoch, records) = load_epoch(&id, number, &stored)?;
            for signed in records {
                epoch.add_record(signed.bytes().len());
                room.clock
                    .observe(signed.record().sent_at, wall_clock_millis());
                room.records.insert(signed.id(), signed.into());
            }
            if Some(number) != newest && files.log_frames(number) == 0 {
                room.resting.insert(number, epoch.rest());
            } else {
                room.epochs.insert(number, epoch);
            }
        }
        room.files = Some(files);
        Ok((room, loaded.problems))
    }

    /// The room's id.
    pub fn id(&self) -> RoomId {
        self.id
    }

    /// This device's public key, the author of what it writes here.
    pub fn author(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Number of records (of every kind) in the room.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the room holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Epoch documents held in memory (the others rest in the store until needed).
    pub fn epochs_in_memory(&self) -> usize {
        self.epochs.len()
    }

    /// A record by id.
    pub fn record(&self, id: &RecordId) -> Option<&IndexedRecord> {
        self.records.get(id)
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &IndexedRecord> {
        self.records.values()
    }

    /// The room as people see it.
    pub fn view(&self) -> RoomView {
        RoomView::build(self.records.values())
    }

    /// Each epoch's heads: equal everywhere once replicas have converged. An epoch holding only
    /// its genesis is left out: every peer can build it, and one may exist on a device only
    /// because a peer named it in sync.
    pub fn heads(&self) -> BTreeMap<u32, Vec<ChangeHash>> {
        self.epochs
            .iter()
            .filter(|(_, epoch)| !epoch.holds_only_genesis())
            .map(|(n, epoch)| (*n, epoch.heads()))
            .chain(
                self.resting
                    .iter()
                    .map(|(n, resting)| (*n, resting.heads().to_vec())),
            )
            .collect()
    }

    /// The newest epoch this device holds a change of, in memory or resting. Epochs holding only
    /// their genesis do not count: a peer may name any epoch number in sync.
    fn newest_epoch(&self) -> Option<u32> {
        let loaded = self
            .epochs
            .iter()
            .rev()
            .find(|(_, epoch)| !epoch.holds_only_genesis())
            .map(|(n, _)| n);
        let resting = self.resting.keys().next_back();
        loaded.max(resting).copied()
    }

    /// Whether this device holds epoch `number`, in memory (even one holding only its genesis)
    /// or resting: creating one costs an Automerge document, so sync bounds how many a peer
    /// makes it create.
    pub(crate) fn holds_epoch(&self, number: u32) -> bool {
        self.epochs.contains_key(&number) || self.resting.contains_key(&number)
    }

    /// Brings epoch `number` back into memory if it is resting, and marks it as in use so the
    /// next [`Room::flush`] keeps it.
    pub(crate) fn wake(&mut self, number: u32) -> Result<(), RoomError> {
        self.wake_all(&[number])
    }

    /// [`Room::wake`] for several epochs at once, loaded on every core: Automerge's load inflates
    /// and rebuilds each document, the costly part, and a member answering a newcomer wakes
    /// every epoch it sends. An epoch that fails to load stays resting; the first failure is
    /// returned once the others are awake.
    pub(crate) fn wake_all(&mut self, numbers: &[u32]) -> Result<(), RoomError> {
        let mut jobs = Vec::new();
        for &number in numbers {
            self.touched.insert(number);
            if let Some(resting) = self.resting.remove(&number) {
                let snapshot = match &self.files {
                    Some(files) => files.read_snapshot(number),
                    None => Ok(None),
                };
                jobs.push((number, resting, snapshot));
            }
        }
        let id = self.id;
        let woken = parallel_map(jobs, 2, |chunk| {
            chunk
                .into_iter()
                .map(|(number, resting, snapshot)| {
                    let epoch = snapshot
                        .map_err(RoomError::from)
                        .and_then(|s| Ok(EpochDoc::wake(&id, number, s.as_deref(), &resting)?));
                    (number, resting, epoch)
                })
                .collect()
        });
        let mut first_error = None;
        for (number, resting, epoch) in woken {
            match epoch {
                Ok(epoch) => {
                    self.epochs.insert(number, epoch);
                }
                Err(e) => {
                    self.resting.insert(number, resting);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Every change (as bytes to send) not covered by `heads`, epoch by epoch; epochs absent from
    /// `heads` are sent whole. Genesis changes are never sent: every peer builds its own.
    pub fn changes_since(
        &mut self,
        heads: &BTreeMap<u32, Vec<ChangeHash>>,
    ) -> Result<Vec<Vec<u8>>, RoomError> {
        for number in self.resting.keys().copied().collect::<Vec<_>>() {
            self.wake(number)?;
        }
        let mut out = Vec::new();
        for (n, epoch) in &self.epochs {
            let known: Vec<ChangeHash> = heads
                .get(n)
                .into_iter()
                .flatten()
                .filter(|h| epoch.has_change(h))
                .copied()
                .collect();
            out.extend(
                epoch
                    .changes_since(&known)
                    .into_iter()
                    .filter(|c| c.hash() != epoch.genesis())
                    .map(|c| c.raw_bytes().to_vec()),
            );
        }
        Ok(out)
    }

    /// Posts a chat message.
    pub fn post(&mut self, text: &str) -> Result<Written, RoomError> {
        self.write(Body::Message { text: text.into() })
    }

    /// Replaces the text of one of this device's messages.
    pub fn edit(&mut self, target: RecordId, text: &str) -> Result<Written, RoomError> {
        self.check_own_message(target)?;
        self.write(Body::Edit {
            target,
            text: text.into(),
        })
    }

    /// Deletes one of this device's messages.
    pub fn delete(&mut self, target: RecordId) -> Result<Written, RoomError> {
        self.check_own_message(target)?;
        self.write(Body::Delete { target })
    }

    /// Adds (`on`) or takes back a reaction to a message.
    pub fn react(
        &mut self,
        target: RecordId,
        reaction: &str,
        on: bool,
    ) -> Result<Written, RoomError> {
        self.check_message(target)?;
        self.write(Body::Reaction {
            target,
            on,
            reaction: reaction.into(),
        })
    }

    /// Sets this device's nickname in the room.
    pub fn set_profile(&mut self, nickname: &str) -> Result<Written, RoomError> {
        self.write(Body::Profile {
            nickname: nickname.into(),
        })
    }

    fn check_message(&self, target: RecordId) -> Result<&IndexedRecord, RoomError> {
        let record = self
            .records
            .get(&target)
            .ok_or(RoomError::UnknownRecord(target))?;
        match record.body {
            Body::Message { .. } => Ok(record),
            _ => Err(RoomError::NotAMessage(target)),
        }
    }

    fn check_own_message(&self, target: RecordId) -> Result<(), RoomError> {
        if self.check_message(target)?.author == self.identity.public_key() {
            Ok(())
        } else {
            Err(RoomError::NotYourMessage(target))
        }
    }

    /// Writes a record of ours into the newest epoch (or a new one when it is full) and appends
    /// its change to the log. It is durable after the next [`Room::flush`].
    fn write(&mut self, body: Body) -> Result<Written, RoomError> {
        let number = match self.newest_epoch() {
            None => 0,
            Some(n) => {
                let epoch = self.epoch_mut(n)?;
                if epoch.record_count() >= EPOCH_CAPACITY
                    || epoch.record_bytes_total() >= EPOCH_MAX_BYTES
                {
                    // A valid author may open the last epoch number: then it keeps growing.
                    n.saturating_add(1)
                } else {
                    n
                }
            }
        };
        self.write_into(number, body)
    }

    /// Writes a record of ours into epoch `number` (see [`Room::write`]).
    pub(crate) fn write_into(&mut self, number: u32, body: Body) -> Result<Written, RoomError> {
        self.touched.insert(number);
        let room = self.id;
        let author = self.identity.public_key();
        let sent_at = self.clock.now();
        let epoch = self
            .epochs
            .entry(number)
            .or_insert_with(|| EpochDoc::new(&room, number));
        let (signed, change) = epoch.write_local(&self.identity, |change| Record {
            author,
            body,
            change,
            epoch: number,
            room,
            sent_at,
            version: RECORD_VERSION,
        })?;
        epoch.add_record(signed.bytes().len());
        let bytes = change.raw_bytes().to_vec();
        if let Some(files) = &mut self.files {
            files.append(number, &bytes)?;
        }
        self.records.insert(signed.id(), signed.clone().into());
        Ok(Written {
            id: signed.id(),
            change: bytes,
            record: signed,
        })
    }

    /// Takes back `written`, this device's last write, after a [`Room::flush`] that failed before
    /// storing it (a full disk, a read-only file system): its change leaves the epoch document,
    /// the record index and the log buffer, so it is neither sent to peers nor stored by a later
    /// flush, as if it had never been written. Returns `false`, changing nothing, when the record
    /// is stored after all (the flush failed on another epoch's log). Only for the last write,
    /// before anything else changed the room.
    pub fn unwrite(&mut self, written: &Written) -> Result<bool, RoomError> {
        let number = written.record.record().epoch;
        let hash = Change::try_from(&written.change[..])
            .map_err(|_| RoomError::Internal("a change this device wrote does not parse"))?
            .hash();
        let epoch = self.epochs.get(&number).ok_or(RoomError::Internal(
            "the epoch of the last write is not loaded",
        ))?;
        let before = epoch.without_last_local(&hash)?;
        if let Some(files) = &mut self.files
            && !files.unappend(number, &written.change)
        {
            return Ok(false);
        }
        if let Some(epoch) = self.epochs.get_mut(&number) {
            epoch.take_back_last_local(before, written.record.bytes().len());
        }
        self.records.remove(&written.id);
        Ok(true)
    }

    /// Validates a batch of changes from other peers and applies the valid ones in one Automerge
    /// call per epoch. Invalid changes are rejected with their reason and touch nothing.
    pub fn apply_remote<B: AsRef<[u8]> + Sync>(
        &mut self,
        changes: &[B],
    ) -> Result<ApplyReport, RoomError> {
        let checked = check_all(&self.id, changes);
        self.apply_checked(checked)
    }

    /// Keeps one change from another peer for the next [`Room::apply_received`], so that changes
    /// arriving one by one are validated and applied in batches (a batch costs about as much as a
    /// single change). Applies the buffer early when it reaches [`MAX_RECEIVE_BUFFER`].
    pub fn receive(&mut self, change: &[u8]) -> Result<(), RoomError> {
        self.received.push(change.to_vec());
        if self.received.len() >= MAX_RECEIVE_BUFFER {
            let report = self.apply_buffered()?;
            self.received_report.merge(report);
        }
        Ok(())
    }

    /// Applies every change given to [`Room::receive`] since the last call; outcomes are in the
    /// order the changes were received.
    pub fn apply_received(&mut self) -> Result<ApplyReport, RoomError> {
        let report = self.apply_buffered()?;
        let mut all = std::mem::take(&mut self.received_report);
        all.merge(report);
        Ok(all)
    }

    fn apply_buffered(&mut self) -> Result<ApplyReport, RoomError> {
        let batch = std::mem::take(&mut self.received);
        self.apply_remote(&batch)
    }

    /// Applies changes that passed the structural rules: duplicates are dropped before any
    /// signature is checked, the rest are verified on every core, changes whose dependencies are
    /// missing wait (boundedly), and the others go into their epochs in one call per epoch.
    fn apply_checked(
        &mut self,
        checked: Vec<Result<Unverified, Rejection>>,
    ) -> Result<ApplyReport, RoomError> {
        let mut report = ApplyReport::default();
        let mut slots = Vec::with_capacity(checked.len());
        let mut to_verify = Vec::new();
        let mut seen_in_batch = HashSet::new();
        for result in checked {
            let unverified = match result {
                Ok(unverified) => unverified,
                Err(rejection) => {
                    report.outcomes.push(Err(rejection));
                    slots.push(None);
                    continue;
                }
            };
            let hash = unverified.hash();
            self.wake(unverified.epoch())?;
            let known = self
                .epochs
                .get(&unverified.epoch())
                .is_some_and(|e| e.has_change(&hash))
                || self.waiting.contains(&hash);
            if known || !seen_in_batch.insert(hash) {
                report.outcomes.push(Ok(Received::Duplicate));
                slots.push(None);
            } else {
                report.outcomes.push(Ok(Received::Waiting));
                slots.push(Some(hash));
                to_verify.push((report.outcomes.len() - 1, Ok(unverified)));
            }
        }
        let (positions, unverified): (Vec<usize>, Vec<_>) = to_verify.into_iter().unzip();
        let mut candidates = Vec::new();
        for (position, result) in positions.into_iter().zip(verify_all(unverified)) {
            match result {
                Ok(valid) => {
                    self.epoch_mut(valid.epoch())?;
                    candidates.push(valid);
                }
                Err(rejection) => {
                    report.outcomes[position] = Err(rejection);
                    slots[position] = None;
                }
            }
        }
        candidates.extend(self.waiting.take_all());
        for number in candidates
            .iter()
            .map(ValidChange::epoch)
            .collect::<BTreeSet<_>>()
        {
            self.wake(number)?;
        }
        let (ready, still_waiting) = self.order_ready(candidates);
        let applied = self.apply_ready(ready)?;
        report.dropped += self.waiting.hold(still_waiting);
        let applied_ids: HashMap<ChangeHash, RecordId> = applied.iter().copied().collect();
        for (outcome, slot) in report.outcomes.iter_mut().zip(&slots) {
            if let Some(id) = slot.and_then(|hash| applied_ids.get(&hash)) {
                *outcome = Ok(Received::Applied(*id));
            }
        }
        let from_batch: HashSet<ChangeHash> = slots.iter().flatten().copied().collect();
        report.released = applied
            .into_iter()
            .filter(|(hash, _)| !from_batch.contains(hash))
            .map(|(_, id)| id)
            .collect();
        Ok(report)
    }

    /// Splits changes into those whose dependencies are present (in their epoch or earlier in
    /// the returned order) and those still missing some.
    fn order_ready(&self, pending: Vec<ValidChange>) -> (Vec<ValidChange>, Vec<ValidChange>) {
        split_ready(pending, |epoch, hash| {
            self.epochs.get(&epoch).is_some_and(|e| e.has_change(hash))
        })
    }

    /// Applies ready changes epoch by epoch, then indexes and logs the ones Automerge took.
    /// Returns them in order.
    fn apply_ready(
        &mut self,
        ready: Vec<ValidChange>,
    ) -> Result<Vec<(ChangeHash, RecordId)>, RoomError> {
        let mut by_epoch: BTreeMap<u32, Vec<ValidChange>> = BTreeMap::new();
        for valid in ready {
            by_epoch.entry(valid.epoch()).or_default().push(valid);
        }
        let mut applied = Vec::new();
        for (number, changes) in by_epoch {
            let epoch = self.epoch_mut(number)?;
            let before = epoch.heads();
            let error = epoch.apply(changes.iter().map(|v| &v.change));
            if let Some(error) = error {
                tracing::warn!(epoch = number, %error, "Automerge refused a validated change");
            }
            let known = changes.into_iter().map(|v| (v.hash(), v)).collect();
            applied.extend(self.absorb(number, &before, known)?);
        }
        Ok(applied)
    }

    /// Indexes and logs every change that epoch `number` gained since `before`: the ones just
    /// applied, and any that Automerge took from its own queue of changes waiting for
    /// dependencies. `known` holds the records of changes validated in this call; records of
    /// others come from the waiting queue or, failing that, from the change itself (every change
    /// in a document was validated before it went in). Returns the changes with their records.
    fn absorb(
        &mut self,
        number: u32,
        before: &[ChangeHash],
        known: HashMap<ChangeHash, ValidChange>,
    ) -> Result<Vec<(ChangeHash, RecordId)>, RoomError> {
        let gained = match self.epochs.get(&number) {
            Some(epoch) => epoch.hashes_since(before),
            None => return Ok(Vec::new()),
        };
        self.absorb_hashes(number, gained, known)
    }

    /// [`Room::absorb`] once the hashes gained are known (computed where the epoch was worked on).
    pub(crate) fn absorb_hashes(
        &mut self,
        number: u32,
        gained: Vec<ChangeHash>,
        mut known: HashMap<ChangeHash, ValidChange>,
    ) -> Result<Vec<(ChangeHash, RecordId)>, RoomError> {
        let Some(epoch) = self.epochs.get_mut(&number) else {
            return Ok(Vec::new());
        };
        let mut absorbed = Vec::with_capacity(gained.len());
        // A catch-up brings tens of thousands at once: one resize of the index, not a rehash at
        // every doubling.
        self.records.reserve(gained.len());
        for hash in gained {
            let (change, record) = match known.remove(&hash).or_else(|| self.waiting.take(&hash)) {
                Some(valid) => (valid.change, valid.record),
                None => {
                    let change = epoch
                        .change(&hash)
                        .ok_or(RoomError::Internal("a new change vanished from its epoch"))?;
                    let record = record_in(&change)?;
                    (change, record)
                }
            };
            if let Some(files) = &mut self.files {
                files.append(number, change.raw_bytes())?;
            }
            self.clock
                .observe(record.record().sent_at, wall_clock_millis());
            absorbed.push((hash, record.id()));
            let signed_len = record.bytes().len();
            if self.records.insert(record.id(), record.into()).is_none() {
                epoch.add_record(signed_len);
            }
        }
        Ok(absorbed)
    }

    /// Makes every write so far durable (one fsync per touched log: group commit), then compacts
    /// epochs whose logs have grown long. A record is reported stored only after this returns.
    /// Compaction only saves loading time, so once the logs are durable its failure (a disk too
    /// full for a snapshot) is logged and tried again at a later flush, not returned: the
    /// records are stored.
    pub fn flush(&mut self) -> Result<(), RoomError> {
        self.drop_idle_genesis_epochs();
        let Some(files) = &mut self.files else {
            self.touched.clear();
            return Ok(());
        };
        files.sync()?;
        for (number, snapshot) in save_all(&self.epochs, files, COMPACT_AFTER_FRAMES) {
            if let Err(error) = files.compact(number, &snapshot) {
                tracing::warn!(epoch = number, %error, "compaction failed; the log is kept");
            }
        }
        self.rest_idle_epochs();
        Ok(())
    }

    /// Drops every epoch holding only its genesis that nothing used since the last flush: sync
    /// created it to ask a peer about it, and the peer had nothing (or has not answered yet; the
    /// next exchange asks again).
    fn drop_idle_genesis_epochs(&mut self) {
        let touched = &self.touched;
        self.epochs
            .retain(|n, epoch| touched.contains(n) || !epoch.holds_only_genesis());
    }

    /// Drops from memory every epoch but the newest that nothing used since the last flush,
    /// compacting it first so its snapshot holds all of it. Memory then grows with the newest
    /// epoch and the record index, not with the whole history. An epoch whose compaction fails
    /// stays in memory.
    fn rest_idle_epochs(&mut self) {
        let newest = self.newest_epoch();
        let Some(files) = &mut self.files else {
            return;
        };
        let idle: Vec<u32> = self
            .epochs
            .keys()
            .filter(|n| Some(**n) != newest && !self.touched.contains(n))
            .copied()
            .collect();
        let idle_epochs = idle
            .iter()
            .filter_map(|number| self.epochs.get_key_value(number));
        let mut snapshots: HashMap<u32, Vec<u8>> =
            save_all(idle_epochs, files, 1).into_iter().collect();
        for number in idle {
            if let Some(epoch) = self.epochs.remove(&number) {
                if let Some(snapshot) = snapshots.remove(&number)
                    && let Err(error) = files.compact(number, &snapshot)
                {
                    tracing::warn!(epoch = number, %error, "compaction failed; the epoch stays in memory");
                    self.epochs.insert(number, epoch);
                    continue;
                }
                self.resting.insert(number, epoch.rest());
            }
        }
        self.touched.clear();
    }

    /// Rewrites every epoch's snapshot and empties its log.
    pub fn compact(&mut self) -> Result<(), RoomError> {
        let Some(files) = &mut self.files else {
            return Ok(());
        };
        files.sync()?;
        for (number, snapshot) in save_all(&self.epochs, files, 1) {
            files.compact(number, &snapshot)?;
        }
        Ok(())
    }

    /// The epoch document `number`, woken if resting, created (genesis only) if this device has
    /// none yet.
    pub(crate) fn epoch_mut(&mut self, number: u32) -> Result<&mut EpochDoc, RoomError> {
        self.wake(number)?;
        let room = self.id;
        Ok(self
            .epochs
            .entry(number)
            .or_insert_with(|| EpochDoc::new(&room, number)))
    }

    /// Keeps valid changes that arrived by sync before their dependencies.
    pub(crate) fn hold_waiting(&mut self, changes: Vec<ValidChange>) {
        let dropped = self.waiting.hold(changes);
        if dropped > 0 {
            tracing::debug!(dropped, "waiting queue full; oldest changes dropped");
        }
    }

    /// Applies waiting changes whose dependencies have arrived (by sync); returns their records.
    pub(crate) fn release_waiting(&mut self) -> Result<Vec<RecordId>, RoomError> {
        if self.waiting.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.apply_checked(Vec::new())?.released)
    }

    /// Whether a change is already in its epoch document.
    pub(crate) fn has_change(&self, epoch: u32, hash: &ChangeHash) -> bool {
        self.epochs.get(&epoch).is_some_and(|e| e.has_change(hash))
    }

    /// The epoch documents in memory, for sync.
    pub(crate) fn epochs_loaded(&self) -> &BTreeMap<u32, EpochDoc> {
        &self.epochs
    }

    /// Lends an epoch document out (to a worker thread); give it back with [`Room::put_epoch`].
    pub(crate) fn take_epoch(&mut self, number: u32) -> Option<EpochDoc> {
        self.epochs.remove(&number)
    }

    /// Gives back an epoch document lent by [`Room::take_epoch`].
    pub(crate) fn put_epoch(&mut self, number: u32, epoch: EpochDoc) {
        self.epochs.insert(number, epoch);
    }

    /// Takes a change out of the waiting queue, already verified, if it is there.
    pub(crate) fn take_waiting(&mut self, hash: &ChangeHash) -> Option<ValidChange> {
        self.waiting.take(hash)
    }
}
