//! Hostile peers cost honest ones little: under forgers and silent peers, honest members still
//! get (nearly) every honest record, no forged record is ever stored, no honest record is deleted,
//! overwritten or doubled by a forger, and honest replicas reach identical heads.

mod delivery;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{Scenario, runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_members_deliver_and_store_no_forgery_among_forgers_and_silent_peers() -> Result<()>
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/forgers.toml");
    let mut scenario = Scenario::load(&path)?;
    scenario.peers = 16;
    scenario.duration = Duration::from_secs(8);
    scenario.settle = Duration::from_secs(30);
    // The test's 16 joins leave the cores idle: no warm-up needed before the traffic.
    scenario.warmup = Duration::ZERO;
    scenario.check().map_err(anyhow::Error::msg)?;
    let report = runner::run(&scenario, &|_| {}).await?;
    println!("seed {}\n{}", report.seed, report.delivery);
    let hostile = report.hostile.context("the scenario has hostile peers")?;
    println!("{hostile:?}");
    ensure!(hostile.forgers > 0 && hostile.silent > 0, "{hostile:?}");
    ensure!(
        hostile.silent_mesh_links > 0,
        "the silent peers sat in meshes: {hostile:?}"
    );
    ensure!(
        hostile.forged_sent > 0 && hostile.invalid_sent > 0,
        "the forgers reached the room: {hostile:?}"
    );
    ensure!(
        hostile.forged_stored == 0,
        "no forged record is stored anywhere: {hostile:?}"
    );
    ensure!(
        hostile.tamper_sent > 0 && hostile.replays_sent > 0 && hostile.targets_checked > 0,
        "the forgers deleted, overwrote and replayed honest messages: {hostile:?}"
    );
    ensure!(
        hostile.targets_damaged == 0,
        "every attacked message is intact, once, at every member: {hostile:?}"
    );
    ensure!(
        report.final_convergence_s.is_some(),
        "honest replicas reach identical heads despite the forgers: {hostile:?}"
    );
    delivery::ensure_honest_delivery(report.seed, &report.delivery)?;
    Ok(())
}
