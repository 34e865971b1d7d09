//! Signed records: everything a person says in a room (a message, an edit, a delete, a reaction,
//! a nickname) is one record, signed by its author's device key, so that no peer relaying it can
//! change it or pass it off as someone else's.
//!
//! # Encoding
//! A record is a CBOR map with one-letter keys in canonical (sorted, shortest-form) order, followed
//! by the 64-byte ed25519 signature over exactly those CBOR bytes. A received record must be
//! byte-for-byte the canonical encoding of what it decodes to, so one record has one encoding and
//! one id: the SHA-256 of the signed bytes.
//!
//! # Limits
//! | what | limit |
//! | --- | --- |
//! | signed record | [`MAX_RECORD_BYTES`] (16 KiB) |
//! | message or edit text | 1 to [`MAX_TEXT_BYTES`] (4,096) bytes of UTF-8 |
//! | nickname | 1 to [`MAX_NICKNAME_BYTES`] (64) bytes |
//! | reaction | 1 to [`MAX_REACTION_BYTES`] (32) bytes |
//! | change dependencies carried | [`MAX_DEPS`] (256) |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::clock::Hlc;
use crate::identity::{Identity, PublicKey};
use crate::signature::SignedMessage;

/// Largest signed record accepted or created. Far below gossipsub's 64 KiB frame limit, so a
/// record and its Automerge change always fit in one gossip message.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Longest message or edit text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest nickname, in bytes of UTF-8.
pub const MAX_NICKNAME_BYTES: usize = 64;
/// Longest reaction (an emoji or a short word), in bytes of UTF-8.
pub const MAX_REACTION_BYTES: usize = 32;
/// Most dependencies an Automerge change carrying a record may have (the document's heads when the
/// record was written; more than a handful only after a long partition).
pub const MAX_DEPS: usize = 256;
/// Length of a record's Automerge actor id ([`SignedRecord::actor_id`]).
pub const RECORD_ACTOR_LEN: usize = 32;
/// The sequence number of every change that carries a record: each record is the only change of
/// its own actor.
pub const RECORD_CHANGE_SEQ: u64 = 1;
/// The record format this code writes and accepts. Format 1 gave each device one Automerge actor
/// per room, which let an author fork its own history (two records on one sequence number);
/// format 2 gives every record its own actor.
pub const RECORD_VERSION: u8 = 2;
/// Length of an ed25519 signature.
const SIGNATURE_LEN: usize = 64;
/// Longest public room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;

macro_rules! bytes32_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                serde_bytes::ByteArray::<32>::deserialize(deserializer).map(|b| $name(b.into_array()))
            }
        }
    };
}

bytes32_newtype!(
    /// Identifies a room: the hash of its public name. It names the gossip topic and the
    /// deterministic genesis of every epoch document.
    RoomId
);
bytes32_newtype!(
    /// Identifies a record: the SHA-256 of its signed bytes. Its hex form is the record's key in
    /// the room document.
    RecordId
);
bytes32_newtype!(
    /// The hash of an Automerge change, as carried in a record's signed change header.
    ChangeHashBytes
);

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_bytes::ByteArray::<32>::deserialize(deserializer).map(|b| PublicKey(b.into_array()))
    }
}

/// The public room name given is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomNameError {
    /// The name is empty once surrounding whitespace is removed.
    #[error("a room name cannot be empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_NAME_BYTES`].
    #[error("a room name is at most {MAX_ROOM_NAME_BYTES} bytes")]
    TooLong,
    /// The name holds whitespace or control characters.
    #[error("a room name cannot contain spaces or control characters")]
    BadCharacter,
}

impl RoomId {
    /// The id of the public room with this name. Names are compared without case and without
    /// a leading `#`, so `#Lobby` and `lobby` are the same room.
    pub fn for_public_name(name: &str) -> Result<Self, RoomNameError> {
        let name = normalise_room_name(name)?;
        let mut hasher = Sha256::new();
        hasher.update(b"grapevine/room/v1\0");
        hasher.update(name.as_bytes());
        Ok(RoomId(hasher.finalize().into()))
    }
}

