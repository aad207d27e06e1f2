//! vigild's camera path on a real kernel V4L2 driver: Linux's virtual camera `vivid`, in a
//! qemu VM (TCG, no KVM needed), end to end. See docs/vivid.md.
//!
//! Host: trains the small line model (as `vigil demo` does), renders good and defective parts
//! into 640x480 frames, scores those frames with vigild's folder replay (the reference), builds
//! a busybox initramfs with vigild, the guest helper (`vigil-vivid-guest`), their shared
//! libraries, Debian's kernel and the vivid modules, and boots it. Guest: vigild captures
//! /dev/video0 (asking for MJPG: vivid grants YUYV) with an ROI and its embedded broker; the
//! helper loops the frames into vivid's HDMI output, which vivid feeds back into the capture,
//! stalls the camera twice (1.5 s: one dequeue timeout, recovered on the same stream; 5 s:
//! two timeouts in a row, reopened), unplugs it (vivid unbound for 3 s: ENODEV, no device,
//! back), and prints every result and stats message from the broker on the serial console,
//! the only channel back to the host. The host checks verdicts and scores against the replay,
//! the granted format, and each recovery in vigild's log, stats and summary.
//!
//! Needs qemu-system-x86, busybox-static and `apt-get download` access to Debian's kernel
//! package (cached under target/vivid-cache, with the last run's console.log);
//! `bash .ci/run` (`just test`, `just test-vivid`) installs the packages.
//! `VIGIL_VIVID_MODEL=DIR` (development) trains into DIR once and reuses that bundle.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_host::data::{write_line, LinePart};
use vigil_host::demo::{train_line_model, ModelRecipe};
use vigil_shared::mask::{decode_png_gray, encode_png_gray};
use vigil_shared::messages::{rfc3339_from_unix_ms, FrameResult, Stats};
use vigil_shared::synth::SurfaceKind;
use vigil_tests::workspace_bin;

const SIZE: usize = 32;
const FRAME: (usize, usize) = (640, 480);
/// Where the part sits in the frame (10x nearest-neighbour), and the ROI vigild crops.
const ROI: (usize, usize, usize, usize) = (160, 80, 320, 320);
/// Output frames per image (vivid's HDMI output runs at 59.94 fps: about 8 s each).
const FRAMES_PER_STEP: usize = 480;
/// Camera stalls. vigild's dequeue timeout is 1 s here (3 periods at the 5 fps it asks for,
/// at least 1 s) and it reopens after 2 timeouts in a row. The short stall ends between the
/// first and second timeout: recovered by the dequeue after the timeout (the buffer
/// bookkeeping after a timeout), without a reopen. The long one costs two reopens.
const SHORT_STALL_S: f64 = 1.5;
const LONG_STALL_S: f64 = 5.0;
/// The camera disappears (vivid unbound from its device) for this long, then comes back.
const UNPLUG_S: f64 = 3.0;
/// Results captured this soon after an image was queued may still show the previous one
/// (three output buffers ahead of it plus a capture period; about 1.1 s measured).
const GUARD_MS: u64 = 2500;
const VM_TIMEOUT: Duration = Duration::from_secs(240);

