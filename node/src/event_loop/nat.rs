//! Getting through NAT: AutoNAT probes decide whether others can dial this node; one that cannot
//! reserves a slot at its relay-capable bootstrap peers (listening on
//! `<bootstrap addr>/p2p-circuit`); Kademlia serves only behind a confirmed direct address; and
//! DCUtR upgrades relayed connections to direct ones where a hole can be punched.

use std::collections::{HashMap, HashSet};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol, autonat, dcutr, kad, relay};

use super::EventLoop;
use crate::NodeEvent;

/// What this node knows about whether others can dial it directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reachability {
    /// No probe has answered yet.
    Unknown,
    /// A probe failed and no direct address is confirmed: behind NAT or a firewall.
    Private,
    /// A direct external address is confirmed.
    Public,
}

/// Reachability and the relay reservations that stand in for it.
pub(super) struct Nat {
    reachability: Reachability,
    /// The configured bootstrap peers that name their peer id, with their address.
    bootstrap: HashMap<PeerId, Multiaddr>,
    /// Bootstrap peers whose identify lists the relay hop protocol.
    relays: HashSet<PeerId>,
    /// Reservations this node asked for, by their listener, with the relay holding each; never
    /// closed by this node (see `handle_external_addr_confirmed`).
    reservations: HashMap<ListenerId, PeerId>,
    /// As a relay: peers holding a reservation here.
    reserved_here: HashSet<PeerId>,
    /// As a relay: circuits open through this node, counted at both of their ends.
    circuits_here: HashMap<PeerId, usize>,
}

impl Nat {
    pub(super) fn new(bootstrap: &[Multiaddr]) -> Self {
        let bootstrap = bootstrap
            .iter()
            .filter_map(|addr| {
                let mut addr = addr.clone();
                match addr.pop() {
                    Some(Protocol::P2p(peer)) => Some((peer, addr)),
                    _ => None,
                }
            })
            .collect();
        Self {
            reachability: Reachability::Unknown,
            bootstrap,
            relays: HashSet::new(),
            reservations: HashMap::new(),
            reserved_here: HashSet::new(),
            circuits_here: HashMap::new(),
        }
    }

    /// Whether this node relays for `peer` (a reservation or a circuit): its connection must
    /// stay open however idle it looks.
    pub(super) fn relays_for(&self, peer: &PeerId) -> bool {
        self.reserved_here.contains(peer) || self.circuits_here.contains_key(peer)
    }

    /// Forgets what this node relayed for a peer that disconnected.
    pub(super) fn forget_peer(&mut self, peer: &PeerId) {
        self.reserved_here.remove(peer);
        self.circuits_here.remove(peer);
    }
}

/// Whether an address goes through a relay.
fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether a failed dial-back to `addr` tells anything about this node's reachability: only for
/// a direct address that names a transport. A peer connected to this node through a relay
/// reports it as seen at `/p2p/<this node>` or at a circuit, which no AutoNAT server can dial
/// back whatever the network; counted, such a failure made a node that was reachable all along
/// take relay slots it never needed (and which it now keeps until it leaves the relay).
fn failed_probe_counts(addr: &Multiaddr) -> bool {
    !is_relayed(addr)
        && addr
            .iter()
            .next()
            .is_some_and(|p| !matches!(p, Protocol::P2p(_)))
}

