//! `…/command/reload`: authenticated reload requests from MQTT, forwarded to the reload
//! thread, and their outcomes on `…/command/result`.

use std::path::PathBuf;
use std::time::SystemTime;

use rumqttc::QoS;
use vigil_shared::messages::{self, CommandResult, ReloadCommand};

use super::delivery::{Origin, State};
use crate::reload::{token_eq, ReloadRequest, Trigger};

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

    /// An incoming message: only `…/command/reload` is subscribed.
    pub(super) fn on_incoming(&mut self, topic: &str, payload: &[u8]) {
        let Some(cmd) = self.cfg.commands.clone() else {
            return;
        };
        if topic != self.topics.command_reload() {
            return;
        }
        let refuse = |st: &mut State, request_id: Option<String>, bundle: String, msg: String| {
            eprintln!("vigild: {topic}: refused: {msg}");
            let r = CommandResult {
                command: "reload".into(),
                trigger: Trigger::Mqtt.as_str().into(),
                request_id,
                bundle,
                ok: false,
                model: st.cfg.model.clone(),
                error: Some(msg),
                at: messages::rfc3339_ms(SystemTime::now()),
            };
            st.publish_command_result(&r);
        };
        let c: ReloadCommand = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    self,
                    None,
                    String::new(),
                    format!("not a reload command ({{\"token\", \"bundle\"}} JSON): {e}"),
                )
            }
        };
        let bundle = c.bundle.clone().unwrap_or_default();
        if !token_eq(&c.token, &cmd.token) {
            return refuse(self, c.request_id, bundle, "wrong token".into());
        }
        let req = ReloadRequest {
            bundle: c.bundle.map(PathBuf::from),
            trigger: Trigger::Mqtt,
            request_id: c.request_id.clone(),
        };
        if cmd.requests.send(req).is_err() {
            refuse(
                self,
                c.request_id,
                bundle,
                "the reload thread has stopped".into(),
            );
        }
    }
}
