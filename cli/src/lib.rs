//! The parts of the `grapevine` binary that read untrusted text on their own, kept in a library
//! so they can be tested and fuzzed without starting the program.
//!
//! # Layout
//! - [`config_file`]: the TOML config file, from its bytes to checked values.
//! - [`sanitize`]: text from other people made safe for a terminal.

pub mod config_file;
pub mod sanitize;
