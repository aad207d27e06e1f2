//! `vigild.toml` and its command-line flags.
//!
//! Every field of the file is also a flag (`budget_ms` ↔ `--budget-ms`); a flag given on the
//! command line overrides the file. [`Settings`] is the raw, all-optional form that both the
//! TOML file and clap fill in; [`Settings::resolve`] merges and validates it into a [`Config`]
//! with concrete types, and every error names the field (and the file) it comes from.
//!
//! The publisher consumes [`MqttConfig`] (`Config::mqtt`): broker URL, credentials, TLS, topic
//! prefix, mask policy, spool and stats interval are all there, already validated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::backend::tract::Precision;

/// Default MQTT port, plain and TLS.
pub const MQTT_PORT: u16 = 1883;
pub const MQTTS_PORT: u16 = 8883;

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
    /// Scoring backend: tract (CPU) or gpu. Default: tract.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
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
    /// MQTT password (prefer the config file with restricted permissions over a flag).
    #[arg(long, value_name = "PASS")]
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts:// only).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Shared secret that `<prefix>/command/reload` messages must carry to hot-reload the
    /// model (at least 16 characters). Absent: MQTT commands are off (SIGHUP still reloads).
    /// The broker's ACLs and TLS remain the real access control (docs/mqtt.md, "Commands").
    #[arg(long, value_name = "SECRET")]
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

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    V4l(PathBuf),
    Folder(PathBuf),
    Synthetic(vigil_shared::synth::SurfaceKind),
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::V4l(p) => write!(f, "v4l:{}", p.display()),
            SourceSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            SourceSpec::Synthetic(k) => write!(f, "synthetic:{k}"),
        }
    }
}

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match (kind, rest) {
            ("v4l", Some(p)) if !p.is_empty() => Ok(SourceSpec::V4l(p.into())),
            ("folder", Some(p)) if !p.is_empty() => Ok(SourceSpec::Folder(p.into())),
            ("synthetic", None) => Ok(SourceSpec::Synthetic(
                vigil_shared::synth::SurfaceKind::BrushedMetal,
            )),
            ("synthetic", Some(k)) => k
                .parse()
                .map(SourceSpec::Synthetic)
                .map_err(|e: vigil_shared::synth::ParseKindError| e.to_string()),
            _ => Err("expected v4l:/dev/videoN, folder:PATH or synthetic[:KIND]".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Tract,
    Gpu,
}

/// Which scored frames get a mask PNG on `…/<camera>/mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskPolicy {
    All,
    Anomalous,
    None,
}

impl MaskPolicy {
    pub fn wants(self, anomalous: bool) -> bool {
        match self {
            MaskPolicy::All => true,
            MaskPolicy::Anomalous => anomalous,
            MaskPolicy::None => false,
        }
    }
}

/// Camera pixel formats vigild converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PixelFormat {
    YUYV,
    GREY,
    RGB3,
    MJPG,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::YUYV,
        PixelFormat::GREY,
        PixelFormat::RGB3,
        PixelFormat::MJPG,
    ];
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::YUYV => *b"YUYV",
            PixelFormat::GREY => *b"GREY",
            PixelFormat::RGB3 => *b"RGB3",
            PixelFormat::MJPG => *b"MJPG",
        }
    }
    pub fn from_fourcc(f: [u8; 4]) -> Option<PixelFormat> {
        Self::ALL.into_iter().find(|p| p.fourcc() == f)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// Region of interest in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roi {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl FromStr for Roi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v: Vec<&str> = s.split(',').map(str::trim).collect();
        let nums: Result<Vec<usize>, _> = v.iter().map(|p| p.parse::<usize>()).collect();
        match nums.as_deref() {
            Ok([x, y, w, h]) if *w > 0 && *h > 0 => Ok(Roi {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
            }),
            _ => Err("expected X,Y,W,H: four non-negative integers, W and H at least 1".into()),
        }
    }
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]".into());
        };
        let rest = rest.trim_end_matches('/');
        // `[::1]:1883` style IPv6 literals keep their brackets in the host part.
        let (host, port) = match rest.rsplit_once(':') {
            Some(("", _)) => return Err(format!("{s:?} has no host before the port")),
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("port {p:?} is not a number in 1..=65535"))?;
                (h, port)
            }
            _ => (rest, if tls { MQTTS_PORT } else { MQTT_PORT }),
        };
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(format!("host {host:?} is not a host name or address"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        })
    }
}

