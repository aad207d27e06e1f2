//! vigild.toml on arbitrary text: parsed and resolved (validated) into a configuration or a
//! one-field error, never a panic; what resolves prints (`--print-config`) to TOML that
//! parses again.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigil_appliance::config::{parse_toml, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("vigild.toml");
    let Ok(file) = parse_toml(text, path) else {
        return;
    };
    if let Ok(cfg) = Settings::default().resolve(&file, Some(path)) {
        let printed = cfg.to_toml();
        parse_toml(&printed, path).expect("--print-config output parses");
    }
});
