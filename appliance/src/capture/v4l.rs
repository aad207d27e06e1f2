//! `v4l:/dev/videoN`: a V4L2 camera through the v4l crate (mmap streaming, 4 buffers).
//!
//! - Format: the requested fourcc/size/fps is asked for, and what the driver *granted* is read
//!   back and used: drivers substitute silently (vivid answers MJPG with YUYV, UVC cameras snap
//!   sizes). A granted format we cannot convert is an error naming both.
//! - Newest frame only: after each dequeue we poll the fd with a zero timeout; when another
//!   buffer is already done, the current one is skipped (counted as `drained`) without
//!   converting it, so a slow consumer never works through a backlog.
//! - Timeouts: v4l 0.14's `next()` requeues the previously dequeued buffer *before* waiting, so
//!   after a timeout that buffer is already queued and the next `next()` would queue it twice
//!   (EINVAL). After a timeout we therefore dequeue once without requeueing (`resync`), which
//!   makes the crate's bookkeeping valid again. Each timeout is counted; after
//!   [`TIMEOUTS_BEFORE_REOPEN`] in a row, or on any other error (device unplugged: ENODEV), the
//!   device is closed and reopened with exponential backoff, each reopen counted.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::Type;
use v4l::device::Handle;
use v4l::format::{FourCC, Quantization};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::Device;

use super::convert::{self, RawLayout};
use super::{sleep_until, CaptureError, CaptureStats, Frame, Next, Source};
use crate::config::{PixelFormat, V4lConfig};

pub const BUFFERS: u32 = 4;
pub const TIMEOUTS_BEFORE_REOPEN: u32 = 2;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What was asked for and what the driver granted.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub requested: PixelFormat,
    pub requested_size: (u32, u32),
    pub layout: RawLayout,
    /// Frame interval granted, as fps (None when the driver does not say).
    pub fps: Option<f64>,
    /// Formats the driver lists.
    pub offered: Vec<String>,
}

impl Negotiated {
    pub fn substituted(&self) -> bool {
        self.layout.format != self.requested
            || (self.layout.width as u32, self.layout.height as u32) != self.requested_size
    }
}

struct Session {
    // Field order matters: the stream (STREAMOFF, unmap) must go before the device closes.
    stream: Stream<'static>,
    handle: Arc<Handle>,
    _dev: Device,
    resync: bool,
    timeouts_in_row: u32,
}

pub struct V4lSource {
    path: PathBuf,
    req: V4lConfig,
    channels: usize,
    session: Option<Session>,
    neg: Negotiated,
    timeout: Duration,
    backoff: Duration,
    next_open: Instant,
}

fn fourcc_str(f: FourCC) -> String {
    String::from_utf8_lossy(&f.repr).into_owned()
}

fn open_device(
    path: &Path,
    req: &V4lConfig,
    timeout: Duration,
) -> Result<(Session, Negotiated), String> {
    let dev = Device::with_path(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => "no such device (is the camera connected?)".to_string(),
        Some(libc::EACCES) => "permission denied (add the user to the `video` group)".to_string(),
        _ => e.to_string(),
    })?;
    check_caps(&dev)?;
    let (want, offered) = choose_format(&dev, req.format)?;
    let layout = set_format(&dev, req, want)?;
    let fps = match dev.set_params(&v4l::video::capture::Parameters::with_fps(
        req.fps.round().max(1.0) as u32,
    )) {
        Ok(p) if p.interval.numerator > 0 => {
            Some(f64::from(p.interval.denominator) / f64::from(p.interval.numerator))
        }
        _ => None,
    };
    let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
        .map_err(|e| format!("VIDIOC_REQBUFS/mmap: {e}"))?;
    stream.set_timeout(timeout);
    let handle = stream.handle();
    let neg = Negotiated {
        requested: req.format,
        requested_size: (req.width, req.height),
        layout,
        fps,
        offered: offered.iter().map(|f| fourcc_str(*f)).collect(),
    };
    let session = Session {
        stream,
        handle,
        _dev: dev,
        resync: false,
        timeouts_in_row: 0,
    };
    Ok((session, neg))
}

/// A capture device with streaming I/O.
fn check_caps(dev: &Device) -> Result<(), String> {
    use v4l::capability::Flags;
    let caps = dev
        .query_caps()
        .map_err(|e| format!("VIDIOC_QUERYCAP: {e}"))?;
    if !caps.capabilities.contains(Flags::VIDEO_CAPTURE) {
        return Err(format!(
            "{} ({}) is not a video capture device",
            caps.card, caps.driver
        ));
    }
    if !caps.capabilities.contains(Flags::STREAMING) {
        return Err(format!(
            "{} ({}) does not support streaming I/O",
            caps.card, caps.driver
        ));
    }
    Ok(())
}

