//! A newcomer connected to many members of a room with a long history fetches that history
//! about once, not once per member: its first exchange runs alone and the others, started by
//! either side, wait for it and then find nothing left to send.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use grapevine_netsim::{Sim, Topology};

/// Records of history the newcomer fetches.
const HISTORY: usize = 2_000;
/// Bytes of each record's text.
const RECORD_SIZE: usize = 200;
/// How long the members have been in the room when the newcomer joins: longer than a joined
/// room's catch-up window (10 s).
const MEMBERS_FOR: Duration = Duration::from_secs(12);
/// Bytes of a record's signature.
const SIGNATURE_BYTES: usize = 64;

/// Bytes on the wire while a newcomer connected to `members` members (all connected to each
/// other) joins a room of [`HISTORY`] records and catches up.
async fn bytes_to_join(members: usize) -> Result<u64> {
    let sim = Sim::builder()
        .peers(members + 1)
        .seed(21)
        .late_joiners(1)
        .topology(Topology::RandomRegular { degree: members })
        .heartbeat(Duration::from_millis(100))
        .build()
        .await?;
    let built = Instant::now();
    sim.preload(0, HISTORY, RECORD_SIZE).await?;
    sim.wait_converged(Duration::from_secs(60)).await?;
    // Members that joined the room less than 10 s ago are still in their own catch-up window
    // and answer a newcomer's exchanges as one newcomer answers another; these have been
    // members for longer.
    tokio::time::sleep_until((built + MEMBERS_FOR).into()).await;
    let newcomer = members;
    ensure!(
        sim.node(newcomer)?.peers().await?.len() == members,
        "the newcomer is connected to every member"
    );
    // Whatever the members still had to say to each other is said before the join.
    sim.run_for(Duration::from_secs(1)).await;
    let bytes = || sim.network().traffic().bytes.load(Ordering::Relaxed);
    let before = bytes();
    sim.join(newcomer).await?;
    sim.wait_converged(Duration::from_secs(60)).await?;
    // The exchanges that waited for the catch-up run once it is over.
    sim.run_for(Duration::from_secs(2)).await;
    let used = bytes() - before;
    sim.shutdown().await?;
    Ok(used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_with_many_members_connected_fetches_the_history_about_once() -> Result<()> {
    let alone = bytes_to_join(1).await?;
    let crowded = bytes_to_join(6).await?;
    println!("joining with 1 member connected: {alone} bytes; with 6: {crowded} bytes");
    // Texts compress well on the wire; each record's signature does not.
    ensure!(
        alone > (HISTORY * SIGNATURE_BYTES) as u64,
        "the history crossed the wire: {alone} bytes"
    );
    // Six members sending the whole history would be six times the bytes; the exchanges after
    // the catch-up and the gossip of six connections add a little.
    ensure!(
        crowded < alone * 2,
        "with six members connected the newcomer fetched the history more than once: \
         {crowded} bytes against {alone} with one"
    );
    Ok(())
}
