//! The model bundle manifest (`manifest.json` inside a bundle directory).
//!
//! The manifest is the contract between training (host) and scoring (appliance): it says what
//! input the model expects, how its raw score maps to the 0..1 scale published over MQTT, where
//! it came from, and the sha256 of every file in the bundle. Loading is strict (unknown fields
//! are errors) so that a typo in a hand-edited manifest cannot silently change behaviour.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::tiles::PatchSpec;

/// The only manifest layout this build understands.
pub const SCHEMA_VERSION: u32 = 1;
/// File name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Values accepted in [`FileEntry::precision`].
pub const PRECISIONS: [&str; 2] = ["f32", "int8"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// Detector family: "ganomaly", "alad", ...
    pub detector: String,
    pub input: InputSpec,
    /// Patch mode (`crate::tiles`): the model takes `size`² tiles of the `input`-sized image,
    /// scored `stride` apart and stitched. Absent (older bundles, whole-image mode): the model
    /// takes the whole `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSpec>,
    pub score: ScoreSpec,
    pub normalisation: Normalisation,
    pub training: Provenance,
    pub files: Vec<FileEntry>,
}

/// What the model takes: planar `[C, H, W]` f32 with values in `range` (normally `[-1, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub range: [f32; 2],
}

/// Which anomaly score the detector reports, e.g. name "residual", params {"sigma": 4.0}.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    pub name: String,
    pub params: BTreeMap<String, f64>,
}

/// Maps raw scores to 0..1: `threshold` is the `quantile` of the validation normal scores and
/// maps to 0.5; `min` / `max` are the extremes of the validation scores and map to 0 / 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub threshold: f32,
    pub min: f32,
    pub max: f32,
    pub quantile: f64,
}

/// Where the model came from, so that a bundle on a device can be traced to a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The `--data` spec it was trained on.
    pub data: String,
    pub seed: u64,
    pub epochs: usize,
    pub image_size: usize,
    pub latent: usize,
    /// How the decoder upsamples ([`Decoder`]). Absent (older bundles): transposed
    /// convolutions.
    #[serde(default, skip_serializing_if = "Decoder::is_deconv")]
    pub decoder: Decoder,
    pub batch: usize,
    pub git_commit: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// How the detectors' decoders double their resolution: `deconv`, 4×4 transposed convolutions
/// of stride 2 (DCGAN, the papers'); `upsample`, nearest-neighbour upsampling then a 3×3
/// convolution (no transposed convolution anywhere, for engines without a fast one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    #[default]
    Deconv,
    Upsample,
}

impl Decoder {
    pub const ALL: [Decoder; 2] = [Decoder::Deconv, Decoder::Upsample];

    pub fn name(self) -> &'static str {
        match self {
            Decoder::Deconv => "deconv",
            Decoder::Upsample => "upsample",
        }
    }

    fn is_deconv(&self) -> bool {
        *self == Decoder::Deconv
    }
}

impl std::fmt::Display for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Decoder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown decoder {s:?} (deconv or upsample)"))
    }
}

/// One file of the bundle, relative to the bundle directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
    /// One of [`PRECISIONS`].
    pub precision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid manifest: {msg}", .path.display())]
    Parse { path: PathBuf, msg: String },
    #[error("{}: schema_version {found} is not supported (expected {expected})", .path.display())]
    Schema {
        path: PathBuf,
        found: u64,
        expected: u32,
    },
    #[error("{}: field `{field}`: {msg}", .path.display())]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{}: sha256 mismatch: manifest says {expected}, file has {found}", .path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("the bundle manifest lists no file named `{name}`")]
    MissingEntry { name: String },
}

