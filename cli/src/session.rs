//! A chat session over a running node, shared by the terminal client and line mode: the current
//! room, room names for the node's room ids, nicknames, and what each input and node event
//! means as [`Output`].

use std::collections::HashMap;

use grapevine_node::crdt::{Body, IndexedRecord, PublicKey, RecordId, RoomId, RoomView};
use grapevine_node::{NodeError, NodeEvent, NodeHandle};
use libp2p::{Multiaddr, PeerId};
use tokio::task::JoinSet;

use crate::input::{HELP, Input};
use crate::output::Output;

/// Room joined when neither the command line, the config file nor a previous run names one.
pub(crate) const DEFAULT_ROOM: &str = "lobby";
/// Shortest record-id prefix accepted by `/edit`, `/delete` and `/react`.
const MIN_ID_PREFIX: usize = 4;

/// What the user asked for, answered.
pub(crate) type Answer = Result<Vec<Output>, String>;

/// The state of one chat session.
#[derive(Debug)]
pub(crate) struct Session {
    node: NodeHandle,
    me: PublicKey,
    names: HashMap<RoomId, String>,
    current: Option<String>,
    nicks: HashMap<RoomId, HashMap<PublicKey, String>>,
    /// `/connect` dials waiting for their outcome, each with the address asked for.
    connects: JoinSet<(Multiaddr, Result<PeerId, NodeError>)>,
}

impl Session {
    /// Joins `rooms` (besides those the node rejoined from its last run, or [`DEFAULT_ROOM`] when
    /// there are none), sets `nick` in the rooms given, and makes the first given room current.
    pub(crate) async fn start(
        node: NodeHandle,
        me: PublicKey,
        rooms: &[String],
        nick: Option<&str>,
    ) -> Result<(Self, Vec<Output>), grapevine_node::NodeError> {
        let mut session = Self {
            node,
            me,
            names: HashMap::new(),
            current: None,
            nicks: HashMap::new(),
            connects: JoinSet::new(),
        };
        let mut outputs = Vec::new();
        for addr in session.node.shareable_addrs().await? {
            outputs.push(Output::Listening {
                addr: addr.to_string(),
            });
        }
        let rejoined = session.node.rooms().await?;
        let mut wanted: Vec<String> = rooms.to_vec();
        if wanted.is_empty() && rejoined.is_empty() {
            wanted.push(DEFAULT_ROOM.to_string());
        }
        for name in rejoined.iter().filter(|name| !wanted.contains(name)) {
            outputs.extend(session.track(name).await?);
        }
        for name in &wanted {
            session.node.join(name).await?;
            outputs.extend(session.track(name).await?);
            if let Some(nick) = nick
                && session.nickname(name) != Some(nick)
            {
                session.node.set_nickname(name, nick).await?;
            }
        }
        session.current = wanted.first().or(rejoined.first()).cloned();
        Ok((session, outputs))
    }

    /// The node this session drives.
    pub(crate) fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// This device's public key: the author of its records.
    pub(crate) fn me(&self) -> PublicKey {
        self.me
    }

    /// The room that messages go to.
    pub(crate) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Makes `name` current if it is joined.
    pub(crate) fn switch_to(&mut self, name: &str) -> bool {
        let joined = self.names.values().any(|n| n == name);
        if joined {
            self.current = Some(name.to_string());
        }
        joined
    }

    /// The joined rooms' names, sorted.
    pub(crate) fn rooms(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.values().cloned().collect();
        names.sort();
        names
    }

    /// The name of a joined room.
    pub(crate) fn room_name(&self, room: RoomId) -> Option<&str> {
        self.names.get(&room).map(String::as_str)
    }

    /// An author's nickname in a room, if they set one.
    pub(crate) fn nick_of(&self, room: RoomId, author: &PublicKey) -> Option<&str> {
        self.nicks.get(&room)?.get(author).map(String::as_str)
    }

