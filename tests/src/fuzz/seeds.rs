//! The seed corpus of every fuzz target: real inputs built through the real APIs, and on purpose
//! one or more inputs of each malformed class (truncated, trailing bytes, indefinite lengths,
//! huge declared lengths, deep nesting, duplicate and non-canonical map keys, wrong types,
//! invalid UTF-8, wrong key and signature lengths, non-canonical signatures, signatures over
//! another encoding, timestamps far in the future, changes with missing or duplicate
//! dependencies, poisoned Bloom filters). `cargo run -p grapevine-tests --example fuzz_seeds`
//! writes them to `fuzz/corpus/<target>/seed-<name>`.

use std::io::{Read, Write};

use automerge::sync::{self, BloomFilter, Have};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ChangeHash, ROOT};
use ciborium::Value;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use grapevine_crdt::clock::Hlc;
use grapevine_crdt::record::{MAX_TEXT_BYTES, Record, RoomId};
use grapevine_crdt::sync::WIRE_FORMAT_DEFLATE;
use grapevine_crdt::{Body, Rejection, Room, Store, SyncSession, validate_change};
use grapevine_node::behaviour::Envelope;

use super::forge::{Author, GENESIS_OPS, change_hash, genesis, lobby};
use super::{frames, local_identity, peer};

/// One seed: a descriptive name (the file is `seed-<name>`) and its bytes.
pub type Seed = (String, Vec<u8>);

/// The seeds of the target called `target`, or none for an unknown name.
pub fn for_target(target: &str) -> Vec<Seed> {
    match target {
        "record" => record(),
        "envelope" => envelope(),
        "apply_remote" => apply_remote(),
        "sync_receive" => sync_receive(),
        "store_load" => store_load(),
        "config_file" => config_file(),
        "sanitize" => sanitize(),
        _ => Vec::new(),
    }
}

fn seed(name: &str, bytes: impl Into<Vec<u8>>) -> Seed {
    (name.to_string(), bytes.into())
}

/// The group order of ed25519, little endian: a signature's `s` must be below it.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
/// The encoding of the identity point, of small order: a key or `R` that must be refused.
const IDENTITY_POINT: [u8; 32] = {
    let mut point = [0; 32];
    point[0] = 1;
    point
};
/// A non-canonical point encoding: `y = p + 1`, which reduces to the identity.
const NON_CANONICAL_POINT: [u8; 32] = {
    let mut point = [0xff; 32];
    point[0] = 0xee;
    point[31] = 0x7f;
    point
};

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding into memory");
    out
}

/// A record's CBOR map entries, in canonical order.
fn entries(record: &Record) -> Vec<(Value, Value)> {
    match Value::serialized(record).expect("a record serialises") {
        Value::Map(entries) => entries,
        _ => unreachable!("a record is a map"),
    }
}

/// The record's entries with `key` given `value`.
fn with_field(record: &Record, key: &str, value: Value) -> Vec<(Value, Value)> {
    let mut entries = entries(record);
    for (k, v) in &mut entries {
        if k.as_text() == Some(key) {
            *v = value.clone();
        }
    }
    entries
}

/// The record's entries as format 1 wrote them: version 1, and a change header that also
/// carried the change's sequence number and the device's actor suffix.
fn format_1(record: &Record) -> Vec<(Value, Value)> {
    let mut entries = with_field(record, "v", Value::Integer(1.into()));
    for (key, value) in &mut entries {
        if key.as_text() == Some("c")
            && let Value::Map(header) = value
        {
            header.push(("q".into(), Value::Integer(1.into())));
            header.push(("s".into(), Value::Bytes(vec![7; 8])));
        }
    }
    entries
}

/// A CBOR head: major type `major` with argument `n` (a length, or a count of items), in its
/// shortest form.
fn head(major: u8, n: u64) -> Vec<u8> {
    let major = major << 5;
    match n {
        0..=23 => vec![major | n as u8],
        24..=0xff => vec![major | 24, n as u8],
        0x100..=0xffff => [vec![major | 25], (n as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![major | 26], (n as u32).to_be_bytes().to_vec()].concat(),
        _ => [vec![major | 27], n.to_be_bytes().to_vec()].concat(),
    }
}

/// `entries` as a CBOR map whose head and keys are written by hand: indefinite length, or a
/// declared length of `declared` entries.
fn raw_map(entries: &[(Value, Value)], declared: Option<u64>) -> Vec<u8> {
    let mut out = match declared {
        Some(n) => head(5, n),
        None => vec![0xbf],
    };
    for (k, v) in entries {
        out.extend(cbor(k));
        out.extend(cbor(v));
    }
    if declared.is_none() {
        out.push(0xff);
    }
    out
}

/// `signature` with the group order added to `s`: the same point equation, a second encoding.
fn non_canonical_s(signature: &[u8]) -> Vec<u8> {
    let mut out = signature.to_vec();
    let mut carry = 0u16;
    for (byte, add) in out[32..].iter_mut().zip(GROUP_ORDER) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    out
}

fn deflate(bytes: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).expect("compressing into memory");
    encoder.finish().expect("compressing into memory")
}

fn inflate(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    DeflateDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("our own compressed part inflates");
    out
}

