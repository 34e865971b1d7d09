//! Runs a [`Scenario`] on a [`Sim`]: builds the peers, plays the schedule on time, watches
//! convergence after each repair and restart, and measures the process's CPU and memory.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::baseline::{self, BaselineReport, Ratios};
use crate::hostile::HostileReport;
use crate::metrics::{ConnectionsPerNode, Report};
use crate::resources::{self, Reading, Usage};
use crate::scenario::{Scenario, Step};
use crate::sim::{Sim, SimError};

/// How often convergence is checked while a repair or restart waits for it.
const CONVERGENCE_CHECK: Duration = Duration::from_millis(250);
/// Longest wait for a preloaded history to reach every member before the run.
const PRELOAD_SPREAD: Duration = Duration::from_secs(600);
/// Room members a peer must see for the mesh to count as formed (gossipsub's `mesh_n_low`).
const MESH_MEMBERS: usize = grapevine_node::behaviour::MESH_N_LOW;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// The seed used.
    pub seed: u64,
    /// Room members.
    pub peers: usize,
    /// Deliveries and latencies.
    pub delivery: Report,
    /// Time from the network's start (the warm-up's, if any) until every member saw enough room
    /// members for a mesh.
    pub mesh_formation_s: Option<f64>,
    /// For each repair or restart: what it was, and seconds until identical heads everywhere.
    pub convergence_after_faults: Vec<(String, Option<f64>)>,
    /// For each repair, restart or join of a history: what it was, and seconds until every
    /// member (after a repair) or the restarted peer held every record published before it, or
    /// the joiner held the preloaded history; unlike identical heads, this does not wait for
    /// the traffic to stop.
    pub caught_up_after_faults: Vec<(String, Option<f64>)>,
    /// Seconds from the end of the traffic until identical heads everywhere.
    pub final_convergence_s: Option<f64>,
    /// CPU from the start of the schedule (after any warm-up) and memory of the whole run.
    pub usage: Usage,
    /// CPU seconds the warm-up took (building the network and spreading a preloaded history
    /// included), when there was one.
    pub warmup_cpu_s: Option<f64>,
    /// Seconds from the end of the preload until every member in the room held the preloaded
    /// history (posted at one member, fetched by the others by gossip and sync), when the
    /// scenario has one: part of the warm-up, not of the run.
    pub preload_spread_s: Option<f64>,
    /// Resident memory (MiB) the process gained from the start of the traffic (every node
    /// built and in its room, hostile peers started) to its highest reading during the traffic
    /// and the wait for convergence, read every quarter second: what the run cost after setup.
    pub run_rss_growth_mib: f64,
    /// Running members that saw no other room member at the end: cut off from the room.
    pub isolated: Vec<usize>,
    /// Steps that ran late (the process could not keep up), and the worst delay in ms.
    pub late_steps: usize,
    /// The worst delay of a step, in ms.
    pub worst_step_delay_ms: f64,
    /// What the hostile peers did, when the scenario has any.
    pub hostile: Option<HostileReport>,
    /// The settled network after a quiet period, when the scenario asks for one.
    pub quiet: Option<Quiet>,
    /// The baseline run, when the scenario asks for one.
    pub baseline: Option<BaselineReport>,
    /// Grapevine over the baseline, when there is one.
    pub ratios: Option<Ratios>,
}

/// A network left quiet (no traffic) after convergence: what each member keeps and costs.
#[derive(Debug, Clone, Serialize)]
pub struct Quiet {
    /// Seconds the network was quiet before the window.
    pub after_s: f64,
    /// Seconds of the window over which peers kept were counted.
    pub window_s: f64,
    /// Peers each honest member was connected to at every sample of the window.
    pub peers_kept: Option<ConnectionsPerNode>,
    /// Seconds over which idle CPU was measured, from the start of the same window.
    pub cpu_window_s: f64,
    /// The process's CPU over the CPU window, per node (members and bootstrap nodes), in
    /// percent of one core; it includes the sampling itself and the simulated network.
    pub idle_cpu_percent_per_node: f64,
}

