//! An eclipse attempt fails: a member surrounded by ten times as many sybils (subscribed,
//! grafting, forwarding nothing) as honest neighbours still receives at least 99 % of the
//! records the others publish, and nothing panics.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{Scenario, Topology, runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_among_ten_times_as_many_sybils_as_honest_neighbours_receives_the_room()
-> Result<()> {
    let panics = common::count_panics();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/eclipse.toml");
    let mut scenario = Scenario::load(&path)?;
    // The target and three honest neighbours, all linked; thirty sybils around the target.
    scenario.peers = 4;
    scenario.topology = Topology::RandomRegular { degree: 3 };
    scenario.traffic.publishers = 3;
    scenario.hostile.sybils = 30;
    scenario.duration = Duration::from_secs(20);
    scenario.settle = Duration::from_secs(30);
    scenario.check().map_err(anyhow::Error::msg)?;
    let report = runner::run(&scenario, &|_| {}).await?;
    println!("seed {}\n{}", report.seed, report.delivery);
    let hostile = report.hostile.context("the scenario has sybils")?;
    let eclipse = hostile.eclipse.context("the scenario has a target")?;
    println!("{eclipse:#?}");
    ensure!(
        panics.load(Ordering::Relaxed) == 0,
        "nothing in the process panicked"
    );
    ensure!(
        eclipse.sybils_connected >= 10 * eclipse.honest_connected && eclipse.honest_connected > 0,
        "sybils outnumber the target's honest neighbours ten to one: {eclipse:?}"
    );
    ensure!(
        eclipse.sybil_mesh_links > 0,
        "sybils sat in the target's mesh: {eclipse:?}"
    );
    ensure!(eclipse.published > 0);
    ensure!(
        eclipse.delivery_ratio >= 0.99,
        "the target received the room (seed {}): {eclipse:?}",
        report.seed
    );
    ensure!(
        report.final_convergence_s.is_some(),
        "every replica, the target's too, reaches identical heads"
    );
    Ok(())
}
