//! The raw-gossipsub baseline plays the same schedule after Grapevine, and the report holds both
//! sides and their ratios, duplicates and the payload / control split included, and the plot of
//! both.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{Baseline, Report, Scenario, plot, runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_runs_the_same_schedule_and_both_sides_are_reported() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/steady.toml");
    let mut scenario = Scenario::load(&path)?;
    scenario.peers = 8;
    scenario.duration = Duration::from_secs(4);
    scenario.warmup = Duration::from_secs(3);
    scenario.settle = Duration::from_secs(20);
    scenario.baseline = Some(Baseline::RawGossipsub);
    let report = runner::run(&scenario, &|_| {}).await?;
    ensure!(
        report.warmup_cpu_s.is_some_and(|cpu| cpu > 0.0),
        "the warm-up's CPU is reported on its own"
    );
    let baseline = report.baseline.as_ref().context("a baseline report")?;
    let ratios = report.ratios.context("ratios")?;
    println!(
        "seed {}\ngrapevine:\n{}\nbaseline:\n{}\n{ratios:?}",
        report.seed, report.delivery, baseline.delivery
    );
    ensure!(report.delivery.published > 0);
    ensure!(
        baseline.delivery.published == report.delivery.published,
        "the same number of messages on both sides"
    );
    ensure!(
        baseline.delivery.latency_per_delivery.count > 0,
        "the baseline delivered"
    );
    ensure!(
        baseline.notes.iter().any(|n| n.contains("dials")),
        "the bootstrap topology's replacement is said: {:?}",
        baseline.notes
    );
    ensure!(ratios.latency_per_delivery_p50.is_some());
    ensure!(ratios.latency_per_delivery_p99.is_some());
    ensure!(ratios.bytes_per_delivery.is_some());
    ensure!(ratios.cpu_per_delivery.is_some());
    for side in [&report.delivery, &baseline.delivery] {
        wire_split_adds_up_and_duplicates_are_counted(side)?;
    }
    ensure!(ratios.payload_bytes_per_delivery.is_some());
    ensure!(ratios.control_bytes_per_delivery.is_some());
    let json = serde_json::to_value(&report)?;
    ensure!(json["baseline"]["delivery"]["published"].is_number());
    ensure!(json["ratios"]["bytes_per_delivery"].is_number());
    for field in [
        "payload_bytes_per_delivery",
        "control_bytes_per_delivery",
        "duplicates_per_record_per_peer",
    ] {
        ensure!(json["delivery"][field].is_number(), "{field} in the JSON");
        ensure!(
            json["baseline"]["delivery"][field].is_number(),
            "{field} in the JSON"
        );
    }

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("run.svg");
    plot::write_svg(&path, &plot::series_of(&report))?;
    let svg = std::fs::read_to_string(&path)?;
    ensure!(svg.trim_start().starts_with("<svg") || svg.starts_with("<?xml"));
    ensure!(svg.contains(plot::GRAPEVINE) && svg.contains(plot::BASELINE));
    Ok(())
}

/// Payload and control make up the bytes on the wire, and with eight peers in a mesh of six
/// some gossip copies arrive more than once.
fn wire_split_adds_up_and_duplicates_are_counted(side: &Report) -> Result<()> {
    let sum = side.payload_bytes_per_delivery + side.control_bytes_per_delivery;
    ensure!(
        (sum - side.bytes_per_delivery).abs() < 1e-6 * side.bytes_per_delivery.max(1.0),
        "payload + control = wire: {side}"
    );
    ensure!(side.payload_bytes_per_delivery > 0.0, "{side}");
    ensure!(
        side.duplicates_per_record_per_peer.is_some_and(|d| d > 0.0),
        "{side}"
    );
    ensure!(
        side.curves.latencies_ms.len() == side.latency_per_delivery.count,
        "one latency per delivery"
    );
    Ok(())
}
