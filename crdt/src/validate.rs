//! The gate every Automerge change from another peer passes before it reaches a room document.
//!
//! Automerge has no access control: any peer could delete or rewrite others' records, squat an
//! honest actor's sequence numbers, or send bytes that make Automerge panic or allocate without
//! limit. So a remote change is checked on its own bytes (never against local state, which would
//! break convergence) and accepted only when it does exactly one thing: insert one signed record
//! into its bucket of the epoch's `records` map, at the key equal to the record's id, with the
//! change header the author signed. The rules, cheapest first:
//!
//! 1. at most [`MAX_CHANGE_BYTES`]; an uncompressed change chunk (compressed chunks can inflate
//!    hundreds of times over, so they are refused before anything is parsed);
//! 2. parsed and decoded under `catch_unwind` (crafted changes make automerge 0.12 panic);
//! 3. no message, time zero, no extra bytes; exactly one operation, a `Put` of bytes into the
//!    bucket map the record's id names (deterministic genesis ids) at a map key, with no
//!    predecessors (so it overwrites and deletes nothing);
//! 4. the value is a canonical signed record of this room and epoch, its id equals the key, the
//!    change's actor is the record's own ([`SignedRecord::actor_id`]: its time and id) with
//!    sequence number 1, and its signed start operation and dependencies equal the change's (so
//!    no two different valid changes share an actor and sequence number, and an author cannot
//!    fork the room's history);
//! 5. the change bytes are the canonical encoding of their content (so nobody can re-encode an
//!    honest change under the same actor and sequence number);
//! 6. the signature verifies (last, since it is the costly check).

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ChangeHash, ExpandedChange, ScalarValue};

use crate::epoch::{bucket_object, bucket_of};
use crate::parallel::parallel_map;
use crate::record::{
    MAX_RECORD_BYTES, RECORD_CHANGE_SEQ, RecordError, RecordId, RoomId, SignedRecord,
};
use crate::signature::verify_batch;

/// Largest remote change accepted: a maximal record plus its change header and dependencies.
pub const MAX_CHANGE_BYTES: usize = MAX_RECORD_BYTES + 16 * 1024;
/// The four magic bytes that open every Automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type byte of an uncompressed change (0 is a whole document, 2 a compressed change).
const CHUNK_TYPE_CHANGE: u8 = 1;
/// Offset of the chunk type byte: after the magic bytes and the four-byte checksum.
const CHUNK_TYPE_OFFSET: usize = 8;

/// Why a remote change was refused. The room is unchanged whenever one is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// Larger than [`MAX_CHANGE_BYTES`].
    #[error("change is {0} bytes, more than the limit of {MAX_CHANGE_BYTES}")]
    TooLarge(usize),
    /// Not an uncompressed Automerge change chunk.
    #[error("not an uncompressed Automerge change chunk")]
    NotAChangeChunk,
    /// Automerge could not parse it.
    #[error("malformed Automerge change: {0}")]
    Malformed(String),
    /// Automerge panicked while reading it (a crafted change).
    #[error("Automerge panicked while decoding the change")]
    DecodePanicked,
    /// Carries a message, a timestamp or extra bytes: none of ours ever do.
    #[error("change carries a message, a timestamp or extra bytes")]
    UnexpectedMetadata,
    /// Holds no operation, or more than one.
    #[error("change holds {0} operations; exactly one record insert is allowed")]
    WrongOperationCount(usize),
    /// The operation is not a put of bytes (for example a delete, an increment or a new object).
    #[error("operation is not an insert of record bytes")]
    NotARecordInsert,
    /// The operation overwrites or deletes an existing value.
    #[error("operation overwrites or deletes an existing value")]
    Overwrite,
    /// The operation targets something other than the bucket map of the record's id.
    #[error("operation targets something other than the record's bucket map")]
    WrongObject,
    /// The map key is not the id of the record stored under it.
    #[error("record stored under a key that is not its id")]
    KeyIsNotRecordId,
    /// The record belongs to another room.
    #[error("record belongs to another room")]
    WrongRoom,
    /// The change header does not match the one the author signed.
    #[error("change header does not match the signed record: {0}")]
    HeaderMismatch(&'static str),
    /// The change bytes are not the canonical encoding of their content.
    #[error("change is not canonically encoded")]
    NonCanonical,
    /// The record inside is invalid.
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
}

