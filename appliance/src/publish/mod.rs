//! MQTT publishing: results, masks, status with Last Will, retained state, stats, Home
//! Assistant discovery, and the on-disk spool that carries results across broker outages.
//! Topics and payloads: `vigil_shared::messages` and docs/mqtt.md.
//!
//! - `config`: [`PublishConfig`], which embeds the validated `config::MqttConfig`, and the
//!   rumqttc options built from it (Last Will, credentials, TLS).
//! - `handle`: [`Publisher`] (start, shutdown) and [`PublisherHandle`]. The scoring loop's
//!   records reach the publisher as they are (the pipeline's `Lease`s, moved by a forwarding
//!   thread); the publisher builds the wire messages from them in one place
//!   (`pipeline::Record::to_message`, `Record::mask_png`).
//! - `delivery`: the state machine of what is queued, spooled and in flight.
//! - `event_loop`: the tokio task that polls rumqttc, runs the timers and the shutdown.
//! - `commands`: authenticated `…/command/reload` messages.
//! - `spool`, `broker`: the on-disk spool and the embedded rumqttd broker.
//!
//! The publisher runs a current-thread tokio runtime on a thread of its own; nothing in it
//! blocks the scoring loop, which drops and counts a result when the publisher is behind.
//!
//! Delivery: every result (and mask) is QoS 1 and written ahead: appended to the spool (see
//! [`spool`]) before it is sent, and sent from there, so a crash of vigild loses nothing scored
//! before it (memory holds only what a full disk refused). The publisher keeps its own list of
//! what is in flight and releases a message only once the broker has acknowledged it (PubAck),
//! so after a lost connection exactly the unacknowledged messages are sent again, in their
//! original order, and nothing the broker acknowledged is repeated. The remaining
//! at-least-once edges: a message whose PubAck was lost together with the connection (the
//! broker got it, vigild cannot know), a message acknowledged after an earlier one that was not
//! (brokers ack in order, so this needs a broker bug), and, after a crash of vigild itself,
//! records acknowledged in the last second before it.

pub mod broker;
mod commands;
mod config;
mod delivery;
mod event_loop;
mod handle;
pub mod spool;

use std::path::PathBuf;

use vigil_shared::messages;

pub use broker::{
    start_embedded_broker, start_embedded_broker_on, start_embedded_broker_with, BrokerError,
    Credentials, EmbeddedBroker,
};
pub use config::{Commands, PublishConfig};
pub use handle::{Publisher, PublisherHandle, QueueFull};
pub use spool::{Spool, SpoolError};

pub use crate::config::MaskPolicy;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Topic(#[from] messages::TopicError),
    #[error("TLS CA file {}: {msg}", .path.display())]
    TlsCa { path: PathBuf, msg: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("publisher: cannot start its thread: {0}")]
    Thread(std::io::Error),
    #[error("publisher thread panicked")]
    Panicked,
    #[error("no MQTT broker configured: set `broker` or `embedded_broker`")]
    NoBroker,
}
