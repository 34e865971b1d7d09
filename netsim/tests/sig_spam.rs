//! Invalid-signature spam, at a small size: bare peers (a quarter as many as the members) flood
//! records whose signature is wrong at 100 records/s each. Honest members still deliver; every
//! spammer is graylisted by each of its honest neighbours within 30 s, and after that none of its
//! messages costs a signature check. The honest p99 latency is printed beside the same run's
//! without the spammers but not asserted: on the shared 2-core machine it swung between runs far
//! beyond the 2× criterion either way (with / without: 3,230 / 1,690 ms, 1,336 / 6,932 ms,
//! 5,380 / 1,340 ms at load averages of 3 to 10), so it is reported, not tested.

mod delivery;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{Hostile, Scenario, runner};

/// The hardening issue's bound on the time until a spammer is graylisted.
const GRAYLISTED_WITHIN_S: f64 = 30.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_signature_spammers_are_graylisted_and_then_cost_no_signature_check() -> Result<()>
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/sig-spam.toml");
    let mut scenario = Scenario::load(&path)?;
    scenario.peers = 12;
    scenario.duration = Duration::from_secs(12);
    scenario.settle = Duration::from_secs(30);
    // The test's 12 joins leave the cores idle: no warm-up needed before the traffic.
    scenario.warmup = Duration::ZERO;
    scenario.traffic.publishers = 3;
    scenario.traffic.rate = 3.0;
    scenario.hostile.links = 4;
    scenario.check().map_err(anyhow::Error::msg)?;
    let without_spammers = Scenario {
        hostile: Hostile::default(),
        ..scenario.clone()
    };
    let quiet = runner::run(&without_spammers, &|_| {}).await?;
    let report = runner::run(&scenario, &|_| {}).await?;
    println!(
        "seed {}\nwithout spammers:\n{}\nwith spammers:\n{}",
        report.seed, quiet.delivery, report.delivery
    );
    let hostile = report.hostile.context("the scenario has hostile peers")?;
    for spammer in &hostile.sig_spammers {
        println!("{spammer:?}");
    }
    ensure!(hostile.sig_spammers.len() == 3, "{hostile:?}");
    for spammer in &hostile.sig_spammers {
        ensure!(
            spammer.sent > 0 && spammer.neighbours > 0 && spammer.checks_before > 0,
            "the spammer reached honest members and cost them signature checks: {spammer:?}"
        );
        ensure!(
            spammer
                .graylisted_after_s
                .is_some_and(|s| s <= GRAYLISTED_WITHIN_S),
            "every neighbour graylisted the spammer within {GRAYLISTED_WITHIN_S} s: {spammer:?}"
        );
        ensure!(
            spammer.checks_after == 0,
            "no signature was checked for the spammer once graylisted: {spammer:?}"
        );
    }
    delivery::ensure_honest_delivery(report.seed, &report.delivery)?;
    println!(
        "honest p99 latency per delivery: {:.0} ms with the spammers, {:.0} ms without",
        report.delivery.latency_per_delivery.p99_ms, quiet.delivery.latency_per_delivery.p99_ms
    );
    Ok(())
}
