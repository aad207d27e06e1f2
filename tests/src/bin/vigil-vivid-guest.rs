//! Guest-side helper of the `vivid` test (tests/tests/vivid.rs): runs inside the qemu VM, next
//! to vigild, and talks to the kernel's vivid driver and vigild's embedded broker.
//!
//! - `vigil-vivid-guest setup`: vivid controls (`loop_video=1`, `osd_text_mode=2`), capture input
//!   3 (HDMI) on /dev/video0, output 1 (HDMI) on /dev/video1. Run before vigild opens the camera.
//! - `vigil-vivid-guest run IMAGES PLAN`: prints every result and stats message of the
//!   embedded broker on stdout (`VIVID-MSG <topic> <json>`), waits for vigild's first result,
//!   then streams the plan into /dev/video1, which vivid loops back into /dev/video0's capture.
//!   IMAGES holds `NAME.gray`: full frames, 8-bit gray, row-major, the capture's size; they
//!   go out as limited-range YUYV. PLAN: comma-separated `NAME:FRAMES` (output frames,
//!   59.94 a second), `stall:SECONDS` (vivid keeps every capture buffer: the camera goes silent,
//!   vigild's dequeues time out; the output waits), and last, optionally, `unplug:SECONDS`
//!   (vivid unbound from its device for that long, then bound again: /dev/video0 vanishes and
//!   comes back). Each step is logged as `VIVID-STEP <step> <unix ms>` when it starts, and
//!   `VIVID-STEP end` when the images are over.
//!
//! The console (stdout/stderr) is the only channel to the host: the VM has no network.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use v4l::control::{Control, Value};
use v4l::v4l2::vidioc;
use v4l::v4l_sys::{v4l2_buffer, v4l2_dv_timings, v4l2_format, v4l2_requestbuffers};
use v4l::Device;

const CAPTURE: &str = "/dev/video0";
const OUTPUT: &str = "/dev/video1";
const HDMI_INPUT: i32 = 3;
const HDMI_OUTPUT: i32 = 1;
const OUT_BUFFERS: u32 = 3;
/// vivid's control that keeps this percentage of capture buffers (never returned).
const DROP_CONTROL: &str = "Percentage of Dropped Buffers";
const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const V4L2_BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
const V4L2_MEMORY_MMAP: u32 = 1;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn line(s: &str) {
    let out = std::io::stdout();
    let mut l = out.lock();
    let _ = writeln!(l, "{s}");
    let _ = l.flush();
}

/// `ioctl` with a pointer argument, naming the request in the error.
fn ioctl<T>(fd: i32, req: vidioc::_IOC_TYPE, arg: &mut T, name: &str) -> Result<()> {
    // SAFETY: `arg` is the struct the request expects (checked by the callers' types).
    unsafe { v4l::v4l2::ioctl(fd, req, arg as *mut T as *mut std::os::raw::c_void) }
        .with_context(|| name.to_string())
}

/// Sets a control found by its name (vivid's ids are driver-private, its names are stable).
fn set_named_control(dev: &Device, path: &str, name: &str, value: Value) -> Result<()> {
    let ctrls = dev
        .query_controls()
        .with_context(|| format!("{path}: VIDIOC_QUERY_EXT_CTRL"))?;
    let c = ctrls
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
        .with_context(|| format!("{path}: no control named {name:?} (is this vivid?)"))?;
    dev.set_control(Control { id: c.id, value })
        .with_context(|| format!("{path}: setting {name:?}"))
}

fn g_fmt(fd: i32, typ: u32, path: &str) -> Result<v4l2_format> {
    // SAFETY: plain C struct, all-zero is a valid value.
    let mut f: v4l2_format = unsafe { std::mem::zeroed() };
    f.type_ = typ;
    ioctl(
        fd,
        vidioc::VIDIOC_G_FMT,
        &mut f,
        &format!("{path}: VIDIOC_G_FMT"),
    )?;
    Ok(f)
}

