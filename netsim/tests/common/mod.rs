//! What the attack tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts every panic in the process from now on (the default hook still prints it): a panic
/// in a connection task is caught by tokio and would otherwise go unnoticed.
pub(crate) fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::Relaxed);
        report(info);
    }));
    panics
}
