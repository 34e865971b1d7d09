//! Scenarios as data: a TOML file (`netsim/scenarios/*.toml`) or code describes the peers, the
//! topology, the links, the traffic and the faults over time; [`Scenario::schedule`] turns it,
//! with its seed, into the exact list of steps a run performs.

use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::hostile::Hostile;
use crate::network::LinkFaults;
use crate::sim::Topology;

/// A scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("scenario {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// Its name, for the report.
    pub name: String,
    /// Seed of every random choice (topology, traffic, faults, link jitter and loss).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Room members.
    pub peers: usize,
    /// How long traffic runs (faults may be scheduled within it).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// How peers find each other.
    #[serde(default = "default_topology")]
    pub topology: Topology,
    /// Faults of every link.
    #[serde(default)]
    pub link: LinkFaults,
    /// Anti-entropy interval of the nodes.
    #[serde(default = "default_sync_interval", with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Records posted by peer 0 before the run starts (history a late joiner must fetch).
    #[serde(default)]
    pub preload: usize,
    /// Peers (the last ones) that join the room only when a `join` fault says so.
    #[serde(default)]
    pub late_joiners: usize,
    /// The messages published during the run.
    #[serde(default)]
    pub traffic: Traffic,
    /// Faults and membership changes over time.
    #[serde(default)]
    pub faults: Vec<TimedFault>,
    /// Where the peers' stores go; memory-backed tmpfs by default (see [`crate::SimBuilder::dir`]),
    /// a directory on disk to measure with real fsyncs.
    #[serde(default)]
    pub store_dir: Option<std::path::PathBuf>,
    /// How long the network runs before the schedule starts (both Grapevine's and the
    /// baseline's), so that a scenario about a steady state does not measure the joins: peers
    /// discovering each other, Kademlia's walks and the first syncs. The CPU it takes is
    /// reported on its own; zero starts the schedule at once.
    #[serde(default, with = "humantime_serde")]
    pub warmup: Duration,
    /// How long to wait for convergence after the traffic stops.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Idle connection timeout of the members: how long a connection that no room mesh needs
    /// stays open (the node's default unless set).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// After convergence, how long the room then stays quiet before the run counts the peers
    /// each member keeps (connected at every sample of three idle timeouts) and the CPU an idle
    /// node costs; zero measures neither.
    #[serde(default, with = "humantime_serde")]
    pub quiet: Duration,
    /// How long the quiet network's CPU is measured, from the start of the window that counts
    /// the peers kept: by default that window stretched to a whole period of Kademlia's refresh
    /// ([`grapevine_node::behaviour::KAD_BOOTSTRAP_INTERVAL`]), so every node's refresh falls in
    /// it once. A shorter one can miss the refreshes altogether and read low.
    #[serde(default, with = "humantime_serde::option")]
    pub idle_cpu_window: Option<Duration>,
    /// Hostile peers: spammers, forgers, silent peers.
    #[serde(default)]
    pub hostile: Hostile,
    /// A baseline to run after Grapevine, on the same schedule, for side-by-side figures.
    #[serde(default)]
    pub baseline: Option<Baseline>,
}

/// Who publishes, how often and how much.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// How many peers publish (the first ones, in a seeded random order).
    pub publishers: usize,
    /// Records per second, all publishers together.
    pub rate: f64,
    /// Message size in bytes.
    pub size: usize,
    /// Instead of a steady rate, this many records at once at the start.
    #[serde(default)]
    pub burst: usize,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            publishers: 1,
            rate: 1.0,
            size: 200,
            burst: 0,
        }
    }
}

/// A fault at a moment of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// `flatten` and `deny_unknown_fields` do not mix in serde; `Fault` checks its own fields.
pub struct TimedFault {
    /// When, from the start of the run.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// What.
    #[serde(flatten)]
    pub fault: Fault,
}

/// The fault vocabulary (turmoil's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Fault {
    /// Split the members into `groups` equal groups.
    Partition {
        /// How many groups.
        groups: usize,
    },
    /// End the partition.
    Repair,
    /// Crash a peer.
    Crash {
        /// Its index.
        peer: usize,
    },
    /// Restart a crashed peer from its store.
    Restart {
        /// Its index.
        peer: usize,
    },
    /// Crash this share of the peers, spread over `over`, each restarted after `down`.
    Churn {
        /// Share of peers (0 to 1).
        fraction: f64,
        /// Time over which the crashes are spread.
        #[serde(with = "humantime_serde")]
        over: Duration,
        /// How long each stays down.
        #[serde(with = "humantime_serde")]
        down: Duration,
    },
    /// Hold the link between two peers.
    Hold {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
    },
    /// Release a held link.
    Release {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
    },
    /// The late joiners join the room.
    Join,
}