fn describe(f: &v4l2_format) -> String {
    // SAFETY: single-planar video formats use the `pix` member.
    let p = unsafe { f.fmt.pix };
    format!(
        "{} {}x{} stride {} size {}",
        String::from_utf8_lossy(&p.pixelformat.to_le_bytes()),
        p.width,
        p.height,
        p.bytesperline,
        p.sizeimage
    )
}

/// HDMI timings on capture and output: CEA-861 640x480p59.94, the smallest preset vivid knows.
/// Its default, 720p60, makes the emulated kernel scale 1280x720 frames 60 times a second, and
/// vivid accepts only preset (or CVT/GTF) timings, so no slower custom mode is possible.
fn set_timings(fd: i32, what: &str) -> Result<()> {
    // VIDIOC_S_DV_TIMINGS = _IOWR('V', 87, struct v4l2_dv_timings); the v4l crate lacks it.
    let size = std::mem::size_of::<v4l2_dv_timings>() as u64;
    let req = ((3u64 << 30) | (size << 16) | (u64::from(b'V') << 8) | 87) as vidioc::_IOC_TYPE;
    // SAFETY: plain C struct.
    let mut t: v4l2_dv_timings = unsafe { std::mem::zeroed() };
    t.type_ = 0; // V4L2_DV_BT_656_1120
                 // SAFETY: `bt` is the member for this type.
    let bt = unsafe { &mut t.__bindgen_anon_1.bt };
    bt.width = 640;
    bt.height = 480;
    bt.pixelclock = 25_175_000;
    (bt.hfrontporch, bt.hsync, bt.hbackporch) = (16, 96, 48);
    (bt.vfrontporch, bt.vsync, bt.vbackporch) = (10, 2, 33);
    bt.standards = 3; // CEA-861 | DMT
    bt.cea861_vic = 1;
    ioctl(
        fd,
        req,
        &mut t,
        &format!("{what}: VIDIOC_S_DV_TIMINGS 640x480p59.94"),
    )
}

fn setup() -> Result<()> {
    let cap = Device::with_path(CAPTURE).with_context(|| format!("{CAPTURE}: open"))?;
    let mut input = HDMI_INPUT;
    ioctl(
        cap.handle().fd(),
        vidioc::VIDIOC_S_INPUT,
        &mut input,
        "VIDIOC_S_INPUT 3 (HDMI)",
    )?;
    set_timings(cap.handle().fd(), CAPTURE)?;
    // Deterministic frames: no time/counter overlay on the test pattern.
    set_named_control(&cap, CAPTURE, "OSD Text Mode", Value::Integer(2))?;
    set_named_control(&cap, CAPTURE, "Loop Video", Value::Boolean(true))?;
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(OUTPUT)
        .with_context(|| format!("{OUTPUT}: open"))?;
    let mut output = HDMI_OUTPUT;
    ioctl(
        out.as_raw_fd(),
        vidioc::VIDIOC_S_OUTPUT,
        &mut output,
        "VIDIOC_S_OUTPUT 1 (HDMI)",
    )?;
    set_timings(out.as_raw_fd(), OUTPUT)?;
    let cf = g_fmt(cap.handle().fd(), V4L2_BUF_TYPE_VIDEO_CAPTURE, CAPTURE)?;
    let of = g_fmt(out.as_raw_fd(), V4L2_BUF_TYPE_VIDEO_OUTPUT, OUTPUT)?;
    line(&format!(
        "VIVID-SETUP capture {} / output {}",
        describe(&cf),
        describe(&of)
    ));
    Ok(())
}

