//! Raw gossipsub streams: a behaviour that opens one `/meshsub/1.1.0` stream to every peer it
//! connects to and accepts the peer's own, and hands both out untouched. A flooder writes its
//! hand-made RPCs on the first and reads (and throws away) what the node sends on the second,
//! so the node's gossipsub sees an ordinary gossipsub peer on the other side.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandlerEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm, NetworkBehaviour, Stream,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};

/// Gossipsub v1.1: what the flooders speak. Every gossipsub node accepts it, and v1.1 is the
/// version that brought the defences under test (backoffs, scoring, IHAVE limits).
pub(crate) const MESHSUB: StreamProtocol = StreamProtocol::new("/meshsub/1.1.0");

/// A gossipsub stream with a peer.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The stream, its protocol negotiated.
    pub(crate) stream: Stream,
    /// Opened by us (to write on), or by the peer (to read from).
    pub(crate) outbound: bool,
}

/// Opens and accepts raw gossipsub streams, and reports each as [`Opened`].
#[derive(Debug, Default)]
pub(crate) struct RawStreams {
    opened: VecDeque<Opened>,
}

impl NetworkBehaviour for RawStreams {
    type ConnectionHandler = Handler;
    type ToSwarm = Opened;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        (stream, outbound): THandlerOutEvent<Self>,
    ) {
        self.opened.push_back(Opened { stream, outbound });
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Opened, THandlerInEvent<Self>>> {
        match self.opened.pop_front() {
            Some(opened) => Poll::Ready(ToSwarm::GenerateEvent(opened)),
            None => Poll::Pending,
        }
    }
}

/// One connection's handler: asks for one outbound stream, accepts inbound ones, and passes each
/// up with whether it is outbound.
#[derive(Debug, Default)]
pub(crate) struct Handler {
    requested: bool,
    opened: VecDeque<(Stream, bool)>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = (Stream, bool);
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(MESHSUB), ())
    }

    /// The connection stays open as long as the flooder wants it: the node decides when to close.
    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if !self.requested {
            self.requested = true;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(MESHSUB), ()),
            });
        }
        match self.opened.pop_front() {
            Some(opened) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(opened)),
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => self.opened.push_back((stream, false)),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => self.opened.push_back((stream, true)),
            // A failed negotiation leaves the connection without a flood; the node is not
            // a gossipsub peer then, and there is nothing to attack.
            _ => {}
        }
    }
}
