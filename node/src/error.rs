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
        /// Why, with every cause libp2p gave.
        reason: String,
        /// The operating system's kind of error, when it gave one, so a caller can say what to
        /// do (another port when the address is in use, another address when it is not this
        /// machine's).
        kind: Option<std::io::ErrorKind>,
    },
    /// A dial could not be started, or one the caller waits for
    /// ([`crate::NodeHandle::connect`]) failed: why.
    #[error("dial: {0}")]
    Dial(String),
    /// A dial the caller waits for ([`crate::NodeHandle::connect`]) had no outcome within
    /// [`crate::Config::connect_timeout`]: the address took nothing in (it drops packets) or
    /// never finished the handshake (it is not a libp2p peer, or hangs). Apart from
    /// [`NodeError::Dial`] so a caller can tell "no answer" from a refusal.
    #[error("no answer from {addr} within {after:?}")]
    ConnectTimeout {
        /// The address dialled.
        addr: libp2p::Multiaddr,
        /// How long the caller waited.
        after: std::time::Duration,
    },
    /// Too many DHT lookups asked for through the handle are still running; try again later.
    #[error("{0} DHT lookups are already running")]
    TooManyLookups(usize),
    /// The event loop has ended (after shutdown, or the task failed).
    #[error("the node has stopped")]
    Stopped,
}

/// An error and its sources in one text, each non-empty text once. Shown as they come, chains
/// mislead both ways: libp2p's transport errors show nothing of their own
/// (`TransportError::Other` displays as an empty string) and keep the reason, such as "Address
/// already in use", in their sources, while many errors repeat their source's text in their own,
/// so a plain join names a cause two or three times. The node reports listen and dial failures
/// with it, and the binary prints its errors with it.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// The kind of the innermost I/O error among an error and its sources: the operating system's
/// (libp2p wraps it in I/O errors of kind `Other` on its way up).
pub(crate) fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut kind = None;
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            kind = Some(io.kind());
        }
        next = cause.source();
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::transport::TransportError;

    #[test]
    fn a_transport_error_names_its_cause() {
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let expected = in_use.to_string();
        // As the swarm's boxed transport reports it: the OS error inside an error of kind Other.
        let error = TransportError::Other(std::io::Error::other(TransportError::Other(in_use)));
        assert_eq!(error.to_string(), "", "libp2p shows nothing of its own");
        assert_eq!(causes(&error), expected);
        assert_eq!(io_kind(&error), Some(std::io::ErrorKind::AddrInUse));
    }
}