/// Record decoding: real records of every kind, then every malformed class.
pub fn record() -> Vec<Seed> {
    let author = peer();
    let deps = [genesis()];
    let msg = author.message("hello", GENESIS_OPS + 1, &deps);
    let signed = author.sign(msg.clone());
    let good = signed.bytes().to_vec();
    let content = good[..good.len() - 64].to_vec();
    let signature = good[good.len() - 64..].to_vec();
    let target = signed.id();
    let mut seeds = vec![seed("message", good.clone())];
    for (name, body) in [
        (
            "edit",
            Body::Edit {
                target,
                text: "fixed".into(),
            },
        ),
        ("delete", Body::Delete { target }),
        (
            "reaction",
            Body::Reaction {
                target,
                on: true,
                reaction: "👍".into(),
            },
        ),
        (
            "profile",
            Body::Profile {
                nickname: "ana".into(),
            },
        ),
        (
            "message-longest",
            Body::Message {
                text: "é".repeat(MAX_TEXT_BYTES / 2),
            },
        ),
        (
            "message-escapes",
            Body::Message {
                text: "\u{1b}]0;title\u{7}\u{1b}[2J\u{202e}gnp.exe\u{9b}31m".into(),
            },
        ),
    ] {
        let record = author.record(body, GENESIS_OPS + 1, &deps);
        seeds.push(seed(name, author.sign(record).bytes()));
    }
    let many_deps: Vec<ChangeHash> = (0..=255u8).map(|i| ChangeHash([i; 32])).collect();
    let wide = author.record(
        Body::Message { text: "x".into() },
        GENESIS_OPS + 1,
        &many_deps,
    );
    seeds.push(seed("deps-256", author.sign(wide).bytes()));
    for (name, sent_at) in [
        ("future-max", Hlc(u64::MAX)),
        ("future-year-10889", Hlc::new((1 << 48) - 1, 0)),
        ("future-2100", Hlc::new(4_102_444_800_000, 7)),
        ("time-zero", Hlc(0)),
    ] {
        let mut record = msg.clone();
        record.sent_at = sent_at;
        seeds.push(seed(
            &format!("timestamp-{name}"),
            author.sign(record).bytes(),
        ));
    }

    let sign = |content: Vec<u8>| author.sign_bytes(content);
    seeds.extend([
        seed("truncated-empty", Vec::new()),
        seed("truncated-signature-only", signature.clone()),
        seed("truncated-half", good[..good.len() / 2].to_vec()),
        seed("truncated-last-byte", good[..good.len() - 1].to_vec()),
        seed("trailing-after-signature", [good.clone(), vec![0]].concat()),
        seed(
            "trailing-inside-signed-content",
            sign([content.clone(), vec![0xf6]].concat()),
        ),
        seed("indefinite-map", sign(raw_map(&entries(&msg), None))),
        seed(
            "indefinite-text",
            sign({
                let at = content
                    .windows(6)
                    .position(|w| w == b"\x65hello")
                    .expect("the text is in the record");
                [
                    content[..at].to_vec(),
                    vec![0x7f, 0x62, b'h', b'e', 0x63, b'l', b'l', b'o', 0xff],
                    content[at + 6..].to_vec(),
                ]
                .concat()
            }),
        ),
        seed("huge-map-2^32-entries", sign(head(5, 1 << 32))),
        seed(
            "huge-deps-array-2^32-items",
            sign(
                [
                    raw_map(&entries(&msg)[..2], Some(7)),
                    cbor(&Value::Text("c".into())),
                    head(5, 2),
                    cbor(&Value::Text("d".into())),
                    head(4, 1 << 32),
                ]
                .concat(),
            ),
        ),
        seed(
            "huge-author-bytes-2^32",
            sign([head(5, 7), cbor(&Value::Text("a".into())), head(2, 1 << 32)].concat()),
        ),
        seed(
            "huge-text-2^63",
            sign([head(3, 1 << 63), b"hello".to_vec()].concat()),
        ),
        seed("deep-nesting-arrays", sign(vec![0x81; 10_000])),
        seed("deep-nesting-maps", sign([0xa1, 0x61, b'a'].repeat(3_000))),
        seed(
            "duplicate-key",
            sign({
                let mut entries = entries(&msg);
                entries.insert(1, entries[0].clone());
                raw_map(&entries, Some(8))
            }),
        ),
        seed(
            "non-canonical-key-order",
            sign({
                let mut entries = entries(&msg);
                entries.reverse();
                raw_map(&entries, Some(7))
            }),
        ),
        seed(
            "non-canonical-map-head",
            sign([vec![0xb8, 7], content[1..].to_vec()].concat()),
        ),
        seed(
            "non-canonical-key-length",
            sign([vec![0xa7, 0x78, 1], content[2..].to_vec()].concat()),
        ),
        seed(
            "non-canonical-integer",
            sign({
                let mut entries = entries(&msg);
                let version = entries.pop().expect("the version entry");
                [raw_map(&entries, Some(7)), cbor(&version.0), vec![0x18, 1]].concat()
            }),
        ),
        seed(
            "wrong-type-epoch-text",
            sign(raw_map(
                &with_field(&msg, "e", Value::Text("zero".into())),
                Some(7),
            )),
        ),
        seed(
            "wrong-type-author-text",
            sign(raw_map(
                &with_field(&msg, "a", Value::Text("me".into())),
                Some(7),
            )),
        ),
        seed(
            "wrong-type-body-array",
            sign(raw_map(
                &with_field(&msg, "b", Value::Array(Vec::new())),
                Some(7),
            )),
        ),
        seed(
            "wrong-type-time-float",
            sign(raw_map(&with_field(&msg, "t", Value::Float(1.5)), Some(7))),
        ),
        seed(
            "wrong-type-version-negative",
            sign(raw_map(
                &with_field(&msg, "v", Value::Integer((-1).into())),
                Some(7),
            )),
        ),
        seed(
            "wrong-type-top-level-array",
            sign(cbor(&Value::Array(
                entries(&msg).into_iter().map(|(_, v)| v).collect(),
            ))),
        ),
        seed(
            "invalid-utf8-text",
            sign({
                let mut content = content.clone();
                let at = content
                    .windows(5)
                    .position(|w| w == b"hello")
                    .expect("the text is in the record");
                content[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
                content
            }),
        ),
        seed(
            "key-31-bytes",
            sign(raw_map(
                &with_field(&msg, "a", Value::Bytes(vec![7; 31])),
                Some(7),
            )),
        ),
        seed(
            "key-33-bytes",
            sign(raw_map(
                &with_field(&msg, "a", Value::Bytes(vec![7; 33])),
                Some(7),
            )),
        ),
        seed(
            "signature-63-bytes",
            [content.clone(), signature[..63].to_vec()].concat(),
        ),
        seed(
            "signature-65-bytes",
            [content.clone(), signature.clone(), vec![0]].concat(),
        ),
        seed(
            "signature-non-canonical-s",
            [content.clone(), non_canonical_s(&signature)].concat(),
        ),
        seed(
            "signature-non-canonical-r",
            [
                content.clone(),
                NON_CANONICAL_POINT.to_vec(),
                signature[32..].to_vec(),
            ]
            .concat(),
        ),
        seed(
            "signature-over-another-encoding",
            [
                content.clone(),
                author
                    .identity
                    .sign(&raw_map(&entries(&msg), None))
                    .to_vec(),
            ]
            .concat(),
        ),
        seed(
            "signature-by-another-key",
            Author::new(0x66).sign_bytes(content.clone()),
        ),
        seed("format-1", sign(cbor(&Value::Map(format_1(&msg))))),
    ]);
    // A small-order key with the identity as `R` and `s = 0` satisfies the cofactored equation
    // for every message: the key and `R` rules must refuse it.
    let mut small = msg.clone();
    small.author.0 = IDENTITY_POINT;
    let small_content = cbor(&Value::Map(entries(&small)));
    seeds.push(seed(
        "small-order-key-and-r",
        [small_content, IDENTITY_POINT.to_vec(), vec![0; 32]].concat(),
    ));
    for (name, record) in limit_breaking_records(&author, &msg) {
        seeds.push(seed(&name, author.sign_unchecked(&record)));
    }
    seeds
}

/// Records that break a limit [`grapevine_crdt::SignedRecord::sign`] checks, to be signed by
/// hand.
fn limit_breaking_records(author: &Author, msg: &Record) -> Vec<(String, Record)> {
    let g = genesis();
    let mut version = msg.clone();
    version.version = 3;
    let mut empty = msg.clone();
    empty.body = Body::Message {
        text: String::new(),
    };
    let mut long = msg.clone();
    long.body = Body::Message {
        text: "x".repeat(MAX_TEXT_BYTES + 1),
    };
    let mut start_op_zero = msg.clone();
    start_op_zero.change.start_op = 0;
    let unsorted = author.message("unsorted", GENESIS_OPS + 1, &[ChangeHash([9; 32]), g]);
    let duplicated = author.message("duplicated", GENESIS_OPS + 1, &[g, g]);
    vec![
        ("version-3".into(), version),
        ("empty-text".into(), empty),
        ("text-too-long".into(), long),
        ("start-op-zero".into(), start_op_zero),
        ("deps-unsorted".into(), unsorted),
        ("deps-duplicated".into(), duplicated),
    ]
}

/// Gossip envelopes: real ones, and malformed CBOR around a real change.
pub fn envelope() -> Vec<Seed> {
    let chain = peer().chain(2);
    let change = chain[0].clone();
    let good = Envelope::encode(&change);
    let key = || Value::Text("c".into());
    let mut seeds = vec![
        seed("real", good.clone()),
        seed("real-second-waits", Envelope::encode(&chain[1])),
        seed("truncated", good[..good.len() / 2].to_vec()),
        seed("trailing", [good.clone(), vec![0x00, 0xff]].concat()),
        seed(
            "indefinite-bytes",
            [
                vec![0xa1, 0x61, b'c', 0x5f],
                cbor(&Value::Bytes(change[..10].to_vec())),
                cbor(&Value::Bytes(change[10..].to_vec())),
                vec![0xff],
            ]
            .concat(),
        ),
        seed(
            "indefinite-map",
            raw_map(&[(key(), Value::Bytes(change.clone()))], None),
        ),
        seed(
            "huge-bytes-2^32",
            [vec![0xa1, 0x61, b'c'], head(2, 1 << 32), change.clone()].concat(),
        ),
        seed("huge-map-2^32", head(5, 1 << 32)),
        seed(
            "deep-nesting",
            [vec![0xa1, 0x61, b'c'], vec![0x81; 10_000]].concat(),
        ),
        seed(
            "duplicate-key",
            raw_map(
                &[
                    (key(), Value::Bytes(change.clone())),
                    (key(), Value::Bytes(b"other".to_vec())),
                ],
                Some(2),
            ),
        ),
        seed(
            "unknown-key",
            cbor(&Value::Map(vec![
                (key(), Value::Bytes(change.clone())),
                (Value::Text("z".into()), Value::Integer(1.into())),
            ])),
        ),
        seed(
            "non-canonical-key",
            [
                vec![0xa1, 0x78, 1, b'c'],
                cbor(&Value::Bytes(change.clone())),
            ]
            .concat(),
        ),
        seed(
            "wrong-type-text",
            cbor(&Value::Map(vec![(key(), Value::Text("change".into()))])),
        ),
        seed(
            "wrong-type-array",
            cbor(&Value::Map(vec![(
                key(),
                Value::Array(change.iter().map(|b| Value::Integer((*b).into())).collect()),
            )])),
        ),
        seed(
            "invalid-utf8-key",
            [vec![0xa1, 0x61, 0xff], cbor(&Value::Bytes(change))].concat(),
        ),
        seed("not-a-change", Envelope::encode(b"not an automerge change")),
    ];
    for (name, change) in crafted_changes() {
        seeds.push(seed(&format!("change-{name}"), Envelope::encode(&change)));
    }
    seeds
}

/// Changes that are well-formed Automerge, each breaking one rule (or none, for the valid
/// ones with unusual content), with the record classes inside changes too.
fn crafted_changes() -> Vec<(String, Vec<u8>)> {
    let author = peer();
    let g = genesis();
    let msg = author.message("hello", GENESIS_OPS + 1, &[g]);
    let honest = author.signed_change(msg.clone());
    let mut out = vec![("honest".to_string(), honest.clone())];
    let missing = author.message("waits", GENESIS_OPS + 1, &[ChangeHash([0xab; 32])]);
    out.push(("missing-dependency".into(), author.signed_change(missing)));
    let duplicated = author.message("duplicated", GENESIS_OPS + 1, &[g, g]);
    out.push((
        "duplicate-dependency".into(),
        author.change(&duplicated, author.sign_unchecked(&duplicated)),
    ));
    let mut future = msg.clone();
    future.sent_at = Hlc(u64::MAX);
    out.push(("future-timestamp".into(), author.signed_change(future)));
    let signed_bytes = author.sign(msg.clone()).bytes().to_vec();
    out.push((
        "time-not-zero".into(),
        author.change_with(&msg, signed_bytes.clone(), |c| c.time = 1_700_000_000),
    ));
    out.push((
        "with-message".into(),
        author.change_with(&msg, signed_bytes.clone(), |c| {
            c.message = Some("hi".into())
        }),
    ));
    out.push((
        "extra-bytes".into(),
        author.change_with(&msg, signed_bytes.clone(), |c| {
            c.extra_bytes = vec![1, 2, 3]
        }),
    ));
    out.push((
        "other-actor".into(),
        author.change_with(&msg, signed_bytes.clone(), |c| {
            c.actor_id = ActorId::from(&[7u8; 40][..]);
        }),
    ));
    out.push((
        "two-operations".into(),
        author.change_with(&msg, signed_bytes.clone(), |c| {
            let second = c.operations[0].clone();
            c.operations.push(second);
        }),
    ));
    out.push(("truncated".into(), honest[..honest.len() - 3].to_vec()));
    out.push(("trailing".into(), [honest.clone(), vec![0]].concat()));
    let mut long = Room::in_memory(lobby(), local_identity());
    let written = long
        .post(&"a".repeat(2_000))
        .expect("posting a long message");
    let mut compressible = Change::try_from(&written.change[..]).expect("our change parses");
    out.push(("compressed-chunk".into(), compressible.bytes().to_vec()));
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "records", "not a map")
        .expect("a put into a new document");
    tx.commit();
    out.push(("document-chunk".into(), doc.save()));
    if let Some(panicking) = panicking_change(&honest) {
        out.push(("actor-outside-table".into(), panicking));
    }
    for (name, record) in limit_breaking_records(&author, &msg) {
        let bytes = author.sign_unchecked(&record);
        out.push((format!("record-{name}"), author.change(&record, bytes)));
    }
    out
}

