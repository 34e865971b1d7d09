//! The line-mode output schema: one JSON object per line, tagged by `event`. `history --json`
//! prints records in the same schema. Documented in the README; fields are only ever added.

use chrono::{DateTime, SecondsFormat, Utc};
use grapevine_node::crdt::{Body, Hlc, IndexedRecord};
use serde::Serialize;

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Output {
    /// An address this node listens on, with `/p2p/<peer id>`, ready to pass to `--bootstrap`.
    Listening {
        /// The address.
        addr: String,
    },
    /// A peer connected.
    PeerConnected {
        /// Its peer id.
        peer: String,
    },
    /// A peer disconnected.
    PeerDisconnected {
        /// Its peer id.
        peer: String,
    },
    /// A room was joined; it is now the current room.
    Joined {
        /// The room's name.
        room: String,
    },
    /// A room was left.
    Left {
        /// The room's name.
        room: String,
    },
    /// A chat message (one's own too, once stored).
    Message {
        /// The room's name.
        room: String,
        /// The record id (64 hex digits); `/edit`, `/delete` and `/react` take it or a prefix.
        id: String,
        /// The author's public key.
        author: String,
        /// The author's nickname in the room, if they set one.
        nick: Option<String>,
        /// When it was written (RFC 3339, UTC).
        sent_at: String,
        /// The text.
        body: String,
    },
    /// An edit of a message.
    Edit {
        /// The room's name.
        room: String,
        /// The edit's record id.
        id: String,
        /// The author's public key (an edit counts only when it matches the message's).
        author: String,
        /// The author's nickname.
        nick: Option<String>,
        /// When it was written.
        sent_at: String,
        /// The message edited.
        target: String,
        /// The new text.
        body: String,
    },
    /// A deletion of a message.
    Delete {
        /// The room's name.
        room: String,
        /// The deletion's record id.
        id: String,
        /// The author's public key (a deletion counts only when it matches the message's).
        author: String,
        /// The author's nickname.
        nick: Option<String>,
        /// When it was written.
        sent_at: String,
        /// The message deleted.
        target: String,
    },
    /// A reaction given or taken back.
    Reaction {
        /// The room's name.
        room: String,
        /// The reaction's record id.
        id: String,
        /// Who reacted.
        author: String,
        /// Their nickname.
        nick: Option<String>,
        /// When.
        sent_at: String,
        /// The message reacted to.
        target: String,
        /// The reaction, e.g. an emoji.
        reaction: String,
        /// Given (true) or taken back (false).
        on: bool,
    },
    /// Someone set their nickname in a room.
    Nick {
        /// The room's name.
        room: String,
        /// The profile record's id.
        id: String,
        /// Whose nickname.
        author: String,
        /// The new nickname.
        nick: String,
        /// When.
        sent_at: String,
    },
    /// A sync with a peer ended: the room holds everything that peer had.
    Synced {
        /// The room's name.
        room: String,
        /// Records the room holds.
        records: usize,
    },
    /// The connected members of a room changed.
    RoomPeers {
        /// The room's name.
        room: String,
        /// Their peer ids.
        peers: Vec<String>,
    },
    /// Answer to `/peers`: every connected peer.
    Peers {
        /// Their peer ids.
        peers: Vec<String>,
    },
    /// Answer to `/rooms`.
    Rooms {
        /// The joined rooms' names.
        rooms: Vec<String>,
        /// The current room.
        current: Option<String>,
    },
    /// Answer to `/help`.
    Help {
        /// One line per command.
        commands: Vec<String>,
    },
    /// A warning from the node: input from a peer refused, a damaged file set aside.
    Warning {
        /// The peer concerned, if any.
        peer: Option<String>,
        /// What happened.
        message: String,
    },
    /// Bad input from the user, or something that could not be stored (a full disk); the
    /// program keeps running.
    Error {
        /// What is wrong and what to do.
        message: String,
    },
}

impl Output {
    /// The output for one record of `room`; `nick` is the author's nickname, if known.
    pub(crate) fn record(room: &str, record: &IndexedRecord, nick: Option<String>) -> Self {
        let room = room.to_string();
        let id = record.id.to_string();
        let author = record.author.to_string();
        let sent_at = rfc3339(record.sent_at);
        match &record.body {
            Body::Message { text } => Output::Message {
                room,
                id,
                author,
                nick,
                sent_at,
                body: text.clone(),
            },
            Body::Edit { target, text } => Output::Edit {
                room,
                id,
                author,
                nick,
                sent_at,
                target: target.to_string(),
                body: text.clone(),
            },
            Body::Delete { target } => Output::Delete {
                room,
                id,
                author,
                nick,
                sent_at,
                target: target.to_string(),
            },
            Body::Reaction {
                target,
                reaction,
                on,
            } => Output::Reaction {
                room,
                id,
                author,
                nick,
                sent_at,
                target: target.to_string(),
                reaction: reaction.clone(),
                on: *on,
            },
            Body::Profile { nickname } => Output::Nick {
                room,
                id,
                author,
                nick: nickname.clone(),
                sent_at,
            },
        }
    }

    /// The JSON line (without its newline).
    pub(crate) fn to_json(&self) -> String {
        // A tree of strings, numbers and options always serialises.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"event":"error","message":"output not encodable: {e}"}}"#)
        })
    }
}

/// A record timestamp as RFC 3339 in UTC, to the millisecond.
pub(crate) fn rfc3339(at: Hlc) -> String {
    let millis = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_objects_with_stable_names() {
        let line = Output::Listening {
            addr: "/ip4/127.0.0.1/tcp/1".into(),
        }
        .to_json();
        assert_eq!(
            line,
            r#"{"event":"listening","addr":"/ip4/127.0.0.1/tcp/1"}"#
        );
        let line = Output::PeerConnected { peer: "p".into() }.to_json();
        assert_eq!(line, r#"{"event":"peer_connected","peer":"p"}"#);
        let line = Output::Synced {
            room: "lobby".into(),
            records: 3,
        }
        .to_json();
        assert_eq!(line, r#"{"event":"synced","room":"lobby","records":3}"#);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(
            rfc3339(Hlc::new(1_700_000_000_123, 5)),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