/// The requested format if offered, else the first convertible one in our preference order;
/// and every format the driver lists.
fn choose_format(
    dev: &Device,
    requested: PixelFormat,
) -> Result<(PixelFormat, Vec<FourCC>), String> {
    let offered: Vec<FourCC> = dev
        .enum_formats()
        .map_err(|e| format!("VIDIOC_ENUM_FMT: {e}"))?
        .into_iter()
        .map(|d| d.fourcc)
        .collect();
    let want = std::iter::once(requested)
        .chain(PixelFormat::ALL)
        .find(|p| offered.iter().any(|o| o.repr == p.fourcc()))
        .ok_or_else(|| {
            format!(
                "offers none of the formats vigild converts (YUYV, GREY, RGB3, MJPG): {}",
                offered
                    .iter()
                    .map(|f| fourcc_str(*f))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    Ok((want, offered))
}

/// Asks for `want` at the requested size; returns what the driver granted.
fn set_format(dev: &Device, req: &V4lConfig, want: PixelFormat) -> Result<RawLayout, String> {
    let mut fmt = dev.format().map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
    fmt.width = req.width;
    fmt.height = req.height;
    fmt.fourcc = FourCC::new(&want.fourcc());
    // Let the driver choose the line length: G_FMT's is the *current* format's, and drivers
    // keep a larger requested one (vivid at 720p handed a 640-wide capture 2560-byte lines).
    fmt.stride = 0;
    let granted = dev
        .set_format(&fmt)
        .map_err(|e| format!("VIDIOC_S_FMT: {e}"))?;
    let format = PixelFormat::from_fourcc(granted.fourcc.repr).ok_or_else(|| {
        format!(
            "asked for {want} but the driver granted {}, which vigild cannot convert",
            fourcc_str(granted.fourcc)
        )
    })?;
    Ok(RawLayout {
        format,
        width: granted.width as usize,
        height: granted.height as usize,
        stride: granted.stride as usize,
        // YUV defaults to limited range in V4L2 unless the driver says full range.
        limited_range: !matches!(granted.quantization, Quantization::FullRange),
    })
}

/// Drops a session; the v4l crate panics in `Drop` when STREAMOFF fails with anything but
/// ENODEV, and a failing camera must not take the daemon down.
fn close(session: Session) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(session)));
}

impl V4lSource {
    /// Opens the camera; a missing or unusable device is an error naming the path.
    pub fn open(path: &Path, req: &V4lConfig, channels: usize) -> Result<V4lSource, CaptureError> {
        let period = 1.0 / req.fps.max(0.1);
        // Generous: a few frame periods, at least a second (exposure changes slow cameras).
        let timeout = Duration::from_secs_f64((3.0 * period).max(1.0));
        let (session, neg) = open_device(path, req, timeout).map_err(|msg| CaptureError::Open {
            path: format!("v4l:{}", path.display()),
            msg,
        })?;
        let src = V4lSource {
            path: path.into(),
            req: req.clone(),
            channels,
            session: Some(session),
            neg,
            timeout,
            backoff: BACKOFF_START,
            next_open: Instant::now(),
        };
        log_info!("{}", src.describe());
        Ok(src)
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    fn drop_session(&mut self, why: &str) {
        if let Some(s) = self.session.take() {
            close(s);
        }
        log_warn!(
            "v4l:{}: {why}; reopening in {:?}",
            self.path.display(),
            self.backoff
        );
        self.next_open = Instant::now() + self.backoff;
    }

    /// Reopens after a failure, waiting for the backoff; None when stopped.
    fn reopen(&mut self, stats: &CaptureStats, stop: &AtomicBool) -> Option<()> {
        while self.session.is_none() {
            if !sleep_until(self.next_open, stop) {
                return None;
            }
            match open_device(&self.path, &self.req, self.timeout) {
                Ok((s, neg)) => {
                    CaptureStats::bump(&stats.reopens);
                    self.session = Some(s);
                    self.neg = neg;
                    self.backoff = BACKOFF_START;
                    log_info!("reopened {}", self.describe());
                }
                Err(msg) => {
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    self.next_open = Instant::now() + self.backoff;
                    log_warn!(
                        "v4l:{}: {msg}; retrying in {:?}",
                        self.path.display(),
                        self.backoff
                    );
                }
            }
        }
        Some(())
    }
}

impl V4lSource {
    /// After a timeout, one dequeue without requeueing (see the module docs); true when the
    /// stream is in step and the next frame can be taken.
    fn resync(&mut self, stats: &CaptureStats) -> bool {
        let Some(s) = self.session.as_mut() else {
            return false;
        };
        if !s.resync {
            return true;
        }
        match CaptureStream::dequeue(&mut s.stream) {
            Ok(_) => {
                s.resync = false;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.timed_out(stats);
                false
            }
            Err(e) => {
                CaptureStats::bump(&stats.errors);
                self.drop_session(&format!("dequeue failed: {e}"));
                false
            }
        }
    }

