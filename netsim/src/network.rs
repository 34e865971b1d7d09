//! The simulated network: a libp2p transport for in-process peers whose every byte crosses a
//! link with the faults the simulation sets (latency, jitter, loss, partitions, held links,
//! crashed peers). Nodes get it through [`grapevine_node::CustomTransport`], so the node code
//! under test is exactly what users run.
//!
//! Addresses are `/memory/<port>`. Each connection is a pair of byte pipes; a forwarding task per
//! direction delays each chunk by the link's latency plus jitter, and a lost chunk (TCP would
//! retransmit it) by [`RETRANSMIT_DELAY`] more, keeping the order. A partition or a crash cuts
//! the pipes (both ends see the connection fail) and refuses new dials across it; a held link
//! keeps its bytes until released; a slow reader takes bytes off its links at a set rate (over all
//! its links together).

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{AsyncRead, AsyncWrite, FutureExt, SinkExt, StreamExt};
use grapevine_node::{CustomTransport, RawStream, RawTransport};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

/// Extra delay of a chunk the link loses: about one TCP retransmission timeout.
pub const RETRANSMIT_DELAY: Duration = Duration::from_millis(200);
/// Chunks in flight per direction of one connection before the writer waits: a window, so a
/// held or slow link pushes back on the sender instead of buffering without bound.
const PIPE_WINDOW: usize = 64;
/// Connections waiting to be accepted by one listener.
const ACCEPT_BACKLOG: usize = 64;

/// Bytes written into a pipe, with when they were written.
type Chunk = (Instant, Vec<u8>);

/// The faults of one link (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkFaults {
    /// Fixed one-way delay.
    #[serde(default, with = "humantime_serde")]
    pub latency: Duration,
    /// Extra one-way delay, uniform between zero and this.
    #[serde(default, with = "humantime_serde")]
    pub jitter: Duration,
    /// Share (0 to 1) of chunks lost and delivered again after [`RETRANSMIT_DELAY`].
    #[serde(default)]
    pub loss: f64,
}

/// An unordered pair of peers: the key of a link.
fn link(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Everything the links depend on, changed by the simulation and read by every pipe.
struct NetState {
    next_port: u64,
    /// Listening ports: the peer behind each and where its incoming connections go.
    listeners: HashMap<u64, (usize, mpsc::Sender<SimStream>)>,
    default_faults: LinkFaults,
    faults: HashMap<(usize, usize), LinkFaults>,
    /// Each peer's side while partitioned; peers on different sides cannot talk.
    partition: Option<HashMap<usize, usize>>,
    held: HashSet<(usize, usize)>,
    down: HashSet<usize>,
    /// Peers that read slowly: the bytes per second each takes in, over all its connections.
    read_rates: HashMap<usize, u64>,
    /// When each slow reader is done reading the bytes its connections delivered so far: its
    /// connections share its rate, so a reader with more connections is not a faster reader.
    read_until: HashMap<usize, Instant>,
    rng: StdRng,
}

impl NetState {
    /// A port nobody has used yet.
    fn take_port(&mut self) -> u64 {
        let port = self.next_port;
        self.next_port += 1;
        port
    }

    /// The lowest port `peer` listens on, if it listens.
    fn listen_port_of(&self, peer: usize) -> Option<u64> {
        self.listeners
            .iter()
            .filter(|(_, (owner, _))| *owner == peer)
            .map(|(port, _)| *port)
            .min()
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        if self.down.contains(&a) || self.down.contains(&b) {
            return false;
        }
        match &self.partition {
            Some(sides) => sides.get(&a) == sides.get(&b),
            None => true,
        }
    }

    /// When slow reader `peer` will have read `len` more bytes, after those its connections
    /// delivered before; `None` for a peer reading at full speed.
    fn read_until(&mut self, peer: usize, len: u64) -> Option<Instant> {
        let rate = *self.read_rates.get(&peer)?;
        let now = Instant::now();
        let from = self
            .read_until
            .get(&peer)
            .map_or(now, |&until| until.max(now));
        let until = from + Duration::from_secs_f64(len as f64 / rate as f64);
        self.read_until.insert(peer, until);
        Some(until)
    }

    fn faults(&self, a: usize, b: usize) -> LinkFaults {
        self.faults
            .get(&link(a, b))
            .copied()
            .unwrap_or(self.default_faults)
    }
}

/// Bytes that crossed the network, for the report.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes delivered over every link.
    pub bytes: AtomicU64,
    /// Connections opened.
    pub connections: AtomicU64,
}