/// Everything the MQTT publisher needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// None: no broker configured (results go to stdout as JSON lines).
    pub broker: Option<BrokerUrl>,
    /// Run rumqttd in-process, listening on `broker` (default mqtt://127.0.0.1:1883).
    pub embedded_broker: bool,
    pub device_id: String,
    pub camera: String,
    /// Without a trailing slash, e.g. `vigil/line-3`.
    pub topic_prefix: String,
    pub masks: MaskPolicy,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls_ca: Option<PathBuf>,
    /// Secret of `…/command/reload`; None: not subscribed.
    pub command_token: Option<String>,
    /// `command_token` accepted over plain MQTT to a non-loopback broker.
    pub allow_plaintext_commands: bool,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub stats_interval: std::time::Duration,
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
    pub precision: Precision,
    pub threads: usize,
    pub roi: Option<Roi>,
    pub v4l: V4lConfig,
    pub seed: u64,
    pub mqtt: MqttConfig,
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

/// A field's value and where it came from (for error messages).
struct Src<'a> {
    file: Option<&'a Path>,
    from_file: bool,
}

impl Src<'_> {
    fn origin(&self) -> String {
        match (self.from_file, self.file) {
            (true, Some(p)) => format!("{}: ", p.display()),
            _ => String::new(),
        }
    }
}

