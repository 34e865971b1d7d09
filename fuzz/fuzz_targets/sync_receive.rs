//! Sync-session `receive` with arbitrary bytes, answered as the node answers.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: grapevine_tests::fuzz::let_caught_panics_unwind(),
    |data: &[u8]| grapevine_tests::fuzz::sync_receive(data)
);
