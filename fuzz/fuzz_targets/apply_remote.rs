//! `Room::apply_remote` with arbitrary change bytes, in batches.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: grapevine_tests::fuzz::let_caught_panics_unwind(),
    |data: &[u8]| grapevine_tests::fuzz::apply_remote(data)
);
