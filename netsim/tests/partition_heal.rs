//! A room split in two keeps chatting on both sides and converges after the split is repaired,
//! on the simulated network with latency and jitter.

use std::time::Duration;

use anyhow::{Result, ensure};
use grapevine_netsim::{LinkFaults, Sim, Topology};

const PEERS: usize = 12;
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_room_converges_after_repair() -> Result<()> {
    let mut sim = Sim::builder()
        .peers(PEERS)
        .seed(7)
        .topology(Topology::RandomRegular { degree: 3 })
        .link_faults(LinkFaults {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(5),
            loss: 0.01,
        })
        .sync_interval(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(200))
        .build()
        .await?;
    sim.publish(0, 100).await?;
    sim.wait_converged(CONVERGE_WITHIN).await?;

    let left: Vec<usize> = (0..PEERS / 2).collect();
    let right: Vec<usize> = (PEERS / 2..PEERS).collect();
    sim.partition(&[left.clone(), right.clone()]);
    for i in 0..5 {
        sim.publish(left[i % left.len()], 100).await?;
        sim.publish(right[i % right.len()], 100).await?;
    }
    sim.run_for(Duration::from_secs(2)).await;
    ensure!(
        !sim.converged().await?,
        "the two sides cannot hold the same history while split"
    );

    sim.repair();
    let took = sim.wait_converged(CONVERGE_WITHIN).await?;
    let mut report = sim.report().await?;
    report.convergence = Some(took);
    println!("{report}");
    ensure!(report.published == 11);
    ensure!(
        report.delivery_ratio == 1.0,
        "every member holds every record after the repair: {report}"
    );

    // A crashed peer misses messages and catches up after its restart.
    sim.crash(3).await?;
    sim.publish(0, 100).await?;
    sim.restart(3).await?;
    sim.wait_converged(CONVERGE_WITHIN).await?;
    ensure!(sim.report().await?.delivery_ratio == 1.0);
    sim.shutdown().await?;
    Ok(())
}
