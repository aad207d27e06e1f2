//! `synthetic[:KIND]`: the host's procedural parts (vigil_shared::synth) as a camera stand-in,
//! at a fixed fps, with a defect in about one part in ten. Frames carry the ground truth
//! (`label`) and `source` = `synthetic:<kind>:good` or `…:<defect>`.

use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use vigil_shared::synth::{Generator, SurfaceKind};

use super::{CaptureError, CaptureStats, Frame, Next, Pacer, Source};
use crate::config::Config;

/// Share of defective parts.
pub const DEFECT_RATE: f32 = 0.1;
/// Default frame side when no ROI/size is configured: the model size is the natural choice,
/// but a camera-like frame exercises the resize path too.
pub const DEFAULT_SIDE: usize = 128;

pub struct SyntheticSource {
    gen: Generator,
    kind: SurfaceKind,
    pacer: Pacer,
}

impl SyntheticSource {
    pub fn new(kind: SurfaceKind, cfg: &Config, channels: usize) -> Result<Self, CaptureError> {
        let gen = Generator::try_new(kind, DEFAULT_SIDE, DEFAULT_SIDE, channels, cfg.seed)
            .map_err(|e| CaptureError::Open {
                path: format!("synthetic:{kind}"),
                msg: e.to_string(),
            })?;
        Ok(SyntheticSource {
            gen,
            kind,
            pacer: Pacer::new(cfg.fps),
        })
    }
}

impl Source for SyntheticSource {
    fn geometry(&self) -> (usize, usize, usize) {
        (self.gen.width(), self.gen.height(), self.gen.channels())
    }

    fn describe(&self) -> String {
        let (w, h, c) = self.geometry();
        format!(
            "synthetic:{} ({w}x{h}, {c} channel(s), {:.0}% defective)",
            self.kind,
            DEFECT_RATE * 100.0
        )
    }

    fn next(
        &mut self,
        frame: &mut Frame,
        _stats: &CaptureStats,
        stop: &AtomicBool,
    ) -> Result<Next, CaptureError> {
        if !self.pacer.wait(stop) {
            return Ok(Next::Stopped);
        }
        // The generator returns a fresh image: this allocates on the capture thread (a test
        // stand-in), never on the scoring path. Rendering stands for the camera's exposure and
        // readout, so the frame counts as acquired once it exists, as a camera's does when its
        // buffer is dequeued: latency and overhead then measure vigild, not the test scene.
        let img = self.gen.sample(DEFECT_RATE);
        let t0 = Instant::now();
        let at = SystemTime::now();
        frame.shape(img.width, img.height, img.channels);
        frame.data.copy_from_slice(&img.pixels);
        frame.source.clear();
        frame.source.push_str("synthetic:");
        frame.source.push_str(self.kind.name());
        frame.source.push(':');
        frame
            .source
            .push_str(img.defect.map_or("good", |d| d.name()));
        frame.label = Some(img.defect.is_some());
        frame.captured_at = at;
        frame.acquired = t0;
        frame.capture_time = t0.elapsed();
        Ok(Next::Frame)
    }
}
