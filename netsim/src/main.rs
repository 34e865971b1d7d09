//! `grapevine-netsim`: runs a scenario file and prints what it measured.
//!
//! `cargo run --release -p grapevine-netsim -- run netsim/scenarios/partition-heal.toml`
//!
//! `--baseline raw-gossipsub` plays the same schedule again on plain gossipsub swarms and prints
//! Grapevine / baseline ratios; `--plot FILE.svg` draws the latency distribution and the
//! convergence over time.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use grapevine_netsim::plot;
use grapevine_netsim::runner::{self, RunReport};
use grapevine_netsim::{Baseline, EclipseReport, FloodReport, Hostile, Scenario, SigSpammerReport};
use grapevine_netsim::{BaselineReport, Ratios};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator: a hundred nodes in one process allocate and free small
/// buffers all the time, and glibc's malloc and free took about a fifth of the CPU of `steady`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Many real Grapevine peers in one process, with faults, measured.
#[derive(Debug, Parser)]
#[command(name = "grapevine-netsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file
    Run {
        /// The scenario (TOML)
        scenario: PathBuf,
        /// Room members, instead of the file's
        #[arg(long)]
        peers: Option<usize>,
        /// Seed, instead of the file's
        #[arg(long)]
        seed: Option<u64>,
        /// How long traffic runs, e.g. 30s, instead of the file's
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Also run this baseline after Grapevine, on the same schedule (raw-gossipsub)
        #[arg(long, value_name = "KIND")]
        baseline: Option<Baseline>,
        /// Leave out the file's hostile peers (to see what they cost, run with and without)
        #[arg(long)]
        no_hostile: bool,
        /// Also write the report as JSON to this file
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also draw the latency distribution and the convergence over time (Grapevine and the
        /// baseline, when there is one) as SVG to this file
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Keep the peers' stores under this directory (on disk, with real fsyncs) instead of
        /// memory-backed tmpfs
        #[arg(long, value_name = "DIR")]
        store_dir: Option<PathBuf>,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
        /// Write the nodes' logs to this file, at the level `RUST_LOG` sets (default `warn`)
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let Command::Run {
        scenario,
        peers,
        seed,
        duration,
        baseline,
        no_hostile,
        json,
        plot,
        store_dir,
        quiet,
        log,
    } = Cli::parse().command;
    if let Some(path) = log {
        let file = std::fs::File::create(&path)
            .with_context(|| format!("creating the log file {}", path.display()))?;
        tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
            )
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .init();
    }
    let mut scenario = Scenario::load(&scenario)?;
    if let Some(peers) = peers {
        scenario.peers = peers;
    }
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    if let Some(duration) = duration {
        scenario.duration = duration;
    }
    if baseline.is_some() {
        scenario.baseline = baseline;
    }
    if store_dir.is_some() {
        scenario.store_dir = store_dir;
    }
    if no_hostile {
        scenario.hostile = Hostile::default();
    }
    scenario.check().map_err(anyhow::Error::msg)?;
    println!(
        "scenario {}: {} peers, seed {}, {:?}",
        scenario.name, scenario.peers, scenario.seed, scenario.duration
    );
    // The baseline plays the schedule again after Grapevine.
    let runs = if scenario.baseline.is_some() { 2 } else { 1 };
    let bar = if quiet || scenario.duration < Duration::from_secs(3) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(scenario.duration.as_millis() as u64 * runs)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
            .context("progress bar template")?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let progress = |played: Duration| bar.set_position(played.as_millis() as u64);
    let report = runtime.block_on(runner::run(&scenario, &progress))?;
    bar.finish_and_clear();
    print_report(&report);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = plot {
        plot::write_svg(&path, &plot::series_of(&report))?;
    }
    Ok(())
}

