//! The terminal sanitiser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grapevine_tests::fuzz::sanitize(data));
