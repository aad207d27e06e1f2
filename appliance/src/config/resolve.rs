//! [`Settings::resolve`]: flags over the file, defaults, validation. One function per section
//! of the configuration (source, timing, backend, MQTT, camera); every error names the field,
//! the value and, when the value came from the file, the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_shared::messages::{DEFAULT_TOPIC_ROOT, HA_DISCOVERY_PREFIX};

use super::mqtt::{
    MqttConfig, DEFAULT_CAMERA, DEFAULT_DEVICE_ID, DEFAULT_HA_EXPIRE_AFTER_S, DEFAULT_MASKS,
    DEFAULT_SNAPSHOT_QUALITY, DEFAULT_SPOOL_DIR, DEFAULT_SPOOL_MB, DEFAULT_STATS_INTERVAL_S,
};
use super::types::parse_size;
use super::{
    BackendKind, BrokerUrl, Config, ConfigError, Ep, MaskPolicy, PixelFormat, Roi, Settings,
    SourceSpec, V4lConfig,
};
use crate::backend::tract::Precision;

/// Where a field's value came from (for error messages).
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

    /// A bad value of `field`.
    fn bad(
        &self,
        field: &'static str,
        value: impl fmt::Display,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Field {
            origin: self.origin(),
            field,
            value: value.to_string(),
            msg: msg.into(),
        }
    }
}

/// The flags and the file being merged.
struct Merge<'a> {
    flags: &'a Settings,
    file: &'a Settings,
    path: Option<&'a Path>,
}

impl<'a> Merge<'a> {
    /// One field: the flag wins over the file.
    fn get<T: Clone>(&self, field: impl Fn(&Settings) -> &Option<T>) -> (Option<T>, Src<'a>) {
        let (flag, file) = (field(self.flags), field(self.file));
        let from_file = flag.is_none() && file.is_some();
        let src = Src {
            file: self.path,
            from_file,
        };
        (flag.clone().or_else(|| file.clone()), src)
    }
}

/// fps, per-frame budget, frame limit.
struct Timing {
    fps: f64,
    budget: Duration,
    frames: Option<u64>,
}

impl Settings {
    /// Merges flags (`self`) over the file's settings and validates the result.
    pub fn resolve(&self, file: &Settings, path: Option<&Path>) -> Result<Config, ConfigError> {
        let m = Merge {
            flags: self,
            file,
            path,
        };
        let model = m.get(|s| &s.model).0.ok_or(ConfigError::Missing {
            field: "model",
            flag: "model",
        })?;
        let source = resolve_source(&m)?;
        let timing = resolve_timing(&m, &source)?;
        let engine = resolve_backend(&m)?;
        let mqtt = resolve_mqtt(&m)?;
        let (roi, v4l) = resolve_v4l(&m, &source, timing.fps)?;
        let (http, http_token) = resolve_http(&m, &mqtt)?;
        let (log_level, log_json) = resolve_log(&m)?;
        Ok(Config {
            model,
            source,
            fps: timing.fps,
            budget: timing.budget,
            frames: timing.frames,
            backend: engine.backend,
            ep: engine.ep,
            ort_library: engine.ort_library,
            precision: engine.precision,
            threads: engine.threads,
            roi,
            v4l,
            seed: m.get(|s| &s.seed).0.unwrap_or(0),
            mqtt,
            log_level,
            log_json,
            http,
            http_token,
        })
    }
}

/// Log level and format.
fn resolve_log(m: &Merge) -> Result<(&'static str, bool), ConfigError> {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let (level, src) = m.get(|s| &s.log_level);
    let level = match level {
        None => "info",
        Some(l) => LEVELS
            .into_iter()
            .find(|x| x.eq_ignore_ascii_case(&l))
            .ok_or_else(|| {
                src.bad(
                    "log_level",
                    &l,
                    "expected error, warn, info, debug or trace",
                )
            })?,
    };
    let (format, src) = m.get(|s| &s.log_format);
    let json = match format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(f) => return Err(src.bad("log_format", f, "expected text or json")),
    };
    Ok((level, json))
}