/// The canonical spelling of a public room name (lowercase, no leading `#`).
pub fn normalise_room_name(name: &str) -> Result<String, RoomNameError> {
    let name = name.trim();
    let name = name.strip_prefix('#').unwrap_or(name).to_lowercase();
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > MAX_ROOM_NAME_BYTES {
        return Err(RoomNameError::TooLong);
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RoomNameError::BadCharacter);
    }
    Ok(name)
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({})", &self.to_string()[..12])
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", &self.to_string()[..12])
    }
}

impl fmt::Debug for ChangeHashBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChangeHash({})",
            &data_encoding::HEXLOWER.encode(&self.0)[..12]
        )
    }
}

/// The text given is not the 64-hex-digit form of an id.
#[derive(Debug, thiserror::Error)]
#[error("not a record id: expected 64 hex digits")]
pub struct ParseIdError;

impl FromStr for RecordId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(RecordId)
    }
}

impl FromStr for RoomId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(RoomId)
    }
}

fn parse_hex32(s: &str) -> Result<[u8; 32], ParseIdError> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .map_err(|_| ParseIdError)?;
    bytes.try_into().map_err(|_| ParseIdError)
}

/// What a record says. Edits, deletes and reactions point at the record they act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Body {
    /// Deletes (tombstones) the target message. Counts only when signed by the target's author.
    #[serde(rename = "d")]
    Delete {
        /// The message deleted.
        #[serde(rename = "g")]
        target: RecordId,
    },
    /// Replaces the text of the target message. Counts only when signed by the target's author.
    #[serde(rename = "e")]
    Edit {
        /// The message edited.
        #[serde(rename = "g")]
        target: RecordId,
        /// The new text.
        #[serde(rename = "x")]
        text: String,
    },
    /// A chat message.
    #[serde(rename = "m")]
    Message {
        /// What was said.
        #[serde(rename = "x")]
        text: String,
    },
    /// Sets the author's nickname in this room; the latest one wins.
    #[serde(rename = "p")]
    Profile {
        /// The nickname.
        #[serde(rename = "n")]
        nickname: String,
    },
    /// Adds (or, with `on` false, takes back) a reaction to the target message.
    #[serde(rename = "r")]
    Reaction {
        /// The message reacted to.
        #[serde(rename = "g")]
        target: RecordId,
        /// True to add the reaction, false to take it back.
        #[serde(rename = "o")]
        on: bool,
        /// The reaction, usually one emoji.
        #[serde(rename = "x")]
        reaction: String,
    },
}

