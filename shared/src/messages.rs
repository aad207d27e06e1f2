//! MQTT topics and payloads of the appliance, as documented in docs/mqtt.md.
//!
//! Field names here are the wire format: dashboards (Node-RED, Grafana, Home Assistant, SCADA)
//! key on them, so renaming one is a breaking change. Timestamps are RFC 3339 UTC with
//! milliseconds (`2026-11-23T08:37:16.123Z`, see [`rfc3339_ms`]).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// First topic level when the configuration gives no prefix: topics are `vigil/<device_id>/…`.
pub const DEFAULT_TOPIC_ROOT: &str = "vigil";
/// Home Assistant's default discovery prefix.
pub const HA_DISCOVERY_PREFIX: &str = "homeassistant";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error(
        "{what} {value:?} is not a valid MQTT topic part: it must be non-empty, without \
         `+`, `#`, NUL, empty levels, or leading/trailing `/`"
    )]
    Invalid { what: &'static str, value: String },
    #[error("{what} {value:?} must be a single topic level (no `/`)")]
    Level { what: &'static str, value: String },
}

fn check_topic_part(what: &'static str, value: &str) -> Result<(), TopicError> {
    let bad = value.is_empty()
        || value.contains(['+', '#', '\0'])
        || value.split('/').any(str::is_empty)
        || value.len() > 1024;
    if bad {
        return Err(TopicError::Invalid {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn check_level(what: &'static str, value: &str) -> Result<(), TopicError> {
    check_topic_part(what, value)?;
    if value.contains('/') {
        return Err(TopicError::Level {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// The topics of one device and camera. `prefix` is the whole device prefix, by default
/// `vigil/<device_id>` ([`Topics::default_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    camera: String,
}

impl Topics {
    pub fn new(prefix: &str, camera: &str) -> Result<Self, TopicError> {
        check_topic_part("topic prefix", prefix)?;
        check_level("camera", camera)?;
        Ok(Self {
            prefix: prefix.to_string(),
            camera: camera.to_string(),
        })
    }

    /// `vigil/<device_id>`.
    pub fn default_prefix(device_id: &str) -> Result<String, TopicError> {
        check_level("device_id", device_id)?;
        Ok(format!("{DEFAULT_TOPIC_ROOT}/{device_id}"))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn camera(&self) -> &str {
        &self.camera
    }
    /// `<prefix>/status`: [`Status`], QoS 1, retained; `offline` is the Last Will.
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    /// `<prefix>/stats`: [`Stats`], QoS 0, not retained.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }
    /// `<prefix>/<camera>/result`: [`FrameResult`] per frame, QoS 1, not retained.
    pub fn result(&self) -> String {
        format!("{}/{}/result", self.prefix, self.camera)
    }
    /// `<prefix>/<camera>/mask`: PNG bytes, QoS 1, not retained.
    pub fn mask(&self) -> String {
        format!("{}/{}/mask", self.prefix, self.camera)
    }
    /// `<prefix>/<camera>/snapshot`: JPEG of a frame with its heatmap and ROI, QoS 1,
    /// retained (the newest), as Frigate publishes them.
    pub fn snapshot(&self) -> String {
        format!("{}/{}/snapshot", self.prefix, self.camera)
    }
    /// `<prefix>/<camera>/state`: the last [`FrameResult`], QoS 1, retained.
    pub fn state(&self) -> String {
        format!("{}/{}/state", self.prefix, self.camera)
    }
    /// `<prefix>/command/reload`: [`ReloadCommand`], subscribed by vigild when a command
    /// token is configured.
    pub fn command_reload(&self) -> String {
        format!("{}/command/reload", self.prefix)
    }
    /// `<prefix>/command/result`: [`CommandResult`] of every reload (MQTT or SIGHUP), QoS 1,
    /// not retained.
    pub fn command_result(&self) -> String {
        format!("{}/command/result", self.prefix)
    }
}

/// The appliance's lifecycle state on `…/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Connected and scoring.
    Online,
    /// The broker lost the connection without a clean goodbye (the Last Will).
    Offline,
    /// vigild exited cleanly.
    Stopped,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
            DeviceState::Stopped => "stopped",
        }
    }
}

/// `…/status` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub state: DeviceState,
    /// vigild's version.
    pub version: String,
    /// Model id (see [`ModelRef::id`]).
    pub model: String,
    /// sha256 (hex) of the ONNX file that runs ([`ModelRef::sha256`]): what a deploy's health
    /// check compares with the bundle it shipped. Republished after a hot reload.
    #[serde(default)]
    pub model_sha256: String,
    /// The scoring engine chosen at start, one line for people (`tract f32, 1 thread`, `ort cuda
    /// …`, `auto: …`; docs/mqtt.md, "Status"). Empty from publishers that do not know it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
    /// When this state began (RFC 3339 UTC, ms). For the Last Will `offline`, which the broker
    /// stores at connect time, it is when the lost connection was opened.
    pub since: String,
}

/// Per-stage latency of one frame, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyMs {
    /// Frame grab to the start of scoring (conversion, crop, resize).
    pub capture: f64,
    /// The backend's scoring call.
    pub infer: f64,
    /// Frame grab to the result being handed to the publisher.
    pub total: f64,
}

/// The model that produced a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Human-readable id, e.g. `ganomaly-64x64-f32`.
    pub id: String,
    /// sha256 (hex) of the ONNX file that ran.
    pub sha256: String,
}

/// `…/<camera>/result` and `…/<camera>/state` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameResult {
    /// Frame number since vigild started, from 0, consecutive for scored frames.
    pub frame_id: u64,
    /// Where the frame came from: the file name for `folder:` replay, the device for a camera.
    pub source: String,
    /// When the frame was captured (RFC 3339 UTC, ms).
    pub captured_at: String,
    /// Raw detector score; a non-finite score (broken model) is published as `null`.
    #[serde(with = "f32_or_null")]
    pub score: f32,
    /// Score mapped so that the threshold is 0.5 (clamped to [0, 1]).
    pub normalized_score: f32,
    /// Raw-score threshold from the bundle.
    pub threshold: f32,
    /// `score >= threshold` (a non-finite score counts as anomalous).
    pub anomalous: bool,
    pub latency_ms: LatencyMs,
    pub model: ModelRef,
}

/// p50 / p99 of one stage over the stats window, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

/// Per-stage latency percentiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageLatency {
    pub capture: Percentiles,
    pub infer: Percentiles,
    pub total: Percentiles,
}

/// The scoring loop's counters, filled by the pipeline (cumulative since start unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineStats {
    /// Frames scored.
    pub frames: u64,
    /// Frames scored per second over the last stats window.
    pub fps: f64,
    /// Latency percentiles over the last stats window.
    pub latency_ms: StageLatency,
    /// Frames whose total latency exceeded the per-frame budget.
    pub deadline_misses: u64,
    /// Captured frames replaced by a newer one before the scorer took them.
    pub dropped_frames: u64,
    /// Capture errors (timeouts, vanished camera) and reopen attempts.
    pub capture_errors: u64,
    /// Bundles hot-reloaded (SIGHUP or MQTT command) and swapped in.
    #[serde(default)]
    pub reloads: u64,
    /// Reloads refused (bad checksum, shape, or load error); the old model kept running.
    #[serde(default)]
    pub reloads_refused: u64,
}

