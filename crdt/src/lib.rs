//! Grapevine's room layer: everything about a chat room that does not touch the network.
//!
//! # Layout
//! - [`identity`]: the device's ed25519 key, saved with mode 0600, and the public key's text form.
//! - [`clock`]: hybrid logical clock timestamps for records.
//! - [`record`]: signed records (message, edit, delete, reaction, profile) in canonical CBOR.

pub mod clock;
mod fs;
pub mod identity;
pub mod record;

pub use clock::{Hlc, HlcClock};
pub use identity::{Identity, IdentityError, PublicKey};
pub use record::{Body, Record, RecordError, RecordId, RoomId, SignedRecord};
