//! `--embedded-broker`: rumqttd inside vigild, so the demo needs nothing installed.
//!
//! rumqttd runs its router and its listener on threads of its own; they live as long as the
//! process (rumqttd has no stop call), which is what vigild needs.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Largest MQTT payload the embedded broker accepts: a mask PNG of a 1024² model fits.
pub const EMBEDDED_MAX_PAYLOAD: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded broker: {addr} did not accept connections within {waited:?}")]
    NotReady { addr: SocketAddr, waited: Duration },
    #[error("embedded broker: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

/// Starts rumqttd listening on `127.0.0.1:port` (MQTT 3.1.1) and returns once it accepts
/// connections. Port 0 is refused by rumqttd's config semantics, so pick a real port.
pub fn start_embedded_broker(port: u16) -> Result<EmbeddedBroker, BrokerError> {
    start_embedded_broker_on(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// [`start_embedded_broker`] on any address (e.g. `0.0.0.0:1883` to serve the line's LAN).
pub fn start_embedded_broker_on(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
    // rumqttd reports a bind failure only in its server thread's log: check first so that the
    // caller gets an error naming the address.
    drop(TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?);
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: EMBEDDED_MAX_PAYLOAD,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "vigild-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1024,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 << 20,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                eprintln!("vigild: embedded broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Thread)?;
    let connect_to = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let start = Instant::now();
    let limit = Duration::from_secs(5);
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&connect_to, Duration::from_millis(200)).is_ok() {
            return Ok(EmbeddedBroker { addr });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotReady {
        addr,
        waited: limit,
    })
}
