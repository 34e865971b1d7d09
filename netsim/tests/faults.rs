//! Link faults act as configured: latency delays every delivery, a held link delivers nothing
//! until released, and a crashed peer is unreachable until restarted.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{LinkFaults, Sim, Topology};

const LATENCY: Duration = Duration::from_millis(150);

async fn two_peers() -> Result<Sim> {
    let sim = Sim::builder()
        .peers(2)
        .seed(11)
        .topology(Topology::RandomRegular { degree: 1 })
        .link_faults(LinkFaults {
            latency: LATENCY,
            ..LinkFaults::default()
        })
        .heartbeat(Duration::from_millis(100))
        .build()
        .await?;
    // Wait until the pair is connected and in each other's room.
    sim.publish(0, 10).await?;
    sim.wait_converged(Duration::from_secs(20)).await?;
    Ok(sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_deliveries_and_a_held_link_delivers_after_release() -> Result<()> {
    let sim = two_peers().await?;
    sim.publish(0, 10).await?;
    sim.wait_converged(Duration::from_secs(20)).await?;
    let report = sim.report().await?;
    ensure!(
        report.latency_per_delivery.p50_ms >= LATENCY.as_millis() as f64,
        "one hop takes at least the link latency: {report}"
    );
    let held = report
        .connections_per_node
        .context("no connection counts")?;
    ensure!(
        held.mean >= 1.0 && held.max <= 2,
        "each of two peers holds a connection to the other (two if both dialled at once): {report}"
    );

    sim.network().hold(0, 1);
    sim.publish(0, 10).await?;
    sim.run_for(Duration::from_secs(1)).await;
    ensure!(!sim.converged().await?, "nothing crosses a held link");
    sim.network().release(0, 1);
    sim.wait_converged(Duration::from_secs(20)).await?;
    ensure!(sim.report().await?.delivery_ratio == 1.0);
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_catches_up_after_restart() -> Result<()> {
    let mut sim = two_peers().await?;
    sim.crash(1).await?;
    ensure!(!sim.is_running(1));
    for _ in 0..3 {
        sim.publish(0, 10).await?;
    }
    sim.restart(1).await?;
    sim.wait_converged(Duration::from_secs(30)).await?;
    ensure!(sim.report().await?.delivery_ratio == 1.0);
    sim.shutdown().await?;
    Ok(())
}