/// Leaves the network quiet for the scenario's `quiet`, then counts over three idle timeouts
/// the peers each member keeps, and measures the CPU the idle network costs over the scenario's
/// CPU window (see [`Scenario::idle_cpu_window`]).
async fn measure_quiet(sim: &Sim, scenario: &Scenario) -> Result<Quiet, SimError> {
    tokio::time::sleep(scenario.quiet).await;
    let window = scenario.idle_timeout * 3;
    let cpu_window = scenario
        .idle_cpu_window
        .unwrap_or(window.max(grapevine_node::behaviour::KAD_BOOTSTRAP_INTERVAL));
    let start = Instant::now();
    let before = Usage::now();
    let kept = sim.peers_kept(window).await?;
    tokio::time::sleep_until(start + cpu_window).await;
    let usage = Usage::now().since(&before, 0, 0);
    let nodes = scenario.peers + scenario.topology.infrastructure_nodes();
    Ok(Quiet {
        after_s: scenario.quiet.as_secs_f64(),
        window_s: window.as_secs_f64(),
        peers_kept: ConnectionsPerNode::of(&kept),
        cpu_window_s: start.elapsed().as_secs_f64(),
        idle_cpu_percent_per_node: usage.cpu_load * 100.0 / nodes.max(1) as f64,
    })
}

/// The run's usage: CPU counted from `cpu_from` (the end of the warm-up, or `before`), memory
/// from `before` (the network's own, built during the warm-up, counts).
pub(crate) fn steady_usage(
    before: &Reading,
    cpu_from: &Reading,
    peers: usize,
    deliveries: u64,
) -> Usage {
    let now = Usage::now();
    let whole = now.since(before, peers, deliveries);
    Usage {
        peak_rss_mib: whole.peak_rss_mib,
        rss_per_peer_mib: whole.rss_per_peer_mib,
        ..now.since(cpu_from, peers, deliveries)
    }
}

/// Who must catch up after a step, and on what.
#[derive(Debug, Clone, Copy)]
enum CatchUp {
    /// Every member, on every record published before (a repair).
    Everyone,
    /// One peer, on every record published before (a restart).
    Peer(usize),
    /// A peer that joined, on the preloaded history (its sync exchanges report the count).
    History(usize),
}

/// Called as the run goes, with the time played so far (for a progress bar).
pub type Progress<'a> = &'a (dyn Fn(Duration) + Sync);

