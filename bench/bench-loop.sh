#!/usr/bin/env bash
# Appliance loop benchmark (issue 5): vigild scores synthetic camera frames (128², resized to
# the model's 64²) at a fixed rate with a 64² GANomaly on the tract backend, and reports
# deadline misses, p50/p99 per stage and the loop's overhead outside inference.
#   bench/bench-loop.sh [FPS] [SECONDS]
# VARIANT=patch (`just bench-loop-patch`): 640×480 camera-sized frames replayed from a folder,
# a 256² ROI cropped from each, scored by a patch-mode GANomaly (256² input, 32² tiles, stride
# $STRIDE, default 16: 225 tiles per frame, each frame's tiles one tract run, maps stitched).
# With DETECTOR=seg (or another), ROI=N and PATCH=P the patch variant trains that detector at
# an N² ROI with P² tiles instead (e.g. DETECTOR=seg ROI=128 PATCH=64 STRIDE=32: the
# real-surface benchmark's 128² crops, 9 tiles of 64² per frame).
# SINK=mqtt: results go to vigild's embedded broker instead of stdout, through the write-ahead
# spool (every result appended, fsynced every 100 ms), to compare the loop's overhead with it.
# BACKEND=ort: the onnxruntime backend instead of tract.
# HTTP=1: vigild also serves the live view (--http) with nobody watching; VIEWER=1: and a viewer
# polls it as the page does (the newest overlay as fast as they come, /api/state twice a second).
set -euo pipefail
cd "$(dirname "$0")/.."
fps=${1:-30}
secs=${2:-60}
variant=${VARIANT:-whole}
stride=${STRIDE:-16}

# BACKEND=ort: vigild built with the ort feature, on PyPI onnxruntime's library
# (tests/support/ort-venv.sh), `--backend ort` (CPU provider).
backend_args=()
features=()
if [ "${BACKEND:-tract}" = ort ]; then
  py="$(bash tests/support/ort-venv.sh)"
  ORT_DYLIB_PATH="$("$py" -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so*")))[0])')"
  export ORT_DYLIB_PATH
  backend_args=(--backend ort)
  features=(--features vigil-appliance/ort)
fi
# --workspace: the same features as `cargo test --workspace`, so one build serves both.
cargo build --release --workspace "${features[@]}"
detector=${DETECTOR:-ganomaly}
roi=${ROI:-256}
patch=${PATCH:-32}
if [ "$variant" = patch ]; then
  model=runs/bench-loop-patch-s$stride
  out=runs/bench-loop-patch
  if [ "$detector" != ganomaly ] || [ "$roi" != 256 ] || [ "$patch" != 32 ]; then
    model=runs/bench-loop-patch-$detector-$roi-p$patch-s$stride
    out=runs/bench-loop-patch-$detector-$roi-p$patch
  fi
  mkdir -p "$out"
  if [ ! -f "$model/model.onnx" ]; then
    # Accuracy is irrelevant here, only the graph and the tiling: one short epoch, one crop each.
    target/release/vigil train --detector "$detector" --data synthetic:metal --image-size "$roi" \
      --patch "$patch" --stride "$stride" --crops 1 --channels 1 --epochs 1 --out "$model"
    target/release/vigil export --model "$model"
  fi
  frames_dir=$out/frames
  if [ ! -f "$frames_dir/frame_07.png" ]; then
    # Eight 640×480 grey frames of brushed-metal-like texture (streaks + noise), stdlib only.
    mkdir -p "$frames_dir"
    python3 - "$frames_dir" <<'PY'
import random, struct, sys, zlib
def png(path, w, h, rows):
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + bytes(r) for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
for k in range(8):
    rnd = random.Random(k)
    w, h = 640, 480
    streak = [rnd.gauss(0, 12) for _ in range(h)]
    rows = [[max(0, min(255, int(128 + streak[y] + rnd.gauss(0, 6)))) for _ in range(w)] for y in range(h)]
    png(f"{sys.argv[1]}/frame_{k:02d}.png", w, h, rows)
