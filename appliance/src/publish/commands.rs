//! `…/command/reload`: authenticated reload requests from MQTT, forwarded to the reload
//! thread, and their outcomes on `…/command/result`; and the other message that is no
//! result, the snapshot.

use std::time::{Instant, SystemTime};

use rumqttc::QoS;
use vigil_shared::messages::{self, CommandResult};

use super::delivery::{Origin, State};
use crate::reload::{parse_command, Refusal, Trigger};

impl State {
    pub(super) fn publish_command_result(&mut self, r: &CommandResult) {
        if !self.connected || self.disconnect_sent {
            return;
        }
        let topic = self.topics.command_result();
        if let Ok(p) = serde_json::to_vec(r) {
            self.submit(&topic, p, QoS::AtLeastOnce, false, Origin::Ephemeral);
        }
    }

    /// The newest snapshot, retained; skipped while disconnected (the next one follows).
    pub(super) fn publish_snapshot(&mut self, jpeg: Vec<u8>) {
        if !self.connected || self.disconnect_sent {
            return;
        }
        let topic = self.topics.snapshot();
        self.submit(&topic, jpeg, QoS::AtLeastOnce, true, Origin::Ephemeral);
    }

    /// An incoming message: only `…/command/reload` is subscribed. Parsing and the checks are
    /// `reload::parse_command`'s; refusals are rate-limited.
    pub(super) fn on_incoming(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let Some(cmd) = self.cfg.commands.clone() else {
            return;
        };
        if topic != self.topics.command_reload() {
            return;
        }
        let refusal = match parse_command(payload, retain, &cmd.token) {
            Ok(req) => match cmd.requests.send(req) {
                Ok(()) => return,
                Err(e) => Refusal {
                    bundle: e
                        .0
                        .bundle
                        .map(|b| b.display().to_string())
                        .unwrap_or_default(),
                    request_id: e.0.request_id,
                    msg: "the reload thread has stopped".into(),
                },
            },
            Err(r) => r,
        };
        let now = Instant::now();
        let Some(suppressed) = cmd.limiter.lock().map_or(Some(0), |mut l| l.admit(now)) else {
            return;
        };
        let mut msg = refusal.msg;
        if suppressed > 0 {
            msg += &format!(" ({suppressed} more refused since the last one reported)");
        }
        log_warn!("{topic}: refused: {msg}");
        let r = CommandResult {
            command: "reload".into(),
            trigger: Trigger::Mqtt.as_str().into(),
            request_id: refusal.request_id,
            bundle: refusal.bundle,
            ok: false,
            model: self.cfg.model.clone(),
            error: Some(msg),
            at: messages::rfc3339_ms(SystemTime::now()),
        };
        self.publish_command_result(&r);
    }
}