/// Runs `scenario`, then its baseline if it has one; `progress` hears the run's time as it
/// advances (the baseline's after the scenario's `duration`).
pub async fn run(scenario: &Scenario, progress: Progress<'_>) -> Result<RunReport, SimError> {
    let before: Reading = Usage::now();
    let mut builder = Sim::builder()
        .peers(scenario.peers)
        .seed(scenario.seed)
        .topology(scenario.topology.clone())
        .link_faults(scenario.link)
        .sync_interval(scenario.sync_interval)
        .idle_timeout(scenario.idle_timeout)
        .late_joiners(scenario.late_joiners)
        .hostile(scenario.hostile);
    if let Some(dir) = &scenario.store_dir {
        builder = builder.dir(dir.clone());
    }
    let mut sim = builder.build().await?;
    let in_room = scenario.peers - scenario.late_joiners;
    let mut mesh_formation = None;
    let network_up = Instant::now();
    let mut cpu_from = before;
    let mut warmup_cpu_s = None;
    let mut preload_spread_s = None;
    if scenario.preload > 0 {
        sim.preload(0, scenario.preload, scenario.traffic.size)
            .await?;
        // The history is the room's before the run: every member holds it before the
        // schedule starts, and fetching it is not part of what the run measures.
        let posted = Instant::now();
        while !sim.converged().await? {
            if posted.elapsed() > PRELOAD_SPREAD {
                return Err(SimError::NotConverged(PRELOAD_SPREAD));
            }
            watch_mesh(&sim, in_room, network_up, &mut mesh_formation);
            tokio::time::sleep(CONVERGENCE_CHECK).await;
        }
        preload_spread_s = Some(posted.elapsed().as_secs_f64());
    }
    if !scenario.warmup.is_zero() || scenario.preload > 0 {
        while network_up.elapsed() < scenario.warmup {
            watch_mesh(&sim, in_room, network_up, &mut mesh_formation);
            tokio::time::sleep(CONVERGENCE_CHECK).await;
        }
        cpu_from = Usage::now();
        warmup_cpu_s = Some(cpu_from.since(&before, 0, 0).cpu_seconds);
        sim.measure_from_now().await?;
    }
    sim.start_slow_reading();
    let start = Instant::now();
    let start_rss = resources::rss_mib();
    let mut highest_rss = start_rss;
    let schedule = scenario.schedule();
    let mut waiting: Option<(String, Instant)> = None;
    let mut convergence_after_faults = Vec::new();
    let mut catch_ups: Vec<(String, CatchUp, Instant)> = Vec::new();
    let (mut late_steps, mut worst_delay) = (0, Duration::ZERO);
    let end = start + scenario.duration;
    let mut steps = schedule.into_iter().peekable();
    loop {
        let next_at = steps.peek().map_or(end, |(at, _)| start + *at);
        // Between steps: watch the mesh form and a pending convergence complete.
        while Instant::now() < next_at {
            watch_mesh(&sim, in_room, network_up, &mut mesh_formation);
            if let Some((what, since)) = &waiting
                && sim.converged().await?
            {
                convergence_after_faults.push((what.clone(), Some(since.elapsed().as_secs_f64())));
                waiting = None;
            }
            progress(start.elapsed().min(scenario.duration));
            highest_rss = highest_rss.max(resources::rss_mib());
            let nap = CONVERGENCE_CHECK.min(next_at.saturating_duration_since(Instant::now()));
            tokio::time::sleep(nap).await;
        }
        let Some((at, step)) = steps.next() else {
            break;
        };
        // A run behind its schedule never waits between steps, so the mesh is watched here too.
        watch_mesh(&sim, in_room, network_up, &mut mesh_formation);
        let delay = start.elapsed().saturating_sub(at);
        if delay > CONVERGENCE_CHECK {
            late_steps += 1;
        }
        worst_delay = worst_delay.max(delay);
        let converging = match &step {
            Step::Repair => Some("repair".to_string()),
            Step::Restart(peer) => Some(format!("restart of peer {peer}")),
            _ => None,
        };
        let catching_up = match &step {
            Step::Repair => Some(("repair".to_string(), CatchUp::Everyone)),
            Step::Restart(peer) => Some((format!("restart of peer {peer}"), CatchUp::Peer(*peer))),
            Step::Join(peer) if scenario.preload > 0 => Some((
                format!(
                    "join of peer {peer} ({} records to fetch)",
                    scenario.preload
                ),
                CatchUp::History(*peer),
            )),
            _ => None,
        };
        if !matches!(step, Step::Publish(_) | Step::Spam(_)) {
            tracing::info!(?step, "fault played");
        }
        play(&mut sim, step, scenario.traffic.size).await?;
        if let Some((what, peer)) = catching_up {
            catch_ups.push((what, peer, Instant::now()));
        }
        if let Some(what) = converging {
            if let Some((previous, _)) = waiting.take() {
                convergence_after_faults.push((previous, None));
            }
            waiting = Some((what, Instant::now()));
        }
    }
    progress(scenario.duration);
    let final_convergence = sim.wait_converged(scenario.settle).await.ok();
    highest_rss = highest_rss.max(resources::rss_mib());
    if let Some((what, since)) = waiting {
        let done = final_convergence.map(|_| since.elapsed().as_secs_f64());
        convergence_after_faults.push((what, done));
    }
    let hostile = if scenario.hostile.is_none() {
        None
    } else {
        Some(sim.hostile_report().await?)
    };
    let caught_up_after_faults = catch_ups
        .into_iter()
        .map(|(what, who, at)| {
            let took = match who {
                CatchUp::Everyone => sim.caught_up_after(at, None),
                CatchUp::Peer(peer) => sim.caught_up_after(at, Some(&[peer])),
                CatchUp::History(peer) => sim.synced_history_after(peer, at, scenario.preload),
            };
            (what, took.map(|d| d.as_secs_f64()))
        })
        .collect();
    let mut delivery = sim.report().await?;
    delivery.convergence = final_convergence;
    let usage = steady_usage(
        &before,
        &cpu_from,
        scenario.peers,
        delivery_count(&delivery),
    );
    let quiet = if scenario.quiet.is_zero() {
        None
    } else {
        Some(measure_quiet(&sim, scenario).await?)
    };
    let isolated = isolated(&sim, in_room);
    sim.shutdown().await?;
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        peers: scenario.peers,
        delivery,
        mesh_formation_s: mesh_formation.map(|d| d.as_secs_f64()),
        convergence_after_faults,
        caught_up_after_faults,
        final_convergence_s: final_convergence.map(|d| d.as_secs_f64()),
        usage,
        warmup_cpu_s,
        preload_spread_s,
        run_rss_growth_mib: highest_rss - start_rss,
        isolated,
        late_steps,
        worst_step_delay_ms: worst_delay.as_secs_f64() * 1000.0,
        hostile,
        quiet,
        baseline: None,
        ratios: None,
    };
    if scenario.baseline.is_some() {
        let offset = scenario.duration;
        let baseline = baseline::run(scenario, &|played| progress(offset + played)).await?;
        report.ratios = Some(Ratios::of(&report.delivery, &report.usage, &baseline));
        report.baseline = Some(baseline);
    }
    Ok(report)
}

