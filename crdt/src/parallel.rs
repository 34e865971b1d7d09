//! Spreading CPU-bound batch work (signature checks, decoding, compression) over every core.

use std::sync::OnceLock;

/// The cores this process may use, read once: `available_parallelism` reads the cgroup files on
/// every call, which cost a quarter of all CPU in a netsim run of 100 nodes syncing.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Splits `items` into one chunk per core, maps each on its own thread and joins the results in
/// order. Inputs of fewer than `min_items` stay on the calling thread, where spawning would cost
/// more than it saves.
pub(crate) fn parallel_map<T: Send, U: Send>(
    items: Vec<T>,
    min_items: usize,
    map: impl Fn(Vec<T>) -> Vec<U> + Sync,
) -> Vec<U> {
    if items.len() < min_items {
        return map(items);
    }
    let threads = cores();
    if threads == 1 {
        return map(items);
    }
    let chunk_len = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items.into_iter();
    loop {
        let chunk: Vec<T> = rest.by_ref().take(chunk_len).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let map = &map;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || map(chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}
