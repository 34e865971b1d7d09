//! One epoch document: a bounded slice of a room's history, held in its own Automerge document so
//! that no operation's cost grows with the whole history (applying a change costs time that grows
//! with the document it lands in).
//!
//! Every epoch document starts with a genesis change that every peer builds identically (an actor
//! derived from the room and epoch, time zero, a `records` map under the root holding
//! [`RECORD_BUCKETS`] bucket maps), so every map has the same object id everywhere and the
//! validator can check a change's target without local state.
//!
//! A record goes into the bucket named by its id's first byte. Automerge walks every entry of the
//! map a change lands in (and copies its value) to apply it, so one map of 5,000 records cost
//! about 0.5 ms per applied change, against 0.03 ms with the records spread over 64 buckets.

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::legacy::{ObjectId, OpId};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, AutomergeError, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc,
    ScalarValue, ScalarValueRef, ValueRef,
};
use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::record::{
    ChangeHashBytes, ChangeHeader, RECORD_CHANGE_SEQ, Record, RecordId, RoomId, SignedRecord,
};

/// The key of the map of record buckets under each epoch document's root.
const RECORDS_KEY: &str = "records";

/// How many grow-only bucket maps hold an epoch's records: about 60 records per map in a full
/// epoch of [`crate::room::EPOCH_CAPACITY`], no more than the 5,000-record epochs of 64 buckets
/// had (where 256 buckets cost no less than 64: 28 µs per applied change with automerge 0.12),
/// with a genesis of 17 operations rather than 65 for each of the hundred epochs of 100,000
/// records.
pub(crate) const RECORD_BUCKETS: usize = 16;

/// The deterministic actor of an epoch's genesis change. It starts with a zero byte so that it
/// sorts before every record's actor (which starts with the record's time): Automerge keeps its
/// actor table sorted, and an actor sorting after the genesis one would renumber the genesis
/// operations on every record.
pub(crate) fn genesis_actor(room: &RoomId, epoch: u32) -> ActorId {
    let mut hasher = Sha256::new();
    hasher.update(b"grapevine/genesis/v3\0");
    hasher.update(room.0);
    hasher.update(epoch.to_be_bytes());
    let mut actor = [0u8; 16];
    actor[1..].copy_from_slice(&hasher.finalize()[..15]);
    ActorId::from(&actor[..])
}

/// The bucket a record belongs in.
pub(crate) fn bucket_of(record: &RecordId) -> usize {
    usize::from(record.0[0]) % RECORD_BUCKETS
}

/// The object id of a bucket map, known in advance: the genesis change creates the `records` map
/// (operation 1) and then the buckets in order (operations 2 onwards).
pub(crate) fn bucket_object(room: &RoomId, epoch: u32, bucket: usize) -> ObjectId {
    let counter = 2 + bucket as u64;
    ObjectId::Id(OpId(counter, genesis_actor(room, epoch)))
}

/// Why an epoch document could not be built from stored bytes, or a write to it failed.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// Automerge refused the stored snapshot or a stored change.
    #[error("epoch {epoch}: {source}")]
    Automerge {
        /// The epoch.
        epoch: u32,
        /// Automerge's error.
        #[source]
        source: Box<AutomergeError>,
    },
    /// Automerge panicked on stored bytes.
    #[error("epoch {0}: Automerge panicked while loading stored data")]
    Panicked(u32),
    /// The snapshot does not hold this epoch's genesis.
    #[error("epoch {0}: snapshot does not belong to this room and epoch")]
    WrongGenesis(u32),
    /// The stored snapshot lacks changes the epoch held when it was dropped from memory.
    #[error("epoch {0}: stored snapshot is behind the epoch it should hold")]
    SnapshotBehind(u32),
    /// A write of this device could not be taken back (a bug: only the last write, with
    /// nothing applied after it, is ever taken back).
    #[error("a write cannot be taken back: {0}")]
    TakeBack(&'static str),
}

/// What the room keeps of an epoch whose document it dropped from memory: enough to describe it
/// in sync summaries and to decide where new records go, until the document is needed again.
#[derive(Debug, Clone)]
pub(crate) struct RestingEpoch {
    heads: Vec<ChangeHash>,
    record_count: usize,
    record_bytes_total: usize,
}

impl RestingEpoch {
    /// The document's heads when it was put to rest, sorted.
    pub(crate) fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }
}

/// One epoch's Automerge document and what the room needs to know about it without scanning it.
pub(crate) struct EpochDoc {
    doc: Automerge,
    /// The bucket maps, in bucket order.
    buckets: Vec<ObjId>,
    genesis: ChangeHash,
    record_count: usize,
    record_bytes_total: usize,
    /// This device's last write, the only one [`EpochDoc::take_back_last_local`] may take back.
    last_local: Option<ChangeHash>,
}

