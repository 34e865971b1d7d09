//! Control-message floods (thousands of IHAVE ids, GRAFTs during an extreme PRUNE backoff,
//! thousands of subscriptions) cost the members they reach little: nothing panics, honest
//! delivery stays at or above 99 %, and every member an IHAVE or GRAFT flooder reached graylists
//! it, having asked it for no more of its made-up ids per heartbeat than the cap (each id asked
//! for is a promise kept for seconds). The memory the flood costs is printed against the same
//! run without the flooders (alone in its test binary, so the memory it reads is its own runs');
//! it is not asserted, because in one process it also counts the flooders' own buffers and the
//! bytes in flight on the simulated wire. The flooded member's own memory is measured by the
//! `flood_memory` bench, with the member in a process of its own (see SECURITY.md for the
//! figures).

mod delivery;

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{FloodKind, Hostile, Scenario, runner};
use grapevine_node::behaviour::GOSSIP_IDS_PER_PEER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooded_members_keep_delivering_and_graylist_the_ihave_and_graft_flooders() -> Result<()> {
    let panics = common::count_panics();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/control-flood.toml");
    let mut scenario = Scenario::load(&path)?;
    scenario.peers = 8;
    // Three flooders, one of each kind.
    scenario.hostile.flooders = 0.375;
    scenario.duration = Duration::from_secs(20);
    scenario.settle = Duration::from_secs(30);
    scenario.check().map_err(anyhow::Error::msg)?;
    let report = runner::run(&scenario, &|_| {}).await?;
    println!("seed {}\n{}", report.seed, report.delivery);
    // The same run without the flooders, second: memory the process kept from the first run
    // can only make this one's growth smaller, and the flood's cost below larger.
    let quiet = Scenario {
        hostile: Hostile::default(),
        ..scenario.clone()
    };
    let without = runner::run(&quiet, &|_| {}).await?;
    let cost = report.run_rss_growth_mib - without.run_rss_growth_mib;
    let hostile = report.hostile.context("the scenario has hostile peers")?;
    let flood = hostile.flood.context("the scenario has flooders")?;
    println!("{flood:#?}");
    println!(
        "memory gained after setup: {:.1} MiB with the flooders, {:.1} MiB without: {cost:.1} MiB",
        report.run_rss_growth_mib, without.run_rss_growth_mib
    );
    ensure!(
        panics.load(Ordering::Relaxed) == 0,
        "nothing in the process panicked"
    );
    ensure!(flood.flooders == 3, "{flood:?}");
    ensure!(
        flood.ihave_ids_sent >= 10_000
            && flood.prunes_sent > 0
            && flood.grafts_sent > 0
            && flood.subscriptions_sent >= 2_000,
        "every kind of flood went out: {flood:?}"
    );
    // Each id asked for is a promise the member keeps: the member asks a flooder for at most
    // its cap per heartbeat, twice that in a window of the flooder's straddling two of its own.
    ensure!(
        flood.iwant_ids_received > 0
            && flood.most_iwant_ids_per_heartbeat <= 2 * GOSSIP_IDS_PER_PEER as u64,
        "the members asked the IHAVE flooder for a bounded number of its ids: {flood:?}"
    );
    for kind in &flood.scores {
        ensure!(
            kind.pairs == scenario.hostile.links,
            "the {:?} flooder reached its members: {kind:?}",
            kind.kind
        );
        if kind.kind != FloodKind::Subscribe {
            ensure!(
                kind.graylisted == kind.pairs,
                "every member graylists the {:?} flooder: {kind:?}",
                kind.kind
            );
        }
    }
    delivery::ensure_honest_delivery(report.seed, &report.delivery)?;
    ensure!(
        report.final_convergence_s.is_some(),
        "honest replicas reach identical heads under the flood"
    );
    Ok(())
}