impl Body {
    /// The record kind, for logs and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Message { .. } => "message",
            Body::Edit { .. } => "edit",
            Body::Delete { .. } => "delete",
            Body::Reaction { .. } => "reaction",
            Body::Profile { .. } => "profile",
        }
    }

    /// The record this one acts on, if any.
    pub fn target(&self) -> Option<RecordId> {
        match self {
            Body::Edit { target, .. } | Body::Delete { target } | Body::Reaction { target, .. } => {
                Some(*target)
            }
            Body::Message { .. } | Body::Profile { .. } => None,
        }
    }

    fn check_bounds(&self) -> Result<(), RecordError> {
        match self {
            Body::Message { text } | Body::Edit { text, .. } => {
                check_text("text", text, MAX_TEXT_BYTES)
            }
            Body::Profile { nickname } => check_text("nickname", nickname, MAX_NICKNAME_BYTES),
            Body::Reaction { reaction, .. } => check_text("reaction", reaction, MAX_REACTION_BYTES),
            Body::Delete { .. } => Ok(()),
        }
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), RecordError> {
    if text.is_empty() {
        return Err(RecordError::EmptyField(field));
    }
    if text.len() > max {
        return Err(RecordError::FieldTooLong {
            field,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// The parts of the Automerge change that carries a record which the author chooses, fixed by
/// the author's signature. The rest follows from the record: its actor is
/// [`SignedRecord::actor_id`] and its sequence number [`RECORD_CHANGE_SEQ`]. So two different
/// valid changes never share an actor and sequence number (which Automerge cannot hold both of:
/// an author could otherwise fork a room's replicas for good), and nobody can squat an honest
/// actor's sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeHeader {
    /// The change's dependencies (the document heads when the record was written), sorted.
    #[serde(rename = "d")]
    pub deps: Vec<ChangeHashBytes>,
    /// The change's first operation counter.
    #[serde(rename = "o")]
    pub start_op: u64,
}

/// A record's content before signing. Field order is the canonical CBOR key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Who wrote it: the key that signs it.
    #[serde(rename = "a")]
    pub author: PublicKey,
    /// What it says.
    #[serde(rename = "b")]
    pub body: Body,
    /// The Automerge change that carries it.
    #[serde(rename = "c")]
    pub change: ChangeHeader,
    /// The epoch document it belongs to.
    #[serde(rename = "e")]
    pub epoch: u32,
    /// The room it belongs to.
    #[serde(rename = "r")]
    pub room: RoomId,
    /// When it was written, by the author's hybrid logical clock.
    #[serde(rename = "t")]
    pub sent_at: Hlc,
    /// The format version, [`RECORD_VERSION`].
    #[serde(rename = "v")]
    pub version: u8,
}

/// Just the format version of a record, to name it when a record of another format does not
/// decode as this one.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(rename = "v")]
    version: u8,
}

/// Why a record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The signed record is larger than [`MAX_RECORD_BYTES`].
    #[error("record is {len} bytes, more than the limit of {MAX_RECORD_BYTES}")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Too short to hold a signature.
    #[error("record is too short to hold a signature")]
    TooShort,
    /// The bytes are not a CBOR record of the expected shape.
    #[error("record is not valid CBOR of the record shape: {0}")]
    Malformed(String),
    /// The CBOR decodes, but is not the canonical encoding of what it decodes to.
    #[error("record is not canonically encoded")]
    NonCanonical,
    /// A format version this code does not know.
    #[error("record format {0} is not supported: this build reads format {RECORD_VERSION} only")]
    UnsupportedVersion(u8),
    /// A text field is empty.
    #[error("record field {0} is empty")]
    EmptyField(&'static str),
    /// A field is longer than its limit.
    #[error("record field {field} is {len} bytes, more than the limit of {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its limit.
        max: usize,
    },
    /// The change header is impossible (operation counter zero, unsorted deps).
    #[error("record change header is invalid: {0}")]
    BadChangeHeader(&'static str),
    /// The signature does not verify against the author's key.
    #[error("record signature does not verify against its author's key")]
    BadSignature,
    /// The identity asked to sign is not the record's author.
    #[error("record author is not the signing identity")]
    WrongSigner,
}

impl Record {
    fn check_bounds(&self) -> Result<(), RecordError> {
        if self.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(self.version));
        }
        self.body.check_bounds()?;
        let header = &self.change;
        if header.start_op == 0 {
            return Err(RecordError::BadChangeHeader("zero operation counter"));
        }
        if header.deps.len() > MAX_DEPS {
            return Err(RecordError::FieldTooLong {
                field: "deps",
                len: header.deps.len(),
                max: MAX_DEPS,
            });
        }
        if !header.deps.windows(2).all(|w| w[0] < w[1]) {
            return Err(RecordError::BadChangeHeader(
                "dependencies not sorted and unique",
            ));
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        // Writing CBOR into a Vec cannot fail for these plain types.
        if let Err(e) = ciborium::into_writer(self, &mut out) {
            unreachable!("encoding a record into memory failed: {e}");
        }
        out
    }
}

/// A record as a room keeps it in memory once verified: what readers need, without the signature
/// and change header (the signed bytes stay in the Automerge document). About a third of the
/// memory of a [`SignedRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedRecord {
    /// The record's id.
    pub id: RecordId,
    /// Who wrote it.
    pub author: PublicKey,
    /// When it was written.
    pub sent_at: Hlc,
    /// The epoch document that holds it.
    pub epoch: u32,
    /// What it says.
    pub body: Body,
}