impl EpochDoc {
    /// A document holding only the genesis change.
    pub(crate) fn new(room: &RoomId, number: u32) -> Self {
        let mut doc = Automerge::new().with_actor(genesis_actor(room, number));
        let mut tx = doc.transaction();
        let records_map = match tx.put_object(ROOT, RECORDS_KEY, ObjType::Map) {
            Ok(map) => map,
            Err(e) => unreachable!("putting a map into an empty document failed: {e}"),
        };
        let buckets = (0..RECORD_BUCKETS)
            .map(|bucket| {
                match tx.put_object(&records_map, format!("{bucket:02x}"), ObjType::Map) {
                    Ok(map) => map,
                    Err(e) => unreachable!("putting a map into a new map failed: {e}"),
                }
            })
            .collect();
        let (genesis, _) = tx.commit_with(CommitOptions::default().with_time(0));
        let Some(genesis) = genesis else {
            unreachable!("a transaction with operations made no change")
        };
        Self {
            doc,
            buckets,
            genesis,
            record_count: 0,
            record_bytes_total: 0,
            last_local: None,
        }
    }

    /// Rebuilds a document from a snapshot this device saved.
    pub(crate) fn load(room: &RoomId, number: u32, snapshot: &[u8]) -> Result<Self, EpochError> {
        let fresh = Self::new(room, number);
        let doc = catch_unwind(|| Automerge::load(snapshot))
            .map_err(|_| EpochError::Panicked(number))?
            .map_err(|source| EpochError::Automerge {
                epoch: number,
                source: Box::new(source),
            })?;
        if doc.get_change_meta_by_hash(&fresh.genesis).is_none() {
            return Err(EpochError::WrongGenesis(number));
        }
        Ok(Self { doc, ..fresh })
    }

    /// Drops the document from memory, keeping what [`RestingEpoch`] holds. Only for a document
    /// whose every change is in its stored snapshot.
    pub(crate) fn rest(self) -> RestingEpoch {
        RestingEpoch {
            heads: self.heads(),
            record_count: self.record_count,
            record_bytes_total: self.record_bytes_total,
        }
    }

    /// Brings a resting epoch back from its stored snapshot (`None`: the epoch had only its
    /// genesis).
    pub(crate) fn wake(
        room: &RoomId,
        number: u32,
        snapshot: Option<&[u8]>,
        resting: &RestingEpoch,
    ) -> Result<Self, EpochError> {
        let mut epoch = match snapshot {
            Some(snapshot) => Self::load(room, number, snapshot)?,
            None => Self::new(room, number),
        };
        if epoch.heads() != resting.heads {
            return Err(EpochError::SnapshotBehind(number));
        }
        epoch.record_count = resting.record_count;
        epoch.record_bytes_total = resting.record_bytes_total;
        Ok(epoch)
    }

    /// Records the room has indexed from this document.
    pub(crate) fn record_count(&self) -> usize {
        self.record_count
    }

    /// Total size of the signed records the room has indexed from this document.
    pub(crate) fn record_bytes_total(&self) -> usize {
        self.record_bytes_total
    }

    /// The hash of the genesis change, which every peer has without syncing it.
    pub(crate) fn genesis(&self) -> ChangeHash {
        self.genesis
    }

    /// Whether the document holds nothing but its genesis: such an epoch exists only because sync
    /// asked a peer about it, so it is left out of summaries and dropped at the next flush that
    /// finds it unused.
    pub(crate) fn holds_only_genesis(&self) -> bool {
        self.doc.get_heads() == [self.genesis]
    }

    /// The document's heads, sorted.
    pub(crate) fn heads(&self) -> Vec<ChangeHash> {
        let mut heads = self.doc.get_heads();
        heads.sort();
        heads
    }

