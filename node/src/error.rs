//! What can go wrong when starting or driving a node.

use grapevine_crdt::record::RoomNameError;
use grapevine_crdt::store::StoreError;
use grapevine_crdt::{IdentityError, RoomError};

/// Why a node could not start or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The device key could not be loaded or created.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// The data directory could not be opened as a store.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A room operation failed (bad input such as an unknown target, or storage).
    #[error("room: {0}")]
    Room(#[from] RoomError),
    /// The room name is not usable.
    #[error("room name: {0}")]
    RoomName(#[from] RoomNameError),
    /// The list of joined rooms in the data directory could not be read or written.
    #[error("joined rooms list {}: {source}", path.display())]
    RoomList {
        /// The file (or directory) that failed.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record of this device could not be stored (a full disk, a read-only file system), so
    /// it was taken back: it is not sent either, and nothing of it is left to be stored later.
    #[error("not sent: it could not be stored ({0})")]
    NotStored(RoomError),
    /// The command names a room this node has not joined.
    #[error("not in room {0:?}")]
    NotJoined(String),
    /// The swarm could not be built (transport or behaviour setup).
    #[error("network setup: {0}")]
    Setup(String),
    /// Listening on an address failed.
    #[error("listen on {addr}: {reason}")]
    Listen {
        /// The address that was refused.
        addr: libp2p::Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial could not be started.
    #[error("dial: {0}")]
    Dial(String),
    /// Too many DHT lookups asked for through the handle are still running; try again later.
    #[error("{0} DHT lookups are already running")]
    TooManyLookups(usize),
    /// The event loop has ended (after shutdown, or the task failed).
    #[error("the node has stopped")]
    Stopped,
}