/// A change made from `honest` by overwriting one byte, that makes Automerge panic while
/// decoding it (an operation naming an actor outside the change's table).
fn panicking_change(honest: &[u8]) -> Option<Vec<u8>> {
    (9..honest.len()).find_map(|position| {
        [0x7f, 0xff].into_iter().find_map(|value| {
            let mut crafted = honest.to_vec();
            crafted[position] = value;
            matches!(
                validate_change(&lobby(), &crafted),
                Err(Rejection::DecodePanicked)
            )
            .then_some(crafted)
        })
    })
}

/// Batches for `Room::apply_remote`: honest histories in and out of order, duplicates,
/// missing and duplicate dependencies, and every crafted change.
pub fn apply_remote() -> Vec<Seed> {
    let chain = peer().chain(3);
    let other = Author::new(0x33).chain(2);
    let batch = |changes: &[&Vec<u8>]| frames::join(changes);
    let end: Vec<u8> = Vec::new();
    let author = peer();
    let first = &chain[0];
    let edit = author.record(
        Body::Edit {
            target: grapevine_crdt::SignedRecord::decode(&record_in(first))
                .expect("our record decodes")
                .id(),
            text: "edited".into(),
        },
        GENESIS_OPS + 4,
        &[change_hash(&chain[2])],
    );
    let edit = author.signed_change(edit);
    let foreign_delete = {
        let mallory = Author::new(0x44);
        let target = grapevine_crdt::SignedRecord::decode(&record_in(first))
            .expect("our record decodes")
            .id();
        let record = mallory.record(
            Body::Delete { target },
            GENESIS_OPS + 2,
            &[change_hash(first)],
        );
        mallory.signed_change(record)
    };
    let mut seeds = vec![
        seed("chain-in-order", batch(&[&chain[0], &chain[1], &chain[2]])),
        seed("chain-reversed", batch(&[&chain[2], &chain[1], &chain[0]])),
        seed("chain-missing-first", batch(&[&chain[1], &chain[2]])),
        seed(
            "chain-released-by-second-batch",
            batch(&[&chain[1], &chain[2], &end, &chain[0]]),
        ),
        seed("duplicate-in-batch", batch(&[&chain[0], &chain[0]])),
        seed(
            "duplicate-across-batches",
            batch(&[&chain[0], &end, &chain[0], &chain[1]]),
        ),
        seed(
            "two-authors-concurrent",
            batch(&[&chain[0], &other[0], &chain[1], &other[1]]),
        ),
        seed(
            "edit-of-own-message",
            batch(&[&chain[0], &chain[1], &chain[2], &edit]),
        ),
        seed("delete-by-another-author", batch(&[first, &foreign_delete])),
        seed("edit-waiting-for-target", batch(&[&edit])),
    ];
    for (name, change) in crafted_changes() {
        seeds.push(seed(&format!("change-{name}"), frames::join(&[change])));
    }
    for (name, record) in record() {
        let msg = author.message("hello", GENESIS_OPS + 1, &[genesis()]);
        let change = author.change(&msg, record);
        seeds.push(seed(&format!("record-{name}"), frames::join(&[change])));
    }
    seeds
}