    /// Whether the change is already in the document.
    pub(crate) fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_change_meta_by_hash(hash).is_some()
    }

    /// The Automerge document, for sync.
    pub(crate) fn doc_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// The Automerge document, read-only.
    pub(crate) fn doc(&self) -> &Automerge {
        &self.doc
    }

    /// Writes a record of ours as a new change. `make_record` receives the header of the change
    /// that will carry the record, so that the author signs it.
    pub(crate) fn write_local(
        &mut self,
        identity: &Identity,
        make_record: impl FnOnce(ChangeHeader) -> Record,
    ) -> Result<(SignedRecord, Change), crate::room::RoomError> {
        // Every record is its own actor, so a new change depends on the heads alone.
        let deps = self.heads();
        let max_op = deps
            .iter()
            .filter_map(|h| self.doc.get_change_meta_by_hash(h))
            .map(|meta| meta.max_op)
            .max()
            .unwrap_or(0);
        let header = ChangeHeader {
            deps: deps.iter().map(|h| ChangeHashBytes(h.0)).collect(),
            start_op: max_op + 1,
        };
        let signed = SignedRecord::sign(make_record(header), identity)?;
        self.doc.set_actor(ActorId::from(&signed.actor_id()[..]));
        let mut tx = self.doc.transaction();
        let put = tx.put(
            &self.buckets[bucket_of(&signed.id())],
            signed.id().to_string(),
            ScalarValue::Bytes(signed.bytes().to_vec()),
        );
        if let Err(e) = put {
            tx.rollback();
            return Err(crate::room::RoomError::Automerge(Box::new(e)));
        }
        tx.commit_with(CommitOptions::default().with_time(0));
        let change = self
            .doc
            .get_last_local_change()
            .ok_or(crate::room::RoomError::Internal(
                "local change was not recorded",
            ))?;
        let header = &signed.record().change;
        if change.seq() != RECORD_CHANGE_SEQ
            || change.start_op().get() != header.start_op
            || change
                .deps()
                .iter()
                .map(|h| h.0)
                .ne(header.deps.iter().map(|h| h.0))
        {
            return Err(crate::room::RoomError::Internal(
                "Automerge built a change whose header differs from the signed one",
            ));
        }
        self.last_local = Some(change.hash());
        Ok((signed, change))
    }

    /// The document without `change`, this device's last write, for
    /// [`EpochDoc::take_back_last_local`]. Only while nothing was applied after it (it is the one
    /// head); checked, and nothing is changed, so a caller can give up before committing to it.
    pub(crate) fn without_last_local(&self, change: &ChangeHash) -> Result<Automerge, EpochError> {
        if self.last_local != Some(*change) {
            return Err(EpochError::TakeBack("it is not this device's last write"));
        }
        if self.doc.get_heads() != [*change] {
            return Err(EpochError::TakeBack("changes were applied after it"));
        }
        let deps = self
            .doc
            .get_change_meta_by_hash(change)
            .map(|meta| meta.deps)
            .ok_or(EpochError::TakeBack("it is not in the document"))?;
        catch_unwind(AssertUnwindSafe(|| self.doc.fork_at(&deps)))
            .map_err(|_| EpochError::TakeBack("Automerge panicked"))?
            .map_err(|_| EpochError::TakeBack("Automerge could not rebuild the document"))
    }

    /// Replaces the document by `before` (from [`EpochDoc::without_last_local`]): this device's
    /// last write, a record of `signed_len` bytes, is gone as if it had never been written.
    pub(crate) fn take_back_last_local(&mut self, before: Automerge, signed_len: usize) {
        self.doc = before;
        self.last_local = None;
        self.record_count -= 1;
        self.record_bytes_total -= signed_len;
    }

    /// Applies changes whose dependencies are all present (in the document or earlier in the
    /// batch), in one call when possible. Does not count records: the room does, when it indexes
    /// them. If Automerge refuses the batch, each change is applied
    /// on its own so that one bad change cannot block the others. Returns the first error, if any.
    /// Takes the changes by reference: Automerge needs its own copy of each, and callers keep
    /// theirs (to index and log them), so a change is copied once, or twice after a refusal.
    pub(crate) fn apply<'a>(
        &mut self,
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> Option<AutomergeError> {
        let fresh: Vec<&Change> = changes
            .into_iter()
            .filter(|c| !self.has_change(&c.hash()))
            .collect();
        if fresh.is_empty() {
            return None;
        }
        let batch = catch_unwind(AssertUnwindSafe(|| {
            self.doc
                .apply_changes(fresh.iter().map(|change| (*change).clone()))
        }));
        match batch {
            Ok(Ok(())) => None,
            _ => {
                let mut first_error = None;
                for change in fresh {
                    if self.has_change(&change.hash()) {
                        continue;
                    }
                    match catch_unwind(AssertUnwindSafe(|| {
                        self.doc.apply_changes([change.clone()])
                    })) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            first_error.get_or_insert(e);
                        }
                        Err(_) => {
                            first_error.get_or_insert(AutomergeError::Fail);
                        }
                    }
                }
                first_error
            }
        }
    }

    /// Counts a record the room indexed from this document (each change carries exactly one).
    /// Counting at indexing time also counts changes that Automerge applied from its own queue
    /// when their dependencies arrived.
    pub(crate) fn add_record(&mut self, signed_len: usize) {
        self.record_count += 1;
        self.record_bytes_total += signed_len;
    }

    /// Every record's signed bytes, bucket by bucket in key order (one value per key even after
    /// concurrent inserts of the same record).
    pub(crate) fn record_bytes(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.buckets.iter().flat_map(|bucket| {
            self.doc
                .map_range(bucket, ..)
                .filter_map(|item| match item.value {
                    ValueRef::Scalar(ScalarValueRef::Bytes(bytes)) => Some(bytes.into_owned()),
                    _ => None,
                })
        })
    }

    /// The whole document in Automerge's compact format, for a snapshot.
    pub(crate) fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// Hashes of every change not reachable from `heads`, oldest first: cheaper than the changes
    /// themselves when most are already at hand.
    pub(crate) fn hashes_since(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        self.doc
            .get_changes_meta(heads)
            .into_iter()
            .map(|meta| meta.hash)
            .collect()
    }

    /// One change of the document.
    pub(crate) fn change(&self, hash: &ChangeHash) -> Option<Change> {
        self.doc.get_change_by_hash(hash)
    }

    /// Every change not reachable from `heads`, oldest first.
    pub(crate) fn changes_since(&self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }
}