/// The simulated network shared by every peer of a simulation. Cheap to clone.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
    /// Bumped on every change, so pipes waiting on a held link or a cut re-check.
    changes: watch::Sender<u64>,
    traffic: Arc<Traffic>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimNetwork")
    }
}

impl SimNetwork {
    /// A network whose links all have `faults` until told otherwise; `seed` makes jitter and
    /// loss repeatable.
    pub fn new(faults: LinkFaults, seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(NetState {
                next_port: 1,
                listeners: HashMap::new(),
                default_faults: faults,
                faults: HashMap::new(),
                partition: None,
                held: HashSet::new(),
                down: HashSet::new(),
                read_rates: HashMap::new(),
                read_until: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
            })),
            changes: watch::channel(0).0,
            traffic: Arc::new(Traffic::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The transport for peer `peer`, as a node takes it.
    pub fn transport(&self, peer: usize) -> CustomTransport {
        let network = self.clone();
        CustomTransport::new(move || network.raw_transport(peer))
    }

    /// The raw transport of peer `peer` (before Noise and Yamux): bare libp2p swarms, such as
    /// hostile peers and the baseline's, join the simulated network with it.
    pub fn raw_transport(&self, peer: usize) -> RawTransport {
        SimTransport {
            network: self.clone(),
            peer,
            listeners: Vec::new(),
        }
        .boxed()
    }

    /// Sets the faults of the link between `a` and `b`.
    pub fn set_link(&self, a: usize, b: usize, faults: LinkFaults) {
        self.state().faults.insert(link(a, b), faults);
        self.changed();
    }

    /// Splits the peers into `groups`; links between groups are cut. Peers in no group form one
    /// more group of their own.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let sides = groups
            .iter()
            .enumerate()
            .flat_map(|(side, peers)| peers.iter().map(move |&p| (p, side + 1)))
            .collect();
        self.state().partition = Some(sides);
        self.changed();
    }

    /// Ends the partition.
    pub fn repair(&self) {
        self.state().partition = None;
        self.changed();
    }

    /// Holds the link between `a` and `b`: its bytes wait until [`SimNetwork::release`].
    pub fn hold(&self, a: usize, b: usize) {
        self.state().held.insert(link(a, b));
        self.changed();
    }

    /// Lets a held link deliver again.
    pub fn release(&self, a: usize, b: usize) {
        self.state().held.remove(&link(a, b));
        self.changed();
    }

    /// Takes a peer off the network (a crash): its connections are cut and dials fail.
    pub fn take_down(&self, peer: usize) {
        let mut state = self.state();
        state.down.insert(peer);
        state.listeners.retain(|_, (owner, _)| *owner != peer);
        drop(state);
        self.changed();
    }

    /// Makes `peer` read at most `bytes_per_second` over all its connections together (a slow
    /// reader: its link or its CPU, not each connection, is what is slow), or at full speed again
    /// with `None`. What it does not read waits in the link, whose window then holds the sender
    /// back, as a TCP receive window would.
    pub fn set_read_rate(&self, peer: usize, bytes_per_second: Option<u64>) {
        let mut state = self.state();
        state.read_until.remove(&peer);
        match bytes_per_second {
            Some(rate) => state.read_rates.insert(peer, rate.max(1)),
            None => state.read_rates.remove(&peer),
        };
        drop(state);
        self.changed();
    }

    /// Puts a crashed peer back on the network.
    pub fn bring_up(&self, peer: usize) {
        self.state().down.remove(&peer);
        self.changed();
    }

    /// What crossed the network so far.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Opens a connection from `from` to the listener on `port`.
    fn connect(&self, from: usize, port: u64) -> Result<SimStream, SimError> {
        let mut state = self.state();
        let (to, mut accept) = state
            .listeners
            .get(&port)
            .cloned()
            .ok_or(SimError::Unreachable)?;
        if !state.connected(from, to) {
            return Err(SimError::Unreachable);
        }
        // The listener sees the connection come from the dialer's listening port, as it would
        // over QUIC, or over TCP once identify has put the listening port in place of the
        // ephemeral one (libp2p cannot do that for memory addresses). A fresh port there would
        // have every observed address fail the AutoNAT probes and send reachable peers after
        // relay reservations. A peer that does not listen dials from a fresh port.
        let dial_port = match state.listen_port_of(from) {
            Some(port) => port,
            None => state.take_port(),
        };
        drop(state);
        let (a_to_b_in, a_to_b_out) = self.pipe(from, to);
        let (b_to_a_in, b_to_a_out) = self.pipe(to, from);
        let remote = SimStream {
            writer: b_to_a_in,
            reader: a_to_b_out,
            pending: Vec::new(),
            read: 0,
            remote_port: dial_port,
        };
        accept.try_send(remote).map_err(|_| SimError::Unreachable)?;
        self.traffic.connections.fetch_add(1, Ordering::Relaxed);
        Ok(SimStream {
            writer: a_to_b_in,
            reader: b_to_a_out,
            pending: Vec::new(),
            read: 0,
            remote_port: port,
        })
    }

