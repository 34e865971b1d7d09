//! A circuit relay v2 server outside any node, whose answers a test can hold back: the node's own
//! relay (`Config::relay`) cannot keep a reservation request waiting, which is what it takes to
//! have a request on its way at a chosen moment.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use futures::task::AtomicWaker;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, identify, noise, relay, tcp, yamux};
use tokio::task::JoinHandle;

/// Lifetime of the reservations granted: the client renews each a second after it is answered
/// (three quarters of the lifetime left, in whole seconds), so a test waits little for one.
const RESERVATION_DURATION: Duration = Duration::from_secs(1);

/// Idle connections stay this long: the relay's side of a connection no longer holds the
/// reservation once it has expired, while the client still counts on it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Holds the relay's answers back while closed and lets them go when opened.
#[derive(Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    held: AtomicUsize,
    waker: AtomicWaker,
}

impl Gate {
    /// Holds back every answer the relay decides from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Sends the answers held back, and those to come at once.
    pub(crate) fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.waker.wake();
    }

    /// How many answers are held back.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// A running relay; it stops when dropped.
pub(crate) struct HeldRelay {
    /// The relay's peer id.
    pub(crate) peer_id: PeerId,
    /// Its loopback TCP address, ending in its peer id.
    pub(crate) addr: Multiaddr,
    /// Its answers.
    pub(crate) gate: Arc<Gate>,
    task: JoinHandle<()>,
}

impl Drop for HeldRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a relay on loopback TCP: no rate limits, reservations of [`RESERVATION_DURATION`].
pub(crate) async fn spawn() -> Result<HeldRelay> {
    let gate = Arc::new(Gate::default());
    let relay_gate = Arc::clone(&gate);
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(move |key| {
            let config = relay::Config {
                reservation_duration: RESERVATION_DURATION,
                reservation_rate_limiters: Vec::new(),
                ..relay::Config::default()
            };
            Behaviour {
                relay: Gated {
                    relay: relay::Behaviour::new(key.public().to_peer_id(), config),
                    gate: relay_gate,
                    held: VecDeque::new(),
                },
                identify: identify::Behaviour::new(identify::Config::new(
                    "/held-relay/1".to_string(),
                    key.public(),
                )),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = tokio::time::timeout(crate::common::WAIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .context("the held relay did not start listening")?;
    // A relay offers relaying (and hands out reservations) only with an external address.
    swarm.add_external_address(addr.clone());
    let peer_id = *swarm.local_peer_id();
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    Ok(HeldRelay {
        peer_id,
        addr: addr.with(Protocol::P2p(peer_id)),
        gate,
        task,
    })
}

/// The relay and identify, so that peers learn it relays.
#[derive(NetworkBehaviour)]
struct Behaviour {
    relay: Gated,
    identify: identify::Behaviour,
}

/// The relay server, whose instructions to its connections (accepting or refusing a request is
/// one) wait while its [`Gate`] is closed.
struct Gated {
    relay: relay::Behaviour,
    gate: Arc<Gate>,
    held: VecDeque<ToSwarm<relay::Event, THandlerInEvent<relay::Behaviour>>>,
}

impl NetworkBehaviour for Gated {
    type ConnectionHandler = <relay::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.relay
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.relay.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.relay.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.relay.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.relay.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.relay
            .on_connection_handler_event(peer, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.gate.waker.register(cx.waker());
        let closed = self.gate.closed.load(Ordering::SeqCst);
        if !closed && let Some(action) = self.held.pop_front() {
            self.gate.held.store(self.held.len(), Ordering::SeqCst);
            return Poll::Ready(action);
        }
        loop {
            match self.relay.poll(cx) {
                Poll::Ready(action @ ToSwarm::NotifyHandler { .. }) if closed => {
                    self.held.push_back(action);
                    self.gate.held.store(self.held.len(), Ordering::SeqCst);
                }
                other => return other,
            }
        }
    }
}
