//! What nodes cost while idle: connections per node, memory per node and per connection end, and
//! CPU time. Run with `cargo bench -p grapevine-node --bench resources` (release); name sections
//! to run only those: `cargo bench -p grapevine-node --bench resources -- connections`.
//!
//! Sections, all with mDNS off and default timers (idle connection timeout 60 s, room lookup
//! 60 s, heartbeat 1 s, anti-entropy 30 s), every wait bounded:
//! - `connections`: [`MEMBERS`] members on the memory transport that know only one bootstrap
//!   node and join one room; connections per node are sampled as the network settles, then the
//!   process's CPU time is read over an idle window and its resident memory after it.
//! - `single`: one node alone in a room, its CPU time over the same idle window.
//! - `bootstrap`: a bootstrap node in a child process of its own (this binary, run again with
//!   [`ROLE_VAR`] set), so its resident memory is its own, with [`CLIENTS`] peers in this process
//!   connected to it over loopback TCP; its memory before and after, and its CPU time over an
//!   idle window past the idle connection timeout.
//!
//! CPU time is the process's user plus system time from `/proc/self/stat` (in USER_HZ ticks,
//! 10 ms); memory is `VmRSS` and `VmHWM` from `/proc/self/status`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grapevine_node::{Config, Limits, Node, NodeEvent, NodeHandle, Transport};
use libp2p::Multiaddr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Room members in the `connections` section.
const MEMBERS: usize = 100;
/// The members serve the DHT (Kademlia server mode), as in the discovery tests: the worst case,
/// since Kademlia's bootstrap walks then reach every member.
const MEMBERS_REACHABLE: bool = true;
/// How long the network settles before connections are counted: past the idle connection
/// timeout and two room lookups, so short-lived connections have had every chance to close.
const SETTLE: Duration = Duration::from_secs(150);
/// How often connections are sampled while the network settles.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// The idle window over which CPU time is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// Peers connected to the bootstrap node in the `bootstrap` section.
const CLIENTS: usize = 200;
/// How long the bootstrap node stays idle with its clients before it is measured again: past
/// the idle connection timeout, so only connections that really stay are counted.
const BOOTSTRAP_IDLE: Duration = Duration::from_secs(70);
/// The longest wait for the clients to be connected.
const CONNECT_WAIT: Duration = Duration::from_secs(120);
/// The longest wait for one answer from the child process.
const CHILD_WAIT: Duration = Duration::from_secs(30);
/// Environment variable that makes this binary the bootstrap node of the `bootstrap` section.
const ROLE_VAR: &str = "GRAPEVINE_RESOURCES_ROLE";
/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// Connection limits of the bootstrap node: room for the clients and more.
const BOOTSTRAP_MAX_CONNECTIONS: u32 = 512;

/// Resident memory of this process now and at its peak, in bytes.
fn memory() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/self/status"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU time this process has used, in seconds.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3, the state;
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Min, median and max of `values`, which must not be empty.
fn spread(values: &[u32]) -> (u32, u32, u32) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

fn node_config(dir: &Path, transport: Transport) -> Config {
    let listen: Multiaddr = match transport {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
        Transport::Memory => "/memory/0",
    }
    .parse()
    .expect("valid multiaddr");
    Config {
        data_dir: dir.to_path_buf(),
        listen_addrs: vec![listen],
        transport,
        mdns: false,
        ..Config::default()
    }
}

/// A bootstrap node: serves the DHT, joins no room, and accepts far more connections than a
/// user's node. Until a bootstrap preset lands in `Config`, this is `reachable` with raised
/// limits; switching to the preset changes only the last line.
fn bootstrap_config(dir: &Path, transport: Transport) -> Config {
    Config {
        reachable: true,
        limits: Limits {
            max_established: BOOTSTRAP_MAX_CONNECTIONS,
            max_established_incoming: BOOTSTRAP_MAX_CONNECTIONS,
            max_pending_incoming: BOOTSTRAP_MAX_CONNECTIONS,
            max_pending_incoming_per_range: BOOTSTRAP_MAX_CONNECTIONS,
            routing_contacts: BOOTSTRAP_MAX_CONNECTIONS,
            ..Limits::default()
        },
        ..node_config(dir, transport)
    }
}

/// Keeps nodes' event streams drained so the nodes never report dropped events.
fn drain(mut events: mpsc::Receiver<NodeEvent>) {
    tokio::spawn(async move { while events.recv().await.is_some() {} });
}

async fn dial_addr(node: &NodeHandle) -> Result<Multiaddr> {
    node.shareable_addrs()
        .await?
        .into_iter()
        .next()
        .context("no listen address")
}