/// The live view's address and token: off the loopback only with a token or the MQTT login.
fn resolve_http(
    m: &Merge,
    mqtt: &MqttConfig,
) -> Result<(Option<std::net::SocketAddr>, Option<String>), ConfigError> {
    let (token, tsrc) = m.get(|s| &s.http_token);
    if token
        .as_ref()
        .is_some_and(|t| t.chars().count() < 16 || t.chars().any(char::is_whitespace))
    {
        return Err(tsrc.bad(
            "http_token",
            "***",
            "must be at least 16 characters without whitespace",
        ));
    }
    let (addr, src) = m.get(|s| &s.http);
    let Some(addr) = addr else {
        return Ok((None, token));
    };
    let parsed = if let Some(port) = addr.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}").parse()
    } else {
        addr.parse::<std::net::SocketAddr>()
    };
    let sa = parsed.map_err(|_| src.bad("http", &addr, "expected IP:PORT, e.g. 127.0.0.1:8080"))?;
    let login = mqtt.username.is_some() && mqtt.password.is_some();
    if !sa.ip().is_loopback() && token.is_none() && !login {
        return Err(src.bad(
            "http",
            &addr,
            "is reachable from other hosts: set `http_token` (or the MQTT `username` and \
             `password`, then asked as HTTP Basic) or use a loopback address",
        ));
    }
    Ok((Some(sa), token))
}

fn resolve_source(m: &Merge) -> Result<SourceSpec, ConfigError> {
    let (source, src) = m.get(|s| &s.source);
    match source {
        Some(s) => s.parse().map_err(|e| src.bad("source", &s, e)),
        None => Ok(SourceSpec::Synthetic(
            vigil_shared::synth::SurfaceKind::BrushedMetal,
        )),
    }
}

fn resolve_timing(m: &Merge, source: &SourceSpec) -> Result<Timing, ConfigError> {
    let (fps, src) = m.get(|s| &s.fps);
    let fps = fps.unwrap_or(10.0);
    if !(fps.is_finite() && (0.0..=1000.0).contains(&fps)) {
        return Err(src.bad("fps", fps, "must be between 0 and 1000"));
    }
    if fps == 0.0 && matches!(source, SourceSpec::V4l(_)) {
        return Err(src.bad("fps", fps, "a camera needs a frame rate above 0"));
    }
    let (budget_ms, src) = m.get(|s| &s.budget_ms);
    let budget_ms = match budget_ms {
        Some(b) if !(b.is_finite() && b > 0.0 && b <= 60_000.0) => {
            return Err(src.bad("budget_ms", b, "must be above 0 and at most 60000"))
        }
        Some(b) => b,
        None if fps > 0.0 => 1000.0 / fps,
        None => 1000.0,
    };
    let (frames, src) = m.get(|s| &s.frames);
    if frames == Some(0) {
        return Err(src.bad(
            "frames",
            0,
            "must be at least 1 (omit it to run until stopped)",
        ));
    }
    Ok(Timing {
        fps,
        budget: Duration::from_secs_f64(budget_ms / 1000.0),
        frames,
    })
}

/// The engine settings of [`Config`].
struct Engine {
    backend: BackendKind,
    ep: Ep,
    ort_library: Option<PathBuf>,
    precision: Precision,
    threads: usize,
}

fn resolve_backend(m: &Merge) -> Result<Engine, ConfigError> {
    let (backend, src) = m.get(|s| &s.backend);
    let backend = match backend {
        Some(b) => b
            .parse::<BackendKind>()
            .map_err(|msg| src.bad("backend", &b, msg))?,
        None => BackendKind::Tract,
    };
    let (ep, src) = m.get(|s| &s.ep);
    let ep = match ep {
        Some(e) => e.parse::<Ep>().map_err(|msg| src.bad("ep", &e, msg))?,
        None => Ep::Cpu,
    };
    if ep != Ep::Cpu && backend == BackendKind::Tract {
        return Err(src.bad(
            "ep",
            ep,
            "execution providers are onnxruntime's: set backend = \"ort\" (or \"auto\")",
        ));
    }
    let (precision, src) = m.get(|s| &s.precision);
    let precision = match precision.as_deref().unwrap_or("f32") {
        "f32" => Precision::F32,
        "int8" => Precision::Int8,
        other => return Err(src.bad("precision", other, "expected f32 or int8")),
    };
    let (threads, src) = m.get(|s| &s.threads);
    let threads = threads.unwrap_or(1);
    if !(1..=64).contains(&threads) {
        return Err(src.bad("threads", threads, "must be between 1 and 64"));
    }
    Ok(Engine {
        backend,
        ep,
        ort_library: m.get(|s| &s.ort_library).0,
        precision,
        threads,
    })
}

