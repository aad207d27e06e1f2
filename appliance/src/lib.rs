//! The Vigil appliance: capture → score → publish.
//!
//! - `capture`: camera (V4L2), folder replay and synthetic sources on a dedicated thread that
//!   keeps only the newest frame.
//! - `backend`: scoring engines behind one trait (tract on the CPU today, a GPU engine later).
//! - `pipeline`: the fixed-budget scoring loop with preallocated buffers and latency accounting.
//! - `publish`: MQTT results, masks, status, stats, spool, Home Assistant discovery.
//! - `config`: `vigild.toml` and its flags.
//! - `reload`: hot model reload (SIGHUP, MQTT command) on a background thread.

pub mod backend;
pub mod capture;
pub mod config;
pub mod pipeline;
pub mod publish;
pub mod reload;