/// Connections of each node: members first, the bootstrap node last.
async fn connections(nodes: &[NodeHandle]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        out.push(node.connections().await?);
    }
    Ok(out)
}

fn print_connections(at: Duration, counts: &[u32]) {
    let (bootstrap, members) = counts.split_last().expect("the bootstrap node is counted");
    let (min, median, max) = spread(members);
    let ends: u32 = counts.iter().sum();
    println!(
        "  t = {:>4.0} s: members min {min} / median {median} / max {max}, bootstrap {bootstrap}, \
         connection ends {ends}",
        at.as_secs_f64()
    );
}

/// The `connections` section; its figures are printed as they come.
async fn connections_section() -> Result<()> {
    println!(
        "connections: {MEMBERS} members (Kademlia server mode: {MEMBERS_REACHABLE}) on the memory \
         transport, knowing only one bootstrap node, all in one room; default timers"
    );
    let (rss_before, _) = memory()?;
    let mut dirs = Vec::new();
    let dir = tempfile::tempdir()?;
    let (bootstrap, events) = Node::spawn(bootstrap_config(dir.path(), Transport::Memory)).await?;
    drain(events);
    dirs.push(dir);
    let addr = dial_addr(&bootstrap).await?;
    let mut nodes = Vec::new();
    let started = Instant::now();
    for _ in 0..MEMBERS {
        let dir = tempfile::tempdir()?;
        let config = Config {
            bootstrap: vec![addr.clone()],
            reachable: MEMBERS_REACHABLE,
            ..node_config(dir.path(), Transport::Memory)
        };
        let (member, events) = Node::spawn(config).await?;
        drain(events);
        member.join("lobby").await?;
        nodes.push(member);
        dirs.push(dir);
    }
    nodes.push(bootstrap);
    println!(
        "  all {} nodes started in {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );
    let mut most = vec![0u32; nodes.len()];
    let mut next_print = SAMPLE_EVERY;
    while started.elapsed() < SETTLE {
        let counts = connections(&nodes).await?;
        for (most, count) in most.iter_mut().zip(&counts) {
            *most = (*most).max(*count);
        }
        if started.elapsed() >= next_print {
            print_connections(started.elapsed(), &counts);
            next_print += SAMPLE_EVERY;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settled = connections(&nodes).await?;
    print_connections(started.elapsed(), &settled);
    let (_, most_members) = most.split_last().context("no nodes")?;
    let (_, _, peak) = spread(most_members);
    println!("  most connections any member had at any sample: {peak}");

    let cpu_before = cpu_seconds()?;
    let window = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu = cpu_seconds()? - cpu_before;
    let seconds = window.elapsed().as_secs_f64();
    let after = connections(&nodes).await?;
    print_connections(started.elapsed(), &after);
    let per_node = cpu / seconds / nodes.len() as f64;
    println!(
        "  idle CPU: {cpu:.2} s over {seconds:.0} s for {} nodes = {:.3} % of a core per node",
        nodes.len(),
        per_node * 100.0
    );
    let (rss, hwm) = memory()?;
    let ends: u32 = after.iter().sum();
    println!(
        "  memory: {:.1} MiB resident for {} nodes and {ends} connection ends ({:.2} MiB per \
         node, all included); peak {:.1} MiB",
        mib(rss - rss_before),
        nodes.len(),
        mib(rss - rss_before) / nodes.len() as f64,
        mib(hwm)
    );
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok(())
}

/// The `single` section: one node alone in a room.
async fn single_section() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, events) = Node::spawn(node_config(dir.path(), Transport::Tcp)).await?;
    drain(events);
    node.join("lobby").await?;
    // Past the first heartbeats and lookups of a new node.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before = cpu_seconds()?;
    let window = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu = cpu_seconds()? - cpu_before;
    let seconds = window.elapsed().as_secs_f64();
    println!(
        "single: one node alone in a room, loopback TCP: idle CPU {cpu:.2} s over {seconds:.0} s \
         = {:.3} % of a core",
        cpu / seconds * 100.0
    );
    node.shutdown().await?;
    Ok(())
}

/// One answer of the bootstrap child: its connections, resident memory, peak and CPU time.
#[derive(Debug, Clone, Copy)]
struct Report {
    connections: u32,
    rss: u64,
    hwm: u64,
    cpu: f64,
}

impl Report {
    fn parse(line: &str) -> Result<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [connections, rss, hwm, cpu] = fields[..] else {
            bail!("malformed report {line:?}");
        };
        Ok(Self {
            connections: connections.parse()?,
            rss: rss.parse()?,
            hwm: hwm.parse()?,
            cpu: cpu.parse()?,
        })
    }
}

