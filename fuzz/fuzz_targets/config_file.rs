//! The config file parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grapevine_tests::fuzz::config_file(data));
