//! A slow reader, at a small size: a member that reads 1 KiB/s over all its connections makes
//! each of its senders fill its gossipsub send queue towards it up to the bound
//! (`SEND_QUEUE_LEN`) and drop the rest for it instead of buffering it, and every other member
//! still gets (nearly) every record.
//!
//! The traffic is sized from what lies between a sender's queue and the reader. Below the queue,
//! each connection holds what the link and yamux's window on the gossip stream take (256 KiB,
//! more once yamux has grown it); yamux returns window only once the reader has consumed half
//! of it, minutes at 1 KiB/s. Until then, or until a new connection to the reader opens, no
//! handler takes anything from the queue (the connections to one peer share it), so nothing in
//! it expires: here a message is dropped only when the queue is full, which takes the
//! connections' fill plus 1,000 more messages. The test used to run 12 members at
//! 5 records/s of 200 bytes for 12 s: 60 records, about 47 KB per sender, which the connections
//! absorb; it passed only through drops that had nothing to do with the slow reader (the same
//! run without one dropped 0, 4 and 169 messages in three tries). Here 4 members (the slow reader is
//! in every mesh, and publishers flood their own records to it) send 80 records/s of 4,000 bytes
//! (about 4.7 KB on the wire) for 20 s: each sender owes the slow reader 1,600 messages, 7.5 MB,
//! while it reads 20 KB. In the runs done, about 350 of them went into the connections, 1,000
//! filled the queue and about 250 per sender were dropped; at full speed nothing is dropped and
//! the test fails. Four members keep the run near 30 s in a debug build.

mod delivery;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use grapevine_netsim::{Scenario, runner};
use grapevine_node::behaviour::SEND_QUEUE_LEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_makes_its_senders_drop_within_their_queue_bound_and_others_still_deliver()
-> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/slow-reader.toml");
    let mut scenario = Scenario::load(&path)?;
    scenario.peers = 4;
    scenario.hostile.slow_readers = 0.25;
    scenario.warmup = Duration::from_secs(6);
    scenario.duration = Duration::from_secs(20);
    // The slow reader cannot hold every record before hours have passed; the others converge
    // within this.
    scenario.settle = Duration::from_secs(5);
    scenario.traffic.publishers = 3;
    scenario.traffic.rate = 80.0;
    scenario.traffic.size = 4_000;
    scenario.check().map_err(anyhow::Error::msg)?;
    let report = runner::run(&scenario, &|_| {}).await?;
    println!(
        "seed {}\n{}\npeak memory {:.0} MiB\n{:?}",
        report.seed, report.delivery, report.usage.peak_rss_mib, report.hostile
    );
    let hostile = report.hostile.context("the scenario has a slow reader")?;
    ensure!(hostile.slow_readers == 1, "{hostile:?}");
    ensure!(
        hostile.dropped_for_slow_readers > 0,
        "the senders dropped nothing for the slow reader: it held none of them back \
         ({} dropped for any peer, longest send queue {})",
        report.delivery.dropped_for_slow_peers,
        report.delivery.longest_send_queue
    );
    // gossipsub samples each queue at every heartbeat, in buckets of 50: a queue that stayed
    // full reads as exactly its bound, one that passed it as more.
    ensure!(
        report.delivery.longest_send_queue == SEND_QUEUE_LEN as u64,
        "the senders' queues towards the slow reader filled up to their bound of \
         {SEND_QUEUE_LEN} messages and no further: longest {}",
        report.delivery.longest_send_queue
    );
    delivery::ensure_honest_delivery(report.seed, &report.delivery)?;
    Ok(())
}