fn print_report(report: &RunReport) {
    println!("{}", report.delivery);
    if let Some(s) = report.mesh_formation_s {
        println!("mesh formed after        {s:.2} s");
    }
    for (what, took) in &report.caught_up_after_faults {
        match took {
            Some(s) => println!("caught up after {what}: {s:.2} s"),
            None => println!("never caught up after {what}"),
        }
    }
    for (what, took) in &report.convergence_after_faults {
        match took {
            Some(s) => println!("converged after {what}: {s:.2} s"),
            None => println!("no convergence after {what}"),
        }
    }
    let usage = &report.usage;
    println!(
        "cpu {:.1} s ({:.2} cores{}), {:.3} ms per delivery",
        usage.cpu_seconds,
        usage.cpu_load,
        if usage.cpu_load > 1.8 {
            ", CPU-bound"
        } else {
            ""
        },
        usage.cpu_ms_per_delivery
    );
    if let Some(spread) = report.preload_spread_s {
        println!(
            "preloaded history held by every member {spread:.1} s after it was posted (warm-up)"
        );
    }
    if let Some(cpu) = report.warmup_cpu_s {
        println!("warm-up cpu              {cpu:.1} s (not counted above)");
    }
    println!(
        "memory: peak {:.0} MiB, {:.2} MiB per peer, {:.1} MiB gained after setup",
        usage.peak_rss_mib, usage.rss_per_peer_mib, report.run_rss_growth_mib
    );
    if let Some(quiet) = &report.quiet {
        if let Some(kept) = quiet.peers_kept {
            println!(
                "quiet for {:.0} s, then over {:.0} s: peers kept per member {:.1} mean, {} max",
                quiet.after_s, quiet.window_s, kept.mean, kept.max
            );
        }
        println!(
            "idle cpu                 {:.3} % of a core per node (over {:.0} s)",
            quiet.idle_cpu_percent_per_node, quiet.cpu_window_s
        );
    }
    if !report.isolated.is_empty() {
        println!(
            "{} members saw no other room member at the end: {:?}",
            report.isolated.len(),
            report.isolated
        );
    }
    if report.late_steps > 0 {
        println!(
            "{} steps ran late (worst {:.0} ms): the process could not keep up",
            report.late_steps, report.worst_step_delay_ms
        );
    }
    if let Some(hostile) = &report.hostile {
        println!(
            "hostile: {} spammers posted {} records; {} slow readers ({} gossip messages dropped \
             for them); {} forgers sent {} forged records and {} invalid changes; {} silent peers \
             held {} mesh links",
            hostile.spammers,
            hostile.spam_posted,
            hostile.slow_readers,
            hostile.dropped_for_slow_readers,
            hostile.forgers,
            hostile.forged_sent,
            hostile.invalid_sent,
            hostile.silent,
            hostile.silent_mesh_links
        );
        println!(
            "forged records stored by honest nodes: {}{}",
            hostile.forged_stored,
            if hostile.forged_stored > 0 {
                "  <- FORGERIES ACCEPTED"
            } else {
                ""
            }
        );
        print_sig_spammers(&hostile.sig_spammers);
        if let Some(flood) = &hostile.flood {
            print_flood(flood);
        }
        if let Some(eclipse) = &hostile.eclipse {
            print_eclipse(eclipse);
        }
        println!("(delivery and latency above are over honest members and publishers only)");
    }
    if let (Some(baseline), Some(ratios)) = (&report.baseline, &report.ratios) {
        print_baseline(report, baseline, ratios);
    }
    println!("seed {}", report.seed);
}

fn print_sig_spammers(spammers: &[SigSpammerReport]) {
    if spammers.is_empty() {
        return;
    }
    let sent: u64 = spammers.iter().map(|s| s.sent).sum();
    let latest = spammers
        .iter()
        .map(|s| s.graylisted_after_s)
        .try_fold(0.0f64, |worst, s| s.map(|s| worst.max(s)));
    let before: u64 = spammers.iter().map(|s| s.checks_before).sum();
    let after: u64 = spammers.iter().map(|s| s.checks_after).sum();
    let escapes: u32 = spammers.iter().map(|s| s.escapes).sum();
    println!(
        "invalid-signature spam: {} spammers sent {sent} records to {} neighbours",
        spammers.len(),
        spammers.iter().map(|s| s.neighbours).sum::<usize>()
    );
    match latest {
        Some(s) => {
            println!("  every spammer graylisted by all its neighbours after {s:.2} s at most")
        }
        None => println!(
            "  some spammer was never graylisted by one of its neighbours  <- NOT GRAYLISTED"
        ),
    }
    println!(
        "  signature checks they cost: {before} before graylisting, {after} after{}; {escapes} \
         escapes from the graylist",
        if after > 0 {
            "  <- CHECKS AFTER GRAYLISTING"
        } else {
            ""
        }
    );
}

