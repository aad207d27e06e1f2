//! `--print-config`: the effective configuration as `vigild.toml` text.

use std::path::Path;

use serde::Serialize;
use vigil_shared::messages::HA_DISCOVERY_PREFIX;

use super::{BackendKind, Config, Ep, MaskPolicy};
use crate::backend::tract::Precision;

/// The effective configuration as it would be written in `vigild.toml`.
#[derive(Serialize)]
struct Effective<'a> {
    model: &'a Path,
    source: String,
    fps: f64,
    budget_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames: Option<u64>,
    backend: BackendKind,
    ep: Ep,
    #[serde(skip_serializing_if = "Option::is_none")]
    ort_library: Option<&'a Path>,
    precision: &'static str,
    threads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<String>,
    embedded_broker: bool,
    device_id: &'a str,
    camera: &'a str,
    topic_prefix: &'a str,
    masks: MaskPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_token: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    allow_plaintext_commands: bool,
    spool_dir: &'a Path,
    spool_mb: u64,
    stats_interval_s: f64,
    log_level: &'static str,
    log_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_token: Option<&'static str>,
    snapshots: MaskPolicy,
    snapshot_interval_s: f64,
    snapshot_quality: u8,
    ha_discovery: bool,
    ha_discovery_prefix: &'a str,
    ha_expire_after_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    roi: Option<String>,
    v4l_format: String,
    v4l_size: String,
    v4l_fps: f64,
    seed: u64,
}

impl Config {
    /// TOML that [`read_file`] accepts and that resolves to this configuration (the password
    /// is masked).
    pub fn to_toml(&self) -> String {
        let m = &self.mqtt;
        let e = Effective {
            model: &self.model,
            source: self.source.to_string(),
            fps: self.fps,
            budget_ms: self.budget.as_secs_f64() * 1000.0,
            frames: self.frames,
            backend: self.backend,
            ep: self.ep,
            ort_library: self.ort_library.as_deref(),
            precision: match self.precision {
                Precision::F32 => "f32",
                Precision::Int8 => "int8",
            },
            threads: self.threads,
            broker: m.broker.as_ref().map(|b| b.to_string()),
            embedded_broker: m.embedded_broker,
            device_id: &m.device_id,
            camera: &m.camera,
            topic_prefix: &m.topic_prefix,
            masks: m.masks,
            username: m.username.as_deref(),
            password: m.password.as_ref().map(|_| "********"),
            tls_ca: m.tls_ca.as_deref(),
            command_token: m.command_token.as_ref().map(|_| "********"),
            allow_plaintext_commands: m.allow_plaintext_commands,
            spool_dir: &m.spool_dir,
            spool_mb: m.spool_max_bytes >> 20,
            stats_interval_s: m.stats_interval.as_secs_f64(),
            log_level: self.log_level,
            log_format: if self.log_json { "json" } else { "text" },
            http: self.http.map(|a| a.to_string()),
            http_token: self.http_token.as_ref().map(|_| "********"),
            snapshots: m.snapshots,
            snapshot_interval_s: m.snapshot_interval.as_secs_f64(),
            snapshot_quality: m.snapshot_quality,
            ha_discovery: m.ha_discovery_prefix.is_some(),
            ha_discovery_prefix: m
                .ha_discovery_prefix
                .as_deref()
                .unwrap_or(HA_DISCOVERY_PREFIX),
            ha_expire_after_s: m.ha_expire_after_s.unwrap_or(0),
            roi: self.roi.map(|r| format!("{},{},{},{}", r.x, r.y, r.w, r.h)),
            v4l_format: self.v4l.format.to_string(),
            v4l_size: format!("{}x{}", self.v4l.width, self.v4l.height),
            v4l_fps: self.v4l.fps,
            seed: self.seed,
        };
        toml::to_string(&e)
            .unwrap_or_else(|err| format!("# cannot render the configuration: {err}\n"))
    }
}