    /// One direction of a connection: chunks written at `from` reach `to` through the link.
    fn pipe(&self, from: usize, to: usize) -> (mpsc::Sender<Chunk>, mpsc::Receiver<Vec<u8>>) {
        let (input, mut chunks) = mpsc::channel::<Chunk>(PIPE_WINDOW);
        let (mut output, delivered) = mpsc::channel::<Vec<u8>>(PIPE_WINDOW);
        let network = self.clone();
        tokio::spawn(async move {
            let mut changes = network.changes.subscribe();
            let mut last_due = Instant::now();
            while let Some((written_at, chunk)) = chunks.next().await {
                // Wait while the link is held; stop when it is cut.
                let delay = loop {
                    {
                        let mut state = network.state();
                        if !state.connected(from, to) {
                            return;
                        }
                        if !state.held.contains(&link(from, to)) {
                            let faults = state.faults(from, to);
                            let jitter = faults.jitter.mul_f64(state.rng.random::<f64>());
                            let lost = faults.loss > 0.0 && state.rng.random::<f64>() < faults.loss;
                            let retransmit = if lost {
                                RETRANSMIT_DELAY
                            } else {
                                Duration::ZERO
                            };
                            break faults.latency + jitter + retransmit;
                        }
                    }
                    if changes.changed().await.is_err() {
                        return;
                    }
                };
                // Each chunk leaves when written plus its delay, never before the one ahead of it.
                let due = (written_at + delay).max(last_due);
                last_due = due;
                let sleep = tokio::time::sleep_until(due).fuse();
                futures::pin_mut!(sleep);
                loop {
                    futures::select! {
                        () = sleep => break,
                        change = changes.changed().fuse() => {
                            if change.is_err() || !network.state().connected(from, to) {
                                return;
                            }
                        }
                    }
                }
                let len = chunk.len() as u64;
                if output.send(chunk).await.is_err() {
                    return;
                }
                network.traffic.bytes.fetch_add(len, Ordering::Relaxed);
                // A slow reader takes the chunk in at its rate, after what its other connections
                // delivered before, and only then does the next chunk of this link move.
                let read_until = network.state().read_until(to, len);
                if let Some(read_until) = read_until {
                    tokio::time::sleep_until(read_until).await;
                }
            }
        });
        (input, delivered)
    }
}

/// Why a simulated dial or listen failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No listener there, or the link to it is cut.
    #[error("unreachable in the simulated network")]
    Unreachable,
}

/// One end of a simulated connection.
pub struct SimStream {
    writer: mpsc::Sender<Chunk>,
    reader: mpsc::Receiver<Vec<u8>>,
    /// The chunk being read, and how much of it was read: an offset rather than draining the
    /// front, which would move the rest of the chunk on every small read.
    pending: Vec<u8>,
    read: usize,
    remote_port: u64,
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.read == self.pending.len() {
            match self.reader.poll_next_unpin(cx) {
                Poll::Ready(Some(chunk)) => {
                    self.pending = chunk;
                    self.read = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let start = self.read;
        let n = buf.len().min(self.pending.len() - start);
        buf[..n].copy_from_slice(&self.pending[start..start + n]);
        self.read += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let broken = || io::Error::new(io::ErrorKind::BrokenPipe, "simulated link cut");
        // An empty chunk would read as the end of the stream at the other side.
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.writer.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(broken())),
            Poll::Pending => return Poll::Pending,
        }
        self.writer
            .start_send((Instant::now(), buf.to_vec()))
            .map_err(|_| broken())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.close_channel();
        Poll::Ready(Ok(()))
    }
}

/// A listener of one peer.
struct SimListener {
    id: ListenerId,
    port: u64,
    incoming: mpsc::Receiver<SimStream>,
    announced: bool,
}

/// The transport of one peer.
struct SimTransport {
    network: SimNetwork,
    peer: usize,
    listeners: Vec<SimListener>,
}

