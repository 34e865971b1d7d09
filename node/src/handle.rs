//! The cloneable handle through which the rest of the program drives a node.

use std::collections::BTreeMap;

use grapevine_crdt::{ChangeHash, RecordId, RoomView};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeError;
use crate::{ConnectionCounts, GossipCounts, GossipSource, PeerConnection, RoutingEntry};

/// The reply channel of one command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// What a handle asks of the event loop; each carries its own reply channel.
#[derive(Debug)]
pub(crate) enum Command {
    Join(String, Reply<()>),
    Leave(String, Reply<()>),
    Post(String, String, Reply<RecordId>),
    Edit(String, RecordId, String, Reply<RecordId>),
    Delete(String, RecordId, Reply<RecordId>),
    React(String, RecordId, String, bool, Reply<RecordId>),
    SetNickname(String, String, Reply<RecordId>),
    View(String, Reply<RoomView>),
    Heads(String, Reply<BTreeMap<u32, Vec<ChangeHash>>>),
    SyncNow(String, Reply<usize>),
    Rooms(Reply<Vec<String>>),
    Peers(Reply<Vec<PeerId>>),
    Connections(Reply<u32>),
    ConnectionCounts(Reply<ConnectionCounts>),
    RoutingTable(Reply<Vec<RoutingEntry>>),
    LookUpRoom(String, Reply<Vec<PeerId>>),
    GossipCounts(Reply<GossipCounts>),
    PeerScore(PeerId, Reply<Option<f64>>),
    GossipSource(PeerId, Reply<GossipSource>),
    PeerConnections(PeerId, Reply<Vec<PeerConnection>>),
    ListenAddrs(Reply<Vec<Multiaddr>>),
    Dial(Multiaddr, Reply<()>),
    Connect(Multiaddr, Reply<PeerId>),
    Block(PeerId, Reply<()>),
    Unblock(PeerId, Reply<()>),
    Shutdown(Reply<()>),
}

