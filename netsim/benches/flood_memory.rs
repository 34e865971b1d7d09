//! What a control-message flood costs the member it floods, in that member's own resident
//! memory. Run with `cargo bench -p grapevine-netsim --bench flood_memory` (release); name sizes
//! to run only those: `cargo bench -p grapevine-netsim --bench flood_memory -- test`.
//!
//! In netsim every member, flooder and simulated link shares one process, so the process's
//! growth under `control-flood` counts the flooders' own buffers and the bytes in flight on the
//! wire as well as the members'. Here the flooded member runs alone in a child process (this
//! binary again, with [`ROLE_VAR`] set: a node with the defaults users get, glibc's allocator
//! as the `grapevine` binary has, on loopback TCP), and this process runs its honest neighbours
//! and the flooders. This process reads the child's `VmRSS` from `/proc/<pid>/status` every
//! [`SAMPLE_EVERY`] while the room's traffic and the flood run, and the child's `VmHWM` at the
//! end; each run is repeated without the flooders, in a fresh child, for the member's growth
//! under the same traffic alone.
//!
//! Sizes, from `netsim/scenarios/control-flood.toml`:
//! - `full`: every flooder of the scenario (12 % of 50 members: 6, two of each kind) floods the
//!   one member for the scenario's 40 s. In the scenario each flooder dials 3 of the 50 members,
//!   so this member takes the worst any member could take there.
//! - `test`: `netsim/tests/control_flood.rs`'s run: 3 flooders, one of each kind, for 20 s, all
//!   on the one member.
//! - `many`: how the cost grows with the flooders: [`MANY_FLOODERS`] (eight of each kind) on
//!   the one member for 20 s, as an attacker with more keys than the scenario's could;
//!   `many-ihave`, `many-graft` and `many-subscribe`: as many of one kind, for what each costs.
//!
//! Both: the scenario's traffic (5 records/s of 200 bytes from 5 publishers), posted by the
//! member's honest neighbours: as many as a member of the scenario's random-regular topology
//! links to (it dials `degree` peers and about as many dial it), all in the room.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use grapevine_netsim::{FloodKind, FloodReport, Flooders, KindScores, ROOM, Scenario, Topology};
use grapevine_node::{Config, Node, NodeEvent, NodeHandle, RawStream, RawTransport, Transport};
use libp2p::core::transport::Transport as _;
use libp2p::{Multiaddr, PeerId, tcp};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;

/// Environment variable that makes this binary the flooded member.
const ROLE_VAR: &str = "GRAPEVINE_FLOOD_MEMORY_MEMBER";
/// How often the member's resident memory is read during a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How often a reading is kept for the printed course of the run: whether the member's memory
/// levels off or keeps growing under the flood.
const COURSE_EVERY: Duration = Duration::from_secs(5);
/// The longest wait for one answer from the member's process.
const CHILD_WAIT: Duration = Duration::from_secs(30);
/// The longest wait for the neighbours to be connected to the member.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// After the neighbours are connected, a few heartbeats for the meshes to form, before the
/// member's memory at the start is read.
const MESH_WAIT: Duration = Duration::from_secs(5);
/// After the traffic stops, how long records may still take to reach the member before its
/// view is counted.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);
/// Runs of each size, with and without the flooders.
const RUNS: usize = 2;
/// Seeds the flooders' keys and made-up ids.
const SEED: u64 = 12;
/// `netsim/tests/control_flood.rs`'s flooders: one of each kind.
const TEST_FLOODERS: usize = 3;
/// `netsim/tests/control_flood.rs`'s duration, also the `many` size's.
const TEST_DURATION: Duration = Duration::from_secs(20);
/// Flooders of the `many` size, all on the one member: four times the scenario's.
const MANY_FLOODERS: usize = 24;

/// One size of the flood: which flooders and for how long, and the room around the member.
struct Size {
    name: &'static str,
    flooders: Vec<FloodKind>,
    neighbours: usize,
    scenario: Scenario,
}

/// What one run measured.
struct Run {
    /// Member's resident memory before the traffic (and flood) started, KiB.
    start_kib: u64,
    /// Largest resident memory sampled during the run, KiB.
    most_kib: u64,
    /// Resident memory at the end, KiB.
    end_kib: u64,
    /// Peak resident memory of the member's process over its life, KiB.
    peak_kib: u64,
    /// Resident memory every [`COURSE_EVERY`] of the run, KiB.
    course_kib: Vec<u64>,
    /// Records the neighbours posted during the run.
    posted: usize,
    /// Records in the member's view at the end.
    records: usize,
    /// What the flooders sent, and the member's scores of them.
    flood: Option<FloodReport>,
}

