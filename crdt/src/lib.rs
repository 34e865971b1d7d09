//! Grapevine's room layer: everything about a chat room that does not touch the network.
//!
//! # Layout
//! - [`identity`]: the device's ed25519 key, saved with mode 0600, and the public key's text form.
//! - [`clock`]: hybrid logical clock timestamps for records.
//! - [`record`]: signed records (message, edit, delete, reaction, profile) in canonical CBOR.
//! - `signature`: one verdict per signature, alone or in a batch (ZIP-215 plus canonical points).
//! - [`validate`]: the gate every remote Automerge change passes before it reaches a document.
//! - `epoch`: one bounded Automerge document of a room's history, with its deterministic genesis.
//! - [`room`]: a room: its epochs, its record index, changes waiting for dependencies, its files;
//!   and a read-only copy of a room's records, read without its lock.
//! - `waiting`: valid changes held, boundedly, until their dependencies arrive.
//! - [`view`]: the room as people see it (order, edits, deletes, reactions, nicknames).
//! - [`sync`]: per-peer sync sessions over Automerge's sync protocol, validated like gossip.
//! - [`store`]: durable per-room files (snapshot plus checksummed, fsynced append-only log), and
//!   reading them without the lock a writer holds.

pub mod clock;
mod epoch;
mod fs;
pub mod identity;
mod parallel;
pub mod record;
pub mod room;
mod signature;
pub mod store;
pub mod sync;
pub mod validate;
pub mod view;
mod waiting;

pub use automerge::ChangeHash;
pub use clock::{Hlc, HlcClock};
pub use identity::{Identity, IdentityError, PublicKey};
pub use record::{Body, IndexedRecord, Record, RecordError, RecordId, RoomId, SignedRecord};
pub use room::{ApplyReport, ReadOnlyRoom, Received, Room, RoomError, Written};
pub use store::Store;
pub use sync::{SyncError, SyncSession};
pub use validate::{Rejection, ValidChange, record_object, validate_change};
pub use view::{MessageView, RoomView};
