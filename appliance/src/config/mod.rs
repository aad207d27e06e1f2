//! `vigild.toml` and its command-line flags.
//!
//! Every field of the file is also a flag (`budget_ms` ↔ `--budget-ms`); a flag given on the
//! command line overrides the file. [`Settings`] is the raw, all-optional form that both the
//! TOML file and clap fill in; [`Settings::resolve`] merges and validates it into a [`Config`]
//! with concrete types, and every error names the field (and the file) it comes from.
//!
//! The publisher embeds [`MqttConfig`] (`Config::mqtt`): broker URL, credentials, TLS, topic
//! prefix, mask policy, spool and stats interval are all there, already validated; the MQTT
//! defaults are named once, in `mqtt`.

mod effective;
mod mqtt;
mod resolve;
mod types;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use mqtt::{
    MqttConfig, DEFAULT_CAMERA, DEFAULT_DEVICE_ID, DEFAULT_MASKS, DEFAULT_SPOOL_DIR,
    DEFAULT_SPOOL_MB, DEFAULT_STATS_INTERVAL_S, MQTTS_PORT, MQTT_PORT,
};
pub use types::{BrokerUrl, MaskPolicy, PixelFormat, Roi, SourceSpec};

use crate::backend::tract::Precision;
pub use crate::backend::{BackendKind, Ep};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors and unknown fields; toml's message names the field and its line.
    #[error("{}: {msg}", .path.display())]
    Parse { path: PathBuf, msg: String },
    #[error("{origin}field `{field}` = {value:?}: {msg}")]
    Field {
        /// "FILE: " when the value came from the file, empty for a flag or a default.
        origin: String,
        field: &'static str,
        value: String,
        msg: String,
    },
    #[error("field `{field}` is required (set it in the config file or pass --{flag})")]
    Missing {
        field: &'static str,
        flag: &'static str,
    },
}