fn print_flood(flood: &FloodReport) {
    println!(
        "flood: {} flooders sent {} RPCs ({} bytes): {} IHAVE ids, {} PRUNEs then {} GRAFTs, {} \
         subscriptions; members sent back {} bytes and closed {} flooding streams",
        flood.flooders,
        flood.rpcs_sent,
        flood.bytes_sent,
        flood.ihave_ids_sent,
        flood.prunes_sent,
        flood.grafts_sent,
        flood.subscriptions_sent,
        flood.bytes_received,
        flood.streams_lost
    );
    for kind in &flood.scores {
        println!(
            "  {:?} flooders: {} member scores, {} negative, {} graylisted, highest {}",
            kind.kind,
            kind.pairs,
            kind.negative,
            kind.graylisted,
            kind.highest
                .map_or_else(|| "none".to_string(), |s| format!("{s:.1}"))
        );
    }
}

fn print_eclipse(eclipse: &EclipseReport) {
    println!(
        "eclipse: target {} with {} of {} sybils and {} honest members connected, {} sybil mesh \
         links; it received {:.3} of {} records, latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        eclipse.target,
        eclipse.sybils_connected,
        eclipse.sybils,
        eclipse.honest_connected,
        eclipse.sybil_mesh_links,
        eclipse.delivery_ratio,
        eclipse.published,
        eclipse.latency.p50_ms,
        eclipse.latency.p99_ms,
        eclipse.latency.max_ms
    );
}

fn print_baseline(report: &RunReport, baseline: &BaselineReport, ratios: &Ratios) {
    println!();
    println!("baseline {}:", baseline.kind);
    for note in &baseline.notes {
        println!("  note: {note}");
    }
    println!("{}", baseline.delivery);
    let fmt_optional = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"));
    let (g, b) = (&report.delivery, &baseline.delivery);
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "grapevine / baseline", "grapevine", "baseline", "ratio"
    );
    let rows = [
        (
            "latency/delivery p50 (ms)",
            g.latency_per_delivery.p50_ms,
            b.latency_per_delivery.p50_ms,
            ratios.latency_per_delivery_p50,
        ),
        (
            "latency/delivery p99 (ms)",
            g.latency_per_delivery.p99_ms,
            b.latency_per_delivery.p99_ms,
            ratios.latency_per_delivery_p99,
        ),
        (
            "latency to all p50 (ms)",
            g.latency_to_all.p50_ms,
            b.latency_to_all.p50_ms,
            ratios.latency_to_all_p50,
        ),
        (
            "latency to all p99 (ms)",
            g.latency_to_all.p99_ms,
            b.latency_to_all.p99_ms,
            ratios.latency_to_all_p99,
        ),
        (
            "bytes per delivery",
            g.bytes_per_delivery,
            b.bytes_per_delivery,
            ratios.bytes_per_delivery,
        ),
        (
            "  payload bytes",
            g.payload_bytes_per_delivery,
            b.payload_bytes_per_delivery,
            ratios.payload_bytes_per_delivery,
        ),
        (
            "  control bytes",
            g.control_bytes_per_delivery,
            b.control_bytes_per_delivery,
            ratios.control_bytes_per_delivery,
        ),
        (
            "cpu ms per delivery",
            report.usage.cpu_ms_per_delivery,
            baseline.usage.cpu_ms_per_delivery,
            ratios.cpu_per_delivery,
        ),
    ];
    for (name, grapevine, base, ratio) in rows {
        println!(
            "{name:<28} {grapevine:>12.2} {base:>12.2} {:>10}",
            fmt_optional(ratio)
        );
    }
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "duplicates/record/peer",
        fmt_optional(g.duplicates_per_record_per_peer),
        fmt_optional(b.duplicates_per_record_per_peer),
        fmt_optional(ratios.duplicates_per_record_per_peer)
    );
    println!(
        "(n/a: a side measured nothing; latency to all counts only records that reached everyone; \
         CPU is the whole process, setup included, on each side; payload is the gossip messages \
         that arrived, every copy, control every other byte on the wire; duplicates are gossip \
         copies dropped as already seen, per message a peer took in by gossip)"
    );
}
