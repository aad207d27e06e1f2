//! The value types of `vigild.toml` fields, with their parsers.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use super::mqtt::{MQTTS_PORT, MQTT_PORT};

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    V4l(PathBuf),
    Folder(PathBuf),
    Synthetic(vigil_shared::synth::SurfaceKind),
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::V4l(p) => write!(f, "v4l:{}", p.display()),
            SourceSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            SourceSpec::Synthetic(k) => write!(f, "synthetic:{k}"),
        }
    }
}

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match (kind, rest) {
            ("v4l", Some(p)) if !p.is_empty() => Ok(SourceSpec::V4l(p.into())),
            ("folder", Some(p)) if !p.is_empty() => Ok(SourceSpec::Folder(p.into())),
            ("synthetic", None) => Ok(SourceSpec::Synthetic(
                vigil_shared::synth::SurfaceKind::BrushedMetal,
            )),
            ("synthetic", Some(k)) => k
                .parse()
                .map(SourceSpec::Synthetic)
                .map_err(|e: vigil_shared::synth::ParseKindError| e.to_string()),
            _ => Err("expected v4l:/dev/videoN, folder:PATH or synthetic[:KIND]".into()),
        }
    }
}

/// Which scored frames get a mask PNG on `…/<camera>/mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskPolicy {
    All,
    Anomalous,
    None,
}

impl MaskPolicy {
    pub fn wants(self, anomalous: bool) -> bool {
        match self {
            MaskPolicy::All => true,
            MaskPolicy::Anomalous => anomalous,
            MaskPolicy::None => false,
        }
    }
}

/// Camera pixel formats vigild converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PixelFormat {
    YUYV,
    GREY,
    RGB3,
    MJPG,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::YUYV,
        PixelFormat::GREY,
        PixelFormat::RGB3,
        PixelFormat::MJPG,
    ];
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::YUYV => *b"YUYV",
            PixelFormat::GREY => *b"GREY",
            PixelFormat::RGB3 => *b"RGB3",
            PixelFormat::MJPG => *b"MJPG",
        }
    }
    pub fn from_fourcc(f: [u8; 4]) -> Option<PixelFormat> {
        Self::ALL.into_iter().find(|p| p.fourcc() == f)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// Region of interest in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roi {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl FromStr for Roi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v: Vec<&str> = s.split(',').map(str::trim).collect();
        let nums: Result<Vec<usize>, _> = v.iter().map(|p| p.parse::<usize>()).collect();
        match nums.as_deref() {
            Ok([x, y, w, h]) if *w > 0 && *h > 0 => Ok(Roi {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
            }),
            _ => Err("expected X,Y,W,H: four non-negative integers, W and H at least 1".into()),
        }
    }
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]".into());
        };
        let rest = rest.trim_end_matches('/');
        // `[::1]:1883` style IPv6 literals keep their brackets in the host part.
        let (host, port) = match rest.rsplit_once(':') {
            Some(("", _)) => return Err(format!("{s:?} has no host before the port")),
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("port {p:?} is not a number in 1..=65535"))?;
                (h, port)
            }
            _ => (rest, if tls { MQTTS_PORT } else { MQTT_PORT }),
        };
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(format!("host {host:?} is not a host name or address"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        })
    }
}

/// `WxH`, each 1..=16384.
pub(crate) fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?);
    ((1..=16384).contains(&w) && (1..=16384).contains(&h)).then_some((w, h))
}