/// The publisher's counters (cumulative since start unless noted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublisherStats {
    /// Records in the on-disk spool now, waiting for the broker.
    pub spooled: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// Records dropped (oldest first) because the spool was full.
    pub spool_dropped: u64,
    /// Results acknowledged by the broker.
    pub published: u64,
    /// Connections to the broker after the first one.
    pub reconnects: u64,
    /// Results the scoring loop could not hand over because the publisher's queue was full.
    pub queue_full: u64,
    /// Masks the scorer chose to send that were not published: the PNG could not be encoded.
    pub masks_dropped: u64,
    /// Messages lost to a local fault: the spool could not be written, or the MQTT client
    /// refused a message.
    pub publish_errors: u64,
    /// Connection attempts that failed (broker unreachable, TLS handshake, login refused).
    #[serde(default)]
    pub connect_failures: u64,
    /// Why the last failed attempt failed, in plain words (kept after a later success, so a
    /// dashboard still sees what happened); absent when none failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connect_error: Option<String>,
}

/// `…/stats` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// When these figures were taken (RFC 3339 UTC, ms).
    pub at: String,
    pub uptime_s: f64,
    #[serde(flatten)]
    pub pipeline: PipelineStats,
    #[serde(flatten)]
    pub publisher: PublisherStats,
}