impl Settings {
    /// `self` (flags) on top of `file`: a flag wins over the file.
    fn pick<'a, T: Clone>(
        flag: &Option<T>,
        file: &Option<T>,
        path: Option<&'a Path>,
    ) -> (Option<T>, Src<'a>) {
        match (flag, file) {
            (Some(v), _) => (
                Some(v.clone()),
                Src {
                    file: path,
                    from_file: false,
                },
            ),
            (None, v) => (
                v.clone(),
                Src {
                    file: path,
                    from_file: v.is_some(),
                },
            ),
        }
    }

    /// Merges flags (`self`) over the file's settings and validates the result.
    pub fn resolve(&self, file: &Settings, path: Option<&Path>) -> Result<Config, ConfigError> {
        macro_rules! get {
            ($f:ident) => {
                Self::pick(&self.$f, &file.$f, path)
            };
        }
        fn bad(
            src: &Src,
            field: &'static str,
            value: impl fmt::Display,
            msg: impl Into<String>,
        ) -> ConfigError {
            ConfigError::Field {
                origin: src.origin(),
                field,
                value: value.to_string(),
                msg: msg.into(),
            }
        }

        let (model, _) = get!(model);
        let model = model.ok_or(ConfigError::Missing {
            field: "model",
            flag: "model",
        })?;

        let (source, src) = get!(source);
        let source = match source {
            Some(s) => s
                .parse::<SourceSpec>()
                .map_err(|m| bad(&src, "source", &s, m))?,
            None => SourceSpec::Synthetic(vigil_shared::synth::SurfaceKind::BrushedMetal),
        };

        let (fps, src) = get!(fps);
        let fps = fps.unwrap_or(10.0);
        if !(fps.is_finite() && (0.0..=1000.0).contains(&fps)) {
            return Err(bad(&src, "fps", fps, "must be between 0 and 1000"));
        }
        if fps == 0.0 && matches!(source, SourceSpec::V4l(_)) {
            return Err(bad(&src, "fps", fps, "a camera needs a frame rate above 0"));
        }

        let (budget_ms, src) = get!(budget_ms);
        let budget_ms = match budget_ms {
            Some(b) if !(b.is_finite() && b > 0.0 && b <= 60_000.0) => {
                return Err(bad(
                    &src,
                    "budget_ms",
                    b,
                    "must be above 0 and at most 60000",
                ))
            }
            Some(b) => b,
            None if fps > 0.0 => 1000.0 / fps,
            None => 1000.0,
        };
        let budget = std::time::Duration::from_secs_f64(budget_ms / 1000.0);

        let (frames, src) = get!(frames);
        if frames == Some(0) {
            return Err(bad(
                &src,
                "frames",
                0,
                "must be at least 1 (omit it to run until stopped)",
            ));
        }

        let (backend, src) = get!(backend);
        let backend = match backend.as_deref().unwrap_or("tract") {
            "tract" => BackendKind::Tract,
            "gpu" => BackendKind::Gpu,
            other => return Err(bad(&src, "backend", other, "expected tract or gpu")),
        };
        let (precision, src) = get!(precision);
        let precision = match precision.as_deref().unwrap_or("f32") {
            "f32" => Precision::F32,
            "int8" => Precision::Int8,
            other => return Err(bad(&src, "precision", other, "expected f32 or int8")),
        };
        let (threads, src) = get!(threads);
        let threads = threads.unwrap_or(1);
        if !(1..=64).contains(&threads) {
            return Err(bad(&src, "threads", threads, "must be between 1 and 64"));
        }

        let (broker, src) = get!(broker);
        let broker = broker
            .map(|b| {
                b.parse::<BrokerUrl>()
                    .map_err(|m| bad(&src, "broker", &b, m))
            })
            .transpose()?;
        let (embedded_broker, src) = get!(embedded_broker);
        let embedded_broker = embedded_broker.unwrap_or(false);
        if embedded_broker && broker.as_ref().is_some_and(|b| b.tls) {
            return Err(bad(
                &src,
                "embedded_broker",
                true,
                "the embedded broker serves plain mqtt:// only; use an mqtt:// broker address",
            ));
        }

        let (device_id, src) = get!(device_id);
        let device_id = device_id.unwrap_or_else(|| "vigil".into());
        check_topic_level(&src, "device_id", &device_id)?;
        let (camera, src) = get!(camera);
        let camera = camera.unwrap_or_else(|| "cam0".into());
        check_topic_level(&src, "camera", &camera)?;
        let (prefix, src) = get!(topic_prefix);
        let topic_prefix = prefix.unwrap_or_else(|| format!("vigil/{device_id}"));
        let topic_prefix = topic_prefix.trim_end_matches('/').to_string();
        if topic_prefix.is_empty()
            || topic_prefix.contains(['+', '#', '\0'])
            || topic_prefix.starts_with('$')
        {
            return Err(bad(
                &src,
                "topic_prefix",
                &topic_prefix,
                "must be non-empty, without MQTT wildcards (+ #) and not start with $",
            ));
        }

        let (masks, src) = get!(masks);
        let masks = match masks.as_deref().unwrap_or("anomalous") {
            "all" => MaskPolicy::All,
            "anomalous" => MaskPolicy::Anomalous,
            "none" => MaskPolicy::None,
            other => return Err(bad(&src, "masks", other, "expected all, anomalous or none")),
        };

        let (username, _) = get!(username);
        let (password, src) = get!(password);
        if password.is_some() && username.is_none() {
            return Err(bad(&src, "password", "***", "a password needs a username"));
        }
        let (tls_ca, src) = get!(tls_ca);
        if let Some(ca) = &tls_ca {
            if !broker.as_ref().is_some_and(|b| b.tls) {
                return Err(bad(
                    &src,
                    "tls_ca",
                    ca.display(),
                    "needs an mqtts:// broker",
                ));
            }
            if !ca.is_file() {
                return Err(bad(&src, "tls_ca", ca.display(), "no such file"));
            }
        }
        let (command_token, src) = get!(command_token);
        if let Some(t) = &command_token {
            if t.chars().count() < 16 || t.chars().any(char::is_whitespace) {
                return Err(bad(
                    &src,
                    "command_token",
                    "***",
                    "must be at least 16 characters without whitespace",
                ));
            }
        }
        let (allow_plaintext, _) = get!(allow_plaintext_commands);
        let allow_plaintext_commands = allow_plaintext.unwrap_or(false);
        let exposure = Exposure {
            broker: broker.as_ref(),
            embedded_broker,
            login: username.is_some() && password.is_some(),
            command_token: command_token.is_some(),
            allow_plaintext_commands,
        };
        exposure.check(&get!(broker).1, &get!(command_token).1)?;
        let (spool_dir, _) = get!(spool_dir);
        let spool_dir = spool_dir.unwrap_or_else(|| PathBuf::from("vigild-spool"));
        let (spool_mb, src) = get!(spool_mb);
        let spool_mb = spool_mb.unwrap_or(64);
        if spool_mb == 0 || spool_mb > 1 << 20 {
            return Err(bad(
                &src,
                "spool_mb",
                spool_mb,
                "must be between 1 and 1048576",
            ));
        }
        let (stats, src) = get!(stats_interval_s);
        let stats = stats.unwrap_or(10.0);
        if !(stats.is_finite() && (0.1..=86_400.0).contains(&stats)) {
            return Err(bad(
                &src,
                "stats_interval_s",
                stats,
                "must be between 0.1 and 86400",
            ));
        }

        let (roi, src) = get!(roi);
        let roi = roi
            .map(|r| r.parse::<Roi>().map_err(|m| bad(&src, "roi", &r, m)))
            .transpose()?;

        let (fmt_, src) = get!(v4l_format);
        let format = match fmt_ {
            None => PixelFormat::YUYV,
            Some(f) => {
                let up = f.to_ascii_uppercase();
                let four: Option<[u8; 4]> = up.as_bytes().try_into().ok();
                four.and_then(PixelFormat::from_fourcc).ok_or_else(|| {
                    bad(&src, "v4l_format", &f, "expected YUYV, GREY, RGB3 or MJPG")
                })?
            }
        };
        let (size, src) = get!(v4l_size);
        let (width, height) = match size {
            None => (640, 480),
            Some(s) => parse_size(&s).ok_or_else(|| {
                bad(
                    &src,
                    "v4l_size",
                    &s,
                    "expected WxH, e.g. 640x480 (each 1..=16384)",
                )
            })?,
        };
        if let Some(r) = roi {
            if matches!(source, SourceSpec::V4l(_))
                && (r.x + r.w > width as usize || r.y + r.h > height as usize)
            {
                let (_, src) = get!(roi);
                return Err(bad(
                    &src,
                    "roi",
                    format!("{},{},{},{}", r.x, r.y, r.w, r.h),
                    format!("lies outside the requested {width}x{height} frame"),
                ));
            }
        }
        let (v4l_fps, src) = get!(v4l_fps);
        let v4l_fps = v4l_fps.unwrap_or(fps);
        if !(v4l_fps.is_finite() && v4l_fps > 0.0 && v4l_fps <= 1000.0)
            && matches!(source, SourceSpec::V4l(_))
        {
            return Err(bad(
                &src,
                "v4l_fps",
                v4l_fps,
                "must be above 0 and at most 1000",
            ));
        }
        let (seed, _) = get!(seed);

        Ok(Config {
            model,
            source,
            fps,
            budget,
            frames,
            backend,
            precision,
            threads,
            roi,
            v4l: V4lConfig {
                format,
                width,
                height,
                fps: v4l_fps,
            },
            seed: seed.unwrap_or(0),
            mqtt: MqttConfig {
                broker,
                embedded_broker,
                device_id,
                camera,
                topic_prefix,
                masks,
                username,
                password,
                tls_ca,
                command_token,
                allow_plaintext_commands,
                spool_dir,
                spool_max_bytes: spool_mb << 20,
                stats_interval: std::time::Duration::from_secs_f64(stats),
            },
        })
    }
}