/// A remote change that passed every rule, with the record it carries.
#[derive(Debug, Clone)]
pub struct ValidChange {
    /// The parsed change, ready to apply.
    pub change: Change,
    /// The verified record it inserts.
    pub record: SignedRecord,
}

impl ValidChange {
    /// The epoch document the change belongs to.
    pub fn epoch(&self) -> u32 {
        self.record.record().epoch
    }

    /// The change's hash.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }
}

/// The record inside a change that is already in a document (and so was validated before it went
/// in), for changes Automerge applied from its own queue.
pub(crate) fn record_in(change: &Change) -> Result<SignedRecord, RecordError> {
    let expanded = catch_unwind(AssertUnwindSafe(|| change.decode())).map_err(|_| {
        RecordError::Malformed("Automerge panicked decoding a stored change".into())
    })?;
    match expanded.operations.as_slice() {
        [op] => match &op.action {
            OpType::Put(ScalarValue::Bytes(value)) => SignedRecord::decode_trusted(value),
            _ => Err(RecordError::Malformed(
                "stored change is not a record insert".into(),
            )),
        },
        _ => Err(RecordError::Malformed(
            "stored change is not a record insert".into(),
        )),
    }
}

/// A change that passed every rule but the signature: cheap to get, so duplicates can be dropped
/// before any signature is checked.
#[derive(Debug)]
pub(crate) struct Unverified {
    change: Change,
    record: SignedRecord,
}

impl Unverified {
    /// The change's hash.
    pub(crate) fn hash(&self) -> ChangeHash {
        self.change.hash()
    }

    /// The epoch the change belongs to.
    pub(crate) fn epoch(&self) -> u32 {
        self.record.record().epoch
    }

    /// Checks the signature, the last and costliest rule.
    pub(crate) fn verify(self) -> Result<ValidChange, Rejection> {
        self.record.verify_signature()?;
        Ok(ValidChange {
            change: self.change,
            record: self.record,
        })
    }
}

/// The Automerge object a change carrying record `id` of `room`'s epoch `epoch` must put it into:
/// part of the wire format, for code that builds changes by hand (tests, hostile peers).
pub fn record_object(room: &RoomId, epoch: u32, id: &RecordId) -> ObjectId {
    bucket_object(room, epoch, bucket_of(id))
}

/// Checks a change from another peer for `room` against every rule in the module documentation.
pub fn validate_change(room: &RoomId, bytes: &[u8]) -> Result<ValidChange, Rejection> {
    check_structure(room, bytes)?.verify()
}

/// Every rule but the signature.
pub(crate) fn check_structure(room: &RoomId, bytes: &[u8]) -> Result<Unverified, Rejection> {
    if bytes.len() > MAX_CHANGE_BYTES {
        return Err(Rejection::TooLarge(bytes.len()));
    }
    if bytes.len() <= CHUNK_TYPE_OFFSET
        || bytes[..4] != CHUNK_MAGIC
        || bytes[CHUNK_TYPE_OFFSET] != CHUNK_TYPE_CHANGE
    {
        return Err(Rejection::NotAChangeChunk);
    }
    let change = catch_unwind(|| Change::try_from(bytes))
        .map_err(|_| Rejection::DecodePanicked)?
        .map_err(|e| Rejection::Malformed(e.to_string()))?;
    if change.message().is_some() || change.timestamp() != 0 || !change.extra_bytes().is_empty() {
        return Err(Rejection::UnexpectedMetadata);
    }
    let expanded: ExpandedChange = catch_unwind(AssertUnwindSafe(|| change.decode()))
        .map_err(|_| Rejection::DecodePanicked)?;
    let [op] = expanded.operations.as_slice() else {
        return Err(Rejection::WrongOperationCount(expanded.operations.len()));
    };
    let (OpType::Put(ScalarValue::Bytes(value)), false) = (&op.action, op.insert) else {
        return Err(Rejection::NotARecordInsert);
    };
    if !op.pred.is_empty() {
        return Err(Rejection::Overwrite);
    }
    let Key::Map(key) = &op.key else {
        return Err(Rejection::NotARecordInsert);
    };
    let signed = SignedRecord::decode_trusted(value)?;
    let record = signed.record();
    if record.room != *room {
        return Err(Rejection::WrongRoom);
    }
    if op.obj != record_object(room, record.epoch, &signed.id()) {
        return Err(Rejection::WrongObject);
    }
    if key.as_str() != signed.id().to_string() {
        return Err(Rejection::KeyIsNotRecordId);
    }
    let header = &record.change;
    if change.actor_id().to_bytes() != signed.actor_id() {
        return Err(Rejection::HeaderMismatch("actor"));
    }
    if change.seq() != RECORD_CHANGE_SEQ {
        return Err(Rejection::HeaderMismatch("sequence number"));
    }
    if change.start_op().get() != header.start_op {
        return Err(Rejection::HeaderMismatch("start operation"));
    }
    if !change
        .deps()
        .iter()
        .map(|h| h.0)
        .eq(header.deps.iter().map(|h| h.0))
    {
        return Err(Rejection::HeaderMismatch("dependencies"));
    }
    let canonical = catch_unwind(AssertUnwindSafe(|| Change::from(expanded)))
        .map_err(|_| Rejection::DecodePanicked)?;
    if canonical.raw_bytes() != bytes {
        return Err(Rejection::NonCanonical);
    }
    Ok(Unverified {
        change,
        record: signed,
    })
}

