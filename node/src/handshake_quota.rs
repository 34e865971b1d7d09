//! A bound on incoming handshakes in progress per address range. A TCP connection that never
//! says a word holds one of the node's handshake slots ([`crate::Limits::max_pending_incoming`])
//! until the connection timeout (10 s); without this bound a handful of such connections from
//! one machine, opened again as they time out, would keep every newcomer out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::address_range::AddressRange;

/// Refuses an incoming connection whose address range (see [`AddressRange`]) already has the
/// most handshakes in progress that one range may have. Addresses with no range (local network,
/// memory) are not counted.
pub(crate) struct Behaviour {
    max_per_range: u32,
    /// The range of each counted handshake in progress.
    pending: HashMap<ConnectionId, AddressRange>,
    /// Handshakes in progress per range; ranges with none are removed.
    per_range: HashMap<AddressRange, u32>,
}

/// Why an incoming connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} handshakes from this address range are already in progress")]
struct TooManyHandshakes(u32);

impl Behaviour {
    /// At most `max_per_range` handshakes in progress from one range.
    pub(crate) fn new(max_per_range: u32) -> Self {
        Self {
            max_per_range,
            pending: HashMap::new(),
            per_range: HashMap::new(),
        }
    }

    /// The handshake of `connection` is over, established or failed.
    fn finish(&mut self, connection: ConnectionId) {
        let Some(range) = self.pending.remove(&connection) else {
            return;
        };
        if let Some(count) = self.per_range.get_mut(&range) {
            *count -= 1;
            if *count == 0 {
                self.per_range.remove(&range);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(range) = AddressRange::of(remote_addr) else {
            return Ok(());
        };
        let count = self.per_range.entry(range).or_default();
        if *count >= self.max_per_range {
            return Err(ConnectionDenied::new(TooManyHandshakes(*count)));
        }
        *count += 1;
        self.pending.insert(connection, range);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.finish(connection);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ListenFailure(failure) = event {
            self.finish(failure.connection_id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use libp2p::swarm::{ListenError, ListenFailure};

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("valid multiaddr")
    }

    #[test]
    fn a_range_gets_its_quota_of_handshakes_and_its_slots_back_when_they_end() {
        let mut quota = Behaviour::new(2);
        let local = addr("/ip4/127.0.0.1/tcp/1");
        let attacker = addr("/ip4/198.51.100.7/tcp/4000");
        let neighbour = addr("/ip4/198.51.100.8/tcp/4000");
        let other = addr("/ip4/203.0.113.9/tcp/4000");
        let (first, second) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        assert!(
            quota
                .handle_pending_inbound_connection(first, &local, &attacker)
                .is_ok()
        );
        assert!(
            quota
                .handle_pending_inbound_connection(second, &local, &attacker)
                .is_ok()
        );
        let third = ConnectionId::new_unchecked(3);
        assert!(
            quota
                .handle_pending_inbound_connection(third, &local, &neighbour)
                .is_err(),
            "a third handshake from the same /24 is refused"
        );
        let fourth = ConnectionId::new_unchecked(4);
        assert!(
            quota
                .handle_pending_inbound_connection(fourth, &local, &other)
                .is_ok(),
            "another range still gets in"
        );
        let peer = PeerId::random();
        assert!(
            quota
                .handle_established_inbound_connection(first, peer, &local, &attacker)
                .is_ok()
        );
        let fifth = ConnectionId::new_unchecked(5);
        assert!(
            quota
                .handle_pending_inbound_connection(fifth, &local, &neighbour)
                .is_ok(),
            "an established connection frees its handshake slot"
        );
        quota.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &local,
            send_back_addr: &attacker,
            error: &ListenError::Aborted,
            connection_id: second,
            peer_id: None,
        }));
        let sixth = ConnectionId::new_unchecked(6);
        assert!(
            quota
                .handle_pending_inbound_connection(sixth, &local, &attacker)
                .is_ok(),
            "a failed handshake frees its slot"
        );
        let seventh = ConnectionId::new_unchecked(7);
        assert!(
            quota
                .handle_pending_inbound_connection(seventh, &local, &attacker)
                .is_err()
        );
    }

    #[test]
    fn local_network_and_memory_addresses_are_not_counted() {
        let mut quota = Behaviour::new(1);
        let local = addr("/memory/1");
        for (i, remote) in ["/ip4/192.168.1.2/tcp/1", "/memory/7"].iter().enumerate() {
            for j in 0..3 {
                let id = ConnectionId::new_unchecked(10 * i + j);
                assert!(
                    quota
                        .handle_pending_inbound_connection(id, &local, &addr(remote))
                        .is_ok()
                );
            }
        }
    }
}
