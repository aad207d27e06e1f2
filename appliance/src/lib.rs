//! The Vigil appliance: capture → score → publish (docs/architecture.md has the module map).
//!
//! - `capture`: camera (V4L2), folder replay and synthetic sources on a dedicated thread that
//!   keeps only the newest frame.
//! - `backend`: scoring engines behind one trait (tract on the CPU; onnxruntime with feature
//!   `ort`), and `auto`, the faster of the two on this box.
//! - `pipeline`: the fixed-budget scoring loop with preallocated buffers (`scorer`), the
//!   scored-frame [`pipeline::Record`] and its recycled channel (`records`), latency
//!   accounting (`telemetry`).
//! - `publish`: MQTT results, masks, status, stats, spool, Home Assistant discovery, built
//!   from the pipeline's records.
//! - `config`: `vigild.toml` and its flags.
//! - `live`: the HTTP live view (`--http`): page, overlay JPEG/MJPEG, `/metrics`, `/healthz`.
//! - `reload`: hot model reload (SIGHUP, MQTT command) on a background thread.
//! - `service`: systemd notifications (READY, STATUS, a watchdog fed by the scoring loop).

/// vigild's log events, on target `vigild`: a text line reads `… WARN vigild: …`, and
/// `RUST_LOG=vigild=debug` selects them apart from the libraries' (tract, rumqttc, rumqttd).
#[macro_export]
macro_rules! log_error { ($($arg:tt)+) => { ::tracing::error!(target: "vigild", $($arg)+) } }
#[macro_export]
macro_rules! log_warn { ($($arg:tt)+) => { ::tracing::warn!(target: "vigild", $($arg)+) } }
#[macro_export]
macro_rules! log_info { ($($arg:tt)+) => { ::tracing::info!(target: "vigild", $($arg)+) } }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)+) => { ::tracing::debug!(target: "vigild", $($arg)+) } }

pub mod backend;
pub mod capture;
pub mod config;
pub mod live;
pub mod pipeline;
pub mod publish;
pub mod reload;
pub mod service;