impl Manifest {
    /// Reads and validates `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, BundleError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        // Look at schema_version before the strict parse: a manifest from a newer build
        // probably has fields we do not know, and "unsupported version" is the useful message.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BundleError::Parse {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        if let Some(found) = value.get("schema_version").and_then(|v| v.as_u64()) {
            if found != u64::from(SCHEMA_VERSION) {
                return Err(BundleError::Schema {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        // Parse the text again rather than the Value: serde_json then reports line and column.
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| BundleError::Parse {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        manifest.validate(&path)?;
        Ok(manifest)
    }

    /// Writes `dir/manifest.json` (pretty JSON) atomically: a reader never sees half a file.
    pub fn save(&self, dir: &Path) -> Result<(), BundleError> {
        let path = dir.join(MANIFEST_FILE);
        // Refuse to write what `load` would reject (and NaN, which JSON would turn into null).
        self.validate(&path)?;
        let mut text = serde_json::to_string_pretty(self).map_err(|e| BundleError::Parse {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        text.push('\n');
        let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp.{}", std::process::id()));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Io { path, source }
        };
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            // Flush to disk before the rename so a power cut leaves the old or the new file.
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&path)(e));
        }
        Ok(())
    }

    /// Checks values that the type system cannot; `path` only names the manifest in errors.
    pub fn validate(&self, path: &Path) -> Result<(), BundleError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(BundleError::Schema {
                path: path.to_path_buf(),
                found: u64::from(self.schema_version),
                expected: SCHEMA_VERSION,
            });
        }
        self.check_fields()
            .map_err(|(field, msg)| BundleError::Field {
                path: path.to_path_buf(),
                field,
                msg,
            })
    }

    /// The first invalid field, section by section in file order.
    fn check_fields(&self) -> Result<(), FieldError> {
        if self.detector.trim().is_empty() {
            return Err(bad("detector", "must not be empty"));
        }
        check_input(&self.input)?;
        if self.score.name.trim().is_empty() {
            return Err(bad("score.name", "must not be empty"));
        }
        for (k, v) in &self.score.params {
            if !v.is_finite() {
                return Err(bad(
                    format!("score.params.{k}"),
                    format!("must be finite, found {v}"),
                ));
            }
        }
        check_normalisation(&self.normalisation)?;
        if self.training.data.trim().is_empty() {
            return Err(bad("training.data", "must not be empty"));
        }
        if let Some(p) = &self.patch {
            p.check(self.input.height, self.input.width)
                .map_err(|(name, msg)| bad(name, msg))?;
        }
        check_files(&self.files)
    }

    /// The entry for `name`, if listed.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Loads the manifest of `dir` and checks every file it lists against its sha256: what the
    /// appliance does before swapping a model in and what the deploy does before uploading.
    pub fn load_verified(dir: &Path) -> Result<Manifest, BundleError> {
        let manifest = Manifest::load(dir)?;
        for f in &manifest.files {
            manifest.verify_file(dir, &f.name)?;
        }
        Ok(manifest)
    }

    /// The scoring graph the appliance runs and reports the sha256 of: the first `.onnx` listed.
    /// The anomaly-map value shown as hottest (masks, heatmaps): `score.params.map_max` when
    /// the exporter recorded one, else the largest per-pixel residual the input range allows
    /// (|x − x̂| ≤ hi − lo). A fixed scale keeps maps comparable between images, unlike
    /// per-image min–max scaling, which would make a clean part look as bad as a broken one.
    pub fn map_scale(&self) -> f32 {
        self.score
            .params
            .get("map_max")
            .map(|&v| v as f32)
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(self.input.range[1] - self.input.range[0])
    }

    pub fn model_file(&self) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name.ends_with(".onnx"))
    }

    /// Replaces the entry with the same name, or appends it (keeping the listing's order).
    pub fn upsert_file(&mut self, entry: FileEntry) {
        match self.files.iter_mut().find(|f| f.name == entry.name) {
            Some(f) => *f = entry,
            None => self.files.push(entry),
        }
    }

    /// Checks that `name` is listed, exists in `dir` and has the listed sha256; returns its path.
    pub fn verify_file(&self, dir: &Path, name: &str) -> Result<PathBuf, BundleError> {
        let entry = self.file(name).ok_or_else(|| BundleError::MissingEntry {
            name: name.to_string(),
        })?;
        let path = dir.join(&entry.name);
        let found = sha256_file(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        if !found.eq_ignore_ascii_case(&entry.sha256) {
            return Err(BundleError::Checksum {
                path,
                expected: entry.sha256.clone(),
                found,
            });
        }
        Ok(path)
    }
}

