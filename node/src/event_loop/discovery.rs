//! Finding peers: Kademlia provider records per room, identify and Kademlia feeding the routing
//! table within the quota of peers per address range, mDNS on the local network.

use std::collections::HashSet;

use std::time::Instant;

use grapevine_crdt::RoomId;
use libp2p::identify;
use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::mdns;
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use super::{
    ANNOUNCED_ADDRS_PER_PEER, EventLoop, FIRST_LOOKUP_BACKOFF, MAX_LAN_PEERS, MAX_ROOM_LOOKUPS,
    RoomLookup,
};
use crate::RoutingEntry;
use crate::address_range::{AddressRange, first_ip};
use crate::behaviour::{KAD_PROTOCOL, MESH_N, MESH_N_LOW, room_provider_key};
use crate::error::NodeError;
use crate::handle::Reply;

/// Where a peer offered to the routing table is, as far as the quota per address range goes.
enum Whereabouts {
    /// In this range, or in none the quota counts (a local network, an address with no IP).
    Range(Option<AddressRange>),
    /// Reached through relays only, so its own address is unknown.
    RelayedOnly,
}

/// Where a peer would go in the routing table: what admitting it depends on.
struct RangeOccupancy {
    /// The peer is in the table already.
    present: bool,
    /// The peer's k-bucket holds its 20 peers.
    bucket_full: bool,
    /// Other peers of the peer's address range in its k-bucket (none counted without a range).
    in_bucket: usize,
    /// Other peers of the peer's address range in the whole table.
    in_table: usize,
}

impl EventLoop {
    /// Announces this node as a member of `room` and looks up the other members.
    pub(super) fn discover_room(&mut self, room: RoomId) {
        let key = room_provider_key(room);
        let kad = &mut self.swarm.behaviour_mut().kad;
        if let Err(e) = kad.start_providing(key.clone()) {
            tracing::warn!(error = %e, "announcing a room in the DHT failed");
        }
        kad.get_providers(key);
    }

    /// Stops announcing `room` (the record expires at the other peers).
    pub(super) fn forget_room(&mut self, room: RoomId) {
        self.swarm
            .behaviour_mut()
            .kad
            .stop_providing(&room_provider_key(room));
    }

    /// Looks up each room short of members whose lookup is due, backing off from
    /// `FIRST_LOOKUP_BACKOFF` to the room lookup interval; a room with enough members needs
    /// none, and starts from the short wait again if it runs short later.
    pub(super) fn handle_room_lookup_tick(&mut self) {
        self.redial_lan_peers();
        self.redial_bootstrap();
        let now = Instant::now();
        let mut due = Vec::new();
        for (&room, joined) in &self.rooms {
            let lonely = self.room_members(&joined.topic).len() < MESH_N_LOW;
            due.push((room, lonely && now >= joined.next_lookup, lonely));
        }
        for (room, look_up, lonely) in due {
            let max = self.room_lookup_interval;
            let Some(joined) = self.rooms.get_mut(&room) else {
                continue;
            };
            if !lonely {
                joined.lookup_backoff = FIRST_LOOKUP_BACKOFF.min(max);
                joined.next_lookup = now + joined.lookup_backoff;
            } else if look_up {
                joined.lookup_backoff = (joined.lookup_backoff * 2).min(max);
                joined.next_lookup = now + joined.lookup_backoff;
                self.discover_room(room);
            }
        }
    }