impl EventLoop {
    /// Notes a bootstrap peer that offers relaying (from its identify), and reserves there if
    /// this node cannot be dialled.
    pub(super) fn note_relay(&mut self, peer: PeerId, protocols: &[StreamProtocol]) {
        if self.nat.bootstrap.contains_key(&peer) && protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.nat.relays.insert(peer);
            self.reserve_if_unreachable();
        }
    }

    pub(super) fn handle_autonat(&mut self, event: autonat::v2::client::Event) {
        match event.result {
            Ok(()) => {
                tracing::info!(addr = %event.tested_addr, server = %event.server, "reachable");
            }
            Err(error) if !failed_probe_counts(&event.tested_addr) => {
                tracing::debug!(
                    addr = %event.tested_addr, server = %event.server, %error,
                    "an address no server can dial back was not reachable"
                );
            }
            Err(error) => {
                tracing::info!(
                    addr = %event.tested_addr, server = %event.server, %error, "not reachable"
                );
                if self.nat.reachability != Reachability::Public {
                    self.nat.reachability = Reachability::Private;
                    self.reserve_if_unreachable();
                }
            }
        }
    }

    /// A direct external address makes this node a DHT server and stops it asking for relay
    /// slots; a relayed one (from a reservation) changes neither. Either way, rooms still short of
    /// members are announced and looked up again at once: an announcement made before this node
    /// had an address others can dial carries none, and members found then may not have been
    /// dialable either, so waiting for the next lookup tick would leave the room empty for a
    /// minute.
    ///
    /// Reservations already held stay until their connection to the relay closes: closing a
    /// listener can take the node down. libp2p-relay 0.22's client forgets a reservation when its
    /// listener closes, yet the connection's handler still delivers the answer to a request
    /// already sent, and the client then panics ("Relay connection exist") in the task that polls
    /// the swarm, this event loop. A request is out from the first ask until its answer and from
    /// each renewal, which the relay schedules (at once if it grants under a second or its clock
    /// is behind ours) and this node cannot see start; only the connection's closing ends them.
    pub(super) fn handle_external_addr_confirmed(&mut self, address: Multiaddr) {
        tracing::info!(%address, "external address confirmed");
        self.discover_lonely_rooms();
        if is_relayed(&address) {
            return;
        }
        self.nat.reachability = Reachability::Public;
        self.swarm
            .behaviour_mut()
            .kad
            .set_mode(Some(kad::Mode::Server));
    }

    /// Back to a DHT client when the last direct external address expires.
    pub(super) fn handle_external_addr_expired(&mut self, address: Multiaddr) {
        tracing::info!(%address, "external address expired");
        let direct = self.swarm.external_addresses().any(|a| !is_relayed(a));
        if !self.reachable && !direct {
            self.nat.reachability = Reachability::Unknown;
            self.swarm
                .behaviour_mut()
                .kad
                .set_mode(Some(kad::Mode::Client));
        }
    }

    /// A closed reservation may be asked for again when its relay is next identified.
    pub(super) fn handle_listener_closed(&mut self, listener: ListenerId) {
        if let Some(relay) = self.nat.reservations.remove(&listener) {
            self.nat.relays.remove(&relay);
        }
    }

    pub(super) fn handle_relay_client(&mut self, event: relay::client::Event) {
        tracing::info!(?event, "relay client");
    }

    pub(super) fn handle_relay_server(&mut self, event: relay::Event) {
        tracing::debug!(?event, "relay server");
        let nat = &mut self.nat;
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                nat.reserved_here.insert(src_peer_id);
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                nat.reserved_here.remove(&src_peer_id);
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                for peer in [src_peer_id, dst_peer_id] {
                    *nat.circuits_here.entry(peer).or_default() += 1;
                }
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => {
                for peer in [src_peer_id, dst_peer_id] {
                    if let Some(count) = nat.circuits_here.get_mut(&peer) {
                        *count -= 1;
                        if *count == 0 {
                            nat.circuits_here.remove(&peer);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn handle_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(_) => {
                tracing::info!(peer = %event.remote_peer_id, "hole punched");
                self.emit(NodeEvent::HolePunched(event.remote_peer_id));
            }
            Err(error) => {
                tracing::debug!(peer = %event.remote_peer_id, %error, "hole punching failed");
            }
        }
    }

    /// Listens through every relay-capable bootstrap peer not yet used, when this node is not
    /// told to be reachable and either a probe failed or it has no direct listen address at all.
    fn reserve_if_unreachable(&mut self) {
        let no_direct_listener = self.swarm.listeners().all(is_relayed);
        let unreachable = !self.reachable
            && match self.nat.reachability {
                Reachability::Public => false,
                Reachability::Private => true,
                Reachability::Unknown => no_direct_listener,
            };
        if !unreachable {
            return;
        }
        let relays: Vec<PeerId> = self.nat.relays.iter().copied().collect();
        for relay in relays {
            let asked = self.nat.reservations.values().any(|r| *r == relay);
            // A reservation may also come from the configured listen addresses.
            let listening = self
                .swarm
                .listeners()
                .any(|a| is_relayed(a) && a.iter().any(|p| p == Protocol::P2p(relay)));
            if asked || listening {
                continue;
            }
            let Some(addr) = self.nat.bootstrap.get(&relay) else {
                continue;
            };
            let circuit = addr
                .clone()
                .with(Protocol::P2p(relay))
                .with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::info!(%circuit, "not reachable: reserving a relay slot");
                    self.nat.reservations.insert(listener, relay);
                }
                Err(error) => tracing::warn!(%circuit, %error, "relay reservation failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_probes_of_direct_addresses_mark_a_node_unreachable() {
        let relay = PeerId::random();
        let this_node = PeerId::random();
        for direct in [
            "/ip4/203.0.113.7/tcp/4001",
            "/ip6/2001:db8::7/udp/4001/quic-v1",
        ] {
            let addr: Multiaddr = direct.parse().unwrap();
            assert!(failed_probe_counts(&addr), "{addr}");
        }
        let bare = Multiaddr::empty().with(Protocol::P2p(this_node));
        let circuit = "/ip4/198.51.100.1/tcp/4001"
            .parse::<Multiaddr>()
            .unwrap()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(this_node));
        for undialable in [bare, circuit] {
            assert!(!failed_probe_counts(&undialable), "{undialable}");
        }
    }
}