    fn nickname(&self, name: &str) -> Option<&str> {
        let room = RoomId::for_public_name(name).ok()?;
        self.nick_of(room, &self.me)
    }

    /// Records a joined room's name and nicknames; returns its `joined` output.
    async fn track(&mut self, name: &str) -> Result<Vec<Output>, grapevine_node::NodeError> {
        let room = RoomId::for_public_name(name)?;
        let view = self.node.view(name).await?;
        self.names.insert(room, name.to_string());
        self.nicks
            .insert(room, view.nicknames.into_iter().collect::<HashMap<_, _>>());
        Ok(vec![Output::Joined {
            room: name.to_string(),
        }])
    }

    /// What a stored record means for the user (nothing when its room was left meanwhile); a
    /// profile record updates the author's nickname first.
    fn on_record(&mut self, room: RoomId, record: &IndexedRecord) -> Option<Output> {
        if let Body::Profile { nickname } = &record.body {
            self.nicks
                .entry(room)
                .or_default()
                .insert(record.author, nickname.clone());
        }
        let name = self.room_name(room)?;
        let nick = self.nick_of(room, &record.author).map(str::to_string);
        Some(Output::record(name, record, nick))
    }

    /// What a node event means for the user; also keeps nicknames current.
    pub(crate) fn on_event(&mut self, event: &NodeEvent) -> Vec<Output> {
        match event {
            NodeEvent::RecordsReceived { room, records } => records
                .iter()
                .filter_map(|record| self.on_record(*room, record))
                .collect(),
            NodeEvent::RecordWritten { room, record } => {
                self.on_record(*room, record).into_iter().collect()
            }
            NodeEvent::SyncCompleted { room, records, .. } => self
                .room_name(*room)
                .map(|name| Output::Synced {
                    room: name.to_string(),
                    records: *records,
                })
                .into_iter()
                .collect(),
            NodeEvent::RoomPeersChanged { room, peers } => self
                .room_name(*room)
                .map(|name| Output::RoomPeers {
                    room: name.to_string(),
                    peers: peers.iter().map(ToString::to_string).collect(),
                })
                .into_iter()
                .collect(),
            NodeEvent::PeerConnected(peer) => vec![Output::PeerConnected {
                peer: peer.to_string(),
            }],
            NodeEvent::PeerDisconnected(peer) => vec![Output::PeerDisconnected {
                peer: peer.to_string(),
            }],
            NodeEvent::Warning { peer, reason } => vec![Output::Warning {
                peer: peer.map(|p| p.to_string()),
                message: reason.clone(),
            }],
            NodeEvent::StorageFailed { reason } => vec![Output::Error {
                message: reason.clone(),
            }],
            NodeEvent::SyncProgress { .. } | NodeEvent::HolePunched(_) => Vec::new(),
        }
    }