/// Below this many changes a batch is checked on the calling thread.
const PARALLEL_MIN_CHANGES: usize = 64;

/// Validates a batch of remote changes on every core.
pub fn validate_batch<B: AsRef<[u8]> + Sync>(
    room: &RoomId,
    batch: &[B],
) -> Vec<Result<ValidChange, Rejection>> {
    verify_all(check_all(room, batch))
}

/// [`check_structure`] for each change, on every core for large batches.
pub(crate) fn check_all<B: AsRef<[u8]> + Sync>(
    room: &RoomId,
    batch: &[B],
) -> Vec<Result<Unverified, Rejection>> {
    parallel_map(batch.iter().collect(), PARALLEL_MIN_CHANGES, |chunk| {
        chunk
            .into_iter()
            .map(|bytes| check_structure(room, bytes.as_ref()))
            .collect()
    })
}

/// Checks the signatures of structurally valid changes in batches, one per core: one ed25519
/// check costs about 40 µs alone and about a third of that in a batch, by far the largest part
/// of accepting a record. Order is kept; each change gets the verdict it would get alone.
pub(crate) fn verify_all(
    checked: Vec<Result<Unverified, Rejection>>,
) -> Vec<Result<ValidChange, Rejection>> {
    parallel_map(checked, PARALLEL_MIN_CHANGES, verify_chunk)
}

