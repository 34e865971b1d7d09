//! The many-peer harness. It is built by the `netsim` issue on top of the `node` crate; until then the
//! crate is empty so that the workspace layout is already in its final shape.