PY
  fi
  # The ROI centred in the 640×480 frame.
  source_args=(--source "folder:$frames_dir" --roi "$(( (640 - roi) / 2 )),$(( (480 - roi) / 2 )),$roi,$roi")
else
  model=runs/bench-loop-64
  out=runs/bench-loop
  mkdir -p "$out"
  if [ ! -f "$model/model.onnx" ]; then
    # Accuracy is irrelevant here, only the graph's size: one short epoch.
    target/release/vigil train --detector ganomaly --data synthetic:metal --image-size 64 \
      --channels 1 --epochs 1 --out "$model"
    target/release/vigil export --model "$model"
  fi
  source_args=(--source synthetic:metal)
fi

sink_args=()
if [ "${SINK:-stdout}" = mqtt ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$out/spool"
  sink_args=(--embedded-broker --broker "mqtt://127.0.0.1:$port" --spool-dir "$out/spool" --device-id bench)
fi

viewer_pid=""
if [ "${HTTP:-0}" != 0 ] || [ "${VIEWER:-0}" != 0 ]; then
  http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  sink_args+=(--http "127.0.0.1:$http_port")
fi
if [ "${VIEWER:-0}" != 0 ]; then
  python3 - "$http_port" "$out/viewer.txt" <<'PY' &
import http.client, sys, time
port, report = int(sys.argv[1]), sys.argv[2]
seq, images, t_state, start = 0, 0, 0.0, None
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", f"/overlay.jpg?after={seq}")
        r = c.getresponse()
        body = r.read()
        if r.status == 200:
            seq = int(r.getheader("X-Frame-Seq"))
            images += 1
            start = start or time.time()
        if time.time() - t_state > 0.5:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/api/state")
            c.getresponse().read()
            t_state = time.time()
        if start:
            with open(report, "w") as f:
                f.write(f"{images} images in {time.time() - start:.1f} s\n")
    except OSError:
        time.sleep(0.2)
PY
  viewer_pid=$!
fi

frames=$((fps * secs))
echo "vigild: $frames frames at $fps fps ($secs s)..."
# Hypervisor steal time (8th value of /proc/stat's cpu line, in USER_HZ ticks) over the run: on
# a VM, inference spikes past the budget come with it.
steal() { awk '/^cpu /{print $9}' /proc/stat; }
steal0=$(steal)
target/release/vigild --model "$model" "${source_args[@]}" --fps "$fps" --frames "$frames" \
  --threads "${THREADS:-1}" \
  --masks anomalous "${sink_args[@]}" "${backend_args[@]}" >"$out/results.jsonl" 2>"$out/vigild.log"
steal_ms=$(( ($(steal) - steal0) * 1000 / $(getconf CLK_TCK) ))
if [ -n "$viewer_pid" ]; then
  kill "$viewer_pid" 2>/dev/null || true
  echo "viewer: $(cat "$out/viewer.txt" 2>/dev/null || echo 'no image')"
fi
grep '^vigild: summary ' "$out/vigild.log" | sed 's/^vigild: summary //' >"$out/summary.json"
python3 - "$out/summary.json" "$fps" "$steal_ms" "$(nproc)" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
fps = float(sys.argv[2])
steal_ms, cpus = int(sys.argv[3]), int(sys.argv[4])
print(f"hypervisor steal during the run: {steal_ms} ms over {cpus} vCPUs "
      f"({100 * steal_ms / (cpus * 1000 * s['seconds']):.2f} % of the CPU time)")
print(f"frames {s['frames']} in {s['seconds']:.1f} s at {fps:g} fps (budget {1000/fps:.1f} ms): "
      f"deadline misses {s['deadline_misses']}, dropped {s['dropped_frames']}, queue full {s['queue_full']}")
print("| stage | p50 ms | p99 ms | max ms | mean ms |")
print("| --- | --- | --- | --- | --- |")
for k, v in s["latency_ms"].items():
    print(f"| {k} | {v['p50']:.3f} | {v['p99']:.3f} | {v['max']:.3f} | {v['mean']:.3f} |")
PY