/// The raw settings: every field optional, filled from the TOML file and from flags.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Model bundle directory (manifest.json, model.onnx), as written by `vigil train` + `vigil export`.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Frame source: `v4l:/dev/videoN`, `folder:PATH` (replayed in file-name order) or
    /// `synthetic[:KIND]` (metal, fabric, casting). Default: synthetic.
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// Frames per second of folder/synthetic replay and requested from a camera. 0 replays a
    /// folder or synthetic source unpaced, in lockstep with the scorer (no frame dropped).
    /// Default: 10.
    #[arg(long, value_name = "N")]
    pub fps: Option<f64>,
    /// Per-frame latency budget in milliseconds (default: 1000 / fps, or 1000 when fps is 0).
    #[arg(long, value_name = "MS")]
    pub budget_ms: Option<f64>,
    /// Stop after scoring this many frames (tests and batch runs). Default: run until stopped.
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// MQTT broker: `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`. With --embedded-broker, the
    /// address the embedded broker listens on. Without either, results go to stdout as JSON
    /// lines.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Device id used in topics (`vigil/<device_id>/…`) and as MQTT client id. Default: vigil.
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// Camera name used in topics (`…/<camera>/result`). Default: cam0.
    #[arg(long, value_name = "NAME")]
    pub camera: Option<String>,
    /// Run an MQTT broker (rumqttd) inside vigild: the zero-install setup.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub embedded_broker: Option<bool>,
    /// Scoring engine: tract (CPU, always built), ort (onnxruntime, loaded at run time; needs
    /// a vigild built with `--features ort`) or auto (both timed at warm-up, the faster one
    /// runs). Default: tract.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// onnxruntime's execution provider: cpu, cuda, tensorrt or openvino (backend ort or
    /// auto). One that cannot run falls back to cpu, said in the log and the status. Default: cpu.
    #[arg(long, value_name = "EP")]
    pub ep: Option<String>,
    /// libonnxruntime to load for backend ort or auto (e.g. the `onnxruntime/capi/
    /// libonnxruntime.so.1.31.1` of `pip install onnxruntime`). Default: $ORT_DYLIB_PATH, else
    /// libonnxruntime.so on the loader's search path.
    #[arg(long, value_name = "FILE")]
    pub ort_library: Option<PathBuf>,
    /// Exported graph the tract backend runs: f32 (model.onnx) or int8 (model.int8.onnx, from
    /// `vigil export --quantize int8`). Default: f32, which tract runs faster on x86-64
    /// (docs/benchmarks.md, "Inference").
    #[arg(long, value_name = "P")]
    pub precision: Option<String>,
    /// Threads tract's matrix products use for one frame (1: the scoring thread only). More
    /// threads cut inference latency on multi-core boxes at the cost of the cores' other work.
    /// Default: 1.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Topic prefix. Default: vigil/<device_id>.
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Which frames publish a mask PNG: all, anomalous, none. Default: anomalous.
    #[arg(long, value_name = "WHICH")]
    pub masks: Option<String>,
    /// MQTT username.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// MQTT password. Also from the environment variable VIGILD_PASSWORD (a systemd
    /// `EnvironmentFile=` or credential), never echoed; prefer either, or the config file with
    /// restricted permissions, over a flag that `ps` shows.
    #[arg(
        long,
        value_name = "PASS",
        env = "VIGILD_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts:// only).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Shared secret that `<prefix>/command/reload` messages must carry to hot-reload the
    /// model (at least 16 characters). Absent: MQTT commands are off (SIGHUP still reloads).
    /// The broker's ACLs and TLS remain the real access control (docs/mqtt.md, "Commands").
    /// Also from the environment variable VIGILD_COMMAND_TOKEN, never echoed.
    #[arg(
        long,
        value_name = "SECRET",
        env = "VIGILD_COMMAND_TOKEN",
        hide_env_values = true
    )]
    pub command_token: Option<String>,
    /// Accept `command_token` over a plain mqtt:// connection to a broker off this host (the
    /// token then crosses the network readable by anyone on it). Default: false, refused.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_plaintext_commands: Option<bool>,
    /// Directory of the on-disk spool for results while the broker is unreachable.
    /// Default: vigild-spool in the working directory.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Spool size limit in MiB; when full the oldest results are dropped (and counted). Default: 64.
    #[arg(long, value_name = "MIB")]
    pub spool_mb: Option<u64>,
    /// Seconds between stats messages. Default: 10.
    #[arg(long, value_name = "S")]
    pub stats_interval_s: Option<f64>,
    /// Log level: error, warn, info, debug, trace. Default: info (tract, rumqttc and rumqttd
    /// at warn). RUST_LOG, when set, replaces it with a full filter (e.g. `vigild=debug,info`).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format on stderr: text (one line per event: time, level, message) or json (one JSON
    /// object per line, for journald, Loki, Elasticsearch). Default: text.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Serve the live view (page, overlay JPEG/MJPEG, /metrics, /healthz) on this address,
    /// e.g. 127.0.0.1:8080. Off by default. On an address other than loopback vigild starts
    /// only with `http_token` or the MQTT `username` and `password` set (HTTP Basic).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Token the live view demands (`Authorization: Bearer …`, or `?token=…` in the page's
    /// URL); at least 16 characters. Also from VIGILD_HTTP_TOKEN, never echoed.
    #[arg(
        long,
        value_name = "SECRET",
        env = "VIGILD_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// Which frames publish a JPEG snapshot (frame, heatmap, ROI) on `…/<camera>/snapshot`,
    /// retained: anomalous, all, none. Default: anomalous.
    #[arg(long, value_name = "WHICH")]
    pub snapshots: Option<String>,
    /// Seconds between two snapshots at least. Default: 1.
    #[arg(long, value_name = "S")]
    pub snapshot_interval_s: Option<f64>,
    /// JPEG quality of the snapshots, 1–100. Default: 75.
    #[arg(long, value_name = "Q")]
    pub snapshot_quality: Option<u8>,
    /// Publish Home Assistant MQTT discovery configs at every connect (docs/mqtt.md).
    /// Default: true.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub ha_discovery: Option<bool>,
    /// Home Assistant's discovery prefix. Default: homeassistant.
    #[arg(long, value_name = "PREFIX")]
    pub ha_discovery_prefix: Option<String>,
    /// Seconds without a new result after which Home Assistant shows the score and anomaly
    /// entities as unavailable (a stalled camera); 0: never. Default: 60.
    #[arg(long, value_name = "S")]
    pub ha_expire_after_s: Option<u64>,
    /// Region of interest in source pixels, `X,Y,W,H`, cropped before resizing to the model size.
    #[arg(long, value_name = "X,Y,W,H")]
    pub roi: Option<String>,
    /// Camera pixel format to request: YUYV, GREY, RGB3, MJPG. Default: YUYV.
    #[arg(long, value_name = "FOURCC")]
    pub v4l_format: Option<String>,
    /// Camera frame size to request, `WxH`. Default: 640x480.
    #[arg(long, value_name = "WxH")]
    pub v4l_size: Option<String>,
    /// Camera frame rate to request (default: --fps).
    #[arg(long, value_name = "N")]
    pub v4l_fps: Option<f64>,
    /// Seed of the synthetic source.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// Camera request.