impl From<SignedRecord> for IndexedRecord {
    fn from(signed: SignedRecord) -> Self {
        let id = signed.id;
        let Record {
            author,
            body,
            epoch,
            sent_at,
            ..
        } = signed.record;
        Self {
            id,
            author,
            sent_at,
            epoch,
            body,
        }
    }
}

/// A record together with its signature, its exact signed bytes and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRecord {
    record: Record,
    bytes: Vec<u8>,
    id: RecordId,
}

impl SignedRecord {
    /// Signs `record` as `identity`, after checking every limit.
    pub fn sign(record: Record, identity: &Identity) -> Result<Self, RecordError> {
        if record.author != identity.public_key() {
            return Err(RecordError::WrongSigner);
        }
        record.check_bounds()?;
        let mut bytes = record.encode();
        let signature = identity.sign(&bytes);
        bytes.extend_from_slice(&signature);
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { len: bytes.len() });
        }
        let id = RecordId(Sha256::digest(&bytes).into());
        Ok(Self { record, bytes, id })
    }

    /// Decodes and checks a signed record from untrusted bytes: size first, then shape, canonical
    /// form and limits, and the signature last, since it is the costly check.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let signed = Self::decode_trusted(bytes)?;
        signed.verify_signature()?;
        Ok(signed)
    }

    /// Checks the signature against the author's key.
    pub(crate) fn verify_signature(&self) -> Result<(), RecordError> {
        if self.signed_message().verify() {
            Ok(())
        } else {
            Err(RecordError::BadSignature)
        }
    }

    /// The author's key, the signed content and the signature, for checking in a batch.
    pub(crate) fn signed_message(&self) -> SignedMessage<'_> {
        let (content, signature) = self.bytes.split_at(self.bytes.len() - SIGNATURE_LEN);
        SignedMessage {
            key: self.record.author.as_bytes(),
            message: content,
            // `decode_unverified` and `sign` guarantee the signature's length.
            signature: signature.try_into().unwrap_or(&[0u8; SIGNATURE_LEN]),
        }
    }

    /// Decodes a record from this device's own store, where every record was verified before it
    /// was written: the signature check is skipped, every other check is kept.
    pub fn decode_trusted(bytes: &[u8]) -> Result<Self, RecordError> {
        let record = Self::decode_unverified(bytes)?;
        Ok(Self {
            record,
            bytes: bytes.to_vec(),
            id: RecordId(Sha256::digest(bytes).into()),
        })
    }

    fn decode_unverified(bytes: &[u8]) -> Result<Record, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { len: bytes.len() });
        }
        if bytes.len() <= SIGNATURE_LEN {
            return Err(RecordError::TooShort);
        }
        let content = &bytes[..bytes.len() - SIGNATURE_LEN];
        let record: Record =
            ciborium::from_reader(content).map_err(|e| {
                match ciborium::from_reader::<VersionOnly, _>(content) {
                    Ok(VersionOnly { version }) if version != RECORD_VERSION => {
                        RecordError::UnsupportedVersion(version)
                    }
                    _ => RecordError::Malformed(e.to_string()),
                }
            })?;
        if record.encode() != content {
            return Err(RecordError::NonCanonical);
        }
        record.check_bounds()?;
        Ok(record)
    }

    /// The record's content.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The exact signed bytes: canonical CBOR, then the signature.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The record's id, the SHA-256 of [`SignedRecord::bytes`].
    pub fn id(&self) -> RecordId {
        self.id
    }

    /// The Automerge actor of the change that carries this record: its time (big-endian), then
    /// the first 24 bytes of its id. It depends on everything the author signed, the change
    /// header included, so two different records never share an actor. The time comes first so
    /// that a document's actors are created mostly in sorted order: Automerge keeps its actor
    /// table sorted and renumbers every operation after an actor inserted in the middle.
    pub fn actor_id(&self) -> [u8; RECORD_ACTOR_LEN] {
        let mut actor = [0u8; RECORD_ACTOR_LEN];
        actor[..8].copy_from_slice(&self.record.sent_at.0.to_be_bytes());
        actor[8..].copy_from_slice(&self.id.0[..RECORD_ACTOR_LEN - 8]);
        actor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(identity: &Identity, body: Body) -> Record {
        Record {
            author: identity.public_key(),
            body,
            change: ChangeHeader {
                deps: vec![ChangeHashBytes([7; 32])],
                start_op: 2,
            },
            epoch: 0,
            room: RoomId::for_public_name("lobby").unwrap(),
            sent_at: Hlc::new(1_700_000_000_000, 0),
            version: RECORD_VERSION,
        }
    }

    fn message(text: &str) -> Body {
        Body::Message { text: text.into() }
    }

    #[test]
    fn signed_record_decodes_to_the_same_record_and_id() {
        let identity = Identity::generate();
        let signed = SignedRecord::sign(sample(&identity, message("hi")), &identity).unwrap();
        let decoded = SignedRecord::decode(signed.bytes()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.id().to_string().len(), 64);
    }

    #[test]
    fn every_body_kind_round_trips() {
        let identity = Identity::generate();
        let target = RecordId([3; 32]);
        for body in [
            message("hello"),
            Body::Edit {
                target,
                text: "fixed".into(),
            },
            Body::Delete { target },
            Body::Reaction {
                target,
                on: true,
                reaction: "👍".into(),
            },
            Body::Profile {
                nickname: "ana".into(),
            },
        ] {
            let signed = SignedRecord::sign(sample(&identity, body), &identity).unwrap();
            assert_eq!(SignedRecord::decode(signed.bytes()).unwrap(), signed);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_rejected() {
        let identity = Identity::generate();
        let signed = SignedRecord::sign(sample(&identity, message("hi")), &identity).unwrap();
        for i in 0..signed.bytes().len() * 8 {
            let mut bytes = signed.bytes().to_vec();
            bytes[i / 8] ^= 1 << (i % 8);
            assert!(
                SignedRecord::decode(&bytes).is_err(),
                "bit {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn record_signed_by_another_key_is_rejected() {
        let author = Identity::generate();
        let forger = Identity::generate();
        let signed = SignedRecord::sign(sample(&author, message("hi")), &author).unwrap();
        let mut bytes = signed.bytes()[..signed.bytes().len() - 64].to_vec();
        bytes.extend_from_slice(&forger.sign(&bytes.clone()));
        assert_eq!(SignedRecord::decode(&bytes), Err(RecordError::BadSignature));
        assert_eq!(
            SignedRecord::sign(sample(&author, message("hi")), &forger),
            Err(RecordError::WrongSigner)
        );
    }

    #[test]
    fn limits_are_enforced_when_creating() {
        let identity = Identity::generate();
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            SignedRecord::sign(sample(&identity, message(&long)), &identity),
            Err(RecordError::FieldTooLong { field: "text", .. })
        ));
        assert_eq!(
            SignedRecord::sign(sample(&identity, message("")), &identity),
            Err(RecordError::EmptyField("text"))
        );
        let mut record = sample(&identity, message("hi"));
        record.change.deps = (0..=MAX_DEPS as u16)
            .map(|i| {
                let mut hash = [0u8; 32];
                hash[..2].copy_from_slice(&i.to_be_bytes());
                ChangeHashBytes(hash)
            })
            .collect();
        assert!(matches!(
            SignedRecord::sign(record, &identity),
            Err(RecordError::FieldTooLong { field: "deps", .. })
        ));
    }

    #[test]
    fn non_canonical_encodings_are_rejected() {
        let identity = Identity::generate();
        let record = sample(&identity, message("hi"));
        // The same content with the map keys in another order.
        let value: ciborium::Value = ciborium::Value::serialized(&record).unwrap();
        let ciborium::Value::Map(mut entries) = value else {
            panic!("not a map")
        };
        entries.reverse();
        let mut content = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(entries), &mut content).unwrap();
        let signature = identity.sign(&content);
        content.extend_from_slice(&signature);
        assert_eq!(
            SignedRecord::decode(&content),
            Err(RecordError::NonCanonical)
        );
    }

    #[test]
    fn garbage_truncated_and_deeply_nested_input_is_rejected_without_panic() {
        let identity = Identity::generate();
        let signed = SignedRecord::sign(sample(&identity, message("hi")), &identity).unwrap();
        for len in 0..signed.bytes().len() {
            assert!(SignedRecord::decode(&signed.bytes()[..len]).is_err());
        }
        let mut nested = vec![0x81u8; 10_000];
        nested.extend_from_slice(&[0u8; 64]);
        assert!(SignedRecord::decode(&nested).is_err());
        let mut huge_array = vec![0x9b, 0, 0, 0, 1, 0, 0, 0, 0];
        huge_array.extend_from_slice(&[0u8; 64]);
        assert!(matches!(
            SignedRecord::decode(&huge_array),
            Err(RecordError::Malformed(_))
        ));
        assert!(SignedRecord::decode(&[0xff; 200]).is_err());
        assert!(matches!(
            SignedRecord::decode(&vec![0u8; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn wrong_types_are_rejected() {
        let identity = Identity::generate();
        let record = sample(&identity, message("hi"));
        let value: ciborium::Value = ciborium::Value::serialized(&record).unwrap();
        let ciborium::Value::Map(mut entries) = value else {
            panic!("not a map")
        };
        // Epoch as a string instead of an integer.
        for (key, value) in &mut entries {
            if key.as_text() == Some("e") {
                *value = ciborium::Value::Text("zero".into());
            }
        }
        let mut content = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(entries), &mut content).unwrap();
        let signature = identity.sign(&content);
        content.extend_from_slice(&signature);
        assert!(matches!(
            SignedRecord::decode(&content),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn a_record_of_format_1_is_refused_by_its_version() {
        let identity = Identity::generate();
        let value = ciborium::Value::serialized(&sample(&identity, message("hi"))).unwrap();
        let ciborium::Value::Map(mut entries) = value else {
            panic!("not a map")
        };
        for (key, value) in &mut entries {
            match (key.as_text(), value) {
                (Some("v"), value) => *value = 1.into(),
                (Some("c"), ciborium::Value::Map(header)) => {
                    header.push(("q".into(), 1.into()));
                    header.push(("s".into(), ciborium::Value::Bytes(vec![1; 8])));
                }
                _ => {}
            }
        }
        let mut content = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(entries), &mut content).unwrap();
        content.extend_from_slice(&identity.sign(&content.clone()));
        let refused = SignedRecord::decode(&content).unwrap_err();
        assert_eq!(refused, RecordError::UnsupportedVersion(1));
        assert_eq!(
            refused.to_string(),
            "record format 1 is not supported: this build reads format 2 only"
        );
    }

    #[test]
    fn two_records_never_share_an_actor() {
        let identity = Identity::generate();
        let one = SignedRecord::sign(sample(&identity, message("one")), &identity).unwrap();
        let mut record = sample(&identity, message("one"));
        record.change.start_op += 1;
        let moved = SignedRecord::sign(record, &identity).unwrap();
        assert_ne!(one.actor_id(), moved.actor_id());
        assert_eq!(one.actor_id()[..8], one.record().sent_at.0.to_be_bytes());
    }

    #[test]
    fn room_names_are_normalised() {
        assert_eq!(
            RoomId::for_public_name("#Lobby").unwrap(),
            RoomId::for_public_name("lobby").unwrap()
        );
        assert_ne!(
            RoomId::for_public_name("lobby").unwrap(),
            RoomId::for_public_name("lobby2").unwrap()
        );
        assert_eq!(RoomId::for_public_name("  "), Err(RoomNameError::Empty));
        assert_eq!(
            RoomId::for_public_name("a b"),
            Err(RoomNameError::BadCharacter)
        );
        assert_eq!(
            RoomId::for_public_name(&"a".repeat(65)),
            Err(RoomNameError::TooLong)
        );
    }
}
