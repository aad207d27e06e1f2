//! [`PublishConfig`]: the validated MQTT settings ([`MqttConfig`], from `vigild.toml` and
//! flags) plus what only the publisher tunes (queue, keep-alive, backoff, drain), and the
//! rumqttc options built from them (Last Will, credentials, TLS).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use vigil_shared::messages::{self, DeviceState, ModelRef, Status, Topics};

use super::PublishError;
use crate::config::{BrokerUrl, MqttConfig};
use crate::reload::{ModelTable, RefusalLimiter, ReloadRequest};

/// Everything the publisher needs.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Broker, identity, topics, masks, spool, stats interval (`config::Config::mqtt`).
    pub mqtt: MqttConfig,
    /// Home Assistant discovery prefix; None disables discovery.
    pub ha_discovery_prefix: Option<String>,
    pub model: ModelRef,
    /// vigild's version, in `status` and discovery.
    pub version: String,
    /// The scoring engine, in `status` (see [`Status::backend`]).
    pub backend: String,
    /// Messages (results, reload outcomes) that may queue ahead of the publisher.
    pub queue_capacity: usize,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// On shutdown, how long to wait for the broker to take what is queued.
    pub drain_timeout: Duration,
    /// Models by generation, for results of hot-reloaded models (None: `model` only).
    pub models: Option<Arc<ModelTable>>,
    /// MQTT reload commands (None: not subscribed).
    pub commands: Option<Commands>,
}

/// Where authenticated `…/command/reload` messages go.
#[derive(Clone)]
pub struct Commands {
    /// The shared secret a command must carry (`command_token`).
    pub token: String,
    pub requests: std::sync::mpsc::Sender<ReloadRequest>,
    /// Shared by the clones: refusals of the whole run.
    pub limiter: Arc<Mutex<RefusalLimiter>>,
}

impl Commands {
    pub fn new(token: String, requests: std::sync::mpsc::Sender<ReloadRequest>) -> Commands {
        Commands {
            token,
            requests,
            limiter: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str("Commands { token: \"********\" }")
    }
}

impl PublishConfig {
    /// vigild's validated MQTT settings plus the model that runs; the publisher's own knobs
    /// at their defaults.
    pub fn from_mqtt(mqtt: MqttConfig, model: ModelRef) -> PublishConfig {
        PublishConfig {
            ha_discovery_prefix: mqtt.ha_discovery_prefix.clone(),
            mqtt,
            model,
            version: env!("CARGO_PKG_VERSION").into(),
            backend: String::new(),
            queue_capacity: 64,
            keep_alive: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            models: None,
            commands: None,
        }
    }

    /// Defaults for everything but a plain `mqtt://host:port` broker, identity, model and
    /// spool location (tools and tests).
    pub fn new(
        host: &str,
        port: u16,
        device_id: &str,
        camera: &str,
        model: ModelRef,
        spool_dir: PathBuf,
    ) -> Result<PublishConfig, PublishError> {
        let broker = BrokerUrl {
            tls: false,
            host: host.into(),
            port,
        };
        let mqtt = MqttConfig::new(broker, device_id, camera, spool_dir)?;
        Ok(PublishConfig::from_mqtt(mqtt, model))
    }

    /// The broker to connect to (the embedded one on 127.0.0.1:1883 without `broker`).
    pub(super) fn endpoint(&self) -> Result<BrokerUrl, PublishError> {
        self.mqtt.endpoint().ok_or(PublishError::NoBroker)
    }
}

pub(super) fn mqtt_options(
    cfg: &PublishConfig,
    topics: &Topics,
    broker: &BrokerUrl,
) -> Result<MqttOptions, PublishError> {
    let client_id = format!("vigild-{}", messages::ha_id(&cfg.mqtt.device_id));
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)));
    // Clean session: vigild tracks what is unacknowledged itself and resends it from its own
    // queue and spool; rumqttc then drops its copies on reconnect instead of sending them twice.
    o.set_clean_session(true);
    o.set_max_packet_size(16 << 20, 16 << 20);
    let will = status(cfg, DeviceState::Offline, SystemTime::now());
    o.set_last_will(LastWill::new(
        topics.status(),
        serde_json::to_vec(&will).unwrap_or_default(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.mqtt.username {
        o.set_credentials(user.clone(), cfg.mqtt.password.clone().unwrap_or_default());
    }
    if broker.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(cfg)?),
        )));
    }
    Ok(o)
}

/// The retained `…/status` payload.
pub(super) fn status(cfg: &PublishConfig, state: DeviceState, since: SystemTime) -> Status {
    Status {
        state,
        version: cfg.version.clone(),
        model: cfg.model.id.clone(),
        model_sha256: cfg.model.sha256.clone(),
        backend: cfg.backend.clone(),
        since: messages::rfc3339_ms(since),
    }
}

/// rustls (ring) with the CA from `tls_ca`, or the system's roots.
fn tls_config(cfg: &PublishConfig) -> Result<rustls::ClientConfig, PublishError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.mqtt.tls_ca {
        Some(path) => {
            let ca_err = |msg: String| PublishError::TlsCa {
                path: path.clone(),
                msg,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                // Unparseable system certificates are skipped, as browsers do.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(PublishError::Tls(
                    "no system CA certificates found: set the TLS CA file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
