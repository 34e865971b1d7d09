//! History sync with one peer: Automerge's own sync protocol run per epoch document, wrapped so
//! that every change it carries passes the same validation as a gossiped change.
//!
//! # Wire format
//! One sync message is a format byte ([`WIRE_FORMAT_DEFLATE`]) followed by the CBOR
//! `{"p": [[epoch, deflated automerge sync message], …], "s": [[epoch, heads digest], …]}`. The
//! summary `s` lists every epoch the sender holds with a SHA-256 of its sorted heads, so epochs
//! already equal on both sides cost nothing; parts `p` carry Automerge sync messages for the
//! epochs that differ, each raw-deflate compressed on its own (so that all cores compress and
//! inflate). Changes travel one by one (so each can be validated), which repeats the room id,
//! author key and actor in every change: compression wins back most of that.
//!
//! A message carries parts until it reaches [`SYNC_MESSAGE_BUDGET`]; the epochs left out go in
//! the next message. After receiving, call [`Room::generate_sync_message`] until it returns
//! `None`, and send every message it gives.
//!
//! # Defences (see `CRDT-VALIDATION.md`)
//! - Raw bytes never reach Automerge: each part is decoded (under `catch_unwind`), each change in
//!   it is validated, and only then is the message handed to `receive_sync_message`.
//! - The capability flags are stripped both ways, so neither side ever believes the other accepts
//!   a whole saved document (which could not be validated change by change); document and
//!   compressed chunks are refused.
//! - A peer's Bloom filters are checked before Automerge probes them: one with entries but no
//!   bits, or more than [`MAX_BLOOM_PROBES`] probes, refuses the message (Automerge would divide
//!   by zero or allocate without bound).
//! - The first invalid change ends the session with an error, so a peer holding changes we reject
//!   cannot keep us in an endless exchange; the caller drops or resets the session and penalises
//!   the peer.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use automerge::ChangeHash;
use automerge::sync::{self, BloomFilter, SyncDoc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::epoch::EpochDoc;
use crate::parallel::{cores, parallel_map};
use crate::record::RecordId;
use crate::room::{Room, RoomError, split_ready};
use crate::validate::{Rejection, ValidChange, check_all, verify_all};

/// Largest sync message accepted, once decompressed. One part holds a whole epoch's missing
/// changes; local writers move to a new epoch at [`crate::room::EPOCH_MAX_BYTES`] of changes, so
/// even a full epoch fits four times over.
pub const MAX_SYNC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Parts are added to a message until its parts reach this size; the remaining epochs follow in
/// the next message. Keeps messages (and the memory to build and check them) moderate.
pub const SYNC_MESSAGE_BUDGET: usize = 16 * 1024 * 1024;
/// The first byte of every sync message: its parts are raw-deflate compressed.
pub const WIRE_FORMAT_DEFLATE: u8 = 1;
/// Compression level of parts: zlib's default, which on sync traffic gives about 15 % fewer bytes
/// than the fastest level for about twice the compression time (spread over every core).
const PART_COMPRESSION: u32 = 6;
/// Most epochs one sync message may describe: bounds the work a hostile summary can cause.
pub const MAX_SYNC_EPOCHS: usize = 65_536;
/// Most epochs this device lacks that one sync message may make it create, in each direction: an
/// epoch document costs a genesis change of 17 operations to create, and a peer may name any
/// epoch number. Those left out follow in the next messages, lowest first, so a newcomer catching
/// up on a long room (100 epochs per 100,000 records) needs one or two more round trips, not more
/// work.
pub const MAX_NEW_EPOCHS_PER_MESSAGE: usize = 64;
/// Most probes per hash a peer's Bloom filter may ask for. Automerge's own filters use 7; it
/// allocates the probe list of every hash it looks up, so a filter asking for 2^32 probes would
/// cost 16 GiB per lookup.
pub const MAX_BLOOM_PROBES: u32 = 64;

/// What an epoch holding only its genesis has, told exactly: nothing since the genesis. Automerge
/// would send a Bloom filter of the genesis alone, which the peer tests each of its changes
/// against; every false positive (a few in a thousand) holds that change and everything built on
/// it back for another round trip, and a newcomer catching up on a hundred epochs met one in
/// almost every sync.
fn exactly_genesis(epoch: &EpochDoc) -> sync::Have {
    sync::Have {
        last_sync: vec![epoch.genesis()],
        bloom: BloomFilter::default(),
    }
}

/// Why a sync message was refused. The session should be reset; for every variant but
/// [`SyncError::Room`] (a local failure) the peer sent something invalid and should be penalised.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Larger than [`MAX_SYNC_MESSAGE_BYTES`].
    #[error("sync message is {0} bytes, more than the limit")]
    TooLarge(usize),
    /// Not a sync message of our format, or an Automerge part that does not decode.
    #[error("malformed sync message: {0}")]
    Malformed(String),
    /// A change inside broke a validation rule.
    #[error("sync message carries an invalid change: {0}")]
    Rejected(#[from] Rejection),
    /// A change inside belongs to another epoch than the part that carries it.
    #[error("sync message carries a change of epoch {found} in the part for epoch {part}")]
    WrongEpoch {
        /// The part's epoch.
        part: u32,
        /// The change's epoch.
        found: u32,
    },
    /// Automerge refused the (validated) message.
    #[error("automerge refused the sync message: {0}")]
    Automerge(String),
    /// Applying what arrived failed locally (reading or writing this device's store): not the
    /// peer's fault.
    #[error(transparent)]
    Room(#[from] RoomError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    #[serde(rename = "p")]
    parts: Vec<(u32, serde_bytes::ByteBuf)>,
    #[serde(rename = "s")]
    summary: Vec<(u32, serde_bytes::ByteArray<32>)>,
}

/// The state of sync with one peer for one room. Keep it for as long as the connection lasts;
/// after a [`SyncError`], [`SyncSession::reset`] it.
#[derive(Debug, Default)]
pub struct SyncSession {
    states: BTreeMap<u32, sync::State>,
    their_summary: Option<BTreeMap<u32, [u8; 32]>>,
    last_sent_summary: Option<BTreeMap<u32, [u8; 32]>>,
}

/// What one received sync message changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncProgress {
    /// Records that arrived and are now in the room.
    pub new_records: Vec<RecordId>,
    /// Changes the message carried that this replica neither held nor had waiting for their
    /// dependencies: the records it gained plus those now waiting. Zero means the message
    /// brought nothing new, which in a busy room is what a sync exchange looks like once only
    /// the records gossip is still delivering differ.
    pub unseen_changes: usize,
}

impl SyncSession {
    /// A session with a peer we have not synced with yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts over with the peer, keeping only what both sides were known to share (per epoch,
    /// the heads Automerge persists between connections, as its docs recommend): the next
    /// exchange's Bloom filters then cover only the changes since, not a whole epoch.
    pub fn reset(&mut self) {
        let states = std::mem::take(&mut self.states)
            .into_iter()
            .filter_map(|(number, state)| {
                sync::State::decode(&state.encode())
                    .ok()
                    .map(|state| (number, state))
            })
            .collect();
        *self = Self {
            states,
            ..Self::default()
        };
    }

    /// Forgets everything about the peer, shared heads included: after it sent something
    /// invalid, nothing it claimed is trusted.
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    /// Whether both sides hold the same heads in every epoch, as far as this session knows.
    pub fn is_in_sync(&self, room: &Room) -> bool {
        self.their_summary.as_ref() == Some(&summary(room))
    }
}

fn heads_digest(heads: &[ChangeHash]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for head in heads {
        hasher.update(head.0);
    }
    hasher.finalize().into()
}

fn summary(room: &Room) -> BTreeMap<u32, [u8; 32]> {
    room.heads()
        .iter()
        .map(|(n, heads)| (*n, heads_digest(heads)))
        .collect()
}

/// One epoch's share of a received sync message, applied on a worker thread: complete changes
/// are applied as already parsed (Automerge would parse them again), and the others travel in
/// the sync message so that Automerge queues them and asks for what they depend on (a Bloom
/// filter false positive can make the peer leave one out).
struct ApplyJob {
    number: u32,
    epoch: EpochDoc,
    state: sync::State,
    before: Vec<ChangeHash>,
    message: Option<sync::Message>,
    /// The part's valid changes; after the run, those that were complete.
    valid: Vec<ValidChange>,
    /// After the run: the changes whose dependencies were missing.
    blocked: Vec<ValidChange>,
    /// After the run: every change the epoch gained, oldest first.
    gained: Vec<ChangeHash>,
    outcome: Result<(), SyncError>,
}

impl ApplyJob {
    fn run(mut self) -> Self {
        let epoch = &self.epoch;
        let (ready, blocked) = split_ready(std::mem::take(&mut self.valid), |_, hash| {
            epoch.has_change(hash)
        });
        if let Some(error) = self.epoch.apply(ready.iter().map(|v| &v.change)) {
            tracing::warn!(epoch = self.number, %error, "Automerge refused validated sync changes");
        }
        if let Some(mut message) = self.message.take() {
            message.changes = blocked
                .iter()
                .map(|v| v.change.raw_bytes().to_vec())
                .collect::<Vec<_>>()
                .into();
            let (doc, state) = (self.epoch.doc_mut(), &mut self.state);
            self.outcome = catch_unwind(AssertUnwindSafe(|| {
                doc.receive_sync_message(state, message)
            }))
            .map_err(|_| SyncError::Automerge("panicked".into()))
            .and_then(|result| result.map_err(|e| SyncError::Automerge(e.to_string())));
        }
        self.gained = self.epoch.hashes_since(&self.before);
        self.valid = ready;
        self.blocked = blocked;
        self
    }
}

/// Compresses one part.
fn deflate(part: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::new(PART_COMPRESSION));
    match encoder.write_all(part).and_then(|()| encoder.finish()) {
        Ok(out) => out,
        Err(e) => unreachable!("compressing into memory failed: {e}"),
    }
}