    /// Carries out one input. Records written come back as node events, not here.
    /// [`Input::Quit`] is the caller's to handle; here it does nothing.
    pub(crate) async fn on_input(&mut self, input: Input) -> Answer {
        match input {
            Input::Message(text) => {
                let room = self.current_room()?;
                self.node
                    .post(&room, &text)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            Input::Join(name) => {
                self.node.join(&name).await.map_err(|e| e.to_string())?;
                let outputs = self.track(&name).await.map_err(|e| e.to_string())?;
                self.current = Some(name);
                Ok(outputs)
            }
            Input::Leave(name) => {
                let name = match name {
                    Some(name) => name,
                    None => self.current_room()?,
                };
                self.node.leave(&name).await.map_err(|e| e.to_string())?;
                let room = RoomId::for_public_name(&name).map_err(|e| e.to_string())?;
                self.names.remove(&room);
                self.nicks.remove(&room);
                if self.current.as_deref() == Some(&name) {
                    self.current = self.rooms().into_iter().next();
                }
                Ok(vec![Output::Left { room: name }])
            }
            Input::Nick(nick) => {
                let room = self.current_room()?;
                self.node
                    .set_nickname(&room, &nick)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            Input::Peers => {
                let peers = self.node.peers().await.map_err(|e| e.to_string())?;
                Ok(vec![Output::Peers {
                    peers: peers.iter().map(ToString::to_string).collect(),
                }])
            }
            Input::Rooms => Ok(vec![Output::Rooms {
                rooms: self.rooms(),
                current: self.current.clone(),
            }]),
            Input::Edit(prefix, text) => {
                let (room, target) = self.own_message(&prefix).await?;
                self.node
                    .edit(&room, target, &text)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            Input::Delete(prefix) => {
                let (room, target) = self.own_message(&prefix).await?;
                self.node
                    .delete(&room, target)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            Input::React(prefix, reaction) => {
                let room = self.current_room()?;
                let view = self.node.view(&room).await.map_err(|e| e.to_string())?;
                let target = find_message(&view, &prefix)?;
                let given = view
                    .messages
                    .iter()
                    .find(|m| m.id == target)
                    .and_then(|m| m.reactions.get(&reaction))
                    .is_some_and(|who| who.contains(&self.me));
                self.node
                    .react(&room, target, &reaction, !given)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            Input::Connect(addr) => {
                let node = self.node.clone();
                self.connects.spawn(async move {
                    let outcome = node.connect(addr.clone()).await;
                    (addr, outcome)
                });
                Ok(Vec::new())
            }
            Input::Help => Ok(vec![Output::Help {
                commands: HELP.iter().map(ToString::to_string).collect(),
            }]),
            Input::Quit => Ok(Vec::new()),
        }
    }

    /// Waits for the next `/connect` to end: `Ok` with a line saying whom it reached, or the
    /// `error` output naming the address and why no connection opened. While no `/connect`
    /// runs it never returns, so it can be one arm of a `select!` (it is cancel-safe).
    pub(crate) async fn connect_finished(&mut self) -> Result<String, Output> {
        let Some(finished) = self.connects.join_next().await else {
            return std::future::pending().await;
        };
        let message = match finished {
            Ok((addr, Ok(peer))) => return Ok(format!("connected to {peer} at {addr}")),
            Ok((addr, Err(NodeError::Dial(reason)))) => {
                format!("could not connect to {addr}: {reason}")
            }
            Ok((addr, Err(NodeError::ConnectTimeout { after, .. }))) => format!(
                "could not connect to {addr}: no answer within {}",
                humantime::format_duration(after)
            ),
            Ok((addr, Err(e))) => format!("could not connect to {addr}: {e}"),
            Err(e) => format!("/connect stopped: {e}"),
        };
        Err(Output::Error { message })
    }

    fn current_room(&self) -> Result<String, String> {
        self.current
            .clone()
            .ok_or_else(|| "no room joined: /join NAME first".to_string())
    }

    /// The current room and the id of one of this device's messages in it, by id prefix.
    async fn own_message(&self, prefix: &str) -> Result<(String, RecordId), String> {
        let room = self.current_room()?;
        let view = self.node.view(&room).await.map_err(|e| e.to_string())?;
        let target = find_message(&view, prefix)?;
        let mine = view
            .messages
            .iter()
            .any(|m| m.id == target && m.author == self.me);
        if mine {
            Ok((room, target))
        } else {
            Err("that message is not yours: only its author can change it".to_string())
        }
    }
}

/// The message whose id starts with `prefix` (hex, at least [`MIN_ID_PREFIX`] digits).
fn find_message(view: &RoomView, prefix: &str) -> Result<RecordId, String> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < MIN_ID_PREFIX || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{prefix}` is not a message id: give at least {MIN_ID_PREFIX} hex digits of it"
        ));
    }
    let mut found = view
        .messages
        .iter()
        .filter(|m| m.id.to_string().starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(message), None) => Ok(message.id),
        (None, _) => Err(format!(
            "no message in this room has an id starting {prefix}"
        )),
        (Some(_), Some(_)) => Err(format!(
            "several messages have ids starting {prefix}: give more digits"
        )),
    }
}