/// Carries out one step.
async fn play(sim: &mut Sim, step: Step, size: usize) -> Result<(), SimError> {
    match step {
        Step::Publish(peer) => {
            // A crashed publisher publishes nothing; that is the fault, not an error.
            if sim.is_running(peer) {
                sim.publish(peer, size).await?;
            }
        }
        Step::Spam(peer) => {
            if sim.is_running(peer) {
                sim.spam(peer, size).await?;
            }
        }
        Step::Partition(groups) => sim.partition(&groups),
        Step::Repair => sim.repair(),
        Step::Crash(peer) => {
            if sim.is_running(peer) {
                sim.crash(peer).await?;
            }
        }
        Step::Restart(peer) => sim.restart(peer).await?,
        Step::Hold(a, b) => sim.network().hold(a, b),
        Step::Release(a, b) => sim.network().release(a, b),
        Step::Join(peer) => sim.join(peer).await?,
    }
    Ok(())
}

/// Running members (of the first `in_room`) that see no other room member.
fn isolated(sim: &Sim, in_room: usize) -> Vec<usize> {
    let counts = sim.room_peer_counts();
    (0..in_room)
        .filter(|&p| sim.is_running(p) && counts.get(&p).is_none_or(|&c| c == 0))
        .collect()
}

/// Sets `formation` to the time since `network_up` at the first check that finds the room's
/// mesh formed.
fn watch_mesh(sim: &Sim, in_room: usize, network_up: Instant, formation: &mut Option<Duration>) {
    if formation.is_none() && mesh_formed(sim, in_room) {
        *formation = Some(network_up.elapsed());
    }
}

/// Whether every running member sees enough room members for a gossipsub mesh.
fn mesh_formed(sim: &Sim, in_room: usize) -> bool {
    let needed = MESH_MEMBERS.min(in_room.saturating_sub(1));
    let counts = sim.room_peer_counts();
    (0..in_room)
        .filter(|&p| sim.is_running(p))
        .all(|p| counts.get(&p).is_some_and(|&c| c >= needed))
}

fn delivery_count(report: &Report) -> u64 {
    report.latency_per_delivery.count as u64
}