/// Inflates one part, refusing to produce more than [`MAX_SYNC_MESSAGE_BYTES`]: a small part must
/// not become a memory bomb.
fn inflate_bounded(compressed: &[u8]) -> Result<Vec<u8>, SyncError> {
    let mut part = Vec::new();
    DeflateDecoder::new(compressed)
        .take(MAX_SYNC_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut part)
        .map_err(|e| SyncError::Malformed(e.to_string()))?;
    if part.len() > MAX_SYNC_MESSAGE_BYTES {
        return Err(SyncError::TooLarge(part.len()));
    }
    Ok(part)
}

/// Why a peer's Bloom filter must not be probed, if it must not. Automerge probes the filters
/// of a peer's `have` when it picks the changes to send, and trusts their parameters: a filter
/// with entries but no bits makes it divide by zero (a panic outside any `catch_unwind`), and a
/// huge probe count makes it allocate without bound. A filter without entries is never probed.
fn poisoned(bloom: &BloomFilter) -> Option<&'static str> {
    let bytes = bloom.to_bytes();
    let mut header = &bytes[..];
    let (Some(entries), Some(bits_per_entry), Some(probes)) = (
        read_leb128_u32(&mut header),
        read_leb128_u32(&mut header),
        read_leb128_u32(&mut header),
    ) else {
        return None;
    };
    if entries > 0 && bits_per_entry == 0 {
        Some("entries but no bits")
    } else if probes > MAX_BLOOM_PROBES {
        Some("too many probes")
    } else {
        None
    }
}

