#!/usr/bin/env bash
# Appliance loop benchmark (issue 5): vigild scores synthetic camera frames (128², resized to
# the model's 64²) at a fixed rate with a 64² GANomaly on the tract backend, and reports
# deadline misses, p50/p99 per stage and the loop's overhead outside inference.
#   bench/bench-loop.sh [FPS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
fps=${1:-30}
secs=${2:-60}
model=runs/bench-loop-64
out=runs/bench-loop
mkdir -p "$out"

cargo build --release -p vigil-host -p vigil-appliance
if [ ! -f "$model/model.onnx" ]; then
  # Accuracy is irrelevant here, only the graph's size: one short epoch.
  target/release/vigil train --detector ganomaly --data synthetic:metal --image-size 64 \
    --channels 1 --epochs 1 --out "$model"
  target/release/vigil export --model "$model"
fi

frames=$((fps * secs))
echo "vigild: $frames frames at $fps fps ($secs s)..."
# Hypervisor steal time (8th value of /proc/stat's cpu line, in USER_HZ ticks) over the run: on
# a VM, inference spikes past the budget come with it.
steal() { awk '/^cpu /{print $9}' /proc/stat; }
steal0=$(steal)
target/release/vigild --model "$model" --source synthetic:metal --fps "$fps" --frames "$frames" \
  --threads "${THREADS:-1}" \
  --masks anomalous >"$out/results.jsonl" 2>"$out/vigild.log"
steal_ms=$(( ($(steal) - steal0) * 1000 / $(getconf CLK_TCK) ))
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
