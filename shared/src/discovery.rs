//! Home Assistant MQTT discovery (docs/mqtt.md, "Home Assistant discovery"): the retained
//! configs that make a vigild's score, verdict, fps and snapshot appear in Home Assistant
//! without YAML. Re-exported from [`crate::messages`].

use serde::{Deserialize, Serialize};

use crate::messages::Topics;

/// Home Assistant `availability` entry: reads `state` out of the JSON status so that
/// `online` is available and `offline` / `stopped` are not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaAvailability {
    pub topic: String,
    pub value_template: String,
    pub payload_available: String,
    pub payload_not_available: String,
}

/// Home Assistant device registry entry shared by the entities of one appliance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaDevice {
    pub identifiers: Vec<String>,
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    pub sw_version: String,
}

/// Who published the discovery config (HA logs it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaOrigin {
    pub name: String,
    pub sw_version: String,
}

/// One MQTT discovery config (`homeassistant/<component>/<node_id>/<object_id>/config`,
/// retained) for a `sensor` or `binary_sensor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaEntityConfig {
    pub name: String,
    pub unique_id: String,
    /// The entity id Home Assistant gives the entity at creation (`sensor.vigil_…`): HA's
    /// current field; `object_id` stays for versions before 2025.10.
    pub default_entity_id: String,
    pub object_id: String,
    pub state_topic: String,
    pub value_template: String,
    pub availability: Vec<HaAvailability>,
    pub availability_mode: String,
    pub device: HaDevice,
    pub origin: HaOrigin,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub state_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit_of_measurement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_off: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub json_attributes_topic: Option<String>,
    /// Seconds without a state message after which HA shows the entity as unavailable.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expire_after: Option<u64>,
}

/// A discovery message: where to publish (retained) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct HaDiscovery {
    pub topic: String,
    pub config: HaEntityConfig,
}

/// HA ids may only hold `[a-zA-Z0-9_-]`; anything else becomes `_`.
pub fn ha_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Discovery configs so that Home Assistant shows, without any YAML, a score sensor
/// (`normalized_score` from the retained `…/state`), an anomaly binary sensor (`anomalous`,
/// device class `problem`) and an fps sensor (from `…/stats`), all unavailable unless the
/// status is `online`. `expire_after` (seconds) makes the score and anomaly entities
/// unavailable when no result came for that long (a stalled camera).
pub fn ha_discovery(
    discovery_prefix: &str,
    device_id: &str,
    topics: &Topics,
    version: &str,
    model_id: &str,
    expire_after: Option<u64>,
) -> Vec<HaDiscovery> {
    let common = EntityCommon::new(device_id, topics, version, model_id);
    let node = &common.node;
    let cam = ha_id(topics.camera());
    let score_obj = format!("{cam}_score");
    let mut score = common.entity(
        "sensor",
        format!("{} anomaly score", topics.camera()),
        score_obj.clone(),
        topics.state(),
        "{{ value_json.normalized_score }}",
    );
    score.expire_after = expire_after;
    score.state_class = Some("measurement".into());
    score.icon = Some("mdi:gauge".into());
    score.json_attributes_topic = Some(topics.state());

    let anomaly_obj = format!("{cam}_anomaly");
    let mut anomaly = common.entity(
        "binary_sensor",
        format!("{} anomaly", topics.camera()),
        anomaly_obj.clone(),
        topics.state(),
        "{{ 'ON' if value_json.anomalous else 'OFF' }}",
    );
    anomaly.device_class = Some("problem".into());
    anomaly.expire_after = expire_after;
    anomaly.payload_on = Some("ON".into());
    anomaly.payload_off = Some("OFF".into());

    let mut fps = common.entity(
        "sensor",
        "frames per second".into(),
        "fps".into(),
        topics.stats(),
        "{{ value_json.fps }}",
    );
    fps.state_class = Some("measurement".into());
    fps.unit_of_measurement = Some("fps".into());
    fps.icon = Some("mdi:speedometer".into());

    vec![
        HaDiscovery {
            topic: format!("{discovery_prefix}/sensor/{node}/{score_obj}/config"),
            config: score,
        },
        HaDiscovery {
            topic: format!("{discovery_prefix}/binary_sensor/{node}/{anomaly_obj}/config"),
            config: anomaly,
        },
        HaDiscovery {
            topic: format!("{discovery_prefix}/sensor/{node}/fps/config"),
            config: fps,
        },
    ]
}

