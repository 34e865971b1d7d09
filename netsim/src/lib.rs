//! `netsim`: many real Grapevine nodes in one process on a simulated network, with faults,
//! and the measurements that say whether a room delivers and converges.
//!
//! # Layout
//! - [`network`]: the simulated links (a libp2p transport with latency, jitter, loss,
//!   partitions, held links and crashes), given to each node as its custom transport.
//! - [`sim`]: [`Sim`], built by [`SimBuilder`]: nodes in a topology, driven by code.
//! - [`metrics`]: when each record was published and received, gossipsub's counts of duplicates
//!   and gossip bytes, and the [`Report`].
//! - [`scenario`]: scenarios as TOML or code, and the seeded schedule of steps they give.
//! - [`runner`]: plays a scenario on a simulation and gathers the [`runner::RunReport`].
//! - [`resources`]: the process's CPU time and memory.
//! - [`hostile`]: spammers, forgers, silent peers, sybils around one member and flooders, and
//!   what they achieved.
//! - [`sig_spam`]: invalid-signature spammers, and the watch of when their neighbours graylist
//!   them and what their spam costs in signature checks.
//! - [`flood`]: control-message flooders, which write gossipsub RPCs by hand on raw streams.
//! - [`baseline`]: the same scenario on plain gossipsub swarms, for side-by-side figures.
//! - [`plot`]: the SVG picture of a run: latency distribution and convergence over time.
//! - `gossip`: bare swarms on the simulated network, for the hostile peers and the baseline.

pub mod baseline;
pub mod flood;
mod gossip;
pub mod hostile;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod resources;
pub mod runner;
pub mod scenario;
pub mod sig_spam;
pub mod sim;

pub use baseline::{Baseline, BaselineReport, Ratios};
pub use flood::{Flood, FloodKind, FloodReport, Flooders, KindScores};
pub use gossip::GossipError;
pub use hostile::{EclipseReport, Hostile, HostileReport};
pub use metrics::{ConnectionsPerNode, Percentiles, Report};
pub use network::{LinkFaults, SimNetwork};
pub use scenario::{Fault, Scenario, Step, TimedFault, Traffic};
pub use sig_spam::SigSpammerReport;
pub use sim::{ROOM, Sim, SimBuilder, SimError, Topology};