/// Whether `host` (a broker URL's host) is this machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the MQTT settings expose to the network, checked before anything starts.
struct Exposure<'a> {
    broker: Option<&'a BrokerUrl>,
    embedded_broker: bool,
    /// Both `username` and `password` set.
    login: bool,
    command_token: bool,
    allow_plaintext_commands: bool,
}

impl Exposure<'_> {
    /// `broker_src`, `token_src`: where `broker` and `command_token` came from.
    fn check(&self, broker_src: &Src, token_src: &Src) -> Result<(), ConfigError> {
        let remote = self.broker.filter(|b| !is_loopback_host(&b.host));
        if let (true, Some(b), false) = (self.embedded_broker, remote, self.login) {
            return Err(ConfigError::Field {
                origin: broker_src.origin(),
                field: "broker",
                value: b.to_string(),
                msg: "the embedded broker would listen there, off this host, for anyone: set \
                      `username` and `password` (it then refuses clients without them) or use \
                      a loopback address"
                    .into(),
            });
        }
        let plain = remote.filter(|b| !b.tls);
        if let (true, Some(b), false) = (self.command_token, plain, self.allow_plaintext_commands) {
            return Err(ConfigError::Field {
                origin: token_src.origin(),
                field: "command_token",
                value: "***".into(),
                msg: format!(
                    "would cross the network in plain text to {b}: use an mqtts:// broker, \
                     or set allow_plaintext_commands = true to accept that"
                ),
            });
        }
        Ok(())
    }
}

fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?);
    ((1..=16384).contains(&w) && (1..=16384).contains(&h)).then_some((w, h))
}

fn check_topic_level(src: &Src, field: &'static str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.contains(['/', '+', '#', '\0']) || v.len() > 128 {
        return Err(ConfigError::Field {
            origin: src.origin(),
            field,
            value: v.into(),
            msg: "must be 1-128 characters without / + # (it is one MQTT topic level)".into(),
        });
    }
    Ok(())
}

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
