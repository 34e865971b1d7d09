//! Records and changes built by hand, the way a hostile peer builds them: any header, any
//! dependencies, any record bytes (signed or not), each inside a well-formed Automerge change.
//! Everything here is deterministic (fixed keys and times), so fuzz inputs replay
//! exactly.

use std::sync::OnceLock;

use automerge::legacy::{Key, OpType};
use automerge::{ActorId, Change, ChangeHash, ExpandedChange, ScalarValue};
use grapevine_crdt::clock::Hlc;
use grapevine_crdt::record::{
    ChangeHashBytes, ChangeHeader, RECORD_ACTOR_LEN, RECORD_CHANGE_SEQ, RECORD_VERSION, Record,
};
use grapevine_crdt::{Body, Identity, RecordId, Room, RoomId, SignedRecord, record_object};
use sha2::{Digest, Sha256};

/// Operations in an epoch's genesis change (the `records` map and its 16 buckets): the first
/// record change of an epoch starts at the next one.
pub const GENESIS_OPS: u64 = 17;
/// A fixed record time (2023-11-14), so that records built twice are the same bytes.
pub const SENT_AT_MILLIS: u64 = 1_700_000_000_000;

/// The room every fuzz target works in.
pub fn lobby() -> RoomId {
    RoomId::for_public_name("lobby").expect("a valid room name")
}

/// One honest change, as a template whose every field [`Author::change`] replaces.
fn template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let mut room = Room::in_memory(lobby(), Identity::from_secret_bytes([0xEE; 32]));
        room.post("template")
            .expect("posting into a new room")
            .change
    })
}

/// The hash of epoch 0's genesis change in [`lobby`]: what a room's first change depends on.
pub fn genesis() -> ChangeHash {
    let change = Change::try_from(template()).expect("an honest change parses");
    change.deps()[0]
}

/// An author with a fixed key.
#[derive(Clone)]
pub struct Author {
    /// The author's device key.
    pub identity: Identity,
}

impl Author {
    /// The author whose key's secret is 32 times `seed`.
    pub fn new(seed: u8) -> Self {
        Self {
            identity: Identity::from_secret_bytes([seed; 32]),
        }
    }

    /// A record of the author in [`lobby`]'s epoch 0, whose change starts at operation
    /// `start_op` and depends on `deps` (given sorted, or not, on purpose).
    pub fn record(&self, body: Body, start_op: u64, deps: &[ChangeHash]) -> Record {
        Record {
            author: self.identity.public_key(),
            body,
            change: ChangeHeader {
                deps: deps.iter().map(|h| ChangeHashBytes(h.0)).collect(),
                start_op,
            },
            epoch: 0,
            room: lobby(),
            sent_at: Hlc::new(SENT_AT_MILLIS, 0),
            version: RECORD_VERSION,
        }
    }

    /// A message record on top of `deps`.
    pub fn message(&self, text: &str, start_op: u64, deps: &[ChangeHash]) -> Record {
        let body = Body::Message { text: text.into() };
        self.record(body, start_op, deps)
    }

    /// `record` signed through the real API (which checks every limit first).
    pub fn sign(&self, record: Record) -> SignedRecord {
        SignedRecord::sign(record, &self.identity).expect("a record within the limits")
    }

    /// `record` encoded and signed by hand, without the limits [`SignedRecord::sign`] checks.
    pub fn sign_unchecked(&self, record: &Record) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(record, &mut bytes).expect("encoding into memory");
        self.sign_bytes(bytes)
    }

    /// `content` followed by the author's signature over exactly those bytes.
    pub fn sign_bytes(&self, mut content: Vec<u8>) -> Vec<u8> {
        let signature = self.identity.sign(&content);
        content.extend_from_slice(&signature);
        content
    }

    /// The change carrying `record_bytes` (perhaps no valid record at all) with the header of
    /// `record`: its start operation and dependencies, and the actor a record with `record`'s
    /// time and the bytes' hash has. The bytes go where a record with their hash belongs.
    pub fn change(&self, record: &Record, record_bytes: Vec<u8>) -> Vec<u8> {
        self.change_with(record, record_bytes, |_| {})
    }

    /// [`Author::change`], with `edit` applied to the decoded change before it is encoded: for
    /// changes that break a rule of the change itself (time, message, actor, dependencies).
    pub fn change_with(
        &self,
        record: &Record,
        record_bytes: Vec<u8>,
        edit: impl FnOnce(&mut ExpandedChange),
    ) -> Vec<u8> {
        let mut expanded = Change::try_from(template())
            .expect("an honest change parses")
            .decode();
        let id = RecordId(Sha256::digest(&record_bytes).into());
        let header = &record.change;
        let mut actor = [0u8; RECORD_ACTOR_LEN];
        actor[..8].copy_from_slice(&record.sent_at.0.to_be_bytes());
        actor[8..].copy_from_slice(&id.0[..RECORD_ACTOR_LEN - 8]);
        expanded.actor_id = ActorId::from(&actor[..]);
        expanded.seq = RECORD_CHANGE_SEQ;
        expanded.start_op = header.start_op.try_into().unwrap_or(expanded.start_op);
        expanded.deps = header.deps.iter().map(|h| ChangeHash(h.0)).collect();
        let op = &mut expanded.operations[0];
        op.obj = record_object(&record.room, record.epoch, &id);
        op.key = Key::Map(id.to_string().into());
        op.action = OpType::Put(ScalarValue::Bytes(record_bytes));
        edit(&mut expanded);
        Change::from(expanded).raw_bytes().to_vec()
    }

    /// The change carrying `record`, signed through the real API.
    pub fn signed_change(&self, record: Record) -> Vec<u8> {
        let signed = self.sign(record.clone());
        self.change(&record, signed.bytes().to_vec())
    }

    /// `count` messages, each depending on the one before (the first on the genesis): an honest
    /// history, oldest first.
    pub fn chain(&self, count: u64) -> Vec<Vec<u8>> {
        let mut deps = vec![genesis()];
        let mut changes = Vec::new();
        for seq in 1..=count {
            let record = self.message(&format!("message {seq}"), GENESIS_OPS + seq, &deps);
            let change = self.signed_change(record);
            deps = vec![change_hash(&change)];
            changes.push(change);
        }
        changes
    }
}

/// The hash of a change given as bytes.
pub fn change_hash(change: &[u8]) -> ChangeHash {
    Change::try_from(change)
        .expect("a change built here parses")
        .hash()
}