/// Prints the broker's results and stats; counts the results in `results`.
fn subscribe(port: u16, results: Arc<AtomicU64>) -> Result<()> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("vivid-guest", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 64);
    client.subscribe("vigil/+/+/result", QoS::AtLeastOnce)?;
    client.subscribe("vigil/+/stats", QoS::AtLeastOnce)?;
    std::thread::spawn(move || {
        let _keep = client;
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    line(&format!(
                        "VIVID-MSG {} {}",
                        p.topic,
                        String::from_utf8_lossy(&p.payload)
                    ));
                    if p.topic.ends_with("/result") {
                        results.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                // vigild's broker may not listen yet: retry (rumqttc reconnects on the next poll).
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    Ok(())
}

enum Step {
    Image { name: String, frames: u32 },
    Stall(Duration),
    Unplug(Duration),
}

fn parse_plan(plan: &str) -> Result<Vec<Step>> {
    plan.split(',')
        .map(|s| {
            let (what, n) = s
                .split_once(':')
                .with_context(|| format!("plan step {s:?}: expected NAME:COUNT"))?;
            if what == "stall" || what == "unplug" {
                let secs: f64 = n
                    .parse()
                    .with_context(|| format!("plan step {s:?}: seconds"))?;
                let d = Duration::from_secs_f64(secs);
                Ok(if what == "stall" {
                    Step::Stall(d)
                } else {
                    Step::Unplug(d)
                })
            } else {
                Ok(Step::Image {
                    name: what.to_string(),
                    frames: n
                        .parse()
                        .with_context(|| format!("plan step {s:?}: frame count"))?,
                })
            }
        })
        .collect()
}

/// An mmap'ed output buffer.
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

/// The output side of vivid: our own buffer queue (the v4l crate's output stream keeps only one
/// buffer queued, which leaves vivid's loop without a frame between dequeue and requeue and lets
/// its test pattern leak into the capture).
struct Output {
    file: File,
    bufs: Vec<Mapped>,
    queued: usize,
    streaming: bool,
    /// Bytes per line the driver granted the output.
    stride: usize,
}

impl Output {
    fn open(width: u32, height: u32, fourcc: u32) -> Result<Output> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(OUTPUT)
            .with_context(|| format!("{OUTPUT}: open"))?;
        let fd = file.as_raw_fd();
        let mut f = g_fmt(fd, V4L2_BUF_TYPE_VIDEO_OUTPUT, OUTPUT)?;
        // Writing union fields is safe; single-planar output uses `pix`.
        f.fmt.pix.width = width;
        f.fmt.pix.height = height;
        f.fmt.pix.pixelformat = fourcc;
        f.fmt.pix.bytesperline = 0;
        ioctl(fd, vidioc::VIDIOC_S_FMT, &mut f, "output VIDIOC_S_FMT")?;
        // SAFETY: as above.
        let p = unsafe { f.fmt.pix };
        ensure!(
            (p.width, p.height, p.pixelformat) == (width, height, fourcc),
            "output granted {} but the capture is {}x{}: vivid loops only equal formats",
            describe(&f),
            width,
            height
        );
        // SAFETY: plain C struct.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.count = OUT_BUFFERS;
        req.type_ = V4L2_BUF_TYPE_VIDEO_OUTPUT;
        req.memory = V4L2_MEMORY_MMAP;
        ioctl(
            fd,
            vidioc::VIDIOC_REQBUFS,
            &mut req,
            "output VIDIOC_REQBUFS",
        )?;
        let mut bufs = Vec::new();
        for i in 0..req.count {
            let mut b = Self::desc(i);
            ioctl(
                fd,
                vidioc::VIDIOC_QUERYBUF,
                &mut b,
                "output VIDIOC_QUERYBUF",
            )?;
            // SAFETY: maps the buffer the driver just described; unmapped in Drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    b.length as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    b.m.offset as libc::off_t,
                )
            };
            ensure!(
                ptr != libc::MAP_FAILED,
                "output mmap: {}",
                std::io::Error::last_os_error()
            );
            bufs.push(Mapped {
                ptr: ptr as *mut u8,
                len: b.length as usize,
            });
        }
        Ok(Output {
            file,
            bufs,
            queued: 0,
            streaming: false,
            stride: p.bytesperline as usize,
        })
    }

    fn desc(index: u32) -> v4l2_buffer {
        // SAFETY: plain C struct.
        let mut b: v4l2_buffer = unsafe { std::mem::zeroed() };
        b.index = index;
        b.type_ = V4L2_BUF_TYPE_VIDEO_OUTPUT;
        b.memory = V4L2_MEMORY_MMAP;
        b
    }

    /// Queues `frame`: into a buffer never queued yet, else into the next one the driver is
    /// done with (waits at most 10 s for it).
    fn push(&mut self, frame: &[u8]) -> Result<()> {
        let fd = self.file.as_raw_fd();
        let index = if self.queued < self.bufs.len() {
            self.queued += 1;
            self.queued - 1
        } else {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
            ensure!(n > 0, "output: no buffer returned by vivid within 10 s");
            let mut b = Self::desc(0);
            ioctl(fd, vidioc::VIDIOC_DQBUF, &mut b, "output VIDIOC_DQBUF")?;
            b.index as usize
        };
        let m = &self.bufs[index];
        ensure!(frame.len() <= m.len, "frame larger than the output buffer");
        // SAFETY: the buffer is ours (not queued) and `m.len` bytes long.
        unsafe {
            std::slice::from_raw_parts_mut(m.ptr, m.len)[..frame.len()].copy_from_slice(frame)
        };
        let mut b = Self::desc(index as u32);
        b.bytesused = frame.len() as u32;
        ioctl(fd, vidioc::VIDIOC_QBUF, &mut b, "output VIDIOC_QBUF")?;
        if !self.streaming {
            let mut t = V4L2_BUF_TYPE_VIDEO_OUTPUT as i32;
            ioctl(
                fd,
                vidioc::VIDIOC_STREAMON,
                &mut t,
                "output VIDIOC_STREAMON",
            )?;
            self.streaming = true;
        }
        Ok(())
    }

    /// STREAMOFF: the driver returns every buffer; the next `push` starts streaming again.
    fn stop(&mut self) -> Result<()> {
        let mut t = V4L2_BUF_TYPE_VIDEO_OUTPUT as i32;
        ioctl(
            self.file.as_raw_fd(),
            vidioc::VIDIOC_STREAMOFF,
            &mut t,
            "output VIDIOC_STREAMOFF",
        )?;
        self.streaming = false;
        self.queued = 0;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.streaming {
            let _ = self.stop();
        }
        for m in &self.bufs {
            // SAFETY: mapped in `open` with this length.
            unsafe { libc::munmap(m.ptr as *mut libc::c_void, m.len) };
        }
    }
}

