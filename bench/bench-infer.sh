#!/usr/bin/env bash
# `just bench-infer`: vigild's engines against onnxruntime-in-Python and against the machine's
# limit. For GANomaly at each size (64², 128², 256² by default; one epoch of synthetic metal
# into runs/bench-infer-<size>, exported f32 and int8), f32 and int8, 1 and 2 threads:
# batch-1 latency and batch-8 throughput of tract and of the `ort` backend (vigild's engines,
# appliance/examples/bench_infer.rs; `ort` when the build with `--features ort` works, set
# ORT=0 to leave it out) and of onnxruntime in Python on the same file (bench/ort_infer.py),
# each as a speed ratio to the other engine and to onnxruntime-in-Python, and as a fraction of
# the peak GEMM rate of `just bench-peak` (run first when runs/bench-peak.json is missing).
# Records /proc/loadavg and the hypervisor steal. Writes the "Inference" section of
# docs/benchmarks.md.
#   bench/bench-infer.sh [SIZES] [ITERS] [SECONDS]   (SECONDS: time cap per batch size per cell)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
sizes="${1:-64 128 256}"
iters="${2:-30}"
seconds="${3:-2}"
target="${CARGO_TARGET_DIR:-target}"

# shellcheck source=bench/infer-common.sh
. bench/infer-common.sh
build_engines
for s in $sizes; do
    bench_bundle "$s" "runs/bench-infer-$s"
done
peak=runs/bench-peak.json
missing=0
for s in $sizes; do
    "$py" -c 'import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1]))["model_flops"])' \
        "$peak" "runs/bench-infer-$s/model.onnx" 2>/dev/null || missing=1
done
if [ "$missing" = 1 ]; then
    models=()
    for s in $sizes; do models+=("runs/bench-infer-$s/model.onnx"); done
    bash bench/bench-peak.sh 1536 5 "${models[@]}"
fi

steal() { awk '/^cpu /{print $9}' /proc/stat; }
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
steal0=$(steal)
t0=$(date +%s)
results="$(mktemp)"
for s in $sizes; do
    b="runs/bench-infer-$s"
    for threads in 1 2; do
        for p in f32 int8; do
            file="$b/model.onnx"; [ "$p" = int8 ] && file="$b/model.int8.onnx"
            for e in $engines; do
                "$target/release/examples/bench_infer" "$b" "$e" "$p" "$threads" "$iters" "$seconds" >>"$results"
            done
            "$py" bench/ort_infer.py "$file" "$p" "$threads" "$iters" "$seconds" >>"$results"
        done
    done
done
steal_ms=$(( ($(steal) - steal0) * 1000 / $(getconf CLK_TCK) ))
load1="$(cut -d' ' -f1-3 /proc/loadavg)"
wall=$(( $(date +%s) - t0 ))

"$py" - "$results" "$peak" "$iters" "$seconds" "$load0" "$load1" "$steal_ms" "$wall" "$ORT_DYLIB_PATH" <<'PY'
import json, os, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
peak = json.load(open(sys.argv[2]))
iters, seconds, load0, load1, steal_ms, wall, lib = sys.argv[3:10]
steal_ms, wall = int(steal_ms), int(wall)
cores = peak["cores"]
single, allc = peak["peak_gflops"]["single"], peak["peak_gflops"]["all"]

def peak_for(t):
    # t threads can at best do t single cores' work, and never more than all cores together.
    return min(t * single, allc)

def get(rt, size, p, t):
    return next((r for r in rows if r["runtime"] == rt and r["size"] == size
                 and r["precision"] == p and r["threads"] == t), None)

# On a box busier than its core count, wall time mostly measures the scheduler: 1-thread cells
# then use the calling thread's CPU time per run (what an idle core would take); 2-thread cells
# keep the wall time (their work is spread over a pool).
busy = float(load0.split()[0]) > cores
def b1(r):
    return r["b1_cpu_ms"] if busy and r["threads"] == 1 else r["b1_ms"]
def b8(r):
    return r["b8_cpu_ms"] if busy and r["threads"] == 1 else r["b8_ms"]

