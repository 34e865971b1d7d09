//! Two peers on one LAN, told nothing about each other, find each other by mDNS and chat.
//!
//! mDNS multicasts on every interface, so it runs only inside a LAN this test builds itself: two
//! network namespaces joined by a veth pair. Each peer is this test binary started again inside
//! its namespace (`ip netns exec`), running the ignored [`mdns_peer`] entry point. Needs root
//! and iproute2, as on the CI machine.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use grapevine_node::{Config, Node, Transport};

/// Tells the entry point which peer it is; set only by the test that builds the namespaces.
const ROLE_VAR: &str = "GRAPEVINE_MDNS_TEST_ROLE";
/// The peer's data directory.
const DIR_VAR: &str = "GRAPEVINE_MDNS_TEST_DIR";
const ROOM: &str = "lan";
/// Bound on the whole exchange inside the namespaces, discovery included (mDNS probes at 0.5 s,
/// 1 s, 2 s, …).
const PEER_DEADLINE: Duration = Duration::from_secs(40);
/// How long a peer that has everything stays up, so the other can still sync from it.
const LINGER: Duration = Duration::from_secs(3);

/// Runs `ip` with `args`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// How long a fresh veth pair may take to come up.
const CARRIER_DEADLINE: Duration = Duration::from_secs(5);

/// Waits (bounded) until `link` in namespace `ns` is up with a carrier.
fn wait_for_carrier(ns: &str, link: &str) -> Result<()> {
    let deadline = Instant::now() + CARRIER_DEADLINE;
    loop {
        let output = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", link])
            .output()
            .context("running ip (iproute2)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if text.contains("LOWER_UP") && text.contains("state UP") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{link} in {ns} did not come up: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two namespaces joined by a veth pair on 10.213.0.0/24; removed (with the pair) when dropped.
struct Lan {
    namespaces: [String; 2],
}

impl Lan {
    fn build() -> Result<Self> {
        let id = std::process::id();
        let lan = Self {
            namespaces: [format!("gv{id}a"), format!("gv{id}b")],
        };
        let links = [format!("gv{id}x"), format!("gv{id}y")];
        for ns in &lan.namespaces {
            ip(&["netns", "add", ns])
                .context("creating a network namespace (the test needs root)")?;
        }
        ip(&[
            "link", "add", &links[0], "type", "veth", "peer", "name", &links[1],
        ])?;
        for (i, (ns, link)) in lan.namespaces.iter().zip(&links).enumerate() {
            let addr = format!("10.213.0.{}/24", i + 1);
            ip(&["link", "set", link, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", link])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Multicast sent before both ends of the pair are up is lost: wait for the carrier.
        for (ns, link) in lan.namespaces.iter().zip(&links) {
            wait_for_carrier(ns, link)?;
        }
        Ok(lan)
    }

    /// Starts this test binary's [`mdns_peer`] inside namespace `index`.
    fn start_peer(&self, index: usize, dir: &Path) -> Result<Child> {
        let exe = std::env::current_exe()?;
        Command::new("ip")
            .args(["netns", "exec", &self.namespaces[index]])
            .arg(exe)
            .args(["--exact", "mdns_peer", "--ignored", "--nocapture"])
            .env(ROLE_VAR, index.to_string())
            .env(DIR_VAR, dir)
            .spawn()
            .context("starting a peer inside its namespace")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Deleting a namespace removes its end of the veth pair, and with it the other end.
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleaning up: {e:#}");
            }
        }
    }
}

/// Waits for `child` at most until `deadline`, killing it past that.
fn wait_bounded(child: &mut Child, deadline: Instant) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!("a peer did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_peers_on_a_lan_find_each_other_by_mdns() -> Result<()> {
    let lan = Lan::build()?;
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut peers = Vec::new();
    for (index, dir) in dirs.iter().enumerate() {
        peers.push(lan.start_peer(index, dir.path())?);
    }
    let deadline = Instant::now() + PEER_DEADLINE + LINGER + Duration::from_secs(10);
    let statuses: Vec<Result<ExitStatus>> = peers
        .iter_mut()
        .map(|peer| wait_bounded(peer, deadline))
        .collect();
    for (index, status) in statuses.into_iter().enumerate() {
        let status = status?;
        ensure!(status.success(), "peer {index} failed: {status}");
    }
    Ok(())
}

/// One peer of the LAN: mDNS on, no bootstrap address, no dial. Posts a greeting and succeeds
/// once it holds the other peer's greeting too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a peer of two_peers_on_a_lan_find_each_other_by_mdns, started by it in a namespace"]
async fn mdns_peer() -> Result<()> {
    let role = std::env::var(ROLE_VAR)
        .context("only two_peers_on_a_lan_find_each_other_by_mdns runs this, in a namespace")?;
    let dir = std::env::var(DIR_VAR).context("no data directory given")?;
    // RUST_LOG shows what the peer did, for a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let config = Config {
        mdns: true,
        listen_addrs: vec!["/ip4/0.0.0.0/tcp/0".parse()?],
        ..common::config(Path::new(&dir), Transport::Tcp)
    };
    let (node, _events) = Node::spawn(config).await?;
    node.join(ROOM).await?;
    node.post(ROOM, &format!("hello from peer {role}")).await?;
    let arrived = tokio::time::timeout(PEER_DEADLINE, async {
        loop {
            if node.view(ROOM).await?.messages.len() == 2 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if arrived.is_err() {
        bail!(
            "the other peer's greeting never arrived (connected peers: {:?})",
            node.peers().await?
        );
    }
    arrived??;
    tokio::time::sleep(LINGER).await;
    node.shutdown().await?;
    Ok(())
}
