//! `--embedded-broker`: rumqttd inside vigild, so the demo needs nothing installed.
//!
//! rumqttd runs its router and its listener on threads of its own; they live as long as the
//! process (rumqttd has no stop call), which is what vigild needs.
//!
//! Exposure: like mosquitto since 2.0, the embedded broker refuses to serve anonymous clients
//! beyond this host. On a non-loopback address (`0.0.0.0`, a LAN address) it starts only with
//! a username and password, which it then demands of every client (rumqttd's static auth).

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
    #[error(
        "embedded broker: refusing to listen on {addr} without authentication (anyone on the \
         network could publish and subscribe): set `username` and `password`, or listen on 127.0.0.1"
    )]
    Anonymous { addr: SocketAddr },
    #[error("embedded broker: {addr} did not accept connections within {waited:?}")]
    NotReady { addr: SocketAddr, waited: Duration },
    #[error("embedded broker: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// The one account the embedded broker accepts when set.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(
            f,
            "Credentials {{ username: {:?}, password: \"********\" }}",
            self.username
        )
    }
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

/// [`start_embedded_broker`] on another loopback address (anonymous clients).
pub fn start_embedded_broker_on(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
    start_embedded_broker_with(addr, None)
}

/// The embedded broker on any address, e.g. `0.0.0.0:1883` to serve the line's LAN. With
/// `auth`, clients must log in with it; without, only a loopback address is accepted.
pub fn start_embedded_broker_with(
    addr: SocketAddr,
    auth: Option<Credentials>,
) -> Result<EmbeddedBroker, BrokerError> {
    if auth.is_none() && !addr.ip().is_loopback() {
        return Err(BrokerError::Anonymous { addr });
    }
    let auth_probe = auth.clone();
    // rumqttd reports a bind failure only in its server thread's log: check first so that the
    // caller gets an error naming the address.
    drop(TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?);
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: EMBEDDED_MAX_PAYLOAD,
        max_inflight_count: 500,
        auth: auth
            .clone()
            .map(|c| HashMap::from([(c.username, c.password)])),
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
    let probe_login = auth_probe.clone();
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log_error!("embedded broker stopped: {e}");
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
        if let Ok(conn) = TcpStream::connect_timeout(&connect_to, Duration::from_millis(200)) {
            // A whole MQTT session, not a bare TCP connect, which rumqttd logs as an error.
            probe(conn, probe_login.as_ref());
            return Ok(EmbeddedBroker { addr });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotReady {
        addr,
        waited: limit,
    })
}

/// CONNECT (with the login), wait for the CONNACK, DISCONNECT: MQTT 3.1.1 by hand, best effort.
fn probe(mut conn: TcpStream, login: Option<&Credentials>) {
    use std::io::{Read, Write};
    let field = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    };
    let mut body = Vec::new();
    field(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02 | if login.is_some() { 0xC0 } else { 0 }); // clean session, user + password
    body.extend_from_slice(&10u16.to_be_bytes()); // keep-alive
    field(&mut body, b"vigild-ready-probe");
    if let Some(c) = login {
        field(&mut body, c.username.as_bytes());
        field(&mut body, c.password.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut connack = [0u8; 4];
    if conn.write_all(&packet).is_ok() && conn.read_exact(&mut connack).is_ok() {
        // rumqttd's router must have registered the session before it is ended, or it logs
        // an error for the vanished connection.
        std::thread::sleep(Duration::from_millis(20));
        let _ = conn.write_all(&[0xE0, 0x00]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Client, ConnectionError, Event, MqttOptions, Packet};

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// Whether a client with these credentials gets a successful CONNACK.
    fn connects(port: u16, login: Option<(&str, &str)>) -> Result<(), String> {
        let mut o = MqttOptions::new(format!("t-{port}-{}", login.is_some()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (_client, mut conn) = Client::new(o, 8);
        for ev in conn.iter().take(5) {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return match a.code {
                        rumqttc::ConnectReturnCode::Success => Ok(()),
                        c => Err(format!("{c:?}")),
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(c)) => return Err(format!("{c:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no CONNACK".into())
    }

    #[test]
    fn non_loopback_without_auth_is_refused() {
        for addr in ["0.0.0.0:1883", "192.168.1.20:1883", "[::]:1883"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let e = start_embedded_broker_with(addr, None).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, BrokerError::Anonymous { .. })
                    && msg.contains(&addr.to_string())
                    && msg.contains("`username`")
                    && !msg.contains('\n'),
                "{msg}"
            );
        }
    }

    /// With credentials set, the embedded broker refuses a client with a wrong password and
    /// one with none, and admits the right one.
    #[test]
    fn auth_refuses_wrong_credentials() {
        let port = free_port();
        let auth = Credentials {
            username: "line".into(),
            password: "s3cret-pass".into(),
        };
        start_embedded_broker_with(SocketAddr::from(([127, 0, 0, 1], port)), Some(auth)).unwrap();
        assert!(connects(port, Some(("line", "wrong"))).is_err());
        assert!(connects(port, Some(("other", "s3cret-pass"))).is_err());
        assert!(connects(port, None).is_err());
        assert_eq!(connects(port, Some(("line", "s3cret-pass"))), Ok(()));
        assert!(format!(
            "{:?}",
            Credentials {
                username: "u".into(),
                password: "pw".into()
            }
        )
        .contains("****"));
    }
}