#[derive(Debug, Clone, PartialEq)]
pub struct V4lConfig {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// The validated, effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub model: PathBuf,
    pub source: SourceSpec,
    /// 0: unpaced lockstep replay.
    pub fps: f64,
    pub budget: std::time::Duration,
    pub frames: Option<u64>,
    pub backend: BackendKind,
    /// onnxruntime's execution provider (backend ort or auto).
    pub ep: Ep,
    /// libonnxruntime to load (None: `ORT_DYLIB_PATH`, else the loader's search path).
    pub ort_library: Option<PathBuf>,
    pub precision: Precision,
    pub threads: usize,
    pub roi: Option<Roi>,
    pub v4l: V4lConfig,
    pub seed: u64,
    pub mqtt: MqttConfig,
    /// Log level (`error` … `trace`) and whether lines are JSON.
    pub log_level: &'static str,
    pub log_json: bool,
    /// The live view's address (None: off) and token.
    pub http: Option<std::net::SocketAddr>,
    pub http_token: Option<String>,
}

/// Reads a config file into [`Settings`]; unknown fields are errors naming the field.
pub fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse_toml(&text, path)
}

pub fn parse_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        // toml's message spans several lines (a source excerpt); keep it one readable block.
        msg: e.to_string().trim().replace('\n', "\n  "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str, flags: Settings) -> Result<Config, ConfigError> {
        let path = Path::new("vigild.toml");
        let file = parse_toml(toml_text, path)?;
        flags.resolve(&file, Some(path))
    }

    #[test]
    fn unknown_field_is_named() {
        let e = resolve("model = \"m\"\nfsp = 3\n", Settings::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("vigild.toml") && msg.contains("fsp"), "{msg}");
    }

    #[test]
    fn bad_values_name_field_file_and_value() {
        for (text, field, value) in [
            ("fps = -1.0", "fps", "-1"),
            ("backend = \"cuda\"", "backend", "cuda"),
            ("backend = \"ort\"\nep = \"rocm\"", "ep", "rocm"),
            ("ep = \"cuda\"", "ep", "cuda"),
            ("precision = \"int4\"", "precision", "int4"),
            ("threads = 0", "threads", "0"),
            ("broker = \"http://x\"", "broker", "http://x"),
            ("broker = \"mqtt://h:99999\"", "broker", "mqtt://h:99999"),
            ("masks = \"some\"", "masks", "some"),
            ("roi = \"1,2,3\"", "roi", "1,2,3"),
            ("v4l_format = \"NV12\"", "v4l_format", "NV12"),
            ("v4l_size = \"640\"", "v4l_size", "640"),
            ("source = \"camera:0\"", "source", "camera:0"),
            ("camera = \"a/b\"", "camera", "a/b"),
            ("frames = 0", "frames", "0"),
        ] {
            let e = resolve(&format!("model = \"m\"\n{text}\n"), Settings::default()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("vigild.toml")
                    && msg.contains(&format!("`{field}`"))
                    && msg.contains(value),
                "{text}: {msg}"
            );
        }
        // A wrong type is a parse error that names the field too.
        let e = resolve("model = \"m\"\nfps = \"fast\"\n", Settings::default()).unwrap_err();
        assert!(e.to_string().contains("fps"), "{e}");
    }

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let flags = Settings {
            fps: Some(30.0),
            masks: Some("all".into()),
            ..Default::default()
        };
        let c = resolve(
            "model = \"m\"\nfps = 5.0\ndevice_id = \"line3\"\nbroker = \"mqtts://b.example\"\n",
            flags,
        )
        .unwrap();
        assert_eq!(c.fps, 30.0);
        assert_eq!(c.budget, std::time::Duration::from_secs_f64(1.0 / 30.0));
        assert_eq!(c.mqtt.masks, MaskPolicy::All);
        assert_eq!(c.mqtt.topic_prefix, "vigil/line3");
        assert_eq!(
            c.mqtt.broker,
            Some(BrokerUrl {
                tls: true,
                host: "b.example".into(),
                port: MQTTS_PORT
            })
        );
        assert_eq!(c.backend, BackendKind::Tract);
        // A flag-only error has no file origin.
        let e = Settings {
            fps: Some(-2.0),
            ..Default::default()
        }
        .resolve(
            &parse_toml("model = \"m\"", Path::new("f.toml")).unwrap(),
            Some(Path::new("f.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("field `fps`"), "{e}");
    }

    #[test]
    fn command_token_is_checked_and_masked() {
        let e = resolve(
            "model = \"m\"\ncommand_token = \"short\"\n",
            Settings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("vigild.toml") && e.contains("command_token") && !e.contains("short"),
            "{e}"
        );
        let c = resolve(
            "model = \"m\"\ncommand_token = \"0123456789abcdef\"\n",
            Settings::default(),
        )
        .unwrap();
        assert_eq!(c.mqtt.command_token.as_deref(), Some("0123456789abcdef"));
        assert!(!c.to_toml().contains("0123456789abcdef"));
    }

    /// The embedded broker off loopback needs a login; a command token over plain MQTT to
    /// another host needs an explicit yes. Each refusal is one line naming field and value.
    #[test]
    fn network_exposure_is_refused_unless_asked_for() {
        let tok = "command_token = \"0123456789abcdef\"\n";
        for (text, field, value) in [
            (
                "embedded_broker = true\nbroker = \"mqtt://0.0.0.0:1883\"\n",
                "broker",
                "0.0.0.0:1883",
            ),
            (
                "embedded_broker = true\nbroker = \"mqtt://10.1.2.3:1884\"\nusername = \"u\"\n",
                "broker",
                "10.1.2.3:1884",
            ),
            (
                &format!("broker = \"mqtt://broker.plant\"\n{tok}"),
                "command_token",
                "***",
            ),
            (
                &format!("broker = \"mqtt://[fd00::5]:1883\"\n{tok}"),
                "command_token",
                "***",
            ),
        ] {
            let e = resolve(&format!("model = \"m\"\n{text}"), Settings::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("vigild.toml")
                    && e.contains(&format!("`{field}`"))
                    && e.contains(value)
                    && !e.contains("0123456789abcdef")
                    && !e.contains('\n'),
                "{text}: {e}"
            );
        }
        for ok in [
            "embedded_broker = true\n".to_string(),
            "embedded_broker = true\nbroker = \"mqtt://127.0.0.1:1999\"\n".into(),
            "embedded_broker = true\nbroker = \"mqtt://0.0.0.0:1883\"\nusername = \"u\"\npassword = \"p\"\n".into(),
            format!("broker = \"mqtts://broker.plant\"\n{tok}"),
            format!("broker = \"mqtt://localhost:1883\"\n{tok}"),
            format!("embedded_broker = true\n{tok}"),
            format!("broker = \"mqtt://broker.plant\"\n{tok}allow_plaintext_commands = true\n"),
        ] {
            let c = resolve(&format!("model = \"m\"\n{ok}"), Settings::default());
            assert!(c.is_ok(), "{ok}: {c:?}");
        }
        // The flag works too, and survives --print-config.
        let c = resolve(
            &format!("model = \"m\"\nbroker = \"mqtt://broker.plant\"\n{tok}"),
            Settings {
                allow_plaintext_commands: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(c.mqtt.allow_plaintext_commands);
        assert!(c.to_toml().contains("allow_plaintext_commands = true"));
    }

    #[test]
    fn missing_model_is_named() {
        let e = resolve("", Settings::default()).unwrap_err();
        assert!(e.to_string().contains("`model`"), "{e}");
    }

    #[test]
    fn print_config_roundtrips() {
        let c = resolve(
            "model = \"m\"\nsource = \"folder:/data/x\"\nroi = \"1,2,30,40\"\nbudget_ms = 20.0\nframes = 7\n\
             broker = \"mqtt://127.0.0.1:1999\"\nusername = \"u\"\n",
            Settings::default(),
        )
        .unwrap();
        let text = c.to_toml();
        let again = resolve(&text, Settings::default()).unwrap();
        // The password is masked, everything else identical.
        assert_eq!(again, c, "{text}");
    }

    #[test]
    fn broker_urls() {
        let b: BrokerUrl = "mqtt://[::1]:1884".parse().unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("::1", 1884, false));
        let b: BrokerUrl = "mqtt://localhost".parse().unwrap();
        assert_eq!(b.port, MQTT_PORT);
        assert!("mqtt://:1883".parse::<BrokerUrl>().is_err());
        assert!("mqtt://h:0".parse::<BrokerUrl>().is_err());
    }
}