/// A field name and what is wrong with its value.
type FieldError = (String, String);

fn bad(field: impl Into<String>, msg: impl Into<String>) -> FieldError {
    (field.into(), msg.into())
}

fn check_input(input: &InputSpec) -> Result<(), FieldError> {
    if input.channels != 1 && input.channels != 3 {
        return Err(bad(
            "input.channels",
            format!("must be 1 or 3, found {}", input.channels),
        ));
    }
    if input.height == 0 {
        return Err(bad("input.height", "must be > 0, found 0"));
    }
    if input.width == 0 {
        return Err(bad("input.width", "must be > 0, found 0"));
    }
    let [lo, hi] = input.range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(bad(
            "input.range",
            format!("must be finite with low < high, found [{lo}, {hi}]"),
        ));
    }
    Ok(())
}

fn check_normalisation(n: &Normalisation) -> Result<(), FieldError> {
    for (name, v) in [
        ("normalisation.threshold", n.threshold),
        ("normalisation.min", n.min),
        ("normalisation.max", n.max),
    ] {
        if !v.is_finite() {
            return Err(bad(name, format!("must be finite, found {v}")));
        }
    }
    if !(0.0..=1.0).contains(&n.quantile) {
        return Err(bad(
            "normalisation.quantile",
            format!("must be in [0, 1], found {}", n.quantile),
        ));
    }
    Ok(())
}

fn check_files(files: &[FileEntry]) -> Result<(), FieldError> {
    for (i, f) in files.iter().enumerate() {
        check_file_name(&f.name).map_err(|msg| bad(format!("files[{i}].name"), msg))?;
        if files[..i].iter().any(|g| g.name == f.name) {
            return Err(bad(
                format!("files[{i}].name"),
                format!("`{}` is listed twice", f.name),
            ));
        }
        if f.sha256.len() != 64
            || !f
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad(
                format!("files[{i}].sha256"),
                format!("must be 64 lowercase hex digits, found `{}`", f.sha256),
            ));
        }
        if !PRECISIONS.contains(&f.precision.as_str()) {
            return Err(bad(
                format!("files[{i}].precision"),
                format!("must be one of {PRECISIONS:?}, found `{}`", f.precision),
            ));
        }
    }
    Ok(())
}

/// Bundle files are plain names inside the bundle directory: a manifest must not be able to
/// point the loader at `../../etc/something`.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "must be a plain file name inside the bundle, found `{name}`"
        ));
    }
    Ok(())
}

/// Lowercase hex sha256 of a file's contents, read in chunks (weights can be large).
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex sha256 of a byte slice.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

impl Normalisation {
    /// Piecewise linear map of a raw score: `min` → 0, `threshold` → 0.5, `max` → 1, clamped
    /// to [0, 1]. Scores below the threshold always give < 0.5 and scores at or above it
    /// give >= 0.5, so `normalise(s) >= 0.5` agrees with [`Normalisation::is_anomalous`].
    /// A degenerate segment (threshold <= min, or max <= threshold) becomes a step instead of
    /// dividing by zero. NaN (a broken model) maps to 1.0: better a visible alarm than silence.
    pub fn normalise(&self, score: f32) -> f32 {
        if score.is_nan() {
            return 1.0;
        }
        // f64: `max - min` of two finite f32 can overflow f32.
        let (s, t, lo, hi) = (
            f64::from(score),
            f64::from(self.threshold),
            f64::from(self.min),
            f64::from(self.max),
        );
        if s < t {
            let v = if t > lo {
                0.5 * (s - lo) / (t - lo)
            } else {
                0.0
            };
            // Rounding could otherwise land exactly on 0.5 for a score just below threshold.
            (v.clamp(0.0, 0.5) as f32).min(BELOW_HALF)
        } else if s == t {
            0.5
        } else {
            let v = if hi > t {
                0.5 + 0.5 * (s - t) / (hi - t)
            } else {
                1.0
            };
            v.clamp(0.5, 1.0) as f32
        }
    }

    /// The decision the appliance publishes: `score >= threshold` (NaN counts as anomalous).
    pub fn is_anomalous(&self, score: f32) -> bool {
        score >= self.threshold || score.is_nan()
    }
}

