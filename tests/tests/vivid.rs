//! vigild's camera path on a real kernel V4L2 driver: Linux's virtual camera `vivid`, in a
//! qemu VM (TCG, no KVM needed), end to end. See docs/vivid.md.
//!
//! Host: trains the small line model (as `vigil demo` does), renders good and defective parts
//! into 640x480 frames, scores those frames with vigild's folder replay (the reference), builds
//! a busybox initramfs with vigild, the guest helper (`vigil-vivid-guest`), their shared
//! libraries, Debian's kernel and the vivid modules, and boots it. Guest: vigild captures
//! /dev/video0 (asking for MJPG: vivid grants YUYV) with an ROI and its embedded broker; the
//! helper loops the frames into vivid's HDMI output, which vivid feeds back into the capture,
//! stalls the camera for a few seconds, and prints every result from the broker on the serial
//! console, the only channel back to the host.
//!
//! Needs qemu-system-x86, busybox-static and `apt-get download` access to Debian's kernel
//! package (cached under target/vivid-cache); .ci/run installs the packages.

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
const STALL_S: u64 = 5;
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

/// Debian's current kernel (what linux-image-amd64 depends on), unpacked into the cache.
/// Returns (unpacked root, version).
fn kernel() -> (PathBuf, String) {
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
    if !root
        .join("boot")
        .join(format!("vmlinuz-{version}"))
        .is_file()
    {
        let dl = cache_dir().join("download");
        std::fs::create_dir_all(&dl).unwrap();
        run_ok(
            Command::new("apt-get")
                .args(["download", &pkg])
                .current_dir(&dl),
            &format!("apt-get download {pkg}"),
        );
        let deb = std::fs::read_dir(&dl)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
            })
            .expect("the downloaded .deb");
        let tmp = cache_dir().join(format!("{pkg}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        run_ok(
            Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp),
            "dpkg -x",
        );
        // Only complete unpacks count as cached.
        std::fs::rename(&tmp, &root).unwrap();
        let _ = std::fs::remove_file(&deb);
    }
    (root, version)
}

/// `depends=` of a module, read from its .modinfo strings (no kmod needed).
fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// vivid and its dependencies, dependencies first (insmod order).
fn vivid_modules(kroot: &Path, version: &str) -> Vec<PathBuf> {
    let mut index = BTreeMap::new();
    let mut stack = vec![kroot.join("lib/modules").join(version).join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = n.strip_suffix(".ko") {
                    // modinfo names use '_' where file names may use '-'.
                    index.insert(stem.replace('-', "_"), p.clone());
                }
            }
        }
    }
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        out: &mut Vec<PathBuf>,
        seen: &mut Vec<String>,
    ) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
        let p = index
            .get(name)
            .unwrap_or_else(|| panic!("module {name} not in the kernel package"));
        for d in module_depends(&std::fs::read(p).unwrap()) {
            visit(&d, index, out, seen);
        }
        out.push(p.clone());
    }
    let mut out = Vec::new();
    visit("vivid", &index, &mut out, &mut Vec::new());
    out
}