/// Drives a running node. Cheap to clone; when the last clone is dropped the node shuts down.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl NodeHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, peer_id: PeerId) -> Self {
        Self { commands, peer_id }
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// This node's peer id (derived from the device key, so it names the same author as records).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Joins a public room: opens its files, subscribes to its topic, syncs with its members and
    /// looks for more of them in the DHT. The room is rejoined whenever the node starts again,
    /// until it is left.
    pub async fn join(&self, room: &str) -> Result<(), NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::Join(room, r)).await
    }

    /// Leaves a room: stores it, stops gossiping, syncing and announcing it, and forgets it for
    /// later starts.
    pub async fn leave(&self, room: &str) -> Result<(), NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::Leave(room, r)).await
    }

    /// Posts a message; returns once it is stored durably (then it is published). When it cannot
    /// be stored (a full disk) it fails with [`NodeError::NotStored`] and nothing is sent.
    pub async fn post(&self, room: &str, text: &str) -> Result<RecordId, NodeError> {
        let (room, text) = (room.to_string(), text.to_string());
        self.ask(|r| Command::Post(room, text, r)).await
    }

    /// Replaces the text of one of this device's messages.
    pub async fn edit(
        &self,
        room: &str,
        target: RecordId,
        text: &str,
    ) -> Result<RecordId, NodeError> {
        let (room, text) = (room.to_string(), text.to_string());
        self.ask(|r| Command::Edit(room, target, text, r)).await
    }

    /// Deletes one of this device's messages (a tombstone record).
    pub async fn delete(&self, room: &str, target: RecordId) -> Result<RecordId, NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::Delete(room, target, r)).await
    }

    /// Adds (`on`) or takes back a reaction to a message.
    pub async fn react(
        &self,
        room: &str,
        target: RecordId,
        reaction: &str,
        on: bool,
    ) -> Result<RecordId, NodeError> {
        let (room, reaction) = (room.to_string(), reaction.to_string());
        self.ask(|r| Command::React(room, target, reaction, on, r))
            .await
    }

    /// Sets this device's nickname in a room.
    pub async fn set_nickname(&self, room: &str, nickname: &str) -> Result<RecordId, NodeError> {
        let (room, nickname) = (room.to_string(), nickname.to_string());
        self.ask(|r| Command::SetNickname(room, nickname, r)).await
    }

    /// The room as people see it, for display.
    pub async fn view(&self, room: &str) -> Result<RoomView, NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::View(room, r)).await
    }

    /// Each epoch's heads of a room's history: equal at two peers exactly when they hold the
    /// same records, so a program (and tests and simulations) can see replicas converge.
    pub async fn heads(&self, room: &str) -> Result<BTreeMap<u32, Vec<ChangeHash>>, NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::Heads(room, r)).await
    }

    /// Starts a sync exchange about `room` with every connected member now, rather than at the
    /// next anti-entropy tick; returns how many were started. Each ends with
    /// [`crate::NodeEvent::SyncCompleted`], after which that peer holds everything this node has.
    pub async fn sync_now(&self, room: &str) -> Result<usize, NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::SyncNow(room, r)).await
    }

    /// The names of the joined rooms.
    pub async fn rooms(&self) -> Result<Vec<String>, NodeError> {
        self.ask(Command::Rooms).await
    }

    /// The peers this node is connected to.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// How many connections are established now, so the program (and tests) can watch the
    /// connection limits hold.
    pub async fn connections(&self) -> Result<u32, NodeError> {
        self.ask(Command::Connections).await
    }

    /// The node's connections by state (handshake or established) and direction, so operators and
    /// tests can see them against the configured limits.
    pub async fn connection_counts(&self) -> Result<ConnectionCounts, NodeError> {
        self.ask(Command::ConnectionCounts).await
    }

    /// The peers of the Kademlia routing table, so operators and tests can check what it holds
    /// (for instance how many peers of one address range).
    pub async fn routing_table(&self) -> Result<Vec<RoutingEntry>, NodeError> {
        self.ask(Command::RoutingTable).await
    }

    /// Looks a public room's members up in the DHT now, whether or not this node is in the room,
    /// and returns every provider the lookup found (this node included if it announces the
    /// room), sorted. Returns when the lookup ends: Kademlia's query timeout bounds it. At most
    /// a few lookups run at once ([`NodeError::TooManyLookups`] beyond them).
    pub async fn look_up_room(&self, room: &str) -> Result<Vec<PeerId>, NodeError> {
        let room = room.to_string();
        self.ask(|r| Command::LookUpRoom(room, r)).await
    }

    /// The gossip messages this node received since it started, duplicates counted, so
    /// simulations can measure how many copies of each record a peer takes in.
    pub async fn gossip_counts(&self) -> Result<GossipCounts, NodeError> {
        self.ask(Command::GossipCounts).await
    }

    /// A peer's gossipsub score as this node sees it (`None` for an unknown peer), so the program
    /// (and tests) can see that a peer sending invalid input is penalised.
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, NodeError> {
        self.ask(|r| Command::PeerScore(peer, r)).await
    }

    /// A peer's gossipsub score and the record signatures its gossip cost this node, read at the
    /// same moment, so simulations can check that a graylisted spammer costs nothing more.
    pub async fn gossip_source(&self, peer: PeerId) -> Result<GossipSource, NodeError> {
        self.ask(|r| Command::GossipSource(peer, r)).await
    }

    /// The open connections to a peer, so the program (and tests) can tell whether the peer is
    /// reached directly or through a relay.
    pub async fn peer_connections(&self, peer: PeerId) -> Result<Vec<PeerConnection>, NodeError> {
        self.ask(|r| Command::PeerConnections(peer, r)).await
    }

    /// The addresses this node listens on, so others can dial it.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(Command::ListenAddrs).await
    }

    /// The listen addresses ending in this node's peer id (`/p2p/…`): what to hand out for
    /// others to dial or to name as a bootstrap node, since a dial then checks whom it reached.
    pub async fn shareable_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let peer = self.peer_id;
        Ok(self
            .listen_addrs()
            .await?
            .into_iter()
            .map(|addr| addr.with(Protocol::P2p(peer)))
            .collect())
    }

    /// Starts dialling an address; a [`crate::NodeEvent::PeerConnected`] follows on success.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Dials an address and waits for the outcome: the peer reached, [`NodeError::Dial`] saying
    /// why no connection opened (refused, unreachable, another peer than the address names), or,
    /// when the address gave no answer within [`crate::Config::connect_timeout`],
    /// [`NodeError::ConnectTimeout`]. For a person who asked to connect and must hear, in
    /// bounded time, when it failed, which [`NodeHandle::dial`] does not tell.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.ask(|r| Command::Connect(addr, r)).await
    }

    /// Closes every connection to `peer` and refuses new ones either way until
    /// [`NodeHandle::unblock_peer`]: for a peer that misbehaves, and for cutting links in tests
    /// and simulations. The peer's records may still arrive through other peers.
    pub async fn block_peer(&self, peer: PeerId) -> Result<(), NodeError> {
        self.ask(|r| Command::Block(peer, r)).await
    }

    /// Lets a blocked peer connect again; discovery and anti-entropy reconnect and catch up.
    pub async fn unblock_peer(&self, peer: PeerId) -> Result<(), NodeError> {
        self.ask(|r| Command::Unblock(peer, r)).await
    }

    /// Stores every room and stops the node; returns once the rooms' files are released.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}
