//! `folder:PATH`: replays the images of a directory in file-name order at a fixed fps, looping
//! forever (`--frames` bounds a run). Each frame carries its file name as `source`.
//!
//! Files are decoded when due (PNG, JPEG), so a
//! large folder costs no memory up front; a file that does not decode is skipped and counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::{CaptureError, CaptureStats, Frame, Next, Pacer, Source};

// The formats the workspace's `image` build decodes.
const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

pub struct FolderSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    names: Vec<String>,
    pos: usize,
    channels: usize,
    geometry: (usize, usize, usize),
    pacer: Pacer,
    /// Consecutive decode failures: a whole folder of bad files is fatal, not a busy loop.
    failures: usize,
}

/// Image files of `dir` (not recursive), sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let err = |msg: String| CaptureError::Open {
        path: format!("folder:{}", dir.display()),
        msg,
    };
    let rd = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| err(e.to_string()))?.path();
        let ok = p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if ok {
            files.push(p);
        }
    }
    // Byte order of the names: frame_0009 before frame_0010 when zero-padded, stable everywhere.
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err(err(format!(
            "no image files ({}) in the folder",
            EXTENSIONS.join(", ")
        )));
    }
    Ok(files)
}

fn decode(path: &Path, channels: usize, frame: &mut Frame) -> Result<(), String> {
    let img = image::open(path).map_err(|e| e.to_string())?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    frame.shape(w, h, channels);
    // The host's loaders read files the same way (gray stays gray, BT.601 luma otherwise).
    super::convert::from_decoded(img, channels, &mut frame.data).map_err(|e| e.to_string())
}

impl FolderSource {
    /// Lists the folder and decodes the first image (its size is the source geometry).
    pub fn open(dir: &Path, fps: f64, channels: usize) -> Result<FolderSource, CaptureError> {
        let files = list_images(dir)?;
        let mut probe = Frame::with_capacity(0);
        decode(&files[0], channels, &mut probe).map_err(|msg| CaptureError::Open {
            path: files[0].display().to_string(),
            msg,
        })?;
        let names = files
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        Ok(FolderSource {
            dir: dir.into(),
            files,
            names,
            pos: 0,
            channels,
            geometry: (probe.width, probe.height, channels),
            pacer: Pacer::new(fps),
            failures: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Source for FolderSource {
    fn geometry(&self) -> (usize, usize, usize) {
        self.geometry
    }

    fn describe(&self) -> String {
        let (w, h, c) = self.geometry;
        format!(
            "folder:{} ({} images, first {w}x{h}, {c} channel(s), looping)",
            self.dir.display(),
            self.files.len()
        )
    }

    fn next(
        &mut self,
        frame: &mut Frame,
        stats: &CaptureStats,
        stop: &AtomicBool,
    ) -> Result<Next, CaptureError> {
        loop {
            if !self.pacer.wait(stop) {
                return Ok(Next::Stopped);
            }
            let i = self.pos;
            self.pos = (self.pos + 1) % self.files.len();
            let t0 = Instant::now();
            let at = SystemTime::now();
            match decode(&self.files[i], self.channels, frame) {
                Ok(()) => {
                    self.failures = 0;
                    frame.set_source(&self.names[i]);
                    frame.captured_at = at;
                    frame.acquired = t0;
                    frame.capture_time = t0.elapsed();
                    frame.label = None;
                    return Ok(Next::Frame);
                }
                Err(msg) => {
                    CaptureStats::bump(&stats.errors);
                    log_warn!("skipping {}: {msg}", self.files[i].display());
                    self.failures += 1;
                    if self.failures >= self.files.len() {
                        return Err(CaptureError::Frame {
                            source_name: format!("folder:{}", self.dir.display()),
                            msg: format!(
                                "none of its {} images decodes any more",
                                self.files.len()
                            ),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_gray(path: &Path, w: u32, h: u32, v: u8) {
        image::GrayImage::from_pixel(w, h, image::Luma([v]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn replays_in_name_order_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        // Written out of order; b.txt is ignored.
        write_gray(&dir.path().join("frame_002.png"), 8, 6, 20);
        write_gray(&dir.path().join("frame_000.png"), 8, 6, 0);
        write_gray(&dir.path().join("frame_001.png"), 8, 6, 10);
        std::fs::write(dir.path().join("b.txt"), "x").unwrap();
        let mut src = FolderSource::open(dir.path(), 0.0, 3).unwrap();
        assert_eq!(src.geometry(), (8, 6, 3));
        let (stats, stop) = (CaptureStats::default(), AtomicBool::new(false));
        let mut f = Frame::with_capacity(0);
        let mut seen = Vec::new();
        for _ in 0..7 {
            assert_eq!(src.next(&mut f, &stats, &stop).unwrap(), Next::Frame);
            assert_eq!(f.data.len(), 8 * 6 * 3);
            seen.push((f.source.clone(), f.data[0]));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "frame_000.png",
                "frame_001.png",
                "frame_002.png",
                "frame_000.png",
                "frame_001.png",
                "frame_002.png",
                "frame_000.png"
            ]
        );
        assert_eq!(seen[2].1, 20);
    }

    #[test]
    fn corrupt_files_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        write_gray(&dir.path().join("a.png"), 8, 8, 1);
        std::fs::write(dir.path().join("b.png"), "not a png").unwrap();
        let mut src = FolderSource::open(dir.path(), 0.0, 1).unwrap();
        let (stats, stop) = (CaptureStats::default(), AtomicBool::new(false));
        let mut f = Frame::with_capacity(0);
        for _ in 0..3 {
            src.next(&mut f, &stats, &stop).unwrap();
            assert_eq!(f.source, "a.png");
        }
        assert_eq!(stats.counts().errors, 2);
    }

    #[test]
    fn empty_or_missing_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = FolderSource::open(dir.path(), 1.0, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no image files"), "{e}");
        let e = FolderSource::open(Path::new("/nonexistent/frames"), 1.0, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/frames"), "{e}");
    }
}