names = {"tract": "tract", "ort": "ort (vigild)", "onnxruntime": "onnxruntime-py"}
other = {"tract": "ort", "ort": "tract"}
sizes = sorted({r["size"] for r in rows})
m0 = json.load(open(f"runs/bench-infer-{sizes[0]}/manifest.json"))
lines = [
    "## Inference",
    "",
    f"`just bench-infer` (bench/bench-infer.sh) on {peak['cpu']} ({cores} cores, shared with other jobs: "
    f"load average {load0} before, {load1} after; hypervisor steal {steal_ms} ms over the {wall} s run), "
    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. GANomaly {m0['input']['channels']}-channel, "
    f"score `{m0['score']['name']}`, one epoch of synthetic metal per size (64²: the 1000-image `synthetic:metal`; "
    f"larger: a 16-image `vigil synth` folder, one step of batch 8; timing depends on the graph's shape only). Median of up to {iters} runs per "
    f"cell after warm-up, each cell capped at {seconds} s per batch size (at least 3 runs). "
    "tract and ort (vigild): the appliance backends (`bench_infer`), with their preallocated buffers; "
    "onnxruntime-py: onnxruntime "
    f"in Python on the same file (`bench/ort_infer.py`), CPUExecutionProvider, all graph optimisations; "
    f"ort (vigild) loads the same wheel's library ({os.path.basename(lib)}).",
    "",
    f"Peak: `just bench-peak` sgemm {peak['gemm'][0]['n']}², best of the gemm crate and numpy/OpenBLAS: "
    f"{single:.1f} GFLOP/s on one core, {allc:.1f} GFLOP/s on {cores} cores "
    f"(measured {peak['at']}, load average {peak['loadavg_before']}). "
    "% peak = the graph's Conv/ConvTranspose/Gemm/MatMul FLOPs (2·MACs, `bench/onnx_flops.py`) per second "
    "over the peak for that many threads (min(threads × single core, all cores)); int8 rows count the same "
    "FLOPs (the f32 work their graph replaces) against the f32 peak, so they can exceed 100 %. "
    "× py: speed relative to onnxruntime-py on the same file, cell by cell (above 1: faster); "
    "× other: relative to vigild's other engine."
    + (f" The load average ({load0}) was above the {cores} cores: the 1-thread cells give the median CPU "
       "time of the scoring thread per run (what an idle core would take), the 2-thread cells wall time, "
       "which on this load measures the scheduler as much as the engines." if busy else ""),
    "",
]
for size in sizes:
    f = peak["model_flops"][f"runs/bench-infer-{size}/model.onnx"]
    lines += [f"### {size}² ({f['1'] / 1e6:.1f} MFLOP per image)", "",
              "| threads | precision | engine | b1 ms | b1 × py | b1 × other | b1 % peak | b8 img/s | b8 × py | b8 × other | b8 % peak |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in (1, 2):
        for p in ("f32", "int8"):
            ref = get("onnxruntime", size, p, t)
            for rt in ("tract", "ort", "onnxruntime"):
                r = get(rt, size, p, t)
                if r is None:
                    continue
                o = get(other[rt], size, p, t) if rt in other else None
                b1p = 100 * f["1"] / (b1(r) / 1e3) / 1e9 / peak_for(t)
                b8p = 100 * f["8"] / (b8(r) / 1e3) / 1e9 / peak_for(t)
                lines.append(
                    f"| {t} | {p} | {names[rt]} | {b1(r):.3f} | "
                    f"{b1(ref) / b1(r):.2f} | {b1(o) / b1(r) if o else float('nan'):.2f} | {b1p:.1f} | "
                    f"{8000 / b8(r):.1f} | {b8(ref) / b8(r):.2f} | "
                    f"{b8(o) / b8(r) if o else float('nan'):.2f} | {b8p:.1f} |")
    lines.append("")
    for rt in ("tract", "ort"):
        for t in (1, 2):
            fr, q = get(rt, size, "f32", t), get(rt, size, "int8", t)
            if fr and q:
                lines.append(f"- {size}², {names[rt]}, {t} thread(s): int8 vs f32 latency ×{b1(fr) / b1(q):.2f}, "
                             f"throughput ×{b8(fr) / b8(q):.2f} (above 1: int8 faster).")
    lines.append("")
section = "\n".join(lines).rstrip("\n").replace("| nan |", "| – |") + "\n"
section = section.replace(" nan |", " – |")
print(section)
json.dump(rows, open("runs/bench-infer.json", "w"), indent=1)
path = "docs/benchmarks.md"
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
start = text.find("## Inference\n")
if start >= 0:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + ("" if end < 0 else "\n" + text[end + 1:])
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(f"wrote the Inference section of {path} and runs/bench-infer.json")
PY
rm -f "$results"