    /// Looks up (and announces again) the rooms with fewer connected members than
    /// [`MESH_N_LOW`]. A room with enough members needs no lookup: each one is a DHT walk that
    /// connects to some twenty peers, and Kademlia republishes the announcement made at join.
    pub(super) fn discover_lonely_rooms(&mut self) {
        let lonely: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, joined)| self.room_members(&joined.topic).len() < MESH_N_LOW)
            .map(|(room, _)| *room)
            .collect();
        for room in lonely {
            self.discover_room(room);
        }
    }

    pub(super) fn handle_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        self.note_relay(peer_id, &info.protocols);
        self.announced_addrs.insert(
            peer_id,
            info.listen_addrs
                .iter()
                .take(ANNOUNCED_ADDRS_PER_PEER)
                .cloned()
                .collect(),
        );
        // Only peers that serve the DHT belong in the routing table.
        if !info.protocols.contains(&StreamProtocol::new(KAD_PROTOCOL)) {
            return;
        }
        for addr in info.listen_addrs {
            self.admit_to_routing_table(peer_id, addr);
        }
    }

    pub(super) fn handle_kad(&mut self, event: kad::Event) {
        match event {
            // A connected peer that serves the DHT (Kademlia leaves inserts to us).
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                self.admit_to_routing_table(peer, address)
            }
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                addresses,
                ..
            } => self.enforce_range_quota(peer, addresses.first()),
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetProviders(result),
                step,
                ..
            } => self.handle_providers(id, result, step.last),
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::Bootstrap(_),
                step,
                ..
            } => self.cut_bootstrap_short(id, step),
            _ => {}
        }
    }

    /// Cuts every Kademlia bootstrap short after its first step, the lookup of this node's own
    /// id: the walks towards a random id in every bucket are skipped.
    ///
    /// A whole bootstrap asked about 200 peers in a 100-peer netsim run (its own-id lookup about
    /// 40), most of them over new connections. Joining, that is what a node's CPU went on while
    /// the room formed, and libp2p-kad also schedules a bootstrap whenever a peer enters a table
    /// of fewer than [`kad::K_VALUE`] peers, so every join ran two. The periodic refresh cost as
    /// much: five minutes after 100 peers joined, their refreshes opened 4,829 connections in
    /// 30 s, nearly as many as the join wave (5,409), and 500 peers, started within about two
    /// minutes of each other, never came out of theirs. The own-id lookup is what makes a node
    /// known to the peers closest to it and keeps its nearest buckets filled; the far buckets
    /// fill with the peers that connect to it and those its room lookups meet, and lose peers
    /// whose dials fail. Finishing each step at once makes Kademlia move through the remaining
    /// buckets without asking anyone.
    fn cut_bootstrap_short(&mut self, id: kad::QueryId, step: kad::ProgressStep) {
        if step.last {
            return;
        }
        if step.count.get() == 1 {
            tracing::debug!(?id, "Kademlia bootstrap cut short after the own-id lookup");
        }
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
    }

    fn handle_providers(&mut self, id: kad::QueryId, result: kad::GetProvidersResult, last: bool) {
        if let Ok(GetProvidersOk::FoundProviders { key, providers }) = result {
            if let Some(lookup) = self.room_lookups.get_mut(&id) {
                lookup.found.extend(providers.iter().copied());
            }
            self.dial_providers(id, &key, providers);
        }
        if last {
            self.provider_dials.remove(&id);
            if let Some(lookup) = self.room_lookups.remove(&id) {
                let mut found: Vec<PeerId> = lookup.found.into_iter().collect();
                found.sort();
                let _ = lookup.reply.send(Ok(found));
            }
        }
    }

    /// Starts a provider lookup of a public room for a handle; the reply goes out when the
    /// lookup ends.
    pub(super) fn look_up_room(&mut self, name: &str, reply: Reply<Vec<PeerId>>) {
        if self.room_lookups.len() >= MAX_ROOM_LOOKUPS {
            let _ = reply.send(Err(NodeError::TooManyLookups(MAX_ROOM_LOOKUPS)));
            return;
        }
        let room = match RoomId::for_public_name(name) {
            Ok(room) => room,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(room_provider_key(room));
        self.room_lookups.insert(
            query,
            RoomLookup {
                found: HashSet::new(),
                reply,
            },
        );
    }

    /// Every peer of the Kademlia routing table with its addresses.
    pub(super) fn routing_table(&mut self) -> Vec<RoutingEntry> {
        let mut entries = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                entries.push(RoutingEntry {
                    peer: *entry.node.key.preimage(),
                    addresses: entry.node.value.iter().cloned().collect(),
                });
            }
        }
        entries
    }

    /// Adds `address` of `peer` to the Kademlia routing table, unless the peer is not there yet
    /// and either its k-bucket is full or its address range already holds its quota
    /// ([`crate::RangeQuota`]) in that bucket or in the whole table. Bootstrap peers are always
    /// added. A peer reached only through relays is not: a DHT server can be dialled directly,
    /// and a relayed peer's own address is unknown, so its range would be whatever it claims.
    ///
    /// A full bucket keeps its peers, as Kademlia prefers long-known peers. Offering it a newcomer
    /// would make Kademlia dial the bucket's oldest disconnected peer to see whether it is still
    /// there, and since the node closes connections no room needs, most of a full bucket is
    /// disconnected: each connection a peer opened to this node would open another, which opens
    /// another at the far end. Dead peers leave the table when a dial to them fails
    /// ([`EventLoop::forget_unreachable_routing_peer`]).
    pub(super) fn admit_to_routing_table(&mut self, peer: PeerId, address: Multiaddr) {
        let range = match self.whereabouts(peer, &address) {
            Whereabouts::RelayedOnly => {
                tracing::debug!(%peer, "not adding a peer reached only through relays to the DHT");
                return;
            }
            Whereabouts::Range(range) => range,
        };
        let occupancy = self.range_occupancy(peer, range);
        if !occupancy.present {
            let bootstrap = self.bootstrap_peers.contains(&peer);
            if occupancy.bucket_full && !bootstrap {
                tracing::trace!(%peer, "k-bucket full: peer not added to the routing table");
                return;
            }
            if !self
                .kad_range_quota
                .admits(occupancy.in_bucket, occupancy.in_table)
                && !bootstrap
            {
                tracing::debug!(
                    %peer, ?range, occupancy.in_bucket, occupancy.in_table,
                    "address range at its quota in the routing table: peer not added"
                );
                return;
            }
            self.routing_ranges.insert(peer, range);
        }
        self.swarm.behaviour_mut().kad.add_address(&peer, address);
    }

    /// Takes a peer that just entered the routing table out again when its range is over the
    /// quota: Kademlia applies a pending entry (one waiting for a full bucket's oldest peer to
    /// fail) later, when the range may have filled meanwhile. Bootstrap peers stay.
    fn enforce_range_quota(&mut self, peer: PeerId, address: &Multiaddr) {
        if self.bootstrap_peers.contains(&peer) {
            return;
        }
        let range = match self.routing_ranges.get(&peer) {
            Some(range) => *range,
            None => match self.whereabouts(peer, address) {
                Whereabouts::Range(range) => range,
                Whereabouts::RelayedOnly => {
                    self.swarm.behaviour_mut().kad.remove_peer(&peer);
                    return;
                }
            },
        };
        let occupancy = self.range_occupancy(peer, range);
        if !self
            .kad_range_quota
            .admits(occupancy.in_bucket, occupancy.in_table)
        {
            tracing::debug!(%peer, ?range, "address range over its quota: peer taken out of the DHT");
            self.swarm.behaviour_mut().kad.remove_peer(&peer);
            self.routing_ranges.remove(&peer);
        } else {
            self.routing_ranges.insert(peer, range);
        }
    }

    /// Takes a peer out of the routing table when a dial to it failed on the network (not for a
    /// limit of this node's own). libp2p-kad keeps a peer with its last address however often it
    /// fails, and drops it only to make room for a newcomer in its bucket, which this node no
    /// longer offers to full buckets (see [`EventLoop::admit_to_routing_table`]): without this,
    /// peers that left would stay in full buckets for good. A peer taken out by mistake comes
    /// back the next time it connects.
    pub(super) fn forget_unreachable_routing_peer(&mut self, peer: PeerId, error: &DialError) {
        if !matches!(
            error,
            DialError::Transport(_) | DialError::WrongPeerId { .. }
        ) || self.bootstrap_peers.contains(&peer)
            || self.swarm.is_connected(&peer)
        {
            return;
        }
        if self.swarm.behaviour_mut().kad.remove_peer(&peer).is_some() {
            tracing::debug!(%peer, "unreachable peer taken out of the routing table");
            self.routing_ranges.remove(&peer);
        }
    }

    /// Where `peer` is: the address of a direct connection to it says so, unless that
    /// connection is over loopback, where the kernel gives every dialler the source address
    /// 127.0.0.1; then, as for a peer not connected, `address` (the one it announces) does.
    fn whereabouts(&self, peer: PeerId, address: &Multiaddr) -> Whereabouts {
        let mut connected = false;
        let mut direct = false;
        for connection in self.connections.values().filter(|c| c.peer == peer) {
            connected = true;
            if connection.info.relayed {
                continue;
            }
            direct = true;
            if let Some(ip) = first_ip(&connection.info.remote_addr)
                && !ip.is_loopback()
            {
                return Whereabouts::Range(AddressRange::of_ip(ip));
            }
        }
        if connected && !direct {
            return Whereabouts::RelayedOnly;
        }
        Whereabouts::Range(AddressRange::of(address))
    }

    /// Where `peer` would go in the routing table, for the quota of `range`. Forgets the ranges
    /// of peers that have left the table.
    fn range_occupancy(&mut self, peer: PeerId, range: Option<AddressRange>) -> RangeOccupancy {
        let local = kad::KBucketKey::from(*self.swarm.local_peer_id());
        let distance = local.distance(&kad::KBucketKey::from(peer));
        let ranges = &mut self.routing_ranges;
        let mut in_table_now = HashSet::new();
        let (mut in_bucket, mut in_table, mut bucket_full) = (0, 0, false);
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            let same_bucket = bucket.contains(&distance);
            bucket_full |= same_bucket && bucket.num_entries() >= kad::K_VALUE.get();
            for entry in bucket.iter() {
                let other = *entry.node.key.preimage();
                in_table_now.insert(other);
                if other == peer || range.is_none() {
                    continue;
                }
                let other_range = match ranges.get(&other) {
                    Some(range) => *range,
                    None => entry.node.value.iter().find_map(AddressRange::of),
                };
                if other_range == range {
                    in_table += 1;
                    in_bucket += usize::from(same_bucket);
                }
            }
        }
        ranges.retain(|peer, _| in_table_now.contains(peer));
        RangeOccupancy {
            present: in_table_now.contains(&peer),
            bucket_full,
            in_bucket,
            in_table,
        }
    }

    /// Dials room members found by a lookup, but only while the room has fewer connected members
    /// than [`MESH_N_LOW`], and only up to [`MESH_N`] of them: a room needs a gossipsub mesh, not
    /// a connection to every member. Dialled now, while the query still holds their addresses.
    fn dial_providers(
        &mut self,
        query: kad::QueryId,
        key: &kad::RecordKey,
        providers: HashSet<PeerId>,
    ) {
        let Some(topic) = self
            .rooms
            .iter()
            .find(|(room, _)| room_provider_key(**room) == *key)
            .map(|(_, joined)| joined.topic.clone())
        else {
            return;
        };
        let members = self.room_members(&topic).len();
        let dialled = self.provider_dials.get(&query).copied().unwrap_or(0);
        if members >= MESH_N_LOW {
            return;
        }
        let mut budget = MESH_N.saturating_sub(members + dialled);
        for peer in providers {
            if budget == 0 {
                break;
            }
            if self.dial_member(peer, Vec::new()) {
                budget -= 1;
                *self.provider_dials.entry(query).or_default() += 1;
            }
        }
    }

    pub(super) fn handle_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                let mut new = HashSet::new();
                for (peer, addr) in found {
                    if !self.lan_peers.contains_key(&peer) && self.lan_peers.len() >= MAX_LAN_PEERS
                    {
                        continue;
                    }
                    let addresses = self.lan_peers.entry(peer).or_default();
                    if !addresses.contains(&addr) {
                        addresses.push(addr);
                    }
                    new.insert(peer);
                }
                for peer in new {
                    self.dial_lan_peer(peer);
                }
            }
            mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    if let Some(addresses) = self.lan_peers.get_mut(&peer) {
                        addresses.retain(|a| *a != addr);
                        if addresses.is_empty() {
                            self.lan_peers.remove(&peer);
                        }
                    }
                }
            }
        }
    }

    /// Dials the bootstrap peers again while the node's routing table is empty (a first dial can
    /// be refused by a busy bootstrap node, or fail while the network is down), backing off from
    /// `FIRST_LOOKUP_BACKOFF` to the room lookup interval; a routing contact resets the wait. A
    /// node with routing contacts needs no bootstrap connection: its lookups go through them,
    /// and redialling the bootstrap nodes would keep every member connected to nodes that close
    /// connections they do not need. Connections alone do not count: peers that serve no DHT
    /// (bare gossip peers, spammers who dialled the node first) leave it with nobody to ask.
    fn redial_bootstrap(&mut self) {
        let has_contacts = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .any(|bucket| bucket.num_entries() > 0);
        let now = Instant::now();
        if has_contacts || self.bootstrap_addrs.is_empty() {
            self.bootstrap_backoff = FIRST_LOOKUP_BACKOFF;
            self.next_bootstrap_dial = now + FIRST_LOOKUP_BACKOFF;
            return;
        }
        if now < self.next_bootstrap_dial {
            return;
        }
        self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(self.room_lookup_interval);
        self.next_bootstrap_dial = now + self.bootstrap_backoff;
        for addr in self.bootstrap_addrs.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "redialling a bootstrap peer failed");
            }
        }
    }

    /// Dials every peer on the local network that is not connected: a dial can fail when two
    /// peers that found each other at the same instant dial each other at once (a TCP
    /// simultaneous open), and mDNS reports a peer only once until it expires.
    pub(super) fn redial_lan_peers(&mut self) {
        // A LAN larger than the node's limits: the peers it made room by closing stay closed.
        if self.near_connection_limit() {
            return;
        }
        let peers: Vec<PeerId> = self.lan_peers.keys().copied().collect();
        for peer in peers {
            self.dial_lan_peer(peer);
        }
    }

    /// One dial to a peer found by mDNS, at all its addresses: separate dials would be refused
    /// while the first (perhaps at an address that does not answer) is pending.
    fn dial_lan_peer(&mut self, peer: PeerId) {
        if let Some(addresses) = self.lan_peers.get(&peer).cloned() {
            self.dial_member(peer, addresses);
        }
    }

    /// Dials a peer found by discovery unless it is this node or already connected; says
    /// whether a dial started.
    fn dial_member(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) -> bool {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return false;
        }
        // Kademlia adds the addresses it knows (its routing table and running lookups): a
        // provider found by a lookup is dialled at the addresses the lookup learnt.
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .extend_addresses_through_behaviour()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "not dialling a discovered peer");
                false
            }
        }
    }
}