/// The largest f32 below 0.5.
const BELOW_HALF: f32 = f32::from_bits(0x3EFF_FFFF);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "vigil-shared-manifest-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample() -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            detector: "ganomaly".into(),
            input: InputSpec {
                channels: 1,
                height: 32,
                width: 32,
                range: [-1.0, 1.0],
            },
            patch: None,
            score: ScoreSpec {
                name: "residual".into(),
                params: BTreeMap::from([("sigma".to_string(), 4.0)]),
            },
            normalisation: Normalisation {
                threshold: 0.3,
                min: 0.1,
                max: 0.9,
                quantile: 0.99,
            },
            training: Provenance {
                data: "fashion-mnist:normal=0".into(),
                seed: 42,
                epochs: 15,
                image_size: 32,
                latent: 100,
                decoder: Decoder::Deconv,
                batch: 64,
                git_commit: Some("abc123".into()),
                created_at: "2024-01-01T00:00:00Z".into(),
            },
            files: vec![],
        }
    }

    fn write_json(dir: &Path, v: &serde_json::Value) {
        std::fs::write(
            dir.join(MANIFEST_FILE),
            serde_json::to_string_pretty(v).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn save_load_roundtrip() {
        let d = TempDir::new();
        let mut m = sample();
        m.upsert_file(FileEntry {
            name: "weights.safetensors".into(),
            sha256: sha256_bytes(b"x"),
            precision: "f32".into(),
        });
        m.save(&d.0).unwrap();
        assert_eq!(Manifest::load(&d.0).unwrap(), m);
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(MANIFEST_FILE)]);
    }

    #[test]
    fn missing_manifest_names_path() {
        let d = TempDir::new();
        let e = Manifest::load(&d.0).unwrap_err();
        assert!(matches!(e, BundleError::Io { .. }));
        assert!(e
            .to_string()
            .contains(&d.0.join(MANIFEST_FILE).display().to_string()));
    }

    #[test]
    fn wrong_schema_version() {
        let d = TempDir::new();
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema_version"] = 7.into();
        v["something_new"] = true.into();
        write_json(&d.0, &v);
        let e = Manifest::load(&d.0).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::Schema {
                    found: 7,
                    expected: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("schema_version 7 is not supported (expected 1)"),
            "{e}"
        );
    }

    #[test]
    fn missing_field_names_field_and_path() {
        let d = TempDir::new();
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("detector");
        write_json(&d.0, &v);
        let e = Manifest::load(&d.0).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BundleError::Parse { .. }), "{msg}");
        assert!(msg.contains("detector"), "{msg}");
        assert!(
            msg.contains(&d.0.join(MANIFEST_FILE).display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn unknown_field_is_an_error() {
        let d = TempDir::new();
        let mut v = serde_json::to_value(sample()).unwrap();
        v["input"]["chanels"] = 3.into();
        write_json(&d.0, &v);
        let msg = Manifest::load(&d.0).unwrap_err().to_string();
        assert!(msg.contains("chanels"), "{msg}");
    }

    #[test]
    fn syntax_error_is_parse_error() {
        let d = TempDir::new();
        std::fs::write(d.0.join(MANIFEST_FILE), "{ \"schema_version\": 1,").unwrap();
        assert!(matches!(
            Manifest::load(&d.0).unwrap_err(),
            BundleError::Parse { .. }
        ));
    }

    #[test]
    fn bad_values_name_the_field() {
        let d = TempDir::new();
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "input.channels",
                Box::new(|v| v["input"]["channels"] = 2.into()),
            ),
            (
                "input.height",
                Box::new(|v| v["input"]["height"] = 0.into()),
            ),
            ("detector", Box::new(|v| v["detector"] = "".into())),
            ("score.name", Box::new(|v| v["score"]["name"] = " ".into())),
            (
                "normalisation.quantile",
                Box::new(|v| v["normalisation"]["quantile"] = 1.5.into()),
            ),
            (
                "files[0].name",
                Box::new(
                    |v| v["files"] = serde_json::json!([{"name": "../x", "sha256": "0".repeat(64), "precision": "f32"}]),
                ),
            ),
            (
                "files[0].precision",
                Box::new(
                    |v| v["files"] = serde_json::json!([{"name": "m.onnx", "sha256": "0".repeat(64), "precision": "f64"}]),
                ),
            ),
        ];
        for (name, edit) in cases {
            let mut v = serde_json::to_value(sample()).unwrap();
            edit(&mut v);
            write_json(&d.0, &v);
            let e = Manifest::load(&d.0).unwrap_err();
            match &e {
                BundleError::Field { field, .. } => assert_eq!(field, name, "{e}"),
                other => panic!("{name}: expected Field error, got {other}"),
            }
        }
        // A non-finite threshold cannot be saved (JSON would turn it into null).
        let mut m = sample();
        m.normalisation.threshold = f32::NAN;
        assert!(matches!(m.save(&d.0), Err(BundleError::Field { .. })));
    }

    #[test]
    fn decoder_is_optional_round_trips_and_unknown_ones_are_named() {
        let d = TempDir::new();
        // Deconv bundles write no `decoder` key, so builds from before the option read them.
        let v = serde_json::to_value(sample()).unwrap();
        assert!(v["training"].get("decoder").is_none(), "{v}");
        let mut m = sample();
        m.training.decoder = Decoder::Upsample;
        m.save(&d.0).unwrap();
        let text = std::fs::read_to_string(d.0.join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("\"decoder\": \"upsample\""), "{text}");
        assert_eq!(Manifest::load(&d.0).unwrap(), m);

        let mut v = serde_json::to_value(sample()).unwrap();
        v["training"]["decoder"] = serde_json::json!("bilinear");
        write_json(&d.0, &v);
        let e = Manifest::load(&d.0).unwrap_err().to_string();
        assert!(e.contains("bilinear") && e.contains("upsample"), "{e}");
        assert_eq!("upsample".parse::<Decoder>(), Ok(Decoder::Upsample));
        assert!("bilinear"
            .parse::<Decoder>()
            .unwrap_err()
            .contains("deconv or upsample"));
    }

    #[test]
    fn patch_geometry_is_optional_round_trips_and_is_checked() {
        let d = TempDir::new();
        // Whole-image bundles write no `patch` key, so older builds still read them, and a
        // manifest without one (every bundle before patch mode) loads as whole-image.
        let v = serde_json::to_value(sample()).unwrap();
        assert!(v.get("patch").is_none(), "{v}");
        write_json(&d.0, &v);
        assert_eq!(Manifest::load(&d.0).unwrap().patch, None);

        let mut m = sample();
        m.patch = Some(PatchSpec {
            size: 16,
            stride: 8,
        });
        m.save(&d.0).unwrap();
        assert_eq!(Manifest::load(&d.0).unwrap(), m);

        for (edit, name) in [
            (serde_json::json!({"size": 64, "stride": 8}), "patch.size"),
            (
                serde_json::json!({"size": 16, "stride": 17}),
                "patch.stride",
            ),
        ] {
            let mut v = serde_json::to_value(sample()).unwrap();
            v["patch"] = edit;
            write_json(&d.0, &v);
            match Manifest::load(&d.0).unwrap_err() {
                BundleError::Field { field, .. } => assert_eq!(field, name),
                other => panic!("{name}: expected Field error, got {other}"),
            }
        }
        let mut v = serde_json::to_value(sample()).unwrap();
        v["patch"] = serde_json::json!({"size": 16, "stride": 8, "overlap": 2});
        write_json(&d.0, &v);
        let msg = Manifest::load(&d.0).unwrap_err().to_string();
        assert!(msg.contains("overlap"), "{msg}");
    }

    #[test]
    fn sha256_known_value_and_checksum_mismatch() {
        let d = TempDir::new();
        let p = d.0.join("model.onnx");
        std::fs::write(&p, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), abc);

        let mut m = sample();
        m.upsert_file(FileEntry {
            name: "model.onnx".into(),
            sha256: abc.into(),
            precision: "f32".into(),
        });
        assert_eq!(m.verify_file(&d.0, "model.onnx").unwrap(), p);

        let wrong = sha256_bytes(b"abd");
        m.upsert_file(FileEntry {
            name: "model.onnx".into(),
            sha256: wrong.clone(),
            precision: "f32".into(),
        });
        assert_eq!(m.files.len(), 1, "upsert replaces");
        let e = m.verify_file(&d.0, "model.onnx").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BundleError::Checksum { .. }));
        assert!(
            msg.contains("model.onnx") && msg.contains(abc) && msg.contains(&wrong),
            "{msg}"
        );

        assert!(matches!(
            m.verify_file(&d.0, "model.int8.onnx"),
            Err(BundleError::MissingEntry { .. })
        ));
        m.upsert_file(FileEntry {
            name: "gone.onnx".into(),
            sha256: abc.into(),
            precision: "int8".into(),
        });
        assert!(matches!(
            m.verify_file(&d.0, "gone.onnx"),
            Err(BundleError::Io { .. })
        ));
    }

    #[test]
    fn load_verified_checks_every_file_and_model_file_is_the_first_onnx() {
        let d = TempDir::new();
        let mut m = sample();
        m.files.clear();
        for (name, bytes, precision) in [
            ("weights.safetensors", &b"w"[..], "f32"),
            ("model.onnx", b"f", "f32"),
            ("model.int8.onnx", b"q", "int8"),
        ] {
            std::fs::write(d.0.join(name), bytes).unwrap();
            m.upsert_file(FileEntry {
                name: name.into(),
                sha256: sha256_bytes(bytes),
                precision: precision.into(),
            });
        }
        m.save(&d.0).unwrap();
        let loaded = Manifest::load_verified(&d.0).unwrap();
        assert_eq!(loaded.model_file().unwrap().name, "model.onnx");

        // A file after the model, damaged in transit, is still caught and named.
        std::fs::write(d.0.join("model.int8.onnx"), b"Q").unwrap();
        let e = Manifest::load_verified(&d.0).unwrap_err();
        assert!(matches!(e, BundleError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("model.int8.onnx"), "{e}");

        m.files.retain(|f| !f.name.ends_with(".onnx"));
        assert!(m.model_file().is_none());
    }

    #[test]
    fn normalise_maps_anchors_and_clamps() {
        let n = Normalisation {
            threshold: 0.3,
            min: 0.1,
            max: 0.9,
            quantile: 0.99,
        };
        assert_eq!(n.normalise(0.1), 0.0);
        assert_eq!(n.normalise(0.3), 0.5);
        assert_eq!(n.normalise(0.9), 1.0);
        // Halfway along each segment: 0.2 → 0.25, 0.6 → 0.75.
        assert!((n.normalise(0.2) - 0.25).abs() < 1e-6);
        assert!((n.normalise(0.6) - 0.75).abs() < 1e-6);
        assert_eq!(n.normalise(-5.0), 0.0);
        assert_eq!(n.normalise(50.0), 1.0);
        assert_eq!(n.normalise(f32::INFINITY), 1.0);
        assert_eq!(n.normalise(f32::NEG_INFINITY), 0.0);
        assert_eq!(n.normalise(f32::NAN), 1.0);
        // Just below the threshold stays below 0.5, agreeing with is_anomalous.
        let below = f32::from_bits(0.3f32.to_bits() - 1);
        assert!(n.normalise(below) < 0.5 && !n.is_anomalous(below));
        assert!(n.is_anomalous(0.3));
    }

    #[test]
    fn normalise_degenerate_segments() {
        let flat = Normalisation {
            threshold: 1.0,
            min: 1.0,
            max: 1.0,
            quantile: 1.0,
        };
        assert_eq!(flat.normalise(0.5), 0.0);
        assert_eq!(flat.normalise(1.0), 0.5);
        assert_eq!(flat.normalise(1.5), 1.0);
        let huge = Normalisation {
            threshold: 0.0,
            min: -f32::MAX,
            max: f32::MAX,
            quantile: 0.5,
        };
        assert!((huge.normalise(f32::MAX / 2.0) - 0.75).abs() < 1e-6);
        assert!((huge.normalise(-f32::MAX / 2.0) - 0.25).abs() < 1e-6);
    }
}
