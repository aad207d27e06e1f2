//! docs/examples/ must work against what vigild publishes: the Node-RED flow subscribes to
//! documented topics (each filter matches a topic vigild uses) and its functions read fields
//! the messages have; the Grafana dashboard's queries name metrics vigild's `/metrics` exports
//! (checked against a running vigild by `live.rs`; here: valid JSON and well-formed queries).

use serde_json::Value;
use vigil_shared::messages::{DeviceState, FrameResult, LatencyMs, ModelRef, Status, Topics};

fn read(name: &str) -> Value {
    let path = format!("{}/../docs/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
}

/// MQTT filter matching (`+` one level, `#` the rest).
fn matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What vigild publishes on each topic kind, as JSON (None: binary).
fn sample(kind: &str) -> Option<Value> {
    let model = ModelRef {
        id: "ganomaly-64x64-f32".into(),
        sha256: "ab".repeat(32),
    };
    match kind {
        "result" | "state" => Some(
            serde_json::to_value(FrameResult {
                frame_id: 1,
                source: "part.png".into(),
                captured_at: "2026-12-01T00:00:00.000Z".into(),
                score: 0.1,
                normalized_score: 0.2,
                threshold: 0.5,
                anomalous: false,
                latency_ms: LatencyMs {
                    capture: 0.1,
                    infer: 1.0,
                    total: 1.2,
                },
                model,
            })
            .unwrap(),
        ),
        "status" => Some(
            serde_json::to_value(Status {
                state: DeviceState::Online,
                version: "0.1.0".into(),
                model: model.id,
                model_sha256: model.sha256,
                backend: "tract f32, 1 thread".into(),
                since: "2026-12-01T00:00:00.000Z".into(),
            })
            .unwrap(),
        ),
        _ => None,
    }
}

#[test]
fn node_red_flow_reads_documented_topics_and_fields() {
    let flow = read("node-red-flow.json");
    let nodes = flow.as_array().expect("a flow is an array of nodes");
    let t = Topics::new("vigil/line-1", "cam0").unwrap();
    let topics = [
        ("result", t.result()),
        ("state", t.state()),
        ("status", t.status()),
        ("snapshot", t.snapshot()),
        ("mask", t.mask()),
        ("stats", t.stats()),
    ];
    let by_id = |id: &str| {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .expect("wired node exists")
    };
    let inputs: Vec<&Value> = nodes.iter().filter(|n| n["type"] == "mqtt in").collect();
    assert!(inputs.len() >= 3);
    for input in inputs {
        let filter = input["topic"].as_str().unwrap();
        let kinds: Vec<&str> = topics
            .iter()
            .filter(|(_, topic)| matches(filter, topic))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            kinds.len(),
            1,
            "{filter} matches {kinds:?} of vigild's topics"
        );
        assert!(by_id(input["broker"].as_str().unwrap())["type"] == "mqtt-broker");
        // Every `msg.payload.a.b` a function behind this input reads must exist.
        let Some(payload) = sample(kinds[0]) else {
            assert_eq!(input["datatype"], "buffer", "{filter} carries bytes");
            continue;
        };
        let mut next: Vec<String> = wires(input);
        while let Some(id) = next.pop() {
            let node = by_id(&id);
            next.extend(wires(node));
            for field in payload_fields(node["func"].as_str().unwrap_or("")) {
                let found = field
                    .split('.')
                    .try_fold(&payload, |v, k| v.get(k))
                    .is_some();
                assert!(
                    found,
                    "{filter}: the flow reads payload.{field}, which vigild does not send"
                );
            }
        }
    }
}

fn wires(node: &Value) -> Vec<String> {
    node["wires"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|out| out.as_array().into_iter().flatten())
        .filter_map(|id| id.as_str().map(String::from))
        .collect()
}

/// `msg.payload.x.y` paths in a function's code (methods such as `.toFixed` cut off).
fn payload_fields(code: &str) -> Vec<String> {
    code.split("msg.payload.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
                .split('.')
                .take_while(|p| !p.starts_with("to") && !p.is_empty())
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect()
}

#[test]
fn grafana_dashboard_is_valid_and_queries_vigild_metrics() {
    let d = read("grafana-dashboard.json");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("vigild_"), "{expr}");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "unbalanced: {expr}"
            );
        }
    }
}
