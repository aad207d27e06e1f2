//! The host side of Vigil: datasets, training, evaluation, reports and bundles.
//! The `vigil` binary (src/main.rs) is a thin CLI over these modules.

pub mod bundle;
pub mod data;
pub mod demo;
pub mod eval;
pub mod export;
pub mod patch;
pub mod predict;
pub mod report;
pub mod train;
