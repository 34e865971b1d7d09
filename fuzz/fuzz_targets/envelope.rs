//! Gossip envelope decoding, and the room taking the change inside.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: grapevine_tests::fuzz::let_caught_panics_unwind(),
    |data: &[u8]| grapevine_tests::fuzz::envelope(data)
);