/// `…/command/reload` payload: load the bundle at `bundle` (a directory on the device;
/// default: the configured `model`) and swap it in between frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadCommand {
    /// Must equal vigild's `command_token` (compared in constant time).
    pub token: String,
    #[serde(default)]
    pub bundle: Option<String>,
    /// Echoed in the result, so a caller can match its reply.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `…/command/result` payload: the outcome of one reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// `reload`.
    pub command: String,
    /// What asked for it: `mqtt` or `sighup`.
    pub trigger: String,
    #[serde(default)]
    pub request_id: Option<String>,
    /// The bundle directory it tried.
    pub bundle: String,
    pub ok: bool,
    /// The model now running (the new one on success, the old one on refusal).
    pub model: ModelRef,
    /// Why it was refused.
    #[serde(default)]
    pub error: Option<String>,
    /// When it finished (RFC 3339 UTC, ms).
    pub at: String,
}

/// Serialises non-finite `f32` as `null` (JSON has no NaN) and reads `null` back as NaN.
mod f32_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f32(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T08:37:16.123Z`. Times before 1970 are
/// clamped to the epoch (a clock that wrong is visible in the output anyway).
pub fn rfc3339_ms(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rfc3339_from_unix_ms(ms)
}

/// [`rfc3339_ms`] from milliseconds since the Unix epoch.
pub fn rfc3339_from_unix_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub use crate::discovery::{
    ha_discovery, ha_id, ha_snapshot_discovery, HaAvailability, HaDevice, HaDiscovery,
    HaEntityConfig, HaImageConfig, HaOrigin,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample_result() -> FrameResult {
        FrameResult {
            frame_id: 41,
            source: "000041.png".into(),
            captured_at: "2026-11-23T08:37:16.123Z".into(),
            score: 0.8125,
            normalized_score: 0.71,
            threshold: 0.5,
            anomalous: true,
            latency_ms: LatencyMs {
                capture: 0.4,
                infer: 3.2,
                total: 3.9,
            },
            model: ModelRef {
                id: "ganomaly-64x64-f32".into(),
                sha256: "ab".repeat(32),
            },
        }
    }

    #[test]
    fn topics_follow_the_design() {
        let prefix = Topics::default_prefix("line-3").unwrap();
        let t = Topics::new(&prefix, "cam0").unwrap();
        assert_eq!(t.status(), "vigil/line-3/status");
        assert_eq!(t.stats(), "vigil/line-3/stats");
        assert_eq!(t.result(), "vigil/line-3/cam0/result");
        assert_eq!(t.mask(), "vigil/line-3/cam0/mask");
        assert_eq!(t.state(), "vigil/line-3/cam0/state");
        let custom = Topics::new("factory/a/vigil", "top").unwrap();
        assert_eq!(custom.result(), "factory/a/vigil/top/result");
    }

    #[test]
    fn bad_topic_parts_are_rejected_by_name() {
        for bad in ["", "a/+/b", "a/#", "a//b", "/a", "a/"] {
            let e = Topics::new(bad, "cam0").unwrap_err();
            assert!(e.to_string().contains("topic prefix"), "{e}");
        }
        let e = Topics::new("vigil/x", "a/b").unwrap_err();
        assert!(e.to_string().contains("camera"), "{e}");
        assert!(Topics::default_prefix("a/b").is_err());
    }

    #[test]
    fn result_roundtrips_with_fixed_field_names() {
        let r = sample_result();
        let json = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected = vec![
            "frame_id",
            "source",
            "captured_at",
            "score",
            "normalized_score",
            "threshold",
            "anomalous",
            "latency_ms",
            "model",
        ];
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        expected.sort();
        assert_eq!(keys_sorted, expected);
        assert_eq!(json["latency_ms"]["infer"], 3.2);
        assert_eq!(json["model"]["id"], "ganomaly-64x64-f32");
        let back: FrameResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn nan_score_is_null_on_the_wire_and_nan_back() {
        let mut r = sample_result();
        r.score = f32::NAN;
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"score\":null"), "{s}");
        let back: FrameResult = serde_json::from_str(&s).unwrap();
        assert!(back.score.is_nan());
    }

    #[test]
    fn status_and_stats_roundtrip() {
        let s = Status {
            state: DeviceState::Offline,
            version: "0.1.0".into(),
            model: "m".into(),
            model_sha256: "ab".repeat(32),
            backend: "ort cpu f32, 1 thread".into(),
            since: rfc3339_from_unix_ms(0),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"state\":\"offline\""), "{json}");
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);

        let st = Stats {
            at: rfc3339_from_unix_ms(1_000),
            uptime_s: 12.5,
            pipeline: PipelineStats {
                frames: 300,
                fps: 29.9,
                deadline_misses: 1,
                dropped_frames: 2,
                capture_errors: 0,
                reloads: 1,
                reloads_refused: 0,
                latency_ms: StageLatency {
                    capture: Percentiles { p50: 0.1, p99: 0.3 },
                    infer: Percentiles { p50: 2.0, p99: 4.0 },
                    total: Percentiles { p50: 2.2, p99: 4.5 },
                },
            },
            publisher: PublisherStats {
                spooled: 7,
                spool_bytes: 4096,
                spool_dropped: 3,
                published: 290,
                reconnects: 1,
                queue_full: 0,
                masks_dropped: 0,
                publish_errors: 0,
                connect_failures: 2,
                last_connect_error: Some("the broker refused the login".into()),
            },
        };
        let v = serde_json::to_value(&st).unwrap();
        // Flattened: dashboards read `fps` and `spooled` at the top level.
        assert_eq!(v["fps"], 29.9);
        assert_eq!(v["spooled"], 7);
        assert_eq!(v["latency_ms"]["total"]["p99"], 4.5);
        assert_eq!(serde_json::from_value::<Stats>(v).unwrap(), st);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 12:34:56.789
        assert_eq!(
            rfc3339_from_unix_ms(951_827_696_789),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            rfc3339_from_unix_ms(1_795_423_036_123),
            "2026-11-23T08:37:16.123Z"
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_795_423_036_123);
        assert_eq!(rfc3339_ms(t), "2026-11-23T08:37:16.123Z");
    }

    #[test]
    fn ha_discovery_has_the_fields_home_assistant_needs() {
        let t = Topics::new("vigil/line 3", "cam0").unwrap();
        let d = ha_discovery(HA_DISCOVERY_PREFIX, "line 3", &t, "0.1.0", "m", Some(60));
        assert_eq!(d.len(), 3);
        // The options HA's MQTT sensor and binary sensor integrations document (2026): a key
        // outside this list is ignored by HA at best, and rejects the config at worst.
        const HA_FIELDS: &[&str] = &[
            "availability",
            "availability_mode",
            "default_entity_id",
            "device",
            "device_class",
            "enabled_by_default",
            "encoding",
            "entity_category",
            "expire_after",
            "force_update",
            "icon",
            "json_attributes_template",
            "json_attributes_topic",
            "name",
            "object_id",
            "origin",
            "payload_off",
            "payload_on",
            "qos",
            "state_class",
            "state_topic",
            "suggested_display_precision",
            "unique_id",
            "unit_of_measurement",
            "value_template",
        ];
        assert_eq!(
            d[0].topic,
            "homeassistant/sensor/vigil_line_3/cam0_score/config"
        );
        assert_eq!(
            d[1].topic,
            "homeassistant/binary_sensor/vigil_line_3/cam0_anomaly/config"
        );
        for x in &d {
            let v = serde_json::to_value(&x.config).unwrap();
            for k in [
                "name",
                "unique_id",
                "state_topic",
                "value_template",
                "availability",
                "device",
            ] {
                assert!(v.get(k).is_some(), "{} lacks {k}", x.topic);
            }
            for k in v.as_object().unwrap().keys() {
                assert!(
                    HA_FIELDS.contains(&k.as_str()),
                    "{}: HA has no {k}",
                    x.topic
                );
            }
            // `<domain>.<object id>`, the domain being the topic's component, in HA's
            // entity-id alphabet.
            let component = x.topic.split('/').nth(1).unwrap();
            let id = v["default_entity_id"].as_str().unwrap();
            assert!(id.starts_with(&format!("{component}.")), "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._".contains(c)),
                "{id}"
            );
            // A stalled camera turns the verdict and score unavailable; fps comes from stats.
            let expires = !x.topic.ends_with("/fps/config");
            assert_eq!(v.get("expire_after").is_some(), expires, "{}", x.topic);
            assert_eq!(v["availability"][0]["topic"], "vigil/line 3/status");
            assert_eq!(v["availability"][0]["payload_available"], "online");
            assert_eq!(v["device"]["identifiers"][0], "vigil_line_3");
            assert!(v.get("payload_on").is_none() || x.topic.contains("binary_sensor"));
        }
        assert_eq!(d[1].config.device_class.as_deref(), Some("problem"));
        let (topic, image) = ha_snapshot_discovery(HA_DISCOVERY_PREFIX, "line 3", &t, "0.1.0", "m");
        assert_eq!(
            topic,
            "homeassistant/image/vigil_line_3/cam0_snapshot/config"
        );
        assert_eq!(image.image_topic, "vigil/line 3/cam0/snapshot");
        assert_eq!(image.default_entity_id, "image.vigil_line_3_cam0_snapshot");
        assert_eq!(image.content_type, "image/jpeg");
        assert_eq!(image.device, d[0].config.device);
        // unique ids are distinct, or HA would merge the entities.
        assert_ne!(d[0].config.unique_id, d[1].config.unique_id);
    }

    /// docs/mqtt.md is the contract dashboards read: its JSON examples must parse into these
    /// types (unknown fields are refused) and carry every field the types write.
    #[test]
    fn docs_examples_match_the_types() {
        let doc = include_str!("../../docs/mqtt.md");
        let blocks: Vec<&str> = doc
            .split("```json\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let mut seen = [false; 4];
        for b in blocks {
            let v: serde_json::Value =
                serde_json::from_str(b).unwrap_or_else(|e| panic!("bad JSON in docs: {e}\n{b}"));
            if v.get("uptime_s").is_some() {
                let s: Stats = serde_json::from_value(v.clone()).unwrap();
                assert_eq!(keys(&serde_json::to_value(&s).unwrap()), keys(&v));
                seen[0] = true;
            } else if v.get("frame_id").is_some() {
                let r: FrameResult = serde_json::from_value(v.clone()).unwrap();
                assert_eq!(keys(&serde_json::to_value(&r).unwrap()), keys(&v));
                seen[1] = true;
            } else if v.get("unique_id").is_some() {
                let d: HaEntityConfig = serde_json::from_value(v.clone()).unwrap();
                let t = Topics::new("vigil/line-3", "cam0").unwrap();
                let ours = ha_discovery(HA_DISCOVERY_PREFIX, "line-3", &t, "0.1.0", "m", Some(60));
                let generated = serde_json::to_value(&ours[1].config).unwrap();
                assert_eq!(keys(&generated), keys(&v));
                assert_eq!(d.value_template, ours[1].config.value_template);
                assert_eq!(d.availability, ours[1].config.availability);
                assert_eq!(d.unique_id, ours[1].config.unique_id);
                seen[2] = true;
            } else if v.get("state").is_some() {
                let s: Status = serde_json::from_value(v.clone()).unwrap();
                assert_eq!(keys(&serde_json::to_value(&s).unwrap()), keys(&v));
                seen[3] = true;
            }
        }
        assert_eq!(seen, [true; 4], "stats, result, discovery, status examples");
    }
}
