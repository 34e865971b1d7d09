//! The Grapevine peer: one task owns the libp2p swarm, and the rest of the program drives it through
//! a cloneable handle. The networking itself arrives with the `node` issue; for now this crate only
//! re-exports the room layer it will be built on.

pub use grapevine_crdt as crdt;
