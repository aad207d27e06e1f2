#!/usr/bin/env bash
# `just bench-infer`: tract vs onnxruntime on the same exported files (f32 and int8), batch-1
# latency and batch-8 throughput at 1 and 2 threads, in one run. Writes the table to the
# "Inference" section of docs/benchmarks.md.
# Usage: bench/bench-infer.sh [BUNDLE] [ITERS]; without BUNDLE, trains a 32² GANomaly on
# synthetic metal into runs/bench-infer (one epoch) and exports it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bundle="${1:-runs/bench-infer}"
iters="${2:-200}"

cargo build --release -q -p vigil-host -p vigil-appliance --example bench_infer
vigil=target/release/vigil
if [ ! -f "$bundle/manifest.json" ]; then
    "$vigil" train --detector ganomaly --data synthetic:metal --image-size 32 --epochs 1 --out "$bundle"
fi
if [ ! -f "$bundle/model.int8.onnx" ]; then
    "$vigil" export --model "$bundle" --quantize int8 --calibration 256
fi
py="$(bash tests/support/ort-venv.sh)"

results="$(mktemp)"
for threads in 1 2; do
    for p in f32 int8; do
        file="$bundle/model.onnx"; [ "$p" = int8 ] && file="$bundle/model.int8.onnx"
        target/release/examples/bench_infer "$bundle" "$p" "$threads" "$iters" >>"$results"
        "$py" bench/ort_infer.py "$file" "$p" "$threads" "$iters" >>"$results"
    done
done

"$py" - "$results" "$bundle" "$iters" <<'PY'
import json, os, platform, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bundle, iters = sys.argv[2], sys.argv[3]
get = lambda rt, p, t: next(r for r in rows if r["runtime"] == rt and r["precision"] == p and r["threads"] == t)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
m = json.load(open(os.path.join(bundle, "manifest.json")))
lines = [
    "## Inference",
    "",
    f"`just bench-infer` on {cpu} ({os.cpu_count()} cores, shared with other jobs), "
    f"{m['detector']} {m['input']['channels']}×{m['input']['height']}² score `{m['score']['name']}`, "
    f"median of {iters} runs per cell after warm-up. tract: the appliance backend (plans optimised for batch 1 "
    "and 8 at load); onnxruntime: CPUExecutionProvider, all graph optimisations. Same files for both.",
    "",
    "| threads | precision | tract b1 ms | ort b1 ms | ort/tract latency | tract b8 img/s | ort b8 img/s | tract/ort throughput |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]
for t in (1, 2):
    for p in ("f32", "int8"):
        a, b = get("tract", p, t), get("onnxruntime", p, t)
        lines.append(f"| {t} | {p} | {a['b1_ms']:.3f} | {b['b1_ms']:.3f} | {b['b1_ms']/a['b1_ms']:.2f} | "
                     f"{a['b8_img_s']:.0f} | {b['b8_img_s']:.0f} | {a['b8_img_s']/b['b8_img_s']:.2f} |")
for t in (1, 2):
    f, q = get("tract", "f32", t), get("tract", "int8", t)
    lines.append("")
    lines.append(f"tract int8 vs f32 at {t} thread(s): latency ×{f['b1_ms']/q['b1_ms']:.2f}, throughput ×{q['b8_img_s']/f['b8_img_s']:.2f}.")
section = "\n".join(lines) + "\n"
print(section)
path = "docs/benchmarks.md"
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
start = text.find("## Inference")
if start >= 0:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + ("" if end < 0 else text[end + 1:])
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(f"wrote the Inference section of {path}")
PY
rm -f "$results"
