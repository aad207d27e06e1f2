//! `Manifest::load` on arbitrary manifest.json bytes: an error or a valid manifest, never a
//! panic; what loads must save and load again to the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_shared::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("manifest.json"), data).expect("write manifest.json");
    if let Ok(m) = Manifest::load(dir.path()) {
        let again = tempfile::tempdir().expect("tempdir");
        m.save(again.path()).expect("a loaded manifest saves");
        let m2 = Manifest::load(again.path()).expect("a saved manifest loads");
        assert_eq!(
            serde_json::to_value(&m).expect("json"),
            serde_json::to_value(&m2).expect("json")
        );
    }
});
