//! Cross-crate test code. The integration tests themselves live in `tests/`; this library holds
//! what more than one place runs: the bodies and seed corpus of the fuzz targets ([`fuzz`]),
//! which both libFuzzer (`fuzz/`) and the corpus replay test call.

pub mod fuzz;