fn resolve_mqtt(m: &Merge) -> Result<MqttConfig, ConfigError> {
    let (broker, embedded_broker) = resolve_broker(m)?;
    let (device_id, camera, topic_prefix) = resolve_topics(m)?;
    let masks = frame_policy(m, |s| &s.masks, "masks", DEFAULT_MASKS)?;
    let mut c = MqttConfig {
        broker,
        embedded_broker,
        device_id,
        camera,
        topic_prefix,
        masks,
        username: None,
        password: None,
        tls_ca: None,
        command_token: None,
        allow_plaintext_commands: false,
        spool_dir: PathBuf::new(),
        spool_max_bytes: 0,
        stats_interval: Duration::ZERO,
        snapshots: MaskPolicy::None,
        snapshot_interval: Duration::ZERO,
        snapshot_quality: 0,
        ha_discovery_prefix: None,
        ha_expire_after_s: None,
    };
    resolve_credentials(m, &mut c)?;
    check_exposure(m, &mut c)?;
    resolve_spool(m, &mut c)?;
    resolve_discovery(m, &mut c)?;
    resolve_snapshots(m, &mut c)?;
    Ok(c)
}

/// `all`, `anomalous` or `none` (masks, snapshots).
fn frame_policy(
    m: &Merge,
    get: impl Fn(&Settings) -> &Option<String>,
    field: &'static str,
    default: MaskPolicy,
) -> Result<MaskPolicy, ConfigError> {
    let (v, src) = m.get(get);
    match v.as_deref() {
        None => Ok(default),
        Some("all") => Ok(MaskPolicy::All),
        Some("anomalous") => Ok(MaskPolicy::Anomalous),
        Some("none") => Ok(MaskPolicy::None),
        Some(other) => Err(src.bad(field, other, "expected all, anomalous or none")),
    }
}

/// Snapshots: which frames, how often, JPEG quality.
fn resolve_snapshots(m: &Merge, c: &mut MqttConfig) -> Result<(), ConfigError> {
    c.snapshots = frame_policy(m, |s| &s.snapshots, "snapshots", MaskPolicy::Anomalous)?;
    let (every, src) = m.get(|s| &s.snapshot_interval_s);
    let every = every.unwrap_or(1.0);
    if !(every.is_finite() && (0.05..=86_400.0).contains(&every)) {
        return Err(src.bad(
            "snapshot_interval_s",
            every,
            "must be between 0.05 and 86400",
        ));
    }
    c.snapshot_interval = Duration::from_secs_f64(every);
    let (q, src) = m.get(|s| &s.snapshot_quality);
    let q = q.unwrap_or(DEFAULT_SNAPSHOT_QUALITY);
    if !(1..=100).contains(&q) {
        return Err(src.bad("snapshot_quality", q, "must be between 1 and 100"));
    }
    c.snapshot_quality = q;
    Ok(())
}

/// Home Assistant discovery: on/off, prefix, `expire_after`.
fn resolve_discovery(m: &Merge, c: &mut MqttConfig) -> Result<(), ConfigError> {
    let on = m.get(|s| &s.ha_discovery).0.unwrap_or(true);
    let (prefix, src) = m.get(|s| &s.ha_discovery_prefix);
    let prefix = prefix.unwrap_or_else(|| HA_DISCOVERY_PREFIX.into());
    if prefix.is_empty()
        || prefix.contains(['+', '#'])
        || prefix.starts_with('$')
        || prefix.ends_with('/')
    {
        return Err(src.bad(
            "ha_discovery_prefix",
            &prefix,
            "must be non-empty, without MQTT wildcards (+ #), not start with $ nor end with /",
        ));
    }
    c.ha_discovery_prefix = on.then_some(prefix);
    let expire = m
        .get(|s| &s.ha_expire_after_s)
        .0
        .unwrap_or(DEFAULT_HA_EXPIRE_AFTER_S);
    c.ha_expire_after_s = (expire > 0).then_some(expire);
    Ok(())
}

