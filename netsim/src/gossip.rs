//! Bare peers on the simulated network (flooders also on loopback TCP): no Grapevine node, only a libp2p swarm over Noise and
//! Yamux, as the node builds its own, running gossipsub (forgers, silent peers, the raw-gossipsub
//! baseline) or raw gossipsub streams (flooders).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use grapevine_node::RawTransport;
use grapevine_node::behaviour::{MESH_N, MESH_N_HIGH, MESH_N_LOW};
use libp2p::core::ConnectedPoint;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::metrics::Registry;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, Transport as _, gossipsub, noise, yamux};
use sha2::{Digest, Sha256};

use crate::network::SimNetwork;

/// How often a bare peer dials the targets it is not connected to (after a cut or a restart),
/// as a node's discovery would.
pub(crate) const REDIAL_INTERVAL: Duration = Duration::from_secs(2);
/// Bare peers keep connections open for the whole run; the other side decides when to close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A bare gossipsub peer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// libp2p refused the swarm's setup.
    #[error("bare gossipsub peer: {0}")]
    Setup(String),
}

/// How a bare peer runs gossipsub.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GossipSettings {
    /// Heartbeat, as the nodes use.
    pub(crate) heartbeat: Duration,
    /// Hold every received message for a validation result (a silent peer never gives one, so
    /// it forwards nothing); otherwise forward at once, as plain gossipsub does.
    pub(crate) validate: bool,
}

/// A swarm on the simulated network (a gossipsub one unless said otherwise), and the addresses
/// it keeps dialling.
pub(crate) struct BarePeer<B: NetworkBehaviour = gossipsub::Behaviour> {
    pub(crate) swarm: Swarm<B>,
    targets: Vec<Multiaddr>,
    connected: HashSet<Multiaddr>,
}

impl BarePeer {
    /// A gossipsub swarm for network peer `index` with `key`, the nodes' mesh sizes, heartbeat
    /// delay and message ids; [`BarePeer::dial_missing`] dials `targets`. Gossipsub counts into
    /// the registry handed back with it, which can be read while the swarm runs.
    pub(crate) fn new(
        network: &SimNetwork,
        index: usize,
        key: Keypair,
        settings: GossipSettings,
        targets: Vec<Multiaddr>,
    ) -> Result<(Self, Arc<Registry>), GossipError> {
        let mut config = gossipsub::ConfigBuilder::default();
        config
            .validation_mode(gossipsub::ValidationMode::Strict)
            .message_id_fn(|message: &gossipsub::Message| {
                gossipsub::MessageId::from(Sha256::digest(&message.data).to_vec())
            })
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N_LOW)
            .mesh_n_high(MESH_N_HIGH)
            .heartbeat_interval(settings.heartbeat)
            .heartbeat_initial_delay(grapevine_node::config::DEFAULT_HEARTBEAT_INITIAL_DELAY);
        if settings.validate {
            config.validate_messages();
        }
        let config = config.build().map_err(|e| setup(&e))?;
        let mut metrics = Registry::default();
        let behaviour =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
                .map_err(|e| setup(&e))?
                .with_metrics(&mut metrics, gossipsub::MetricsConfig::default());
        let peer = Self::with_behaviour(network.raw_transport(index), key, behaviour, targets)?;
        Ok((peer, Arc::new(metrics)))
    }
}

fn setup(e: &dyn std::fmt::Display) -> GossipError {
    GossipError::Setup(e.to_string())
}

impl<B: NetworkBehaviour> BarePeer<B> {
    /// A swarm running `behaviour` with `key` on `raw` (a peer's simulated links, or loopback TCP
    /// for a peer outside a simulation), over Noise and Yamux as the nodes' connections are;
    /// [`BarePeer::dial_missing`] dials `targets`.
    pub(crate) fn with_behaviour(
        raw: RawTransport,
        key: Keypair,
        behaviour: B,
        targets: Vec<Multiaddr>,
    ) -> Result<Self, GossipError> {
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    raw.upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default())
                        .boxed(),
                )
            })
            .map_err(|e| setup(&e))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build();
        Ok(Self {
            swarm,
            targets,
            connected: HashSet::new(),
        })
    }

    /// Dials every target it is not connected to.
    pub(crate) fn dial_missing(&mut self) {
        for target in &self.targets {
            if !self.connected.contains(target) {
                // A failed dial is retried at the next redial.
                let _ = self.swarm.dial(target.clone());
            }
        }
    }

    /// Notes connections to targets; hands back what the behaviour reported.
    pub(crate) fn on_event(&mut self, event: SwarmEvent<B::ToSwarm>) -> Option<B::ToSwarm> {
        match event {
            SwarmEvent::ConnectionEstablished {
                endpoint: ConnectedPoint::Dialer { address, .. },
                ..
            } => {
                self.connected.insert(address);
            }
            SwarmEvent::ConnectionClosed {
                endpoint: ConnectedPoint::Dialer { address, .. },
                num_established: 0,
                ..
            } => {
                self.connected.remove(&address);
            }
            SwarmEvent::Behaviour(event) => return Some(event),
            _ => {}
        }
        None
    }
}
