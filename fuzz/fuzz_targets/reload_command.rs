//! The MQTT reload command parser on arbitrary payloads, retained or not: a request only
//! for a live message with the right token, a refusal otherwise, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_appliance::reload::parse_command;

const TOKEN: &str = "fuzz-token-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let retain = flags & 1 == 1;
    match parse_command(payload, retain, TOKEN) {
        Ok(req) => {
            assert!(!retain, "a retained command was accepted");
            let v: serde_json::Value = serde_json::from_slice(payload).expect("accepted JSON");
            assert_eq!(v["token"], TOKEN);
            assert_eq!(
                req.bundle.map(|b| b.display().to_string()),
                v["bundle"].as_str().map(str::to_string)
            );
        }
        Err(r) => assert!(!r.msg.is_empty()),
    }
});
