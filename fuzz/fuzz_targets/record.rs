//! Record decoding and verification.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grapevine_tests::fuzz::record(data));