/// The signed record inside a change built here.
fn record_in(change: &[u8]) -> Vec<u8> {
    let expanded = Change::try_from(change)
        .expect("a change built here parses")
        .decode();
    match &expanded.operations[0].action {
        automerge::legacy::OpType::Put(automerge::ScalarValue::Bytes(bytes)) => bytes.clone(),
        _ => unreachable!("a change built here puts bytes"),
    }
}

/// The honest history the sync target's room starts with.
pub fn sync_history() -> Vec<Vec<u8>> {
    Author::new(0x55).chain(3)
}

/// A sync message in the wire format, from Automerge sync messages by epoch, each compressed at
/// `level` (none: stored blocks, whose bytes the fuzzer can change and keep valid).
fn wire(parts: &[(u32, Vec<u8>)], summary: &[(u32, [u8; 32])], level: Compression) -> Vec<u8> {
    let value = Value::Map(vec![
        (
            Value::Text("p".into()),
            Value::Array(
                parts
                    .iter()
                    .map(|(n, part)| {
                        Value::Array(vec![
                            Value::Integer((*n).into()),
                            Value::Bytes(deflate(part, level)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            Value::Text("s".into()),
            Value::Array(
                summary
                    .iter()
                    .map(|(n, digest)| {
                        Value::Array(vec![
                            Value::Integer((*n).into()),
                            Value::Bytes(digest.to_vec()),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    [vec![WIRE_FORMAT_DEFLATE], cbor(&value)].concat()
}

/// The Automerge sync messages inside a wire message, by epoch.
fn parts_of(message: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let value: Value = ciborium::from_reader(&message[1..]).expect("our own message decodes");
    let Value::Map(entries) = value else {
        unreachable!("a sync message is a map")
    };
    let mut parts = Vec::new();
    for (key, value) in entries {
        if key.as_text() != Some("p") {
            continue;
        }
        for part in value.into_array().unwrap_or_default() {
            let mut pair = part.into_array().unwrap_or_default().into_iter();
            let number = pair
                .next()
                .and_then(|n| n.as_integer())
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_default();
            let bytes = pair
                .next()
                .and_then(|b| b.into_bytes().ok())
                .unwrap_or_default();
            parts.push((number, inflate(&bytes)));
        }
    }
    parts
}

/// An Automerge sync message for one epoch.
fn automerge_message(
    heads: Vec<ChangeHash>,
    need: Vec<ChangeHash>,
    have: Vec<Have>,
    changes: Vec<Vec<u8>>,
) -> Vec<u8> {
    sync::Message {
        heads,
        need,
        have,
        changes: changes.into(),
        flags: None,
        version: sync::MessageVersion::V1,
    }
    .encode()
}

fn bloom(bytes: &[u8]) -> BloomFilter {
    BloomFilter::try_from(bytes).expect("a Bloom filter whose bits are all there")
}

/// The messages a peer holding more history sends to the sync target's room in a real
/// exchange, as the room receives them.
fn real_exchange() -> Vec<Vec<u8>> {
    let mut ours = super::synced_room();
    let mut theirs = Room::in_memory(lobby(), Author::new(0x77).identity);
    let mut history = sync_history();
    history.extend(Author::new(0x33).chain(2));
    theirs
        .apply_remote(&history)
        .expect("an in-memory room applies any batch");
    let (mut our_session, mut their_session) = (SyncSession::new(), SyncSession::new());
    let mut received = Vec::new();
    for _ in 0..10 {
        let to_them = ours
            .generate_sync_message(&mut our_session)
            .expect("an in-memory room answers");
        if let Some(message) = &to_them {
            theirs
                .receive_sync_message(&mut their_session, message)
                .expect("an honest message is taken");
        }
        let to_us = theirs
            .generate_sync_message(&mut their_session)
            .expect("an in-memory room answers");
        if let Some(message) = &to_us {
            ours.receive_sync_message(&mut our_session, message)
                .expect("an honest message is taken");
            received.push(message.clone());
        }
        if to_them.is_none() && to_us.is_none() {
            break;
        }
    }
    received
}

/// Sync messages: a real exchange (compressed, and with stored blocks the fuzzer can edit),
/// hand-built Automerge messages with poisoned Bloom filters and bad changes, and malformed
/// wire messages.
pub fn sync_receive() -> Vec<Seed> {
    let exchange = real_exchange();
    let stored: Vec<Vec<u8>> = exchange
        .iter()
        .map(|message| wire(&parts_of(message), &[], Compression::none()))
        .collect();
    let history = sync_history();
    let ours: Vec<ChangeHash> = history.iter().map(|c| change_hash(c)).collect();
    let extra = Author::new(0x33).chain(2);
    let unknown = ChangeHash([0xcd; 32]);
    let part = |message: Vec<u8>| wire(&[(0, message)], &[], Compression::none());
    let mut seeds = vec![
        seed("exchange", frames::join(&exchange)),
        seed("exchange-stored-blocks", frames::join(&stored)),
        seed(
            "changes-complete",
            frames::join(&[part(automerge_message(
                vec![change_hash(&extra[1])],
                Vec::new(),
                Vec::new(),
                extra.clone(),
            ))]),
        ),
        seed(
            "changes-missing-dependency",
            frames::join(&[part(automerge_message(
                vec![change_hash(&extra[1])],
                Vec::new(),
                Vec::new(),
                vec![extra[1].clone()],
            ))]),
        ),
        seed(
            "changes-duplicated",
            frames::join(&[part(automerge_message(
                Vec::new(),
                Vec::new(),
                Vec::new(),
                vec![extra[0].clone(), extra[0].clone()],
            ))]),
        ),
        seed(
            "needs-ours-and-unknown",
            frames::join(&[part(automerge_message(
                vec![unknown],
                vec![ours[0], unknown],
                Vec::new(),
                Vec::new(),
            ))]),
        ),
        seed(
            "have-unknown-last-sync",
            frames::join(&[part(automerge_message(
                vec![unknown],
                Vec::new(),
                vec![Have {
                    last_sync: vec![unknown],
                    bloom: BloomFilter::from_hashes(ours[..1].iter()),
                }],
                Vec::new(),
            ))]),
        ),
    ];
    // Poisoned Bloom filters: parameters that make probing divide by zero or allocate without
    // bound, or a filter that claims to hold everything.
    let leb = |n: u32| {
        let mut out = Vec::new();
        let mut n = n;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    };
    for (name, filter) in [
        (
            "bloom-zero-bits-per-entry",
            [leb(1), leb(0), leb(7)].concat(),
        ),
        (
            "bloom-2^32-probes",
            [leb(1), leb(10), leb(u32::MAX), vec![0xff; 2]].concat(),
        ),
        (
            "bloom-all-ones",
            [leb(3), leb(10), leb(7), vec![0xff; 4]].concat(),
        ),
        (
            "bloom-zero-probes",
            [leb(3), leb(10), leb(0), vec![0; 4]].concat(),
        ),
    ] {
        let message = automerge_message(
            vec![unknown],
            Vec::new(),
            vec![Have {
                last_sync: Vec::new(),
                bloom: bloom(&filter),
            }],
            Vec::new(),
        );
        seeds.push(seed(name, frames::join(&[part(message)])));
    }
    let bad_changes: Vec<(String, Vec<u8>)> = crafted_changes();
    for (name, change) in bad_changes {
        let message = automerge_message(Vec::new(), Vec::new(), Vec::new(), vec![change]);
        seeds.push(seed(
            &format!("change-{name}"),
            frames::join(&[part(message)]),
        ));
    }
    let one = automerge_message(Vec::new(), Vec::new(), Vec::new(), vec![extra[0].clone()]);
    let good = wire(&[(0, one.clone())], &[(0, [0; 32])], Compression::default());
    seeds.extend([
        seed(
            "part-of-wrong-epoch",
            frames::join(&[wire(&[(1, one.clone())], &[], Compression::none())]),
        ),
        seed(
            "parts-out-of-order",
            frames::join(&[wire(
                &[(1, one.clone()), (0, one.clone())],
                &[],
                Compression::none(),
            )]),
        ),
        seed(
            "parts-same-epoch-twice",
            frames::join(&[wire(
                &[(0, one.clone()), (0, one)],
                &[],
                Compression::none(),
            )]),
        ),
        // Every epoch a summary names and this device lacks costs an epoch document to sync
        // it (about 1.7 ms and 85 KB, release build); one message may make it create only a
        // few (`MAX_NEW_EPOCHS_PER_MESSAGE`). Before that bound, this seed cost about 2.5 s (a
        // fuzz input frame holds at most 64 KiB: about 1,600 epochs).
        seed(
            "summary-1500-epochs",
            frames::join(&[wire(
                &[],
                &(0..1500).map(|n| (n, [n as u8; 32])).collect::<Vec<_>>(),
                Compression::none(),
            )]),
        ),
        seed(
            "inflates-to-a-megabyte",
            frames::join(&[[
                vec![WIRE_FORMAT_DEFLATE],
                cbor(&Value::Map(vec![
                    (
                        Value::Text("p".into()),
                        Value::Array(vec![Value::Array(vec![
                            Value::Integer(0.into()),
                            Value::Bytes(deflate(&vec![0; 1 << 20], Compression::best())),
                        ])]),
                    ),
                    (Value::Text("s".into()), Value::Array(Vec::new())),
                ])),
            ]
            .concat()]),
        ),
        seed(
            "wrong-format-byte",
            frames::join(&[[vec![0], good[1..].to_vec()].concat()]),
        ),
        seed("empty-message", frames::join(&[Vec::<u8>::new()])),
        seed(
            "truncated",
            frames::join(&[good[..good.len() / 2].to_vec()]),
        ),
        seed(
            "trailing",
            frames::join(&[[good.clone(), vec![0]].concat()]),
        ),
        seed(
            "indefinite-lengths",
            frames::join(&[[vec![
                1, 0xbf, 0x61, b'p', 0x9f, 0xff, 0x61, b's', 0x9f, 0xff, 0xff,
            ]]
            .concat()]),
        ),
        seed(
            "huge-parts-2^32",
            frames::join(&[[vec![1, 0xa2, 0x61, b'p'], head(4, 1 << 32)].concat()]),
        ),
        seed(
            "deep-nesting",
            frames::join(&[[vec![1, 0xa1, 0x61, b'p'], vec![0x81; 10_000]].concat()]),
        ),
        seed(
            "duplicate-key",
            frames::join(&[[vec![
                1, 0xa3, 0x61, b'p', 0x80, 0x61, b'p', 0x80, 0x61, b's', 0x80,
            ]]
            .concat()]),
        ),
        seed(
            "unknown-key",
            frames::join(&[[vec![
                1, 0xa3, 0x61, b'p', 0x80, 0x61, b's', 0x80, 0x61, b'x', 0x80,
            ]]
            .concat()]),
        ),
        seed(
            "wrong-type-parts-map",
            frames::join(&[[vec![1, 0xa2, 0x61, b'p', 0xa0, 0x61, b's', 0x80]].concat()]),
        ),
        seed(
            "wrong-type-digest-31-bytes",
            frames::join(&[[
                vec![
                    1, 0xa2, 0x61, b'p', 0x80, 0x61, b's', 0x81, 0x82, 0x00, 0x58, 31,
                ],
                vec![0; 31],
            ]
            .concat()]),
        ),
        seed(
            "invalid-utf8-key",
            frames::join(&[[vec![1, 0xa2, 0x61, 0xff, 0x80, 0x61, b's', 0x80]].concat()]),
        ),
        seed(
            "automerge-part-truncated",
            frames::join(&[wire(
                &[(0, stored_part_prefix(&exchange))],
                &[],
                Compression::none(),
            )]),
        ),
    ]);
    seeds
}

/// The first half of the first Automerge part of a real exchange.
fn stored_part_prefix(exchange: &[Vec<u8>]) -> Vec<u8> {
    let part = exchange
        .iter()
        .flat_map(|m| parts_of(m))
        .map(|(_, part)| part)
        .next()
        .unwrap_or_default();
    part[..part.len() / 2].to_vec()
}

/// A room directory as the store target takes it: file names and contents, in frames.
fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let frames: Vec<&[u8]> = files
        .iter()
        .flat_map(|(name, contents)| [name.as_bytes(), *contents])
        .collect();
    frames::join(&frames)
}

/// One epoch's store files after real use: the log after a first batch, then the snapshot and
/// the log written after compaction.
struct StoredRoom {
    log_only: Vec<u8>,
    snapshot: Vec<u8>,
    log_after_snapshot: Vec<u8>,
    other_room_snapshot: Vec<u8>,
}

fn stored_room() -> StoredRoom {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("a new store");
    let room_dir = store.dir().join("rooms").join(lobby().to_string());
    let read = |name: &str| std::fs::read(room_dir.join(name)).unwrap_or_default();
    let history = peer().chain(4);
    let (mut room, _) = Room::open(&store, lobby(), local_identity()).expect("a new room");
    room.apply_remote(&history[..2])
        .expect("applying a history");
    room.flush().expect("flushing to a new store");
    let log_only = read("epoch-0.log");
    room.compact().expect("compacting");
    let snapshot = read("epoch-0.snap");
    room.apply_remote(&history[2..])
        .expect("applying a history");
    room.flush().expect("flushing");
    let log_after_snapshot = read("epoch-0.log");
    drop(room);
    let elsewhere = RoomId::for_public_name("elsewhere").expect("a valid room name");
    let (mut other, _) = Room::open(&store, elsewhere, local_identity()).expect("a new room");
    other.post("elsewhere").expect("posting");
    other.compact().expect("compacting");
    let other_room_snapshot = std::fs::read(
        store
            .dir()
            .join("rooms")
            .join(elsewhere.to_string())
            .join("epoch-0.snap"),
    )
    .unwrap_or_default();
    StoredRoom {
        log_only,
        snapshot,
        log_after_snapshot,
        other_room_snapshot,
    }
}

/// A log frame: length, CRC-32 and payload, as the store writes it.
fn log_frame(payload: &[u8]) -> Vec<u8> {
    [
        u32::try_from(payload.len())
            .expect("a small payload")
            .to_le_bytes()
            .to_vec(),
        crc32(payload).to_le_bytes().to_vec(),
        payload.to_vec(),
    ]
    .concat()
}

/// CRC-32 (IEEE), as the store's frames carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Store files: real logs and snapshots, and every kind of damage the loader must survive.
pub fn store_load() -> Vec<Seed> {
    let stored = stored_room();
    let log = &stored.log_only;
    let snap = &stored.snapshot;
    let after = &stored.log_after_snapshot;
    let magic = &log[..8];
    let snap_magic = &snap[..8];
    let mut crc_flipped = log.clone();
    let last = crc_flipped.len() - 1;
    crc_flipped[last] ^= 1;
    let huge_frame = [magic.to_vec(), vec![0xff; 4], vec![0; 4]].concat();
    let with_payload = |payload: &[u8]| [magic.to_vec(), log_frame(payload)].concat();
    let chain = peer().chain(2);
    let crafted = crafted_changes();
    let crafted_change = |name: &str| {
        crafted
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    };
    let snapshot_payload = &snap[16..];
    let snap_of = |payload: &[u8]| {
        [
            snap_magic.to_vec(),
            u32::try_from(payload.len())
                .expect("a small snapshot")
                .to_le_bytes()
                .to_vec(),
            crc32(payload).to_le_bytes().to_vec(),
            payload.to_vec(),
        ]
        .concat()
    };
    let l = "epoch-0.log";
    let s = "epoch-0.snap";
    let mut reversed = magic.to_vec();
    for change in chain.iter().rev() {
        reversed.extend(log_frame(change));
    }
    vec![
        seed("log", archive(&[(l, log)])),
        seed("snapshot-and-log", archive(&[(s, snap), (l, after)])),
        seed("snapshot-only", archive(&[(s, snap)])),
        seed("log-empty-file", archive(&[(l, b"")])),
        seed("log-torn-tail", archive(&[(l, &log[..log.len() - 5])])),
        seed("log-torn-header", archive(&[(l, &log[..4])])),
        seed("log-crc-mismatch", archive(&[(l, &crc_flipped)])),
        seed("log-frame-length-2^32", archive(&[(l, &huge_frame)])),
        seed("log-bad-magic", archive(&[(l, b"GVLOG\0\0\x02garbage")])),
        seed(
            "log-trailing-bytes",
            archive(&[(l, &[log.clone(), vec![1, 2, 3]].concat())]),
        ),
        seed("log-changes-reversed", archive(&[(l, &reversed)])),
        seed(
            "log-panicking-change",
            archive(&[(l, &with_payload(&crafted_change("actor-outside-table")))]),
        ),
        seed(
            "log-document-chunk",
            archive(&[(l, &with_payload(&crafted_change("document-chunk")))]),
        ),
        seed(
            "log-compressed-chunk",
            archive(&[(l, &with_payload(&crafted_change("compressed-chunk")))]),
        ),
        seed(
            "log-missing-dependency",
            archive(&[(l, &with_payload(&crafted_change("missing-dependency")))]),
        ),
        seed(
            "log-not-a-change",
            archive(&[(l, &with_payload(b"not a change"))]),
        ),
        seed(
            "snapshot-truncated",
            archive(&[(s, &snap[..snap.len() / 2])]),
        ),
        seed(
            "snapshot-trailing-bytes",
            archive(&[(s, &[snap.clone(), vec![0]].concat())]),
        ),
        seed(
            "snapshot-crc-mismatch",
            archive(&[(s, &{
                let mut bad = snap.clone();
                bad[12] ^= 1;
                bad
            })]),
        ),
        seed(
            "snapshot-length-2^32",
            archive(&[(
                s,
                &[snap_magic.to_vec(), vec![0xff; 4], vec![0; 4]].concat(),
            )]),
        ),
        seed(
            "snapshot-of-another-room",
            archive(&[(s, &stored.other_room_snapshot)]),
        ),
        seed(
            "snapshot-not-automerge",
            archive(&[(s, &snap_of(b"not an automerge document"))]),
        ),
        seed(
            "snapshot-truncated-document",
            archive(&[(s, &snap_of(&snapshot_payload[..snapshot_payload.len() / 2]))]),
        ),
        seed(
            "snapshot-as-epoch-1",
            archive(&[(s, snap), ("epoch-1.snap", snap), ("epoch-1.log", after)]),
        ),
        seed("resting-epoch", archive(&[(s, snap), ("epoch-1.log", b"")])),
        seed(
            "leftover-temporary-file",
            archive(&[(l, log), ("epoch-0.log.tmp", after)]),
        ),
        seed(
            "non-canonical-names",
            archive(&[
                ("epoch-00.log", log),
                ("epoch-4294967296.log", log),
                ("epoch-.snap", snap),
            ]),
        ),
        seed(
            "lock-with-contents",
            archive(&[("lock", b"locked"), (l, log)]),
        ),
    ]
}

/// Config files: the README's example, every key, and malformed TOML of each class.
pub fn config_file() -> Vec<Seed> {
    let example = "data-dir = \"/home/ana/grapevine\"\n\
        listen = [\"/ip4/0.0.0.0/tcp/4001\", \"/ip4/0.0.0.0/udp/4001/quic-v1\"]\n\
        bootstrap = [\"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]\n\
        mdns = false\nnick = \"ana\"\nrooms = [\"lobby\", \"rust\"]\n";
    vec![
        seed("example", example),
        seed("empty", ""),
        seed("comments-and-tables", "# a comment\n[unused]\nkey = 1\n"),
        seed("truncated", &example[..example.len() / 2]),
        seed("trailing-garbage", format!("{example}]]] \"")),
        seed("invalid-utf8", b"nick = \"\xff\xfe\"\n".to_vec()),
        seed(
            "deep-nesting-arrays",
            format!("rooms = {}", "[".repeat(5_000)),
        ),
        seed(
            "deep-nesting-tables",
            format!("nick = {}", "{ a = ".repeat(2_000)),
        ),
        seed("duplicate-key", "nick = \"a\"\nnick = \"b\"\n"),
        seed("dotted-key", "nick.first = \"a\"\n"),
        seed("quoted-key", "\"nick\" = \"a\"\n'mdns' = true\n"),
        seed("unknown-key", "colour = \"red\"\n"),
        seed("wrong-type-bool", "mdns = \"yes\"\n"),
        seed("wrong-type-list", "rooms = \"lobby\"\n"),
        seed("wrong-type-table", "listen = { a = 1 }\n"),
        seed("bad-multiaddr", "bootstrap = [\"/ip4/999.0.0.1/tcp/1\"]\n"),
        seed("huge-integer", "mdns = 99999999999999999999999999999\n"),
        seed("bad-escape", "nick = \"\\uD800\\U0011FFFF\"\n"),
        seed(
            "multiline-strings",
            "nick = \"\"\"\na\nb\"\"\"\ndata-dir = '''\n/x'''\n",
        ),
        seed("datetime", "nick = 1979-05-27T07:32:00Z\n"),
        seed("control-characters", "nick = \"\u{1b}[2J\u{7}\"\n"),
    ]
}

/// Text for the terminal: escape sequences, every control range, bidirectional overrides.
pub fn sanitize() -> Vec<Seed> {
    vec![
        seed("plain", "hello, wörld 👋 日本語"),
        seed("csi-clear-screen", "\u{1b}[2J\u{1b}[H"),
        seed(
            "osc-title-and-clipboard",
            "\u{1b}]0;pwned\u{7}\u{1b}]52;c;aGk=\u{1b}\\",
        ),
        seed("c1-csi", "\u{9b}31mred\u{9b}0m"),
        seed("controls", (0u8..0x20).chain([0x7f]).collect::<Vec<u8>>()),
        seed(
            "bidi-overrides",
            "abc\u{202e}exe.txt\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}",
        ),
        seed("newlines-and-tabs", "one\ntwo\r\nthree\tfour"),
        seed("invalid-utf8", b"bad \xff\xfe \xc3 bytes".to_vec()),
        seed(
            "zero-width-and-combining",
            "e\u{301}\u{200b}\u{feff}\u{2028}\u{2029}",
        ),
    ]
}