impl Run {
    /// Memory the member gained over the run: its largest sample over its memory at the start.
    fn growth_mib(&self) -> f64 {
        mib(self.most_kib.saturating_sub(self.start_kib))
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .next()
        .context("malformed status line")?
        .parse()?)
}

/// Loopback TCP without Noise and Yamux, which the flooders' swarms add.
fn loopback_tcp() -> RawTransport {
    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .map(|stream, _| Box::new(stream) as Box<dyn RawStream>)
        .boxed()
}

/// A node with the defaults users get, on loopback TCP, serving the DHT as netsim's members do.
fn node_config(dir: &Path) -> Result<Config> {
    Ok(Config {
        data_dir: dir.to_path_buf(),
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        transport: Transport::Tcp,
        reachable: true,
        mdns: false,
        ..Config::default()
    })
}

/// Keeps a node's event stream drained so the node never reports dropped events.
fn drain(mut events: mpsc::Receiver<NodeEvent>) {
    tokio::spawn(async move { while events.recv().await.is_some() {} });
}

/// The member's side: starts the node, joins the room and prints its address, then answers each
/// line on stdin (peer ids, separated by spaces) with its connections, the records in its view
/// and its score of each peer named (`none` for a peer it does not score), until stdin closes.
async fn member() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, events) = Node::spawn(node_config(dir.path())?).await?;
    drain(events);
    node.join(ROOM).await?;
    let addr = node
        .shareable_addrs()
        .await?
        .into_iter()
        .next()
        .context("no listen address")?;
    println!("{addr}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut answer = format!(
            "{} {}",
            node.connections().await?,
            node.view(ROOM).await?.messages.len()
        );
        for peer in line.split_whitespace() {
            match node.peer_score(peer.parse()?).await? {
                Some(score) => answer.push_str(&format!(" {score}")),
                None => answer.push_str(" none"),
            }
        }
        println!("{answer}");
    }
    node.shutdown().await?;
    Ok(())
}

/// The member's process, seen from here.
struct MemberProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
    addr: Multiaddr,
}

/// The member's answer: its connections, the records in its view, its scores of the peers asked.
struct MemberState {
    connections: u32,
    records: usize,
    scores: Vec<Option<f64>>,
}

impl MemberProcess {
    async fn start() -> Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env(ROLE_VAR, "member")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("the member's process has no id")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let first = tokio::time::timeout(CHILD_WAIT, lines.next_line())
            .await
            .context("the member's process did not start")??
            .context("the member's process ended")?;
        Ok(Self {
            child,
            stdin,
            lines,
            pid,
            addr: first.parse()?,
        })
    }

    async fn state(&mut self, peers: &[PeerId]) -> Result<MemberState> {
        let ask: Vec<String> = peers.iter().map(PeerId::to_string).collect();
        self.stdin
            .write_all(format!("{}\n", ask.join(" ")).as_bytes())
            .await?;
        let line = tokio::time::timeout(CHILD_WAIT, self.lines.next_line())
            .await
            .context("the member's process did not answer")??
            .context("the member's process ended")?;
        let mut fields = line.split_whitespace();
        let mut next = || fields.next().context("short answer from the member");
        let connections = next()?.parse()?;
        let records = next()?.parse()?;
        let mut scores = Vec::with_capacity(peers.len());
        for _ in peers {
            scores.push(match next()? {
                "none" => None,
                score => Some(score.parse()?),
            });
        }
        Ok(MemberState {
            connections,
            records,
            scores,
        })
    }

    fn rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmRSS")
    }

    async fn stop(mut self) -> Result<u64> {
        let peak = status_kib(self.pid, "VmHWM")?;
        drop(self.stdin);
        let status = tokio::time::timeout(CHILD_WAIT, self.child.wait())
            .await
            .context("the member's process did not stop")??;
        ensure!(status.success(), "the member's process failed: {status}");
        Ok(peak)
    }
}