    /// A dequeue timed out: counted, and after too many in a row the device is reopened.
    fn timed_out(&mut self, stats: &CaptureStats) {
        CaptureStats::bump(&stats.timeouts);
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.timeouts_in_row += 1;
        if s.timeouts_in_row >= TIMEOUTS_BEFORE_REOPEN {
            let why = format!("no frame for {} timeouts in a row", s.timeouts_in_row);
            self.drop_session(&why);
        }
    }
}

impl Source for V4lSource {
    fn geometry(&self) -> (usize, usize, usize) {
        (self.neg.layout.width, self.neg.layout.height, self.channels)
    }

    fn describe(&self) -> String {
        let n = &self.neg;
        let l = &n.layout;
        let fps = n.fps.map_or("driver default".into(), |f| format!("{f:.2}"));
        let sub = if n.substituted() {
            format!(
                " (driver substituted: requested {} {}x{})",
                n.requested, n.requested_size.0, n.requested_size.1
            )
        } else {
            String::new()
        };
        format!(
            "v4l:{}: granted {} {}x{} stride {} {} range @ {fps} fps{sub}; offered [{}]; \
             converting {} → {} channel(s)",
            self.path.display(),
            l.format,
            l.width,
            l.height,
            l.stride,
            if l.limited_range { "limited" } else { "full" },
            n.offered.join(", "),
            l.format,
            self.channels
        )
    }

    fn next(
        &mut self,
        frame: &mut Frame,
        stats: &CaptureStats,
        stop: &AtomicBool,
    ) -> Result<Next, CaptureError> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Next::Stopped);
            }
            if self.session.is_none() && self.reopen(stats, stop).is_none() {
                return Ok(Next::Stopped);
            }
            if !self.resync(stats) {
                continue;
            }
            let Some(s) = self.session.as_mut() else {
                continue;
            };
            let t0 = Instant::now();
            let at = SystemTime::now();
            let layout = self.neg.layout;
            let channels = self.channels;
            let handle = s.handle.clone();
            match s.stream.next() {
                Ok((buf, meta)) => {
                    s.timeouts_in_row = 0;
                    // A newer frame is already waiting: skip this one unconverted.
                    if matches!(handle.poll(libc::POLLIN, 0), Ok(n) if n > 0) {
                        CaptureStats::bump(&stats.drained);
                        continue;
                    }
                    let used = (meta.bytesused as usize).min(buf.len());
                    // Drivers report bytesused 0 for some formats: fall back to the whole buffer.
                    let raw = if used == 0 { buf } else { &buf[..used] };
                    frame.shape(layout.width, layout.height, channels);
                    if let Err(e) = convert::convert(raw, &layout, channels, &mut frame.data) {
                        CaptureStats::bump(&stats.errors);
                        log_warn!("v4l:{}: frame skipped: {e}", self.path.display());
                        continue;
                    }
                    frame.source.clear();
                    frame.source.push_str("v4l:");
                    frame.source.push_str(&self.path.to_string_lossy());
                    frame.captured_at = at;
                    frame.acquired = t0;
                    frame.capture_time = t0.elapsed();
                    frame.label = None;
                    return Ok(Next::Frame);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    s.resync = true;
                    self.timed_out(stats);
                }
                Err(e) => {
                    CaptureStats::bump(&stats.errors);
                    self.drop_session(&format!("capture failed: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_a_clear_error() {
        let req = V4lConfig {
            format: PixelFormat::YUYV,
            width: 640,
            height: 480,
            fps: 30.0,
        };
        let e = V4lSource::open(Path::new("/dev/video-does-not-exist"), &req, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("v4l:/dev/video-does-not-exist") && e.contains("no such device"),
            "{e}"
        );
        // A file that is not a V4L2 device: the ioctl fails with a named error, no panic.
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = V4lSource::open(f.path(), &req, 3)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("VIDIOC_QUERYCAP"), "{e}");
    }
}
