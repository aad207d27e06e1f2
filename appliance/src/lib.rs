//! The Vigil appliance: capture → score → publish (docs/architecture.md has the module map).
//!
//! - `capture`: camera (V4L2), folder replay and synthetic sources on a dedicated thread that
//!   keeps only the newest frame.
//! - `backend`: scoring engines behind one trait (tract, on the CPU).
//! - `pipeline`: the fixed-budget scoring loop with preallocated buffers (`scorer`), the
//!   scored-frame [`pipeline::Record`] and its recycled channel (`records`), latency
//!   accounting (`telemetry`).
//! - `publish`: MQTT results, masks, status, stats, spool, Home Assistant discovery, built
//!   from the pipeline's records.
//! - `config`: `vigild.toml` and its flags.
//! - `live`: the HTTP live view (`--http`): page, overlay JPEG/MJPEG, `/metrics`, `/healthz`.
//! - `reload`: hot model reload (SIGHUP, MQTT command) on a background thread.
//! - `service`: systemd notifications (READY, STATUS, a watchdog fed by the scoring loop).

pub mod backend;
pub mod capture;
pub mod config;
pub mod live;
pub mod pipeline;
pub mod publish;
pub mod reload;
pub mod service;