/// The bootstrap node's side: prints its address and its memory before the node started, then
/// answers each line on stdin with a [`Report`] until stdin closes.
async fn bootstrap_child() -> Result<()> {
    let (rss_empty, _) = memory()?;
    let dir = tempfile::tempdir()?;
    let (node, events) = Node::spawn(bootstrap_config(dir.path(), Transport::Tcp)).await?;
    drain(events);
    println!("{} {rss_empty}", dial_addr(&node).await?);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {
        let (rss, hwm) = memory()?;
        println!(
            "{} {rss} {hwm} {}",
            node.connections().await?,
            cpu_seconds()?
        );
    }
    node.shutdown().await?;
    Ok(())
}

/// Asks the child for a report.
async fn ask(
    stdin: &mut tokio::process::ChildStdin,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<Report> {
    stdin.write_all(b"report\n").await?;
    let line = tokio::time::timeout(CHILD_WAIT, lines.next_line())
        .await
        .context("the bootstrap process did not answer")??
        .context("the bootstrap process ended")?;
    Report::parse(&line)
}

/// The `bootstrap` section.
async fn bootstrap_section() -> Result<()> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env(ROLE_VAR, "bootstrap")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let first = tokio::time::timeout(CHILD_WAIT, lines.next_line())
        .await
        .context("the bootstrap process did not start")??
        .context("the bootstrap process ended")?;
    let (addr, rss_empty) = first.split_once(' ').context("malformed first line")?;
    let addr: Multiaddr = addr.parse()?;
    let rss_empty: u64 = rss_empty.parse()?;
    let alone = ask(&mut stdin, &mut lines).await?;

    let mut dirs = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let dir = tempfile::tempdir()?;
        let config = Config {
            bootstrap: vec![addr.clone()],
            ..node_config(dir.path(), Transport::Tcp)
        };
        let (client, events) = Node::spawn(config).await?;
        drain(events);
        // A room of its own: the client tells the bootstrap node its subscription, which keeps
        // the connection open as a room member's would, and stores a provider record there.
        client.join(&format!("room-{i}")).await?;
        clients.push(client);
        dirs.push(dir);
    }
    let waited = Instant::now();
    let connected = loop {
        let report = ask(&mut stdin, &mut lines).await?;
        if report.connections as usize >= CLIENTS || waited.elapsed() > CONNECT_WAIT {
            break report;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let idle_started = Instant::now();
    tokio::time::sleep(BOOTSTRAP_IDLE).await;
    let idle = ask(&mut stdin, &mut lines).await?;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    drop(stdin);
    tokio::time::timeout(CHILD_WAIT, child.wait()).await??;
    for client in &clients {
        client.shutdown().await?;
    }

    let node_cost = alone.rss.saturating_sub(rss_empty);
    let per_end = |r: &Report| {
        r.rss.saturating_sub(alone.rss) as f64 / f64::from(r.connections.max(1)) / 1024.0
    };
    println!(
        "bootstrap: own process, reachable with limits raised to {BOOTSTRAP_MAX_CONNECTIONS} \
         connections (no bootstrap preset yet); {CLIENTS} clients over loopback TCP, each in a \
         room of its own"
    );
    println!(
        "  node alone: {:.1} MiB resident ({:.2} MiB for the node over the empty process)",
        mib(alone.rss),
        mib(node_cost)
    );
    println!(
        "  {} connections: {:.1} MiB resident, peak {:.1} MiB, {:.0} KiB per connection end",
        connected.connections,
        mib(connected.rss),
        mib(connected.hwm),
        per_end(&connected)
    );
    println!(
        "  after {idle_seconds:.0} s idle: {} connections, {:.1} MiB resident, peak {:.1} MiB, \
         {:.0} KiB per connection end; idle CPU {:.2} s = {:.3} % of a core",
        idle.connections,
        mib(idle.rss),
        mib(idle.hwm),
        per_end(&idle),
        idle.cpu - connected.cpu,
        (idle.cpu - connected.cpu) / idle_seconds * 100.0
    );
    Ok(())
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
        return runtime.block_on(bootstrap_child());
    }
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.contains(&name);
    println!(
        "command: cargo bench -p grapevine-node --bench resources [-- connections|single|bootstrap]"
    );
    runtime.block_on(async {
        if run("connections") {
            connections_section().await?;
        }
        if run("single") {
            single_section().await?;
        }
        if run("bootstrap") {
            bootstrap_section().await?;
        }
        Ok(())
    })
}