/// One step of a run, at its time.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Peer publishes a record.
    Publish(usize),
    /// A spammer posts a record (valid, unmeasured).
    Spam(usize),
    /// Split the members into these groups.
    Partition(Vec<Vec<usize>>),
    /// End the partition.
    Repair,
    /// Crash a peer.
    Crash(usize),
    /// Restart a peer.
    Restart(usize),
    /// Hold a link.
    Hold(usize, usize),
    /// Release a link.
    Release(usize, usize),
    /// A peer joins the room.
    Join(usize),
}

fn default_seed() -> u64 {
    1
}
fn default_topology() -> Topology {
    Topology::Bootstrap { nodes: 1 }
}
fn default_sync_interval() -> Duration {
    grapevine_node::config::DEFAULT_SYNC_INTERVAL
}
fn default_idle_timeout() -> Duration {
    grapevine_node::config::DEFAULT_IDLE_CONNECTION_TIMEOUT
}

fn default_settle() -> Duration {
    Duration::from_secs(60)
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: name.clone(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| ScenarioError::Invalid {
            path: name.clone(),
            message: e.message().to_string(),
        })?;
        scenario.check().map_err(|message| ScenarioError::Invalid {
            path: name,
            message,
        })?;
        Ok(scenario)
    }

    /// Checks the values make sense together.
    pub fn check(&self) -> Result<(), String> {
        if self.peers == 0 {
            return Err("peers must be at least 1".into());
        }
        if self.late_joiners >= self.peers {
            return Err("late-joiners must leave at least one peer in the room".into());
        }
        self.hostile.check()?;
        let in_room = self.peers - self.late_joiners;
        let unmeasured = self.hostile.unmeasured_peers(self.peers, in_room);
        if unmeasured.len() >= in_room {
            return Err(
                "hostile spammers and slow readers leave no honest peer in the room".into(),
            );
        }
        let target = self.hostile.eclipse_target();
        if let Some(target) = target
            && (target >= in_room || unmeasured.contains(&target))
        {
            return Err(format!(
                "the sybils' target {target} must be an honest member in the room from the start"
            ));
        }
        if self.traffic.publishers > in_room - unmeasured.len() - usize::from(target.is_some()) {
            return Err(
                "more publishers than honest peers in the room at the start (the sybils' target \
                 does not publish)"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.link.loss) {
            return Err("link loss must be between 0 and 1".into());
        }
        for timed in &self.faults {
            match timed.fault {
                Fault::Crash { peer }
                | Fault::Restart { peer }
                | Fault::Hold { a: peer, .. }
                | Fault::Release { a: peer, .. }
                    if peer >= self.peers =>
                {
                    return Err(format!(
                        "fault at {:?} names peer {peer} of {}",
                        timed.at, self.peers
                    ));
                }
                Fault::Partition { groups } if groups < 2 => {
                    return Err("a partition needs at least 2 groups".into());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every step of the run with its time, sorted; the same seed gives the same steps.
    pub fn schedule(&self) -> Vec<(Duration, Step)> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5eed_5eed);
        let mut steps = Vec::new();
        let in_room = self.peers - self.late_joiners;
        let spammers = self.hostile.spammer_peers(self.peers, in_room);
        let unmeasured = self.hostile.unmeasured_peers(self.peers, in_room);
        let target = self.hostile.eclipse_target();
        let mut order: Vec<usize> = (0..in_room)
            .filter(|p| !unmeasured.contains(p) && target != Some(*p))
            .collect();
        order.shuffle(&mut rng);
        let publishers = &order[..self.traffic.publishers.max(1).min(order.len())];
        if self.traffic.burst > 0 {
            for i in 0..self.traffic.burst {
                steps.push((
                    Duration::ZERO,
                    Step::Publish(publishers[i % publishers.len()]),
                ));
            }
        } else if self.traffic.rate > 0.0 {
            let gap = Duration::from_secs_f64(1.0 / self.traffic.rate);
            let mut at = gap / 2;
            let mut i = 0;
            while at < self.duration {
                steps.push((at, Step::Publish(publishers[i % publishers.len()])));
                at += gap;
                i += 1;
            }
        }
        if self.hostile.spam_rate > 0.0 {
            let gap = Duration::from_secs_f64(1.0 / self.hostile.spam_rate);
            let count = spammers.len();
            for (j, spammer) in spammers.enumerate() {
                // Spammers take turns within each gap.
                let mut at = gap.mul_f64((j as f64 + 0.5) / count as f64);
                while at < self.duration {
                    steps.push((at, Step::Spam(spammer)));
                    at += gap;
                }
            }
        }
        for timed in &self.faults {
            match &timed.fault {
                Fault::Partition { groups } => {
                    let mut members: Vec<usize> = (0..self.peers).collect();
                    members.shuffle(&mut rng);
                    let groups: Vec<Vec<usize>> = (0..*groups)
                        .map(|g| members.iter().copied().skip(g).step_by(*groups).collect())
                        .collect();
                    steps.push((timed.at, Step::Partition(groups)));
                }
                Fault::Repair => steps.push((timed.at, Step::Repair)),
                Fault::Crash { peer } => steps.push((timed.at, Step::Crash(*peer))),
                Fault::Restart { peer } => steps.push((timed.at, Step::Restart(*peer))),
                Fault::Hold { a, b } => steps.push((timed.at, Step::Hold(*a, *b))),
                Fault::Release { a, b } => steps.push((timed.at, Step::Release(*a, *b))),
                Fault::Join => {
                    for peer in in_room..self.peers {
                        steps.push((timed.at, Step::Join(peer)));
                    }
                }
                Fault::Churn {
                    fraction,
                    over,
                    down,
                } => {
                    let count = ((self.peers as f64) * fraction).round() as usize;
                    // Publishers keep publishing: churn the others.
                    let mut candidates: Vec<usize> =
                        (0..in_room).filter(|p| !publishers.contains(p)).collect();
                    candidates.shuffle(&mut rng);
                    for &peer in candidates.iter().take(count) {
                        let at = timed.at + over.mul_f64(rng.random::<f64>());
                        steps.push((at, Step::Crash(peer)));
                        steps.push((at + *down, Step::Restart(peer)));
                    }
                }
            }
        }
        steps.sort_by_key(|(at, _)| *at);
        steps
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn scenario(text: &str) -> Scenario {
        let scenario: Scenario = toml::from_str(text).unwrap();
        scenario.check().unwrap();
        scenario
    }

    const BASE: &str = r#"
        name = "t"
        seed = 3
        peers = 10
        duration = "10s"
        [traffic]
        publishers = 2
        rate = 4.0
        size = 100
        [[faults]]
        at = "2s"
        action = "partition"
        groups = 2
        [[faults]]
        at = "5s"
        action = "repair"
        [[faults]]
        at = "1s"
        action = "churn"
        fraction = 0.2
        over = "4s"
        down = "2s"
    "#;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = scenario(BASE).schedule();
        let b = scenario(BASE).schedule();
        assert_eq!(a, b);
        let publishes = a
            .iter()
            .filter(|(_, s)| matches!(s, Step::Publish(_)))
            .count();
        assert_eq!(publishes, 40);
        let crashes = a
            .iter()
            .filter(|(_, s)| matches!(s, Step::Crash(_)))
            .count();
        assert_eq!(crashes, 2);
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
        let other = Scenario {
            seed: 4,
            ..scenario(BASE)
        }
        .schedule();
        assert_ne!(a, other);
    }

    #[test]
    fn spammers_post_at_their_rate_and_never_publish_measured_records() {
        let mut spam = scenario(BASE);
        spam.faults.clear();
        spam.hostile = Hostile {
            spammers: 0.2,
            spam_rate: 3.0,
            ..Hostile::default()
        };
        let spammers = spam.hostile.spammer_peers(spam.peers, spam.peers);
        assert_eq!(spammers, 8..10);
        let steps = spam.schedule();
        let spam_steps: Vec<usize> = steps
            .iter()
            .filter_map(|(_, s)| match s {
                Step::Spam(p) => Some(*p),
                _ => None,
            })
            .collect();
        // 3 records/s each, for 10 s, from both spammers.
        assert_eq!(spam_steps.len(), 60);
        assert!(spam_steps.iter().all(|p| spammers.contains(p)));
        assert!(steps.iter().all(|(_, s)| match s {
            Step::Publish(p) => !spammers.contains(p),
            _ => true,
        }));
        spam.hostile.spammers = 1.0;
        assert!(spam.check().is_err(), "no honest peer left");
    }

    #[test]
    fn the_sybils_target_never_publishes_and_must_be_an_honest_member() {
        let mut eclipse = scenario(BASE);
        eclipse.faults.clear();
        eclipse.traffic.publishers = 9;
        eclipse.hostile = Hostile {
            sybils: 30,
            target: 4,
            ..Hostile::default()
        };
        eclipse.check().unwrap();
        let publishers: HashSet<usize> = eclipse
            .schedule()
            .iter()
            .filter_map(|(_, s)| match s {
                Step::Publish(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(publishers.len(), 9);
        assert!(!publishers.contains(&4));
        eclipse.traffic.publishers = 10;
        assert!(eclipse.check().is_err(), "the target is no publisher");
        eclipse.traffic.publishers = 1;
        eclipse.hostile.target = 10;
        assert!(eclipse.check().is_err(), "no such member");
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let mut bad = scenario(BASE);
        bad.late_joiners = 10;
        assert!(bad.check().is_err());
        let mut bad = scenario(BASE);
        bad.faults.push(TimedFault {
            at: Duration::ZERO,
            fault: Fault::Crash { peer: 99 },
        });
        assert!(bad.check().is_err());
        assert!(toml::from_str::<Scenario>("name = 1").is_err());
    }
}