/// Discovery config of a Home Assistant MQTT `image` entity (the snapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaImageConfig {
    pub name: String,
    pub unique_id: String,
    pub default_entity_id: String,
    pub object_id: String,
    pub image_topic: String,
    pub content_type: String,
    pub availability: Vec<HaAvailability>,
    pub availability_mode: String,
    pub device: HaDevice,
    pub origin: HaOrigin,
}

/// The snapshot's `image` entity: (topic, config), on the device of [`ha_discovery`].
pub fn ha_snapshot_discovery(
    discovery_prefix: &str,
    device_id: &str,
    topics: &Topics,
    version: &str,
    model_id: &str,
) -> (String, HaImageConfig) {
    let common = EntityCommon::new(device_id, topics, version, model_id);
    let node = &common.node;
    let object = format!("{}_snapshot", ha_id(topics.camera()));
    let e = common.entity(
        "image",
        format!("{} snapshot", topics.camera()),
        object.clone(),
        String::new(),
        "",
    );
    let config = HaImageConfig {
        name: e.name,
        unique_id: e.unique_id,
        default_entity_id: e.default_entity_id,
        object_id: e.object_id,
        image_topic: topics.snapshot(),
        content_type: "image/jpeg".into(),
        availability: e.availability,
        availability_mode: e.availability_mode,
        device: e.device,
        origin: e.origin,
    };
    (
        format!("{discovery_prefix}/image/{node}/{object}/config"),
        config,
    )
}

/// What every entity of one vigild shares: its node id, availability, device and origin.
struct EntityCommon {
    node: String,
    availability: Vec<HaAvailability>,
    device: HaDevice,
    origin: HaOrigin,
}

impl EntityCommon {
    fn new(device_id: &str, topics: &Topics, version: &str, model_id: &str) -> Self {
        let node = format!("vigil_{}", ha_id(device_id));
        Self {
            availability: vec![HaAvailability {
                topic: topics.status(),
                value_template: "{{ 'online' if value_json.state == 'online' else 'offline' }}"
                    .into(),
                payload_available: "online".into(),
                payload_not_available: "offline".into(),
            }],
            device: HaDevice {
                identifiers: vec![node.clone()],
                name: format!("Vigil {device_id}"),
                manufacturer: "Vigil".into(),
                model: model_id.into(),
                sw_version: version.into(),
            },
            origin: HaOrigin {
                name: "vigild".into(),
                sw_version: version.into(),
            },
            node,
        }
    }

    /// An entity with the shared parts filled in and no optional field set.
    fn entity(
        &self,
        domain: &str,
        name: String,
        object: String,
        state_topic: String,
        template: &str,
    ) -> HaEntityConfig {
        let node = &self.node;
        HaEntityConfig {
            name,
            unique_id: format!("{node}_{object}"),
            default_entity_id: format!("{domain}.{node}_{object}")
                .to_lowercase()
                .replace('-', "_"),
            object_id: format!("{node}_{object}"),
            state_topic,
            value_template: template.into(),
            availability: self.availability.clone(),
            availability_mode: "latest".into(),
            device: self.device.clone(),
            origin: self.origin.clone(),
            device_class: None,
            state_class: None,
            unit_of_measurement: None,
            icon: None,
            payload_on: None,
            payload_off: None,
            json_attributes_topic: None,
            expire_after: None,
        }
    }
}
