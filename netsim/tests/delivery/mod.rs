//! The delivery bar every hostile-scenario test keeps.

use anyhow::{Result, ensure};
use grapevine_netsim::Report;

/// Fails unless the run (of `seed`) published records and the honest members (the hostile
/// peers are not measured) received at least 99 % of them.
pub(crate) fn ensure_honest_delivery(seed: u64, delivery: &Report) -> Result<()> {
    ensure!(delivery.published > 0);
    ensure!(
        delivery.delivery_ratio >= 0.99,
        "honest delivery (seed {seed}): {delivery}"
    );
    Ok(())
}
