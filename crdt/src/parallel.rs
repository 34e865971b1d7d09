//! Spreading CPU-bound batch work (signature checks, decoding, compression) over every core.

/// Splits `items` into one chunk per core, maps each on its own thread and joins the results in
/// order. Inputs of fewer than `min_items` stay on the calling thread, where spawning would cost
/// more than it saves.
pub(crate) fn parallel_map<T: Send, U: Send>(
    items: Vec<T>,
    min_items: usize,
    map: impl Fn(Vec<T>) -> Vec<U> + Sync,
) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < min_items || threads == 1 {
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
