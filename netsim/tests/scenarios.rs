//! The shipped scenario files are valid, and the runner plays one end to end at a small size.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{Scenario, runner};

fn scenario_files() -> Result<Vec<std::path::PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

#[test]
fn every_shipped_scenario_loads() -> Result<()> {
    let files = scenario_files()?;
    ensure!(files.len() >= 6, "scenarios missing: {files:?}");
    for file in files {
        let scenario = Scenario::load(&file)?;
        ensure!(
            !scenario.schedule().is_empty(),
            "{} does nothing",
            file.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heal_runs_small_and_converges_after_the_repair() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/partition-heal.toml");
    let mut scenario = Scenario::load(&path)?;
    scenario.peers = 8;
    scenario.duration = Duration::from_secs(8);
    scenario.sync_interval = Duration::from_secs(1);
    scenario.settle = Duration::from_secs(30);
    for fault in &mut scenario.faults {
        fault.at /= 5;
    }
    let report = runner::run(&scenario, &|_| {}).await?;
    println!("{report:#?}");
    ensure!(report.delivery.published > 0);
    ensure!(
        report.final_convergence_s.is_some(),
        "the room converged after the traffic"
    );
    ensure!(
        report.delivery.delivery_ratio == 1.0,
        "every member got every record: {}",
        report.delivery
    );
    let (what, took) = report
        .convergence_after_faults
        .first()
        .context("the repair was watched")?;
    ensure!(
        what == "repair" && took.is_some(),
        "converged after the repair"
    );
    ensure!(
        matches!(report.caught_up_after_faults.as_slice(), [(what, Some(_))] if what == "repair"),
        "every member caught up on the records of the split: {:?}",
        report.caught_up_after_faults
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_runs_small_and_each_member_keeps_its_mesh_and_a_few_contacts() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/settled.toml");
    let mut scenario = Scenario::load(&path)?;
    // More members than a mesh and its contacts, so that keeping too many would show; quiet
    // long enough for Kademlia's walks of the join to end in a debug build on two cores.
    scenario.peers = 24;
    scenario.duration = Duration::from_secs(4);
    scenario.idle_timeout = Duration::from_secs(2);
    scenario.quiet = Duration::from_secs(20);
    // Kept short: the test checks that idle CPU is measured, not what it reads.
    scenario.idle_cpu_window = Some(Duration::from_secs(6));
    scenario.settle = Duration::from_secs(30);
    let report = runner::run(&scenario, &|_| {}).await?;
    let quiet = report
        .quiet
        .context("the scenario asks for a quiet period")?;
    println!("{quiet:?}");
    let kept = quiet.peers_kept.context("members were sampled")?;
    let bound = grapevine_node::behaviour::MESH_N_HIGH as u32
        + grapevine_node::config::DEFAULT_ROUTING_CONTACTS;
    ensure!(
        kept.max <= bound,
        "a member kept {} peers, above its mesh and routing contacts ({bound})",
        kept.max
    );
    ensure!(kept.mean >= 1.0, "members kept their room mesh: {kept:?}");
    ensure!(
        quiet.idle_cpu_percent_per_node > 0.0,
        "the idle network was measured: {quiet:?}"
    );
    Ok(())
}