fn cache_dir() -> PathBuf {
    // target/<profile>/vigild → target/vivid-cache
    let bin = workspace_bin("vigild");
    bin.parent().unwrap().parent().unwrap().join("vivid-cache")
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn need_tool(name: &str, package: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{name}` not found: install the Debian package {package} (.ci/run does)"
    );
}

/// The guest's kernel: Debian's, and vivid's modules from the same package.
struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    /// Decompressed .ko files, in insmod order (dependencies first).
    modules: Vec<PathBuf>,
}

/// Debian's current kernel (what linux-image-amd64 depends on): downloaded with
/// `apt-get download`, and what the VM needs of it (vmlinuz, vivid's modules, ~10 MB of the
/// package's 400) kept in the cache.
fn kernel() -> Kernel {
    let deps = run_ok(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        "apt-cache depends linux-image-amd64",
    );
    let pkg = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .unwrap_or_else(|| {
            panic!(
                "linux-image-amd64 depends on no kernel package here (run `apt-get update`): {deps}"
            )
        })
        .to_string();
    let version = pkg
        .strip_prefix("linux-image-")
        .expect("linux-image-VERSION")
        .to_string();
    let root = cache_dir().join(&pkg);
    let order = root.join("modules/order");
    if !order.is_file() {
        let tmp = cache_dir().join(format!("{pkg}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        let (dl, deb_root, out) = (tmp.join("download"), tmp.join("deb"), tmp.join("out"));
        std::fs::create_dir_all(&dl).unwrap();
        run_ok(
            Command::new("apt-get")
                .args(["download", &pkg])
                .current_dir(&dl),
            &format!("apt-get download {pkg} (the vivid test boots Debian's kernel)"),
        );
        let deb = std::fs::read_dir(&dl)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .expect("the downloaded .deb");
        run_ok(
            Command::new("dpkg").arg("-x").arg(&deb).arg(&deb_root),
            "dpkg -x",
        );
        std::fs::create_dir_all(out.join("modules")).unwrap();
        std::fs::copy(
            deb_root.join("boot").join(format!("vmlinuz-{version}")),
            out.join("vmlinuz"),
        )
        .unwrap();
        let mut names = String::new();
        for (name, ko) in vivid_modules(&deb_root, &version) {
            std::fs::write(out.join("modules").join(&name), ko).unwrap();
            names += &format!("{name}\n");
        }
        std::fs::write(out.join("modules/order"), names).unwrap();
        // Only complete entries count as cached (an older layout is replaced).
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&out, &root).unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    let modules = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(|n| root.join("modules").join(n))
        .collect();
    Kernel {
        version,
        vmlinuz: root.join("vmlinuz"),
        modules,
    }
}

/// `depends=` of a module, read from its .modinfo strings (no kmod needed).
fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// A module file's contents, decompressed (Debian compresses modules in newer releases;
/// busybox insmod loads plain ones).
fn module_bytes(p: &Path) -> Vec<u8> {
    let tool = match p.extension().and_then(|e| e.to_str()) {
        Some("ko") => return std::fs::read(p).unwrap(),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => panic!("{}: unknown module compression", p.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(p)
        .output()
        .unwrap_or_else(|e| panic!("{tool} -dc {}: {e}", p.display()));
    assert!(out.status.success(), "{tool} -dc {} failed", p.display());
    out.stdout
}

/// vivid and its dependencies, dependencies first (insmod order): (name, decompressed .ko).
fn vivid_modules(kroot: &Path, version: &str) -> Vec<(String, Vec<u8>)> {
    let mut index = BTreeMap::new();
    let mut stack = vec![kroot.join("lib/modules").join(version).join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .find_map(|x| n.strip_suffix(x));
                if let Some(stem) = stem {
                    // modinfo names use '_' where file names may use '-'.
                    index.insert(stem.replace('-', "_"), p.clone());
                }
            }
        }
    }
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        out: &mut Vec<(String, Vec<u8>)>,
        seen: &mut Vec<String>,
    ) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
        let p = index
            .get(name)
            .unwrap_or_else(|| panic!("module {name} not in the kernel package"));
        let ko = module_bytes(p);
        for d in module_depends(&ko) {
            visit(&d, index, out, seen);
        }
        out.push((format!("{name}.ko"), ko));
    }
    let mut out = Vec::new();
    visit("vivid", &index, &mut out, &mut Vec::new());
    out
}

/// Copies a binary into the initramfs's /bin, stripped, plus the libraries ldd lists at their
/// absolute paths: vigild stays the dynamically linked build the other tests use (a crt-static
/// build would rebuild every dependency).
fn install_binary(src: &Path, root: &Path) {
    let dst = root.join("bin").join(src.file_name().unwrap());
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&dst)
        .arg(src)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(src, &dst).unwrap();
    }
    // A static binary (busybox-static): ldd says so and fails; nothing more to copy.
    let ldd = Command::new("ldd")
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("ldd: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd.status.success() || said.contains("not a dynamic executable"),
        "ldd {}: {said}",
        src.display()
    );
    for l in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = l
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let to = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            // Follow symlinks: the initramfs gets the file itself.
            std::fs::copy(p, &to).unwrap_or_else(|e| panic!("copy {p}: {e}"));
        }
    }
}

/// A part (SIZE² gray) in a mid-grey 640x480 frame, scaled into ROI.
fn compose(part: &[u8]) -> Vec<u8> {
    let (w, h) = FRAME;
    let (rx, ry, rw, rh) = ROI;
    let mut f = vec![128u8; w * h];
    for y in ry..ry + rh {
        for x in rx..rx + rw {
            f[y * w + x] = part[((y - ry) * SIZE / rh) * SIZE + (x - rx) * SIZE / rw];
        }
    }
    f
}

/// The rest of a console line after `tag`, wherever the tag starts (the first line after
/// boot begins with the BIOS's terminal escapes, and lines end in `\r`).
fn after<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.find(tag)
        .map(|i| line[i + tag.len()..].trim_end_matches('\r'))
}

fn roi_arg() -> String {
    format!("{},{},{},{}", ROI.0, ROI.1, ROI.2, ROI.3)
}

/// vigild's own verdicts on the frames, through folder replay on this machine.
fn reference_scores(model: &Path, frames: &Path, n: usize) -> BTreeMap<String, FrameResult> {
    let out = Command::new(workspace_bin("vigild"))
        .arg("--model")
        .arg(model)
        .arg("--source")
        .arg(format!("folder:{}", frames.display()))
        .args([
            "--fps",
            "0",
            "--frames",
            &n.to_string(),
            "--roi",
            &roi_arg(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reference vigild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r: FrameResult = serde_json::from_str(l).expect("a result line");
            (r.source.clone(), r)
        })
        .collect()
}

fn init_script(modules: &[String], plan: &str) -> String {
    let insmod: String = modules
        .iter()
        .map(|m| format!("insmod /mod/{m} || echo \"VIVID-ERROR insmod {m}\"\n"))
        .collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# The embedded broker listens on loopback.
ip link set lo up
{insmod}echo "VIVID-BOOTED $(cut -d' ' -f1 /proc/uptime)"
if vigil-vivid-guest setup; then
  # Its dequeue timeout, 1 s, follows from the fps it asks for (HDMI ignores it: 59.94 fps).
  vigild --model /vivid/model --source v4l:/dev/video0 --v4l-format MJPG --v4l-size 640x480 \
    --v4l-fps 5 --roi {roi} --embedded-broker true --device-id vm --camera cam0 \
    --stats-interval-s 1 --masks none --budget-ms 1000 --threads 2 --spool-dir /tmp/spool &
  VP=$!
  vigil-vivid-guest run /vivid/frames {plan}
  kill -TERM $VP; wait $VP
  echo "VIVID-VIGILD-EXIT $?"
fi
echo "VIVID-END $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"#,
        roi = roi_arg()
    )
}

fn build_initramfs(
    stage: &Path,
    kernel: &Kernel,
    model: &Path,
    frames: &Path,
    plan: &str,
) -> PathBuf {
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "mod",
        "vivid/model",
        "vivid/frames",
    ] {
        std::fs::create_dir_all(stage.join(d)).unwrap();
    }
    let busybox = run_ok(
        Command::new("sh").args(["-c", "command -v busybox"]),
        "command -v busybox",
    );
    install_binary(Path::new(busybox.trim()), stage);
    install_binary(&workspace_bin("vigild"), stage);
    install_binary(&workspace_bin("vigil-vivid-guest"), stage);
    let mut names = Vec::new();
    for m in &kernel.modules {
        let n = m.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(m, stage.join("mod").join(&n)).unwrap();
        names.push(n);
    }
    // The bundle: the manifest and the files it lists (vigild verifies each).
    let manifest = vigil_shared::manifest::Manifest::load(model).unwrap();
    std::fs::copy(
        model.join("manifest.json"),
        stage.join("vivid/model/manifest.json"),
    )
    .unwrap();
    for f in &manifest.files {
        std::fs::copy(model.join(&f.name), stage.join("vivid/model").join(&f.name)).unwrap();
    }
    // The frames the plan shows (300 KB each).
    for step in plan.split(',') {
        let name = step.split_once(':').map_or(step, |s| s.0);
        let file = format!("{name}.gray");
        if frames.join(&file).is_file() {
            std::fs::copy(frames.join(&file), stage.join("vivid/frames").join(&file)).unwrap();
        }
    }
    let init = stage.join("init");
    std::fs::write(&init, init_script(&names, plan)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    // newc cpio, uncompressed (the kernel takes it as is; gzip would only cost time).
    let cpio = stage.with_extension("cpio");
    let list = run_ok(
        Command::new("find").arg(".").current_dir(stage),
        "find (initramfs)",
    );
    let mut child = Command::new("busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&cpio).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "busybox cpio failed");
    cpio
}

/// Boots the VM; returns the console output. Killed after VM_TIMEOUT.
fn boot(kernel: &Kernel, initrd: &Path) -> (String, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // loglevel=1: kernel messages would interleave with the guest's lines (vivid's threads
        // log `schedule_timeout: wrong timeout value` whenever the emulated CPU falls behind).
        .args(["-append", "console=ttyS0 quiet loglevel=1 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64");
    let log = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut r| {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    })
    .collect();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > VM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in readers {
        let _ = r.join();
    }
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    // Kept for a look after the test, failed or not.
    let saved = cache_dir().join("console.log");
    let _ = std::fs::write(&saved, &text);
    let tail: String = {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    match status {
        None => panic!(
            "the VM did not power off within {VM_TIMEOUT:?}; console tail ({} has it all):\n{tail}",
            saved.display()
        ),
        Some(s) => assert!(
            s.success(),
            "qemu exited with {s}; console tail ({} has it all):\n{tail}",
            saved.display()
        ),
    }
    (text, t0.elapsed())
}

/// The line model, exactly as `vigil demo` makes it (or, with `VIGIL_VIVID_MODEL=DIR` during
/// development, trained into DIR once and reused).
fn line_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    let recipe = ModelRecipe {
        kind: SurfaceKind::BrushedMetal,
        size: SIZE,
        epochs: 3,
        seed: 0,
    };
    match std::env::var_os("VIGIL_VIVID_MODEL") {
        Some(m) => {
            let m = PathBuf::from(m);
            if !m.join("manifest.json").is_file() {
                train_line_model(&m, &recipe, false).unwrap();
            }
            m
        }
        None => {
            train_line_model(&model, &recipe, false).unwrap();
            model
        }
    }
}

/// The line's parts and their full frames, as PNG (reference replay) and raw gray (the guest)
/// in `dir/frames`.
fn line_frames(dir: &Path) -> (Vec<LinePart>, PathBuf) {
    let line = dir.join("line");
    let parts = write_line(&line, SurfaceKind::BrushedMetal, 40, SIZE, 1, 0.5, 7).unwrap();
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for LinePart { name, .. } in &parts {
        let (px, w, h, _) = decode_png_gray(&std::fs::read(line.join(name)).unwrap()).unwrap();
        assert_eq!((w as usize, h as usize), (SIZE, SIZE));
        let f = compose(&px);
        let stem = name.trim_end_matches(".png");
        std::fs::write(
            frames.join(format!("{stem}.png")),
            encode_png_gray(&f, FRAME.0 as u32, FRAME.1 as u32, &[]).unwrap(),
        )
        .unwrap();
        std::fs::write(frames.join(format!("{stem}.gray")), &f).unwrap();
    }
    (parts, frames)
}

/// The parts the VM shows: the clearest two good and two defective ones by the reference
/// replay (the test is about the camera path, not the model), and the raw-score threshold.
struct Chosen {
    good: Vec<(String, f32)>,
    bad: Vec<(String, f32)>,
    th: f32,
}

fn choose_parts(parts: &[LinePart], reference: &BTreeMap<String, FrameResult>) -> Chosen {
    let scored = |defective: bool| {
        let mut v: Vec<(String, f32)> = parts
            .iter()
            .filter(|p| p.defect.is_some() == defective)
            .map(|p| {
                let stem = p.name.trim_end_matches(".png").to_string();
                let r = &reference[&format!("{stem}.png")];
                (stem, r.score)
            })
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        if defective {
            v.reverse();
        }
        v.truncate(2);
        v
    };
    let (good, bad) = (scored(false), scored(true));
    // The bundle's raw-score threshold, as vigild applies it.
    let th = reference
        .values()
        .next()
        .expect("reference results")
        .threshold;
    for (n, s) in &good {
        assert!(
            *s < 0.9 * th,
            "good part {n}: reference score {s}, threshold {th}"
        );
    }
    for (n, s) in &bad {
        assert!(
            *s > 1.1 * th,
            "defective part {n}: reference score {s}, threshold {th}"
        );
    }
    Chosen { good, bad, th }
}

/// The guest helper's plan: images, the two stalls and the unplug.
fn guest_plan(c: &Chosen) -> String {
    let step = |n: &str| format!("{n}:{FRAMES_PER_STEP}");
    [
        step(&c.good[0].0),
        step(&c.bad[0].0),
        step(&c.good[1].0),
        format!("stall:{SHORT_STALL_S}"),
        step(&c.bad[1].0),
        format!("stall:{LONG_STALL_S}"),
        step(&c.good[0].0),
        step(&c.bad[0].0),
        format!("unplug:{UNPLUG_S}"),
    ]
    .join(",")
}

/// What the VM's console says: the guest's steps (with their console line), the broker's
/// results and stats, and vigild's log.
struct Run<'a> {
    console: &'a str,
    lines: Vec<&'a str>,
    steps: Vec<(String, u64, usize)>,
    results: Vec<FrameResult>,
    stats: Vec<Stats>,
}

impl<'a> Run<'a> {
    fn parse(console: &'a str) -> Run<'a> {
        let lines: Vec<&str> = console.lines().collect();
        let mut steps: Vec<(String, u64, usize)> = Vec::new();
        let mut results: Vec<FrameResult> = Vec::new();
        let mut stats: Vec<Stats> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if let Some(s) = after(l, "VIVID-STEP ") {
                let (name, ms) = s.split_once(' ').unwrap();
                steps.push((name.to_string(), ms.parse().unwrap(), i));
            } else if let Some(m) = after(l, "VIVID-MSG ") {
                let (topic, json) = m.split_once(' ').unwrap();
                if topic.ends_with("/result") {
                    results.push(serde_json::from_str(json).expect("result JSON"));
                } else if topic.ends_with("/stats") {
                    stats.push(serde_json::from_str(json).expect("stats JSON"));
                }
            }
        }
        Run {
            console,
            lines,
            steps,
            results,
            stats,
        }
    }

    /// Fails the test with the console's tail (broker messages left out).
    fn fail(&self, msg: String) -> ! {
        let lines: Vec<&str> = self
            .console
            .lines()
            .filter(|l| !l.contains("VIVID-MSG "))
            .collect();
        panic!(
            "{msg}\nconsole (without broker messages; {} has it all):\n{}",
            cache_dir().join("console.log").display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// (unix ms, console line) of the `nth` step called `name`.
    fn step_at(&self, name: &str, nth: usize) -> (u64, usize) {
        self.steps
            .iter()
            .filter(|s| s.0 == name)
            .nth(nth)
            .map(|s| (s.1, s.2))
            .unwrap_or_else(|| self.fail(format!("the guest logged no step {name:?} #{}", nth + 1)))
    }

    /// vigild's log lines containing `what` between two console lines.
    fn logged(&self, from: usize, to: usize, what: &str) -> usize {
        self.lines[from..to]
            .iter()
            .filter(|l| l.contains("vigild: ") && l.contains(what))
            .count()
    }

    /// The largest `capture_errors` (timeouts + errors + reopens) published in [from, to) ms.
    fn counted(&self, from: u64, to: u64) -> u64 {
        let (from, to) = (
            rfc3339_from_unix_ms(from as i64),
            rfc3339_from_unix_ms(to as i64),
        );
        self.stats
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.pipeline.capture_errors)
            .max()
            .unwrap_or(0)
    }
}

/// Format: MJPG asked for, YUYV granted, detected and converted.
fn check_format(run: &Run) {
    if let Some(e) = run.console.lines().find(|l| l.contains("VIVID-ERROR")) {
        run.fail(format!("guest error: {e}"));
    }
    let granted = run
        .console
        .lines()
        .find_map(|l| after(l, "vigild: source v4l:/dev/video0: "))
        .unwrap_or_else(|| run.fail("vigild did not report the granted format".into()));
    if !(granted.contains("granted YUYV 640x480")
        && granted.contains("driver substituted: requested MJPG 640x480")
        && granted.contains("converting YUYV → 1 channel(s)"))
    {
        run.fail(format!("unexpected format negotiation: {granted}"));
    }
}

/// Every image: flagged or not as the replay says, with the same score. Returns how many
/// results were checked, and how many of them after the stalls.
fn check_verdicts(
    run: &Run,
    c: &Chosen,
    reference: &BTreeMap<String, FrameResult>,
) -> (usize, usize) {
    let short_unstall = run.step_at("unstall", 0);
    let verdict: BTreeMap<&str, bool> = c
        .good
        .iter()
        .map(|(n, _)| (n.as_str(), false))
        .chain(c.bad.iter().map(|(n, _)| (n.as_str(), true)))
        .collect();
    let mut checked = 0;
    let mut after_stall = 0;
    for w in run.steps.windows(2) {
        let (name, from) = (&w[0].0, w[0].1);
        let Some(&anomalous) = verdict.get(name.as_str()) else {
            continue; // stall, unstall, end…
        };
        let lo = rfc3339_from_unix_ms((from + GUARD_MS) as i64);
        let hi = rfc3339_from_unix_ms(w[1].1 as i64);
        // RFC 3339 with fixed-width milliseconds sorts as text.
        let seg: Vec<&FrameResult> = run
            .results
            .iter()
            .filter(|r| r.captured_at >= lo && r.captured_at < hi)
            .collect();
        if seg.len() < 2 {
            run.fail(format!(
                "{name}: {} result(s) captured between {lo} and {hi}",
                seg.len()
            ));
        }
        let want = reference[&format!("{name}.png")].score;
        for r in &seg {
            if r.source != "v4l:/dev/video0" {
                run.fail(format!("frame {} came from {:?}", r.frame_id, r.source));
            }
            if r.anomalous != anomalous {
                run.fail(format!(
                    "{name} (defective: {anomalous}): frame {} scored {} against threshold {}",
                    r.frame_id, r.score, r.threshold
                ));
            }
            // The same pixels as the replay, up to YUYV's limited-range rounding.
            if (r.score - want).abs() > 0.05 * c.th {
                run.fail(format!(
                    "{name}: frame {} scored {} in the VM, {want} by replay",
                    r.frame_id, r.score
                ));
            }
            checked += 1;
            if from >= short_unstall.0 {
                after_stall += 1;
            }
        }
    }
    if after_stall < 6 {
        run.fail(format!(
            "only {after_stall} results checked after the stalls"
        ));
    }
    (checked, after_stall)
}

/// The stalls and the unplug, each recovered the way it should be. Returns the reopens the
/// long stall cost and the results captured after the replug.
fn check_recoveries(run: &Run) -> (usize, usize) {
    let (short_stall, long_stall) = (run.step_at("stall", 0), run.step_at("stall", 1));
    let short_unstall = run.step_at("unstall", 0);
    let (end, unplug, replug) = (
        run.step_at("end", 0),
        run.step_at("unplug", 0),
        run.step_at("replug", 0),
    );
    // Short stall: a dequeue timed out (published in the stats), and the same stream went on
    // (no reopen); the images after it were checked above.
    let before = run.counted(0, short_stall.0);
    let during = run.counted(short_unstall.0, long_stall.0);
    if during <= before || run.logged(short_stall.1, long_stall.1, "reopening") != 0 {
        run.fail(format!(
            "short stall: capture errors {before} → {during}, {} reopen(s)",
            run.logged(short_stall.1, long_stall.1, "reopening")
        ));
    }
    // Long stall: two timeouts in a row, closed and reopened.
    let long_reopens = run.logged(long_stall.1, end.1, "no frame for 2 timeouts in a row");
    if long_reopens == 0 || run.logged(long_stall.1, end.1, "reopened") < long_reopens {
        run.fail("long stall: vigild did not reopen the camera".into());
    }
    // No capture error up to the unplug: a buffer queued twice after a timeout would have been
    // one (EINVAL).
    let early = run.logged(0, unplug.1, "failed: ") + run.logged(0, unplug.1, "frame skipped");
    if early != 0 {
        run.fail(format!("{early} capture error(s) before the unplug"));
    }
    // Unplug: the dequeue failed, reopening found no camera until it came back, then
    // frames again.
    let n = run.lines.len();
    if run.logged(unplug.1, n, "failed: ") == 0 {
        run.fail("unplug: no failed dequeue logged".into());
    }
    if run.logged(replug.1, n, "reopened") == 0 {
        run.fail("unplug: vigild did not reopen the camera after it came back".into());
    }
    let replugged = rfc3339_from_unix_ms(replug.0 as i64);
    let after_replug = run
        .results
        .iter()
        .filter(|r| r.captured_at >= replugged && r.source == "v4l:/dev/video0")
        .count();
    if after_replug == 0 {
        run.fail("unplug: no result captured after the camera came back".into());
    }
    (long_reopens, after_replug)
}

/// vigild's own count of all this (its summary), and what its stats published; a clean exit.
/// Returns the summary.
fn check_summary(run: &Run, long_reopens: usize) -> serde_json::Value {
    let replug = run.step_at("replug", 0);
    let summary: serde_json::Value = run
        .lines
        .iter()
        .find_map(|l| after(l, "vigild: summary "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| run.fail("no summary from vigild".into()));
    let timeouts = summary["capture_timeouts"].as_u64().unwrap();
    let reopens = summary["reopens"].as_u64().unwrap();
    let errors = summary["capture_errors"].as_u64().unwrap();
    if timeouts < 2 * long_reopens as u64 + 1 || reopens < long_reopens as u64 + 1 || errors == 0 {
        run.fail(format!(
            "vigild counted {timeouts} timeouts, {reopens} reopens, {errors} capture errors"
        ));
    }
    let published = run.counted(replug.0, u64::MAX / 2);
    if published < timeouts + reopens + errors {
        run.fail(format!(
            "the last stats count {published} capture errors, vigild's summary {timeouts} \
             timeouts + {reopens} reopens + {errors} errors"
        ));
    }
    if !run.console.contains("VIVID-VIGILD-EXIT 0") {
        run.fail("vigild did not exit cleanly".into());
    }
    summary
}

#[test]
fn vigild_captures_from_the_vivid_kernel_driver_in_a_vm() {
    let started = Instant::now();
    need_tool("qemu-system-x86_64", "qemu-system-x86");
    need_tool("busybox", "busybox-static");
    need_tool("apt-get", "apt");
    let kernel = kernel();
    let kernel_s = started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let model = line_model(dir.path());
    let trained_s = started.elapsed().as_secs_f64();
    let (parts, frames) = line_frames(dir.path());
    let reference = reference_scores(&model, &frames, parts.len());
    let chosen = choose_parts(&parts, &reference);
    let plan = guest_plan(&chosen);

    let stage = dir.path().join("initramfs");
    let initrd = build_initramfs(&stage, &kernel, &model, &frames, &plan);
    let prepared_s = started.elapsed().as_secs_f64();
    let (console, vm_time) = boot(&kernel, &initrd);
    let run = Run::parse(&console);
    check_format(&run);
    let (checked, after_stall) = check_verdicts(&run, &chosen, &reference);
    let (long_reopens, after_replug) = check_recoveries(&run);
    let summary = check_summary(&run, long_reopens);

    let booted: f64 = console
        .lines()
        .find_map(|l| after(l, "VIVID-BOOTED "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN);
    eprintln!(
        "vivid: kernel {} (ready after {kernel_s:.0} s); trained by {trained_s:.0} s, \
         prepared by {prepared_s:.0} s; VM {:.0} s (modules loaded {booted:.1} s after boot); \
         {} results, {checked} checked ({after_stall} after the stalls, {after_replug} after \
         the replug); vigild: {} frames scored ({} dropped, {} drained), deadline misses {}, \
         timeouts {}, reopens {}, capture errors {}, infer p50 {:.0} ms; total {:.0} s",
        kernel.version,
        vm_time.as_secs_f64(),
        run.results.len(),
        summary["frames"],
        summary["dropped_frames"],
        summary["drained_frames"],
        summary["deadline_misses"],
        summary["capture_timeouts"],
        summary["reopens"],
        summary["capture_errors"],
        summary["latency_ms"]["infer"]["p50"]
            .as_f64()
            .unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64()
    );
}