fn memory_port(addr: &Multiaddr) -> Option<u64> {
    let mut protocols = addr.iter();
    match (protocols.next(), protocols.next()) {
        (Some(Protocol::Memory(port)), None | Some(Protocol::P2p(_))) => Some(port),
        _ => None,
    }
}

impl Transport for SimTransport {
    type Output = Box<dyn RawStream>;
    type Error = SimError;
    type ListenerUpgrade = futures::future::Ready<Result<Self::Output, SimError>>;
    type Dial = futures::future::Ready<Result<Self::Output, SimError>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<SimError>> {
        let Some(requested) = memory_port(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let mut state = self.network.state();
        let port = if requested == 0 {
            state.take_port()
        } else if state.listeners.contains_key(&requested) {
            return Err(TransportError::Other(SimError::Unreachable));
        } else {
            requested
        };
        let (accept, incoming) = mpsc::channel(ACCEPT_BACKLOG);
        state.listeners.insert(port, (self.peer, accept));
        self.listeners.push(SimListener {
            id,
            port,
            incoming,
            announced: false,
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(at) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        let listener = self.listeners.remove(at);
        self.network.state().listeners.remove(&listener.port);
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<SimError>> {
        let Some(port) = memory_port(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let stream = self.network.connect(self.peer, port);
        Ok(futures::future::ready(
            stream.map(|s| Box::new(s) as Box<dyn RawStream>),
        ))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, SimError>> {
        for listener in &mut self.listeners {
            let local_addr = Multiaddr::empty().with(Protocol::Memory(listener.port));
            if !listener.announced {
                listener.announced = true;
                return Poll::Ready(TransportEvent::NewAddress {
                    listener_id: listener.id,
                    listen_addr: local_addr,
                });
            }
            if let Poll::Ready(Some(stream)) = listener.incoming.poll_next_unpin(cx) {
                let send_back_addr = Multiaddr::empty().with(Protocol::Memory(stream.remote_port));
                return Poll::Ready(TransportEvent::Incoming {
                    listener_id: listener.id,
                    upgrade: futures::future::ready(Ok(Box::new(stream) as Box<dyn RawStream>)),
                    local_addr,
                    send_back_addr,
                });
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;

    fn transport(network: &SimNetwork, peer: usize) -> SimTransport {
        SimTransport {
            network: network.clone(),
            peer,
            listeners: Vec::new(),
        }
    }

    /// The address the listener of `to` reports an incoming connection from `from` as coming from.
    async fn seen_from(from: &mut SimTransport, to: &mut SimTransport, port: u64) -> Multiaddr {
        let dial_opts = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        let addr = Multiaddr::empty().with(Protocol::Memory(port));
        let dialled = from.dial(addr, dial_opts).expect("memory address");
        assert!(dialled.await.is_ok(), "the dial reaches the listener");
        loop {
            match futures::future::poll_fn(|cx| Pin::new(&mut *to).poll(cx)).await {
                TransportEvent::Incoming { send_back_addr, .. } => return send_back_addr,
                TransportEvent::NewAddress { .. } => continue,
                _ => panic!("unexpected transport event"),
            }
        }
    }

    #[tokio::test]
    async fn a_connection_comes_from_the_dialers_listening_port() {
        let network = SimNetwork::new(LinkFaults::default(), 1);
        let (mut a, mut b, mut bare) = (
            transport(&network, 0),
            transport(&network, 1),
            transport(&network, 2),
        );
        let listen = |t: &mut SimTransport, port: u64| {
            t.listen_on(
                ListenerId::next(),
                Multiaddr::empty().with(Protocol::Memory(port)),
            )
            .expect("a free port");
        };
        listen(&mut a, 7_001);
        listen(&mut b, 7_002);

        let from_a = seen_from(&mut a, &mut b, 7_002).await;
        assert_eq!(from_a, Multiaddr::empty().with(Protocol::Memory(7_001)));
        // What identify reports back to `a` as observed is an address `a` can be dialled at.
        let back = seen_from(&mut b, &mut a, 7_001).await;
        assert_eq!(back, Multiaddr::empty().with(Protocol::Memory(7_002)));

        let from_bare = seen_from(&mut bare, &mut b, 7_002).await;
        let Some(Protocol::Memory(port)) = from_bare.iter().next() else {
            panic!("a memory address: {from_bare}");
        };
        assert!(
            ![7_001, 7_002].contains(&port),
            "a peer that does not listen dials from a port of its own"
        );
    }
}