/// What the MQTT settings expose to the network, refused unless asked for: the embedded
/// broker off loopback without a login (it would accept anyone), and the command token in plain
/// text to a broker on another host.
fn check_exposure(m: &Merge, c: &mut MqttConfig) -> Result<(), ConfigError> {
    let (allow, _) = m.get(|s| &s.allow_plaintext_commands);
    c.allow_plaintext_commands = allow.unwrap_or(false);
    let remote = c
        .broker
        .as_ref()
        .filter(|b| !MqttConfig::is_loopback_host(&b.host));
    let login = c.username.is_some() && c.password.is_some();
    if let (true, Some(b), false) = (c.embedded_broker, remote, login) {
        let (_, src) = m.get(|s| &s.broker);
        return Err(src.bad(
            "broker",
            b,
            "the embedded broker would listen there, off this host, for anyone: set `username` \
             and `password` (it then refuses clients without them) or use a loopback address",
        ));
    }
    let plain = remote.filter(|b| !b.tls);
    if let (true, Some(b), false) = (c.command_token.is_some(), plain, c.allow_plaintext_commands) {
        let (_, src) = m.get(|s| &s.command_token);
        return Err(src.bad(
            "command_token",
            "***",
            format!(
                "would cross the network in plain text to {b}: use an mqtts:// broker, or set \
                 allow_plaintext_commands = true to accept that"
            ),
        ));
    }
    Ok(())
}

fn resolve_broker(m: &Merge) -> Result<(Option<BrokerUrl>, bool), ConfigError> {
    let (broker, src) = m.get(|s| &s.broker);
    let broker = broker
        .map(|b| b.parse::<BrokerUrl>().map_err(|e| src.bad("broker", &b, e)))
        .transpose()?;
    let (embedded, src) = m.get(|s| &s.embedded_broker);
    let embedded = embedded.unwrap_or(false);
    if embedded && broker.as_ref().is_some_and(|b| b.tls) {
        return Err(src.bad(
            "embedded_broker",
            true,
            "the embedded broker serves plain mqtt:// only; use an mqtt:// broker address",
        ));
    }
    Ok((broker, embedded))
}

/// Device id, camera and topic prefix.
fn resolve_topics(m: &Merge) -> Result<(String, String, String), ConfigError> {
    let (device_id, src) = m.get(|s| &s.device_id);
    let device_id = device_id.unwrap_or_else(|| DEFAULT_DEVICE_ID.into());
    check_topic_level(&src, "device_id", &device_id)?;
    let (camera, src) = m.get(|s| &s.camera);
    let camera = camera.unwrap_or_else(|| DEFAULT_CAMERA.into());
    check_topic_level(&src, "camera", &camera)?;
    let (prefix, src) = m.get(|s| &s.topic_prefix);
    let prefix = prefix.unwrap_or_else(|| format!("{DEFAULT_TOPIC_ROOT}/{device_id}"));
    let prefix = prefix.trim_end_matches('/').to_string();
    if prefix.is_empty() || prefix.contains(['+', '#', '\0']) || prefix.starts_with('$') {
        return Err(src.bad(
            "topic_prefix",
            &prefix,
            "must be non-empty, without MQTT wildcards (+ #) and not start with $",
        ));
    }
    Ok((device_id, camera, prefix))
}

