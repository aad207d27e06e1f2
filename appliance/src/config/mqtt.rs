//! The MQTT section of the configuration: [`MqttConfig`] (validated, embedded by the
//! publisher's `PublishConfig`) and every MQTT default, named once.

use std::path::PathBuf;
use std::time::Duration;

use vigil_shared::messages::{TopicError, Topics, HA_DISCOVERY_PREFIX};

use super::{BrokerUrl, MaskPolicy};

/// Default MQTT port, plain and TLS.
pub const MQTT_PORT: u16 = 1883;
pub const MQTTS_PORT: u16 = 8883;
pub const DEFAULT_DEVICE_ID: &str = "vigil";
pub const DEFAULT_CAMERA: &str = "cam0";
pub const DEFAULT_MASKS: MaskPolicy = MaskPolicy::Anomalous;
/// Relative to vigild's working directory.
pub const DEFAULT_SPOOL_DIR: &str = "vigild-spool";
pub const DEFAULT_SPOOL_MB: u64 = 64;
/// Home Assistant marks the score and anomaly entities unavailable after this long without a
/// result: long enough for a paced camera, short enough to see a stalled one.
pub const DEFAULT_HA_EXPIRE_AFTER_S: u64 = 60;
/// ~10–20 KB for a 640×480 overlay: enough to see a scratch, small enough for a busy broker.
pub const DEFAULT_SNAPSHOT_QUALITY: u8 = 75;
pub const DEFAULT_STATS_INTERVAL_S: f64 = 10.0;

/// Everything about vigild's MQTT side that the configuration decides, validated.
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
    pub stats_interval: Duration,
    /// Which frames publish a snapshot (the same choices as masks), how often at most, and
    /// their JPEG quality.
    pub snapshots: MaskPolicy,
    pub snapshot_interval: Duration,
    pub snapshot_quality: u8,
    /// Home Assistant discovery prefix; None: no discovery.
    pub ha_discovery_prefix: Option<String>,
    /// Home Assistant `expire_after` of the score and anomaly entities, seconds; None: never.
    pub ha_expire_after_s: Option<u64>,
}

impl MqttConfig {
    /// The defaults, with this broker, identity and spool location (tools and tests).
    pub fn new(
        broker: BrokerUrl,
        device_id: &str,
        camera: &str,
        spool_dir: PathBuf,
    ) -> Result<MqttConfig, TopicError> {
        Ok(MqttConfig {
            broker: Some(broker),
            embedded_broker: false,
            device_id: device_id.into(),
            camera: camera.into(),
            topic_prefix: Topics::default_prefix(device_id)?,
            masks: DEFAULT_MASKS,
            username: None,
            password: None,
            tls_ca: None,
            command_token: None,
            allow_plaintext_commands: false,
            spool_dir,
            spool_max_bytes: DEFAULT_SPOOL_MB << 20,
            stats_interval: Duration::from_secs_f64(DEFAULT_STATS_INTERVAL_S),
            snapshots: MaskPolicy::None,
            snapshot_interval: Duration::from_secs(1),
            snapshot_quality: DEFAULT_SNAPSHOT_QUALITY,
            ha_discovery_prefix: Some(HA_DISCOVERY_PREFIX.into()),
            ha_expire_after_s: Some(DEFAULT_HA_EXPIRE_AFTER_S),
        })
    }

    /// Whether `host` (a broker URL's host) is this machine: `localhost` or a loopback address.
    pub fn is_loopback_host(host: &str) -> bool {
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Where the publisher connects: `broker`, else the embedded broker on 127.0.0.1:1883;
    /// None when there is neither (results go to stdout).
    pub fn endpoint(&self) -> Option<BrokerUrl> {
        match (&self.broker, self.embedded_broker) {
            (Some(b), _) => Some(b.clone()),
            (None, true) => Some(BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: MQTT_PORT,
            }),
            (None, false) => None,
        }
    }
}