/// A full-frame 8-bit gray image as limited-range YUYV with `stride` bytes per line.
fn to_yuyv(gray: &[u8], w: usize, h: usize, stride: usize) -> Vec<u8> {
    let mut out = vec![0u8; stride * h];
    for y in 0..h {
        for x in 0..w {
            let g = u32::from(gray[y * w + x]);
            out[y * stride + 2 * x] = (16 + (g * 219 + 127) / 255) as u8;
            out[y * stride + 2 * x + 1] = 128;
        }
    }
    out
}

fn run(images: &Path, plan: &str) -> Result<()> {
    let plan = parse_plan(plan)?;

    let results = Arc::new(AtomicU64::new(0));
    subscribe(1883, results.clone())?;
    let t0 = Instant::now();
    wait_results(&results, 1, Duration::from_secs(120))?;
    line(&format!(
        "VIVID-FIRST-RESULT after {:.1} s",
        t0.elapsed().as_secs_f64()
    ));

    // The output must match what vigild's capture was granted, byte for byte, for the loop.
    let cap = File::open(CAPTURE).with_context(|| format!("{CAPTURE}: open"))?;
    let cf = g_fmt(cap.as_raw_fd(), V4L2_BUF_TYPE_VIDEO_CAPTURE, CAPTURE)?;
    // An open file keeps the device's number taken after an unplug: the camera would come
    // back under another name.
    drop(cap);
    // SAFETY: single-planar capture format.
    let p = unsafe { cf.fmt.pix };
    ensure!(
        &p.pixelformat.to_le_bytes() == b"YUYV",
        "capture format is {}; this helper writes YUYV",
        describe(&cf)
    );
    let (w, h) = (p.width as usize, p.height as usize);
    let mut out = Output::open(p.width, p.height, p.pixelformat)?;
    let stride = out.stride;

    let mut frames: HashMap<String, Vec<u8>> = HashMap::new();
    for step in &plan {
        if let Step::Image { name, .. } = step {
            if frames.contains_key(name) {
                continue;
            }
            let path = images.join(format!("{name}.gray"));
            let img = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
            ensure!(
                img.len() == w * h,
                "{}: {} bytes, not a {w}x{h} gray frame",
                path.display(),
                img.len()
            );
            frames.insert(name.clone(), to_yuyv(&img, w, h, stride));
        }
    }
    let capdev = Device::with_path(CAPTURE).with_context(|| format!("{CAPTURE}: open"))?;
    ensure!(
        matches!(plan.first(), Some(Step::Image { .. })),
        "the plan starts with an image"
    );
    let mut unplug = None;
    for (i, step) in plan.iter().enumerate() {
        match step {
            Step::Image { name, frames: n } => {
                line(&format!("VIVID-STEP {name} {}", now_ms()));
                for _ in 0..*n {
                    out.push(&frames[name])?;
                }
            }
            Step::Unplug(d) => {
                ensure!(i + 1 == plan.len(), "unplug must be the plan's last step");
                unplug = Some(*d);
            }
            Step::Stall(d) => {
                // vivid keeps every capture buffer: the camera goes silent, vigild's dequeues
                // time out. (Stopping the output stream does not stall the capture: vivid then
                // shows its test pattern instead of the loop.)
                set_named_control(&capdev, CAPTURE, DROP_CONTROL, Value::Integer(100))?;
                line(&format!("VIVID-STEP stall {}", now_ms()));
                // vivid keeps the output's buffers too: nothing to push until it is over.
                std::thread::sleep(*d);
                set_named_control(&capdev, CAPTURE, DROP_CONTROL, Value::Integer(0))?;
                line(&format!("VIVID-STEP unstall {}", now_ms()));
            }
        }
    }
    // Let the last queued frames play out, then stop looping.
    std::thread::sleep(Duration::from_millis(1500));
    line(&format!("VIVID-STEP end {}", now_ms()));
    drop(out);
    drop(capdev);
    if let Some(d) = unplug {
        unplug_camera(d, &results)?;
    }
    // Results of the last frames still on their way through vigild and the broker.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// Waits until `results` reaches `n`.
fn wait_results(results: &AtomicU64, n: u64, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    while results.load(Ordering::Relaxed) < n {
        ensure!(
            t0.elapsed() < limit,
            "only {} result(s) from vigild within {limit:?}, waiting for {n}",
            results.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Unplugs the camera: unbinds vivid from its platform device, which unregisters every
/// /dev/video node under vigild's open file (its next dequeue fails with ENODEV, reopening
/// finds no device), binds it again after `d`, and waits for vigild's results to resume.
/// The rebound vivid starts from its defaults (webcam input, test pattern): no loop after it.
fn unplug_camera(d: Duration, results: &AtomicU64) -> Result<()> {
    const DRIVER: &str = "/sys/bus/platform/drivers/vivid";
    let dev = std::fs::read_dir(DRIVER)
        .with_context(|| format!("{DRIVER}: read"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vivid"))
        .with_context(|| format!("{DRIVER}: no vivid device bound"))?;
    // Logged first: vigild's reaction must come after it on the console.
    line(&format!("VIVID-STEP unplug {}", now_ms()));
    std::fs::write(format!("{DRIVER}/unbind"), &dev)
        .with_context(|| format!("{DRIVER}/unbind {dev}"))?;
    std::thread::sleep(d);
    line(&format!("VIVID-STEP replug {}", now_ms()));
    std::fs::write(format!("{DRIVER}/bind"), &dev)
        .with_context(|| format!("{DRIVER}/bind {dev}"))?;
    let nodes: Vec<String> = std::fs::read_dir("/dev")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("video"))
        .collect();
    line(&format!("VIVID-REPLUGGED {}", nodes.join(" ")));
    // Results of frames captured before the unplug may still be on their way: wait for a few.
    let before = results.load(Ordering::Relaxed);
    wait_results(results, before + 4, Duration::from_secs(60))?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["setup"] => setup(),
        ["run", images, plan] => run(&PathBuf::from(images), plan),
        _ => Err(anyhow::anyhow!(
            "usage: vigil-vivid-guest setup | run IMAGES PLAN"
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            line(&format!("VIVID-ERROR {e:#}"));
            ExitCode::FAILURE
        }
    }
}