/// Username, password, TLS CA, command token.
fn resolve_credentials(m: &Merge, c: &mut MqttConfig) -> Result<(), ConfigError> {
    c.username = m.get(|s| &s.username).0;
    let (password, src) = m.get(|s| &s.password);
    if password.is_some() && c.username.is_none() {
        return Err(src.bad("password", "***", "a password needs a username"));
    }
    c.password = password;
    let (tls_ca, src) = m.get(|s| &s.tls_ca);
    if let Some(ca) = &tls_ca {
        if !c.broker.as_ref().is_some_and(|b| b.tls) {
            return Err(src.bad("tls_ca", ca.display(), "needs an mqtts:// broker"));
        }
        if !ca.is_file() {
            return Err(src.bad("tls_ca", ca.display(), "no such file"));
        }
    }
    c.tls_ca = tls_ca;
    let (token, src) = m.get(|s| &s.command_token);
    if let Some(t) = &token {
        if t.chars().count() < 16 || t.chars().any(char::is_whitespace) {
            return Err(src.bad(
                "command_token",
                "***",
                "must be at least 16 characters without whitespace",
            ));
        }
    }
    c.command_token = token;
    Ok(())
}

/// Spool directory and size, stats interval.
fn resolve_spool(m: &Merge, c: &mut MqttConfig) -> Result<(), ConfigError> {
    c.spool_dir = m
        .get(|s| &s.spool_dir)
        .0
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
    let (spool_mb, src) = m.get(|s| &s.spool_mb);
    let spool_mb = spool_mb.unwrap_or(DEFAULT_SPOOL_MB);
    if spool_mb == 0 || spool_mb > 1 << 20 {
        return Err(src.bad("spool_mb", spool_mb, "must be between 1 and 1048576"));
    }
    c.spool_max_bytes = spool_mb << 20;
    let (stats, src) = m.get(|s| &s.stats_interval_s);
    let stats = stats.unwrap_or(DEFAULT_STATS_INTERVAL_S);
    if !(stats.is_finite() && (0.1..=86_400.0).contains(&stats)) {
        return Err(src.bad("stats_interval_s", stats, "must be between 0.1 and 86400"));
    }
    c.stats_interval = Duration::from_secs_f64(stats);
    Ok(())
}

/// ROI and the camera request (format, size, rate).
fn resolve_v4l(
    m: &Merge,
    source: &SourceSpec,
    fps: f64,
) -> Result<(Option<Roi>, V4lConfig), ConfigError> {
    let (roi, roi_src) = m.get(|s| &s.roi);
    let roi = roi
        .map(|r| r.parse::<Roi>().map_err(|e| roi_src.bad("roi", &r, e)))
        .transpose()?;
    let (format, src) = m.get(|s| &s.v4l_format);
    let format = match format {
        None => PixelFormat::YUYV,
        Some(f) => {
            let four: Option<[u8; 4]> = f.to_ascii_uppercase().as_bytes().try_into().ok();
            four.and_then(PixelFormat::from_fourcc)
                .ok_or_else(|| src.bad("v4l_format", &f, "expected YUYV, GREY, RGB3 or MJPG"))?
        }
    };
    let (size, src) = m.get(|s| &s.v4l_size);
    let (width, height) = match size {
        None => (640, 480),
        Some(s) => parse_size(&s).ok_or_else(|| {
            src.bad(
                "v4l_size",
                &s,
                "expected WxH, e.g. 640x480 (each 1..=16384)",
            )
        })?,
    };
    let camera = matches!(source, SourceSpec::V4l(_));
    if let Some(r) = roi {
        if camera && (r.x + r.w > width as usize || r.y + r.h > height as usize) {
            return Err(roi_src.bad(
                "roi",
                format!("{},{},{},{}", r.x, r.y, r.w, r.h),
                format!("lies outside the requested {width}x{height} frame"),
            ));
        }
    }
    let (v4l_fps, src) = m.get(|s| &s.v4l_fps);
    let v4l_fps = v4l_fps.unwrap_or(fps);
    if camera && !(v4l_fps.is_finite() && v4l_fps > 0.0 && v4l_fps <= 1000.0) {
        return Err(src.bad("v4l_fps", v4l_fps, "must be above 0 and at most 1000"));
    }
    let v4l = V4lConfig {
        format,
        width,
        height,
        fps: v4l_fps,
    };
    Ok((roi, v4l))
}

fn check_topic_level(src: &Src, field: &'static str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.contains(['/', '+', '#', '\0']) || v.len() > 128 {
        return Err(src.bad(
            field,
            v,
            "must be 1-128 characters without / + # (it is one MQTT topic level)",
        ));
    }
    Ok(())
}