/// Reads an unsigned LEB128 integer that fits in a `u32` off the front of `bytes`.
fn read_leb128_u32(bytes: &mut &[u8]) -> Option<u32> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).ok();
        }
    }
    None
}

impl Room {
    /// The next message to send to the peer of `session`, or `None` when there is nothing to say
    /// (the exchange is over once both sides return `None`). Fails only when an epoch cannot be
    /// read back from this device's store.
    pub fn generate_sync_message(
        &mut self,
        session: &mut SyncSession,
    ) -> Result<Option<Vec<u8>>, RoomError> {
        let ours = summary(self);
        let mut parts = Vec::new();
        if let Some(theirs) = session.their_summary.clone() {
            let mut new_epochs = 0;
            let differing: Vec<u32> = ours
                .keys()
                .chain(theirs.keys())
                .copied()
                .filter(|n| ours.get(n) != theirs.get(n))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|n| {
                    if self.holds_epoch(*n) {
                        return true;
                    }
                    new_epochs += 1;
                    new_epochs <= MAX_NEW_EPOCHS_PER_MESSAGE
                })
                .collect();
            // Epochs are independent documents: each group of them (one per core) generates and
            // compresses in parallel, and the budget is checked between groups.
            let group_len = cores();
            let mut size = 0;
            for group in differing.chunks(group_len) {
                if size >= SYNC_MESSAGE_BUDGET {
                    break;
                }
                self.wake_all(group)?;
                for number in group {
                    self.epoch_mut(*number)?;
                }
                let jobs: Vec<(u32, &EpochDoc, sync::State)> = group
                    .iter()
                    .filter_map(|n| {
                        let epoch = self.epochs_loaded().get(n)?;
                        Some((*n, epoch, session.states.remove(n).unwrap_or_default()))
                    })
                    .collect();
                let generated =
                    parallel_map(jobs, 2, |chunk| {
                        chunk
                            .into_iter()
                            .map(|(number, epoch, mut state)| {
                                let part = epoch.doc().generate_sync_message(&mut state).map(
                                    |mut message| {
                                        message.flags = None;
                                        if epoch.holds_only_genesis() {
                                            message.have = vec![exactly_genesis(epoch)];
                                        }
                                        let encoded = message.encode();
                                        (encoded.len(), deflate(&encoded))
                                    },
                                );
                                (number, state, part)
                            })
                            .collect()
                    });
                for (number, state, part) in generated {
                    session.states.insert(number, state);
                    if let Some((raw_len, compressed)) = part {
                        size += raw_len;
                        parts.push((number, serde_bytes::ByteBuf::from(compressed)));
                    }
                }
            }
        }
        let ours = summary(self);
        if parts.is_empty() && session.last_sent_summary.as_ref() == Some(&ours) {
            return Ok(None);
        }
        let wire = WireMessage {
            parts,
            summary: ours
                .iter()
                .map(|(n, d)| (*n, serde_bytes::ByteArray::new(*d)))
                .collect(),
        };
        session.last_sent_summary = Some(ours);
        let mut out = vec![WIRE_FORMAT_DEFLATE];
        if let Err(e) = ciborium::into_writer(&wire, &mut out) {
            unreachable!("encoding a sync message into memory failed: {e}");
        }
        Ok(Some(out))
    }

    /// Takes a sync message from the peer of `session`: validates every change it carries, then
    /// lets Automerge apply them. A message carrying any invalid change is refused whole.
    pub fn receive_sync_message(
        &mut self,
        session: &mut SyncSession,
        bytes: &[u8],
    ) -> Result<SyncProgress, SyncError> {
        if bytes.len() > MAX_SYNC_MESSAGE_BYTES {
            return Err(SyncError::TooLarge(bytes.len()));
        }
        let Some((&WIRE_FORMAT_DEFLATE, body)) = bytes.split_first() else {
            return Err(SyncError::Malformed("unknown sync message format".into()));
        };
        let wire: WireMessage =
            ciborium::from_reader(body).map_err(|e| SyncError::Malformed(e.to_string()))?;
        if wire.summary.len() > MAX_SYNC_EPOCHS || wire.parts.len() > MAX_SYNC_EPOCHS {
            return Err(SyncError::Malformed("too many epochs".into()));
        }
        let inflated = parallel_map(wire.parts.iter().collect(), 2, |chunk| {
            chunk
                .into_iter()
                .map(|(number, part)| inflate_bounded(part).map(|bytes| (*number, bytes)))
                .collect()
        });
        let mut parts = Vec::with_capacity(inflated.len());
        let mut total = 0;
        for part in inflated {
            let part = part?;
            total += part.1.len();
            if total > MAX_SYNC_MESSAGE_BYTES {
                return Err(SyncError::TooLarge(total));
            }
            parts.push(part);
        }
        if !parts.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(SyncError::Malformed(
                "parts not in increasing epoch order".into(),
            ));
        }
        let mut decoded = Vec::with_capacity(wire.parts.len());
        let mut new_epochs = 0;
        for (number, part) in &parts {
            if !self.holds_epoch(*number) {
                new_epochs += 1;
                if new_epochs > MAX_NEW_EPOCHS_PER_MESSAGE {
                    // Left as if never received: the summary names the epoch, so the next
                    // message asks for it again.
                    continue;
                }
            }
            let mut message = catch_unwind(|| sync::Message::decode(part))
                .map_err(|_| SyncError::Malformed("Automerge panicked decoding a part".into()))?
                .map_err(|e| SyncError::Malformed(e.to_string()))?;
            message.flags = None;
            if let Some(reason) = message.have.iter().find_map(|have| poisoned(&have.bloom)) {
                return Err(SyncError::Malformed(format!(
                    "poisoned Bloom filter: {reason}"
                )));
            }
            self.wake(*number)?;
            let chunks: Vec<&[u8]> = message.changes.iter().collect();
            let mut unverified = Vec::new();
            for checked in check_all(&self.id(), &chunks) {
                let checked = checked?;
                if checked.epoch() != *number {
                    return Err(SyncError::WrongEpoch {
                        part: *number,
                        found: checked.epoch(),
                    });
                }
                if !self.has_change(*number, &checked.hash()) {
                    unverified.push(Ok(checked));
                }
            }
            let mut valid = Vec::with_capacity(unverified.len());
            for result in verify_all(unverified) {
                valid.push(result?);
            }
            decoded.push((*number, message, valid));
        }
        // Every valid change goes to Automerge, complete ones first in dependency order: from the
        // ones it must queue, it learns which dependencies to ask for (a Bloom filter false
        // positive can make the peer skip one). The queued ones also wait in the room, which
        // indexes them once Automerge has applied them. Complete changes are applied as already
        // parsed (Automerge would parse them again); the rest travel in the sync message.
        let mut jobs = Vec::with_capacity(decoded.len());
        let mut unseen_changes = 0;
        for (number, message, valid) in decoded {
            for v in &valid {
                if self.take_waiting(&v.hash()).is_none() {
                    unseen_changes += 1;
                }
            }
            self.epoch_mut(number)?;
            let Some(epoch) = self.take_epoch(number) else {
                continue;
            };
            let state = session.states.remove(&number).unwrap_or_default();
            jobs.push(ApplyJob {
                number,
                before: epoch.heads(),
                epoch,
                state,
                message: Some(message),
                valid,
                blocked: Vec::new(),
                gained: Vec::new(),
                outcome: Ok(()),
            });
        }
        // Epochs are independent documents, so they take their changes on every core at once.
        let jobs = parallel_map(jobs, 2, |chunk| {
            chunk.into_iter().map(ApplyJob::run).collect()
        });
        let mut progress = SyncProgress {
            unseen_changes,
            ..SyncProgress::default()
        };
        let mut first_error = None;
        let mut finished = Vec::with_capacity(jobs.len());
        for job in jobs {
            self.put_epoch(job.number, job.epoch);
            session.states.insert(job.number, job.state);
            if let Err(e) = job.outcome {
                first_error.get_or_insert(e);
            }
            // Whatever an epoch took before a failure is indexed all the same.
            finished.push((job.number, job.gained, job.valid, job.blocked));
        }
        for (number, gained, valid, blocked) in finished {
            let known = valid
                .into_iter()
                .chain(blocked.iter().cloned())
                .map(|v| (v.hash(), v))
                .collect();
            let absorbed = self.absorb_hashes(number, gained, known)?;
            progress
                .new_records
                .extend(absorbed.iter().map(|(_, id)| *id));
            let absorbed: HashSet<_> = absorbed.into_iter().map(|(hash, _)| hash).collect();
            self.hold_waiting(
                blocked
                    .into_iter()
                    .filter(|v| !absorbed.contains(&v.hash()))
                    .collect(),
            );
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        progress.new_records.extend(self.release_waiting()?);
        session.their_summary = Some(
            wire.summary
                .into_iter()
                .map(|(n, d)| (n, d.into_array()))
                .collect(),
        );
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::record::{Body, RoomId};
    use automerge::transaction::{CommitOptions, Transactable};
    use automerge::{ActorId, ObjType, ROOT};

    fn lobby() -> RoomId {
        RoomId::for_public_name("lobby").unwrap()
    }

    #[test]
    fn a_peer_holding_a_change_we_reject_cannot_keep_us_syncing_forever() {
        let mut honest = Room::in_memory(lobby(), Identity::generate());
        let mut hostile = Room::in_memory(lobby(), Identity::generate());
        honest.post("hi").unwrap();
        hostile.post("hello").unwrap();
        // The hostile replica holds a change no validator accepts: a new object under the root.
        let doc = hostile.epoch_mut(0).unwrap().doc_mut();
        doc.set_actor(ActorId::from(&[9u8; 16][..]));
        let mut tx = doc.transaction();
        tx.put_object(ROOT, "junk", ObjType::List).unwrap();
        tx.commit_with(CommitOptions::default().with_time(0));

        let (mut ours, mut theirs) = (SyncSession::new(), SyncSession::new());
        let heads_before = honest.heads();
        let mut error = None;
        for _ in 0..10 {
            if let Some(message) = honest.generate_sync_message(&mut ours).unwrap() {
                hostile.receive_sync_message(&mut theirs, &message).unwrap();
            }
            let Some(message) = hostile.generate_sync_message(&mut theirs).unwrap() else {
                break;
            };
            if let Err(e) = honest.receive_sync_message(&mut ours, &message) {
                error = Some(e);
                break;
            }
        }
        let error = error.expect("the invalid change was never refused");
        assert!(matches!(error, SyncError::Rejected(_)), "{error}");
        assert_eq!(
            honest.heads(),
            heads_before,
            "nothing of the refused message was applied"
        );
    }

    /// Runs sync between two rooms until neither has anything to say; returns the messages sent.
    fn sync_until_quiet(a: &mut Room, b: &mut Room, max_rounds: usize) -> usize {
        let (mut a_session, mut b_session) = (SyncSession::new(), SyncSession::new());
        sync_sessions_until_quiet((a, &mut a_session), (b, &mut b_session), max_rounds).sent
    }

    /// What [`sync_sessions_until_quiet`] counted.
    struct QuietSync {
        sent: usize,
        unseen_at_a: usize,
        unseen_at_b: usize,
    }

    /// Runs sync over the given sessions until neither side has anything to say.
    fn sync_sessions_until_quiet(
        (a, a_session): (&mut Room, &mut SyncSession),
        (b, b_session): (&mut Room, &mut SyncSession),
        max_rounds: usize,
    ) -> QuietSync {
        let mut counted = QuietSync {
            sent: 0,
            unseen_at_a: 0,
            unseen_at_b: 0,
        };
        for _ in 0..max_rounds {
            let to_b = a.generate_sync_message(a_session).unwrap();
            if let Some(m) = &to_b {
                counted.unseen_at_b += b.receive_sync_message(b_session, m).unwrap().unseen_changes;
                counted.sent += 1;
            }
            let to_a = b.generate_sync_message(b_session).unwrap();
            if let Some(m) = &to_a {
                counted.unseen_at_a += a.receive_sync_message(a_session, m).unwrap().unseen_changes;
                counted.sent += 1;
            }
            if to_b.is_none() && to_a.is_none() {
                return counted;
            }
        }
        panic!("sync did not finish in {max_rounds} rounds");
    }

    #[test]
    fn a_summary_naming_thousands_of_epochs_creates_a_few_per_message_and_none_stays() {
        let mut room = Room::in_memory(lobby(), Identity::generate());
        room.post("hi").unwrap();
        let heads = room.heads();
        let wire = WireMessage {
            parts: Vec::new(),
            summary: (1..=10_000u32)
                .map(|n| (n * 7, serde_bytes::ByteArray::new([n as u8; 32])))
                .collect(),
        };
        let mut lie = vec![WIRE_FORMAT_DEFLATE];
        ciborium::into_writer(&wire, &mut lie).unwrap();

        let mut session = SyncSession::new();
        for round in 1..=2 {
            room.receive_sync_message(&mut session, &lie).unwrap();
            let reply = room.generate_sync_message(&mut session).unwrap().unwrap();
            let reply: WireMessage = ciborium::from_reader(&reply[1..]).unwrap();
            let asked_about_unknown = reply.parts.iter().filter(|(n, _)| *n > 0).count();
            assert_eq!(
                asked_about_unknown, MAX_NEW_EPOCHS_PER_MESSAGE,
                "round {round}"
            );
            assert_eq!(
                room.epochs_in_memory(),
                1 + round * MAX_NEW_EPOCHS_PER_MESSAGE
            );
            assert_eq!(
                room.heads(),
                heads,
                "epochs holding only genesis are not listed"
            );
        }
        // The peer never sends anything for them: two flushes later they are gone.
        room.flush().unwrap();
        room.flush().unwrap();
        assert_eq!(room.epochs_in_memory(), 1);
        room.post("still writing into epoch 0").unwrap();
        assert_eq!(room.heads().keys().copied().collect::<Vec<_>>(), vec![0]);
    }

    /// Runs sync between two rooms with the given sessions until neither has anything to say;
    /// returns the bytes sent.
    fn sync_bytes(
        (a, a_session): (&mut Room, &mut SyncSession),
        (b, b_session): (&mut Room, &mut SyncSession),
    ) -> usize {
        let mut bytes = 0;
        for _ in 0..20 {
            let to_b = a.generate_sync_message(a_session).unwrap();
            if let Some(m) = &to_b {
                b.receive_sync_message(b_session, m).unwrap();
                bytes += m.len();
            }
            let to_a = b.generate_sync_message(b_session).unwrap();
            if let Some(m) = &to_a {
                a.receive_sync_message(a_session, m).unwrap();
                bytes += m.len();
            }
            if to_b.is_none() && to_a.is_none() {
                return bytes;
            }
        }
        panic!("sync did not go quiet");
    }

    #[test]
    fn only_changes_the_receiver_lacked_count_as_unseen() {
        let mut a = Room::in_memory(lobby(), Identity::generate());
        let mut b = Room::in_memory(lobby(), Identity::generate());
        a.post("first").unwrap();
        let (mut a_session, mut b_session) = (SyncSession::new(), SyncSession::new());
        let counted =
            sync_sessions_until_quiet((&mut a, &mut a_session), (&mut b, &mut b_session), 8);
        assert_eq!((counted.unseen_at_a, counted.unseen_at_b), (0, 1));

        // A record that reaches `b` by gossip while the sync message carrying it is in flight:
        // the message brings nothing `b` lacked.
        let second = a.post("second").unwrap();
        let to_b = a
            .generate_sync_message(&mut a_session)
            .unwrap()
            .expect("a has a record to send");
        b.apply_remote(&[&second.change]).unwrap();
        let progress = b.receive_sync_message(&mut b_session, &to_b).unwrap();
        assert!(progress.new_records.is_empty());
        assert_eq!(progress.unseen_changes, 0);
        assert_eq!(a.heads(), b.heads());
    }

    #[test]
    fn a_reset_session_keeps_the_shared_heads_so_the_next_exchange_stays_small() {
        // One epoch of 2,000 records (twice what a writer puts in one), so that what the
        // Bloom filters cover is all in the one epoch that differs.
        let message = |text: String| Body::Message { text };
        let mut a = Room::in_memory(lobby(), Identity::generate());
        let mut b = Room::in_memory(lobby(), Identity::generate());
        for i in 0..2_000 {
            a.write_into(0, message(format!("message {i}"))).unwrap();
        }
        let (mut a_session, mut b_session) = (SyncSession::new(), SyncSession::new());
        sync_bytes((&mut a, &mut a_session), (&mut b, &mut b_session));

        a.write_into(0, message("after a reset".into())).unwrap();
        a_session.reset();
        b_session.reset();
        let after_reset = sync_bytes((&mut a, &mut a_session), (&mut b, &mut b_session));

        a.write_into(0, message("after forgetting".into())).unwrap();
        a_session.forget();
        b_session.forget();
        let after_forget = sync_bytes((&mut a, &mut a_session), (&mut b, &mut b_session));

        assert_eq!(a.heads(), b.heads());
        // Forgotten, each side's Bloom filter covers the epoch's 2,000 changes (about 10 bits
        // each); reset, only the one since the last exchange.
        assert!(
            after_reset * 4 < after_forget,
            "one new record after a reset cost {after_reset} bytes, after forgetting {after_forget}"
        );
    }

    #[test]
    fn a_chain_longer_than_the_waiting_queue_is_indexed_once_its_first_change_arrives() {
        // A Bloom filter false positive can make a peer leave out the first change of a long
        // chain: the rest arrive first and wait inside Automerge, more of them than the room's
        // own waiting queue holds (in one epoch: writers move on after `EPOCH_CAPACITY`, but
        // any author may keep writing into an epoch). Every one of them must be indexed when
        // the missing change comes.
        let mut sender = Room::in_memory(lobby(), Identity::generate());
        for i in 0..crate::room::MAX_WAITING_CHANGES + 200 {
            let text = format!("message {i}");
            sender.write_into(0, Body::Message { text }).unwrap();
        }
        let mut receiver = Room::in_memory(lobby(), Identity::generate());
        let (mut at_sender, mut at_receiver) = (SyncSession::new(), SyncSession::new());
        let mut with_changes = None;
        for _ in 0..10 {
            if let Some(m) = receiver.generate_sync_message(&mut at_receiver).unwrap() {
                sender.receive_sync_message(&mut at_sender, &m).unwrap();
            }
            let m = sender
                .generate_sync_message(&mut at_sender)
                .unwrap()
                .unwrap();
            let wire: WireMessage = ciborium::from_reader(&m[1..]).unwrap();
            let part = sync::Message::decode(&inflate_bounded(&wire.parts[0].1).unwrap()).unwrap();
            if !part.changes.is_empty() {
                with_changes = Some((wire, part));
                break;
            }
            receiver.receive_sync_message(&mut at_receiver, &m).unwrap();
        }
        let (mut wire, mut part) = with_changes.expect("the sender sends its changes");
        part.changes = sync::ChunkList::from(
            part.changes
                .iter()
                .skip(1)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>(),
        );
        wire.parts[0].1 = serde_bytes::ByteBuf::from(deflate(&part.encode()));
        let mut without_first = vec![WIRE_FORMAT_DEFLATE];
        ciborium::into_writer(&wire, &mut without_first).unwrap();
        let progress = receiver
            .receive_sync_message(&mut SyncSession::new(), &without_first)
            .unwrap();
        assert!(progress.new_records.is_empty());

        let (mut at_sender, mut at_receiver) = (SyncSession::new(), SyncSession::new());
        sync_bytes(
            (&mut receiver, &mut at_receiver),
            (&mut sender, &mut at_sender),
        );
        assert_eq!(receiver.heads(), sender.heads());
        assert_eq!(receiver.len(), sender.len());
    }

    #[test]
    fn a_newcomer_catches_up_on_more_epochs_than_one_message_may_open() {
        let mut long = Room::in_memory(lobby(), Identity::generate());
        let epochs = 3 * MAX_NEW_EPOCHS_PER_MESSAGE as u32 + 5;
        for number in 0..epochs {
            long.write_into(
                number,
                crate::record::Body::Message {
                    text: format!("epoch {number}"),
                },
            )
            .unwrap();
        }
        let mut newcomer = Room::in_memory(lobby(), Identity::generate());
        let messages = sync_until_quiet(&mut newcomer, &mut long, 20);
        assert_eq!(newcomer.heads(), long.heads());
        assert_eq!(newcomer.len(), epochs as usize);
        // Each round trip opens at most the allowed number of epochs on the newcomer's side.
        assert!(messages >= 2 * 4, "{messages} messages");
    }

    #[test]
    fn a_small_message_that_inflates_past_the_limit_is_refused() {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..=MAX_SYNC_MESSAGE_BYTES / zeros.len() {
            encoder.write_all(&zeros).unwrap();
        }
        let part = encoder.finish().unwrap();
        let wire = WireMessage {
            parts: vec![(0, serde_bytes::ByteBuf::from(part))],
            summary: Vec::new(),
        };
        let mut bomb = vec![WIRE_FORMAT_DEFLATE];
        ciborium::into_writer(&wire, &mut bomb).unwrap();
        assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
        let mut room = Room::in_memory(lobby(), Identity::generate());
        let error = room
            .receive_sync_message(&mut SyncSession::new(), &bomb)
            .unwrap_err();
        assert!(matches!(error, SyncError::TooLarge(_)), "{error}");
    }

    #[test]
    fn flags_are_stripped_so_no_whole_document_is_ever_sent() {
        let mut full = Room::in_memory(lobby(), Identity::generate());
        for i in 0..100 {
            full.post(&format!("message {i}")).unwrap();
        }
        let mut empty = Room::in_memory(lobby(), Identity::generate());
        let (mut a, mut b) = (SyncSession::new(), SyncSession::new());
        for _ in 0..10 {
            let to_full = empty.generate_sync_message(&mut b).unwrap();
            if let Some(m) = &to_full {
                full.receive_sync_message(&mut a, m).unwrap();
            }
            let to_empty = full.generate_sync_message(&mut a).unwrap();
            if let Some(m) = &to_empty {
                let wire: WireMessage = ciborium::from_reader(&m[1..]).unwrap();
                for (_, part) in &wire.parts {
                    let message = sync::Message::decode(&inflate_bounded(part).unwrap()).unwrap();
                    assert!(message.flags.is_none());
                    for chunk in message.changes.iter() {
                        assert_eq!(chunk[8], 1, "only uncompressed change chunks are sent");
                    }
                }
                empty.receive_sync_message(&mut b, m).unwrap();
            }
            if to_full.is_none() && to_empty.is_none() {
                break;
            }
        }
        assert_eq!(empty.heads(), full.heads());
        assert_eq!(empty.len(), 100);
    }
}
