//! Types and algorithms that the host (`vigil`) and the appliance (`vigild`) agree on.
//!
//! Light dependencies only: this crate is compiled into the edge binary.

pub mod discovery;
pub mod manifest;
pub mod mask;
pub mod messages;
pub mod metrics;
pub mod preprocess;
pub mod rng;
pub mod synth;
pub mod tiles;
