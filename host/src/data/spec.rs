//! The `--data SPEC` string.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use vigil_shared::synth::SurfaceKind;

use super::fmnist::CLASS_NAMES;
use super::DataError;

/// Which dataset to load; `Display` gives the canonical spec string recorded in model bundles.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// One-class Fashion-MNIST: class `normal` (0..=9) is normal; a fraction `contamination`
    /// (0 ≤ P < 0.5) of anomalous training images is mixed into the training split.
    FashionMnist { normal: u8, contamination: f32 },
    /// MVTec AD layout under this directory.
    Folder(PathBuf),
    /// Procedural surfaces.
    Synthetic { kind: SurfaceKind },
}

fn bad(spec: &str, reason: impl Into<String>) -> DataError {
    DataError::Spec {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let s = spec.trim();
        let (source, rest) = match s.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        match source.to_ascii_lowercase().as_str() {
            "fashion-mnist" | "fmnist" => parse_fmnist(spec, rest.unwrap_or("")),
            "folder" => match rest {
                Some(p) if !p.trim().is_empty() => Ok(DataSpec::Folder(PathBuf::from(p))),
                _ => Err(bad(
                    spec,
                    "`folder:` needs a directory path, e.g. folder:/data/mvtec/bottle",
                )),
            },
            "synthetic" => {
                let kind = rest.unwrap_or("metal");
                kind.parse::<SurfaceKind>()
                    .map(|kind| DataSpec::Synthetic { kind })
                    .map_err(|e| bad(spec, e.to_string()))
            }
            "" => Err(bad(spec, "empty spec")),
            other => Err(bad(
                spec,
                format!("unknown source `{other}` (expected fashion-mnist, folder or synthetic)"),
            )),
        }
    }
}

fn parse_fmnist(spec: &str, params: &str) -> Result<DataSpec, DataError> {
    let mut normal = None;
    let mut contamination = 0.0f32;
    for part in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(spec, format!("`{part}` is not key=value")));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "normal" => {
                let c = value
                    .parse::<u8>()
                    .ok()
                    .filter(|&c| c <= 9)
                    .or_else(|| {
                        CLASS_NAMES
                            .iter()
                            .position(|n| n.eq_ignore_ascii_case(value))
                            .map(|i| i as u8)
                    });
                match c {
                    Some(c) => normal = Some(c),
                    None => {
                        return Err(bad(
                            spec,
                            format!("normal=`{value}` is not a class 0..=9 (0 {}, …, 9 {})", CLASS_NAMES[0], CLASS_NAMES[9]),
                        ))
                    }
                }
            }
            "contamination" => match value.parse::<f32>() {
                Ok(p) if (0.0..0.5).contains(&p) => contamination = p,
                _ => {
                    return Err(bad(
                        spec,
                        format!("contamination=`{value}` must be a number with 0 <= P < 0.5"),
                    ))
                }
            },
            other => {
                return Err(bad(
                    spec,
                    format!("unknown parameter `{other}` (expected normal=C and optionally contamination=P)"),
                ))
            }
        }
    }
    match normal {
        Some(normal) => Ok(DataSpec::FashionMnist {
            normal,
            contamination,
        }),
        None => Err(bad(spec, "fashion-mnist needs normal=C with a class 0..=9")),
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::FashionMnist {
                normal,
                contamination,
            } => {
                write!(f, "fashion-mnist:normal={normal}")?;
                if *contamination > 0.0 {
                    write!(f, ",contamination={contamination}")?;
                }
                Ok(())
            }
            DataSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            DataSpec::Synthetic { kind } => write!(f, "synthetic:{}", kind.name()),
        }
    }
}