fn verify_chunk(
    checked: Vec<Result<Unverified, Rejection>>,
) -> Vec<Result<ValidChange, Rejection>> {
    let messages: Vec<_> = checked
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .map(|unverified| unverified.record.signed_message())
        .collect();
    let mut verdicts = verify_batch(&messages).into_iter();
    checked
        .into_iter()
        .map(|item| {
            let unverified = item?;
            if verdicts.next() == Some(true) {
                Ok(ValidChange {
                    change: unverified.change,
                    record: unverified.record,
                })
            } else {
                Err(Rejection::Record(RecordError::BadSignature))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::record::{Body, Record, RecordId};
    use crate::room::Room;
    use automerge::ActorId;
    use automerge::legacy::{OpId, SortedVec};
    use sha2::Digest;

    fn lobby() -> RoomId {
        RoomId::for_public_name("lobby").unwrap()
    }

    /// An honest room with one message; returns the room, its author and the change bytes.
    fn honest_change() -> (Room, Identity, Vec<u8>) {
        let author = Identity::generate();
        let mut room = Room::in_memory(lobby(), author.clone());
        let written = room.post("hello").unwrap();
        (room, author, written.change)
    }

    /// Re-encodes `bytes` after `edit` changes its decoded form: how a hostile peer crafts changes.
    fn tamper(bytes: &[u8], edit: impl FnOnce(&mut ExpandedChange)) -> Vec<u8> {
        let mut expanded = Change::try_from(bytes).unwrap().decode();
        edit(&mut expanded);
        Change::from(expanded).raw_bytes().to_vec()
    }

    fn op_value(expanded: &ExpandedChange) -> Vec<u8> {
        match &expanded.operations[0].action {
            OpType::Put(ScalarValue::Bytes(value)) => value.clone(),
            other => panic!("unexpected action {other:?}"),
        }
    }

    /// Replaces the record in the change by `record` signed by `signer`, keyed by its new id in
    /// the bucket of that id.
    fn with_record(bytes: &[u8], record: Record, signer: &Identity) -> Vec<u8> {
        let signed = SignedRecord::sign(record, signer).unwrap();
        let record = signed.record();
        let bucket = bucket_object(&record.room, record.epoch, bucket_of(&signed.id()));
        tamper(bytes, |expanded| {
            let op = &mut expanded.operations[0];
            op.obj = bucket;
            op.action = OpType::Put(ScalarValue::Bytes(signed.bytes().to_vec()));
            op.key = Key::Map(signed.id().to_string().into());
        })
    }

    /// Replaces the value in the change by `value` (perhaps no valid record at all), keyed by its
    /// hash in the bucket of that hash, under the actor a record with those bytes has (when they
    /// decode as one), as a forger who knows the layout would.
    fn with_value(bytes: &[u8], value: Vec<u8>) -> Vec<u8> {
        let id = RecordId(sha2::Sha256::digest(&value).into());
        let record = record_of(bytes);
        let bucket = bucket_object(&record.room, record.epoch, bucket_of(&id));
        let actor = SignedRecord::decode_trusted(&value).map(|signed| signed.actor_id());
        tamper(bytes, |expanded| {
            if let Ok(actor) = actor {
                expanded.actor_id = ActorId::from(&actor[..]);
            }
            let op = &mut expanded.operations[0];
            op.obj = bucket;
            op.action = OpType::Put(ScalarValue::Bytes(value));
            op.key = Key::Map(id.to_string().into());
        })
    }

    fn record_of(bytes: &[u8]) -> Record {
        let expanded = Change::try_from(bytes).unwrap().decode();
        SignedRecord::decode(&op_value(&expanded))
            .unwrap()
            .record()
            .clone()
    }

    /// Asserts the change is rejected for `expected` and leaves the room exactly as it was.
    fn assert_rejected(room: &mut Room, bytes: &[u8], expected: impl Fn(&Rejection) -> bool) {
        let heads = room.heads();
        let len = room.len();
        let report = room.apply_remote(&[bytes]).unwrap();
        match &report.outcomes[0] {
            Err(rejection) => assert!(expected(rejection), "rejected for {rejection}"),
            Ok(outcome) => panic!("accepted: {outcome:?}"),
        }
        assert_eq!(room.heads(), heads);
        assert_eq!(room.len(), len);
    }

    fn receiver() -> Room {
        Room::in_memory(lobby(), Identity::generate())
    }

    #[test]
    fn honest_change_is_accepted_and_is_canonical() {
        let (_, _, bytes) = honest_change();
        let valid = validate_change(&lobby(), &bytes).unwrap();
        assert_eq!(Change::from(valid.change.decode()).raw_bytes(), &bytes[..]);
    }

    #[test]
    fn forged_signature_is_rejected() {
        let (_, _, bytes) = honest_change();
        let mut value = op_value(&Change::try_from(&bytes[..]).unwrap().decode());
        let last = value.len() - 1;
        value[last] ^= 1;
        let forged = with_value(&bytes, value);
        assert_rejected(&mut receiver(), &forged, |r| {
            *r == Rejection::Record(RecordError::BadSignature)
        });
    }

    #[test]
    fn record_under_another_authors_key_is_rejected() {
        let (_, author, bytes) = honest_change();
        let mallory = Identity::generate();
        // Mallory's own valid record, smuggled into a change under the honest record's actor.
        let mut record = record_of(&bytes);
        record.author = mallory.public_key();
        record.body = Body::Message {
            text: "I am the author".into(),
        };
        let squatted = with_record(&bytes, record.clone(), &mallory);
        assert_rejected(&mut receiver(), &squatted, |r| {
            *r == Rejection::HeaderMismatch("actor")
        });
        // A record claiming the honest author but signed by Mallory.
        record.author = author.public_key();
        let signed_by_mallory = SignedRecord::sign(record, &author).unwrap();
        let mut forged = signed_by_mallory.bytes().to_vec();
        let content_len = forged.len() - 64;
        let signature = mallory.sign(&forged[..content_len]);
        forged[content_len..].copy_from_slice(&signature);
        let forged = with_value(&bytes, forged);
        assert_rejected(&mut receiver(), &forged, |r| {
            *r == Rejection::Record(RecordError::BadSignature)
        });
    }

    #[test]
    fn delete_operation_is_rejected() {
        let (_, _, bytes) = honest_change();
        let deleting = tamper(&bytes, |expanded| {
            let actor = expanded.actor_id.clone();
            let op = &mut expanded.operations[0];
            op.action = OpType::Delete;
            op.pred = SortedVec::from(vec![OpId(2, actor)]);
        });
        assert_rejected(&mut receiver(), &deleting, |r| {
            *r == Rejection::NotARecordInsert
        });
    }

    #[test]
    fn overwrite_is_rejected() {
        let (_, _, bytes) = honest_change();
        let overwriting = tamper(&bytes, |expanded| {
            let actor = expanded.actor_id.clone();
            expanded.operations[0].pred = SortedVec::from(vec![OpId(2, actor)]);
        });
        assert_rejected(&mut receiver(), &overwriting, |r| {
            *r == Rejection::Overwrite
        });
    }

    #[test]
    fn key_not_equal_to_record_id_is_rejected() {
        let (_, _, bytes) = honest_change();
        let misplaced = tamper(&bytes, |expanded| {
            expanded.operations[0].key = Key::Map(RecordId([9; 32]).to_string().into());
        });
        assert_rejected(&mut receiver(), &misplaced, |r| {
            *r == Rejection::KeyIsNotRecordId
        });
    }

    #[test]
    fn other_objects_values_and_extra_operations_are_rejected() {
        let (_, _, bytes) = honest_change();
        let at_root = tamper(&bytes, |expanded| {
            expanded.operations[0].obj = ObjectId::Root
        });
        assert_rejected(&mut receiver(), &at_root, |r| *r == Rejection::WrongObject);
        let record = record_of(&bytes);
        let value = op_value(&Change::try_from(&bytes[..]).unwrap().decode());
        let right = bucket_of(&RecordId(sha2::Sha256::digest(value).into()));
        for object in [
            // The map that holds the buckets, and a bucket other than the record's.
            ObjectId::Id(OpId(
                1,
                crate::epoch::genesis_actor(&record.room, record.epoch),
            )),
            bucket_object(
                &record.room,
                record.epoch,
                (right + 1) % crate::epoch::RECORD_BUCKETS,
            ),
        ] {
            let misplaced = tamper(&bytes, |expanded| expanded.operations[0].obj = object);
            assert_rejected(&mut receiver(), &misplaced, |r| {
                *r == Rejection::WrongObject
            });
        }
        let text_value = tamper(&bytes, |expanded| {
            expanded.operations[0].action = OpType::Put(ScalarValue::Str("hi".into()));
        });
        assert_rejected(&mut receiver(), &text_value, |r| {
            *r == Rejection::NotARecordInsert
        });
        let doubled = tamper(&bytes, |expanded| {
            let mut second = expanded.operations[0].clone();
            second.key = Key::Map("other".into());
            expanded.operations.push(second);
        });
        assert_rejected(&mut receiver(), &doubled, |r| {
            *r == Rejection::WrongOperationCount(2)
        });
        let with_message = tamper(&bytes, |expanded| expanded.message = Some("hi".into()));
        assert_rejected(&mut receiver(), &with_message, |r| {
            *r == Rejection::UnexpectedMetadata
        });
    }

    #[test]
    fn record_of_another_room_or_with_a_changed_header_is_rejected() {
        let (_, author, bytes) = honest_change();
        let mut record = record_of(&bytes);
        record.room = RoomId::for_public_name("elsewhere").unwrap();
        let moved = with_record(&bytes, record, &author);
        assert_rejected(&mut receiver(), &moved, |r| *r == Rejection::WrongRoom);
        let reseq = tamper(&bytes, |expanded| expanded.seq = 2);
        assert_rejected(&mut receiver(), &reseq, |r| {
            *r == Rejection::HeaderMismatch("sequence number")
        });
        let other_actor = tamper(&bytes, |expanded| {
            expanded.actor_id = ActorId::from(&[1u8; 32][..]);
        });
        assert_rejected(&mut receiver(), &other_actor, |r| {
            *r == Rejection::HeaderMismatch("actor")
        });
        let restarted = tamper(&bytes, |expanded| {
            expanded.start_op = expanded.start_op.saturating_add(1);
        });
        assert_rejected(&mut receiver(), &restarted, |r| {
            *r == Rejection::HeaderMismatch("start operation")
        });
        // The same record re-signed on other dependencies is another record: its actor is no
        // longer the change's.
        let mut record = record_of(&bytes);
        record.change.deps.clear();
        let redeps = with_record(&bytes, record, &author);
        assert_rejected(&mut receiver(), &redeps, |r| {
            *r == Rejection::HeaderMismatch("actor")
        });
    }

    #[test]
    fn oversize_change_and_oversize_record_are_rejected() {
        let (_, _, bytes) = honest_change();
        let mut huge = bytes.clone();
        huge.resize(MAX_CHANGE_BYTES + 1, 0);
        assert_rejected(&mut receiver(), &huge, |r| {
            matches!(r, Rejection::TooLarge(_))
        });
        let big_value = vec![0u8; MAX_RECORD_BYTES + 1];
        let oversize = tamper(&bytes, |expanded| {
            expanded.operations[0].action = OpType::Put(ScalarValue::Bytes(big_value));
        });
        assert_rejected(&mut receiver(), &oversize, |r| {
            matches!(r, Rejection::Record(RecordError::TooLarge { .. }))
        });
    }

    #[test]
    fn garbage_truncated_nested_and_wrongly_typed_input_is_rejected() {
        let (_, _, bytes) = honest_change();
        let mut room = receiver();
        assert_rejected(&mut room, b"", |r| *r == Rejection::NotAChangeChunk);
        assert_rejected(&mut room, &[0xAB; 300], |r| {
            *r == Rejection::NotAChangeChunk
        });
        for len in 0..bytes.len() {
            assert_rejected(&mut room, &bytes[..len], |_| true);
        }
        let mut nested = vec![0x81u8; 5_000];
        nested.extend_from_slice(&[0u8; 64]);
        let deep = tamper(&bytes, |expanded| {
            expanded.operations[0].action = OpType::Put(ScalarValue::Bytes(nested));
        });
        assert_rejected(&mut room, &deep, |r| {
            matches!(r, Rejection::Record(RecordError::Malformed(_)))
        });
        let mut wrong_type = Vec::new();
        ciborium::into_writer(&ciborium::Value::Text("a record".into()), &mut wrong_type).unwrap();
        wrong_type.extend_from_slice(&[0u8; 64]);
        let wrong = tamper(&bytes, |expanded| {
            expanded.operations[0].action = OpType::Put(ScalarValue::Bytes(wrong_type));
        });
        assert_rejected(&mut room, &wrong, |r| {
            matches!(r, Rejection::Record(RecordError::Malformed(_)))
        });
    }

    #[test]
    fn compressed_chunks_are_refused_before_parsing() {
        let author = Identity::generate();
        let mut room = Room::in_memory(lobby(), author);
        let long_text = "a".repeat(2_000);
        let written = room.post(&long_text).unwrap();
        let mut change = Change::try_from(&written.change[..]).unwrap();
        let compressed = change.bytes().to_vec();
        assert_eq!(
            compressed[CHUNK_TYPE_OFFSET], 2,
            "the change did not compress"
        );
        assert_rejected(&mut receiver(), &compressed, |r| {
            *r == Rejection::NotAChangeChunk
        });
    }

    #[test]
    fn every_single_bit_flip_of_a_change_is_rejected_without_panic() {
        let (_, _, bytes) = honest_change();
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert!(
                validate_change(&lobby(), &flipped).is_err(),
                "bit {i} accepted"
            );
        }
    }

    #[test]
    fn a_change_naming_an_actor_outside_its_table_is_rejected_without_panic() {
        let (_, _, bytes) = honest_change();
        // Point the op's object at an actor the change never lists, then overwrite actor-index
        // bytes at random positions: parsing must either fail or be caught, never unwind.
        let stranger = tamper(&bytes, |expanded| {
            expanded.operations[0].obj = ObjectId::Id(OpId(1, ActorId::from(&[7u8; 16][..])));
        });
        assert!(validate_change(&lobby(), &stranger).is_err());
        let mut caught = 0;
        for position in 9..bytes.len() {
            for value in [0x7f, 0xff] {
                let mut crafted = bytes.clone();
                crafted[position] = value;
                if matches!(
                    validate_change(&lobby(), &crafted),
                    Err(Rejection::DecodePanicked)
                ) {
                    caught += 1;
                }
            }
        }
        assert!(caught > 0, "no crafted change reached Automerge's panic");
    }

    #[test]
    fn one_bad_change_does_not_block_the_good_ones_in_its_batch() {
        let (_, _, bytes) = honest_change();
        let (_, _, other) = honest_change();
        let mut room = receiver();
        let report = room
            .apply_remote(&[bytes.clone(), b"garbage".to_vec(), other])
            .unwrap();
        assert!(matches!(
            report.outcomes[0],
            Ok(crate::room::Received::Applied(_))
        ));
        assert!(report.outcomes[1].is_err());
        assert!(matches!(
            report.outcomes[2],
            Ok(crate::room::Received::Applied(_))
        ));
        assert_eq!(room.len(), 2);
    }
}