/// Copies a dynamically linked binary, stripped, plus the libraries ldd lists at their
/// absolute paths (instead of a crt-static build, which would rebuild every dependency).
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
    let ldd = run_ok(Command::new("ldd").arg(src), "ldd");
    for l in ldd.lines() {
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
  # The stall costs a 1 s dequeue timeout per try: the fps vigild asks for sets it.
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
    kroot: &Path,
    version: &str,
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
    std::fs::copy(busybox.trim(), stage.join("bin/busybox")).unwrap();
    install_binary(&workspace_bin("vigild"), stage);
    install_binary(&workspace_bin("vigil-vivid-guest"), stage);
    let mut names = Vec::new();
    for m in vivid_modules(kroot, version) {
        let n = m.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&m, stage.join("mod").join(&n)).unwrap();
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
    for e in std::fs::read_dir(frames).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "gray") {
            std::fs::copy(&p, stage.join("vivid/frames").join(p.file_name().unwrap())).unwrap();
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
fn boot(kroot: &Path, version: &str, initrd: &Path) -> (String, Duration) {
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
        .arg(kroot.join("boot").join(format!("vmlinuz-{version}")))
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
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
    let tail: String = {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    match status {
        None => panic!("the VM did not power off within {VM_TIMEOUT:?}; console tail:\n{tail}"),
        Some(s) => assert!(s.success(), "qemu exited with {s}; console tail:\n{tail}"),
    }
    (text, t0.elapsed())
}

#[test]
fn vigild_captures_from_the_vivid_kernel_driver_in_a_vm() {
    let started = Instant::now();
    need_tool("qemu-system-x86_64", "qemu-system-x86");
    need_tool("busybox", "busybox-static");
    need_tool("apt-get", "apt");
    let (kroot, version) = kernel();

    // The model and the parts, exactly as `vigil demo` makes them.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let recipe = ModelRecipe {
        kind: SurfaceKind::BrushedMetal,
        size: SIZE,
        epochs: 3,
        seed: 0,
    };
    let trained = train_line_model(&model, &recipe, false).unwrap();
    let trained_s = started.elapsed().as_secs_f64();
    let line = dir.path().join("line");
    let parts = write_line(&line, SurfaceKind::BrushedMetal, 40, SIZE, 1, 0.5, 7).unwrap();

    // Full frames of each part, as PNG (reference replay) and raw gray (the guest).
    let frames = dir.path().join("frames");
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
    let reference = reference_scores(&model, &frames, parts.len());
    // The clearest two of each kind: the test is about the camera path, not the model.
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
    let th = trained.threshold;
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
    let step = |n: &str| format!("{n}:{FRAMES_PER_STEP}");
    let plan = [
        step(&good[0].0),
        step(&bad[0].0),
        step(&good[1].0),
        step(&bad[1].0),
        format!("stall:{STALL_S}"),
        step(&good[0].0),
        step(&bad[0].0),
    ]
    .join(",");

    let stage = dir.path().join("initramfs");
    let initrd = build_initramfs(&stage, &kroot, &version, &model, &frames, &plan);
    let prepared_s = started.elapsed().as_secs_f64();
    let (console, vm_time) = boot(&kroot, &version, &initrd);
    let fail = |msg: String| -> ! {
        let lines: Vec<&str> = console
            .lines()
            .filter(|l| !l.starts_with("VIVID-MSG"))
            .collect();
        panic!(
            "{msg}\nconsole (without broker messages):\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    };
    if let Some(e) = console.lines().find(|l| l.contains("VIVID-ERROR")) {
        fail(format!("guest error: {e}"));
    }

    // Format: MJPG asked for, YUYV granted, detected and converted.
    let granted = console
        .lines()
        .find(|l| l.starts_with("vigild: source v4l:/dev/video0: granted"))
        .unwrap_or_else(|| fail("vigild did not report the granted format".into()));
    if !(granted.contains("granted YUYV 640x480")
        && granted.contains("driver substituted: requested MJPG 640x480")
        && granted.contains("converting YUYV → 1 channel(s)"))
    {
        fail(format!("unexpected format negotiation: {granted}"));
    }

    // Steps and results.
    let mut steps: Vec<(String, u64)> = Vec::new();
    let mut results: Vec<FrameResult> = Vec::new();
    let mut stats: Vec<Stats> = Vec::new();
    for l in console.lines() {
        let l = l.trim_end_matches('\r');
        if let Some(s) = l.strip_prefix("VIVID-STEP ") {
            let (name, ms) = s.split_once(' ').unwrap();
            steps.push((name.to_string(), ms.parse().unwrap()));
        } else if let Some(m) = l.strip_prefix("VIVID-MSG ") {
            let (topic, json) = m.split_once(' ').unwrap();
            if topic.ends_with("/result") {
                results.push(serde_json::from_str(json).expect("result JSON"));
            } else if topic.ends_with("/stats") {
                stats.push(serde_json::from_str(json).expect("stats JSON"));
            }
        }
    }
    if steps.last().map(|s| s.0.as_str()) != Some("end") {
        fail("the injection did not finish".into());
    }
    let verdict: BTreeMap<&str, bool> = good
        .iter()
        .map(|(n, _)| (n.as_str(), false))
        .chain(bad.iter().map(|(n, _)| (n.as_str(), true)))
        .collect();
    let mut checked = 0;
    let mut after_stall = 0;
    let stall_end = steps
        .iter()
        .find(|s| s.0 == "unstall")
        .map(|s| s.1)
        .unwrap_or_else(|| fail("no stall happened".into()));
    for w in steps.windows(2) {
        let (name, from) = (&w[0].0, w[0].1);
        let Some(&anomalous) = verdict.get(name.as_str()) else {
            continue; // stall, unstall
        };
        let lo = rfc3339_from_unix_ms((from + GUARD_MS) as i64);
        let hi = rfc3339_from_unix_ms(w[1].1 as i64);
        // RFC 3339 with fixed-width milliseconds sorts as text.
        let seg: Vec<&FrameResult> = results
            .iter()
            .filter(|r| r.captured_at >= lo && r.captured_at < hi)
            .collect();
        if seg.len() < 2 {
            fail(format!(
                "{name}: {} result(s) captured between {lo} and {hi}",
                seg.len()
            ));
        }
        let want = reference[&format!("{name}.png")].score;
        for r in &seg {
            if r.anomalous != anomalous {
                fail(format!(
                    "{name} (defective: {anomalous}): frame {} scored {} against threshold {}",
                    r.frame_id, r.score, r.threshold
                ));
            }
            // The same pixels as the replay, up to YUYV's limited-range rounding.
            if (r.score - want).abs() > 0.05 * th {
                fail(format!(
                    "{name}: frame {} scored {} in the VM, {want} by replay",
                    r.frame_id, r.score
                ));
            }
            checked += 1;
            if from >= stall_end {
                after_stall += 1;
            }
        }
    }

    // The stall: counted, and capture resumed after it (checked above: segments after it).
    let summary: serde_json::Value = console
        .lines()
        .find_map(|l| l.strip_prefix("vigild: summary "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| fail("no summary from vigild".into()));
    let timeouts = summary["capture_timeouts"].as_u64().unwrap();
    let reopens = summary["reopens"].as_u64().unwrap();
    if timeouts < 2 || reopens < 1 || after_stall < 2 {
        fail(format!(
            "stall: {timeouts} timeouts, {reopens} reopens, {after_stall} results after it"
        ));
    }
    if !stats.iter().any(|s| s.pipeline.capture_errors > 0) {
        fail("no stats message counted the stall".into());
    }
    if !console.contains("VIVID-VIGILD-EXIT 0") {
        fail("vigild did not exit cleanly".into());
    }
    let booted: f64 = console
        .lines()
        .find_map(|l| l.strip_prefix("VIVID-BOOTED "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN);
    eprintln!(
        "vivid: kernel {version}; trained in {trained_s:.0} s, prepared in {prepared_s:.0} s; \
         VM {:.0} s (modules loaded {booted:.1} s after boot); {} results, {checked} checked \
         ({after_stall} after the stall); vigild: {} frames scored ({} dropped, {} drained), \
         deadline misses {}, timeouts {timeouts}, reopens {reopens}, infer p50 {:.0} ms; \
         total {:.0} s",
        vm_time.as_secs_f64(),
        results.len(),
        summary["frames"],
        summary["dropped_frames"],
        summary["drained_frames"],
        summary["deadline_misses"],
        summary["latency_ms"]["infer"]["p50"]
            .as_f64()
            .unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64()
    );
}