/// One run: the member in a fresh process, `size.neighbours` honest neighbours posting the
/// scenario's traffic for its duration, and `flooders` flooders on the member (none for the run
/// without).
async fn run(size: &Size, flooders: &[FloodKind]) -> Result<Run> {
    let scenario = &size.scenario;
    let mut member = MemberProcess::start().await?;
    let mut dirs = Vec::new();
    let mut neighbours: Vec<NodeHandle> = Vec::new();
    for _ in 0..size.neighbours {
        let dir = tempfile::tempdir()?;
        let config = Config {
            bootstrap: vec![member.addr.clone()],
            ..node_config(dir.path())?
        };
        let (node, events) = Node::spawn(config).await?;
        drain(events);
        node.join(ROOM).await?;
        neighbours.push(node);
        dirs.push(dir);
    }
    let waited = Instant::now();
    while (member.state(&[]).await?.connections as usize) < size.neighbours {
        ensure!(
            waited.elapsed() < CONNECT_WAIT,
            "the neighbours did not all connect to the member within {CONNECT_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(MESH_WAIT).await;
    let start_kib = member.rss_kib()?;

    let flood = if !flooders.is_empty() {
        Some(Flooders::spawn(
            flooders,
            scenario.hostile.flood,
            ROOM,
            grapevine_node::config::DEFAULT_HEARTBEAT,
            std::slice::from_ref(&member.addr),
            SEED,
            loopback_tcp,
        )?)
    } else {
        None
    };
    let traffic = scenario.traffic;
    let publishers = traffic.publishers.clamp(1, neighbours.len());
    let gap = Duration::from_secs_f64(1.0 / traffic.rate);
    let text = "x".repeat(traffic.size.max(1));
    let started = tokio::time::Instant::now();
    let mut next_post = started + gap / 2;
    let mut next_sample = started;
    let mut posted = 0;
    let mut most_kib = start_kib;
    let mut course_kib = Vec::new();
    let mut next_course = started + COURSE_EVERY;
    while started.elapsed() < scenario.duration {
        let now = tokio::time::Instant::now();
        if now >= next_sample {
            let rss = member.rss_kib()?;
            most_kib = most_kib.max(rss);
            if now >= next_course {
                course_kib.push(rss);
                next_course += COURSE_EVERY;
            }
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_post {
            neighbours[posted % publishers].post(ROOM, &text).await?;
            posted += 1;
            next_post += gap;
        }
        tokio::time::sleep_until(next_post.min(next_sample)).await;
    }
    most_kib = most_kib.max(member.rss_kib()?);
    let end_kib = member.rss_kib()?;

    let flooder_peers: Vec<(PeerId, FloodKind)> = flood
        .as_ref()
        .map(|f| f.peers().to_vec())
        .unwrap_or_default();
    let ids: Vec<PeerId> = flooder_peers.iter().map(|(peer, _)| *peer).collect();
    let delivered_by = tokio::time::Instant::now() + DELIVERY_WAIT;
    let state = loop {
        let state = member.state(&ids).await?;
        if state.records >= posted || tokio::time::Instant::now() >= delivered_by {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let flood = flood.map(|flood| {
        let scores = [FloodKind::Ihave, FloodKind::Graft, FloodKind::Subscribe]
            .into_iter()
            .map(|kind| {
                let of_kind: Vec<f64> = flooder_peers
                    .iter()
                    .zip(&state.scores)
                    .filter(|((_, k), _)| *k == kind)
                    .filter_map(|(_, score)| *score)
                    .collect();
                KindScores::of(kind, &of_kind)
            })
            .collect();
        flood.report(scores)
    });
    if let Some(flood) = &flood {
        let scored: usize = flood.scores.iter().map(|kind| kind.pairs).sum();
        ensure!(
            flood.rpcs_sent > 0 && scored == flooders.len(),
            "every flooder reached the member: {flood:?}"
        );
    }
    for node in &neighbours {
        node.shutdown().await?;
    }
    let peak_kib = member.stop().await?;
    Ok(Run {
        start_kib,
        most_kib,
        end_kib,
        peak_kib,
        course_kib,
        posted,
        records: state.records,
        flood,
    })
}

fn print_run(label: &str, run: &Run) {
    println!(
        "  {label}: member resident {:.1} MiB at the start, at most {:.1} MiB during the run \
         (+{:.1} MiB), {:.1} MiB at the end, peak {:.1} MiB; {} of {} records in its view",
        mib(run.start_kib),
        mib(run.most_kib),
        run.growth_mib(),
        mib(run.end_kib),
        mib(run.peak_kib),
        run.records,
        run.posted
    );
    let course: Vec<String> = run
        .course_kib
        .iter()
        .map(|&kib| format!("{:.1}", mib(kib)))
        .collect();
    println!(
        "    resident every {:?}, MiB: {}",
        COURSE_EVERY,
        course.join(" ")
    );
    if let Some(flood) = &run.flood {
        println!(
            "    flood: {} RPCs, {:.1} MiB sent; {} IHAVE ids, {} PRUNEs, {} GRAFTs, {} \
             subscriptions; {} streams lost",
            flood.rpcs_sent,
            flood.bytes_sent as f64 / (1024.0 * 1024.0),
            flood.ihave_ids_sent,
            flood.prunes_sent,
            flood.grafts_sent,
            flood.subscriptions_sent,
            flood.streams_lost
        );
        for kind in &flood.scores {
            println!(
                "    {:?} flooders: {} scored, {} negative, {} graylisted, highest {:?}",
                kind.kind, kind.pairs, kind.negative, kind.graylisted, kind.highest
            );
        }
    }
}

/// Runs one size [`RUNS`] times with the flooders and as often without, and prints each run and
/// the flood's cost.
async fn measure(size: &Size) -> Result<()> {
    let scenario = &size.scenario;
    println!(
        "{}: {} flooders ({:?}) on one member for {:?}; {} honest neighbours posting {} records/s \
         of {} bytes",
        size.name,
        size.flooders.len(),
        size.flooders,
        scenario.duration,
        size.neighbours,
        scenario.traffic.rate,
        scenario.traffic.size
    );
    let mut with = Vec::new();
    let mut without = Vec::new();
    for i in 0..RUNS {
        let quiet = run(size, &[]).await?;
        print_run(&format!("run {} without flooders", i + 1), &quiet);
        without.push(quiet.growth_mib());
        let flooded = run(size, &size.flooders).await?;
        print_run(&format!("run {} with flooders", i + 1), &flooded);
        with.push(flooded.growth_mib());
    }
    let range = |values: &[f64]| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (low, high)
    };
    let (with_low, with_high) = range(&with);
    let (without_low, without_high) = range(&without);
    println!(
        "  {}: the member gained {with_low:.1}-{with_high:.1} MiB with the flooders, \
         {without_low:.1}-{without_high:.1} MiB without: the flood cost it {:.1}-{:.1} MiB \
         ({:.1}-{:.1} MB)",
        size.name,
        with_low - without_high,
        with_high - without_low,
        (with_low - without_high) * 1.048_576,
        (with_high - without_low) * 1.048_576
    );
    Ok(())
}

/// The sizes, from the scenario file.
fn sizes() -> Result<Vec<Size>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/control-flood.toml");
    let full = Scenario::load(&path)?;
    let Topology::RandomRegular { degree } = full.topology else {
        bail!("control-flood.toml no longer has a random-regular topology");
    };
    let links = |peers: usize| (2 * degree).min(peers - 1);
    let test = Scenario {
        duration: TEST_DURATION,
        ..full.clone()
    };
    let many = |name, kinds: &[FloodKind]| Size {
        name,
        flooders: (0..MANY_FLOODERS).map(|i| kinds[i % kinds.len()]).collect(),
        neighbours: links(full.peers),
        scenario: Scenario {
            duration: TEST_DURATION,
            ..full.clone()
        },
    };
    let all = [FloodKind::Ihave, FloodKind::Graft, FloodKind::Subscribe];
    Ok(vec![
        Size {
            name: "test",
            flooders: (0..TEST_FLOODERS).map(FloodKind::of).collect(),
            neighbours: links(8),
            scenario: test,
        },
        Size {
            name: "full",
            flooders: (0..full.hostile.flooder_count(full.peers))
                .map(FloodKind::of)
                .collect(),
            neighbours: links(full.peers),
            scenario: full.clone(),
        },
        many("many", &all),
        many("many-ihave", &all[..1]),
        many("many-graft", &all[1..2]),
        many("many-subscribe", &all[2..]),
    ])
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var_os(ROLE_VAR).is_some() {
        return runtime.block_on(member());
    }
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!(
        "command: cargo bench -p grapevine-netsim --bench flood_memory [-- test|full|many|many-ihave|many-graft|many-subscribe]"
    );
    runtime.block_on(async {
        for size in sizes()? {
            if wanted.is_empty() || wanted.contains(&size.name) {
                measure(&size).await?;
            }
        }
        Ok(())
    })
}
