#!/usr/bin/env bash
# `just bench-peak`: the machine's f32 matrix-product limit, the yardstick of `just bench-infer`.
# A square sgemm (N×N, best of REPS) with the gemm crate (appliance/examples/bench_peak.rs) and
# with numpy/OpenBLAS (the wheel in tests/.venv-ort), on one core and on all cores; the peak
# is the better of the two. Then the FLOPs of each exported graph given (default: the
# bench-infer bundles that exist), counted from the ONNX graph by bench/onnx_flops.py.
# Writes runs/bench-peak.json, prints a summary with /proc/loadavg and the hypervisor steal
# over the run (the machine may be shared).
#   bench/bench-peak.sh [N] [REPS] [MODEL.onnx ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n="${1:-1536}"
reps="${2:-5}"
shift $(( $# > 2 ? 2 : $# ))
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    for s in 64 128 256; do
        [ -f "runs/bench-infer-$s/model.onnx" ] && models+=("runs/bench-infer-$s/model.onnx")
    done
fi
target="${CARGO_TARGET_DIR:-target}"
cores="$(nproc)"
mkdir -p runs

cargo build --release -q --workspace --example bench_peak
py="$(bash tests/support/ort-venv.sh)"

steal() { awk '/^cpu /{print $9}' /proc/stat; }
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
steal0=$(steal)
results="$(mktemp)"
"$target/release/examples/bench_peak" "$n" "$reps" "$cores" >>"$results"
for t in 1 "$cores"; do
    OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t "$py" - "$n" "$reps" "$t" >>"$results" <<'PY'
import json, sys, time
import numpy as np
n, reps, t = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
a = ((np.arange(n * n) % 17 - 8) / 8).astype(np.float32).reshape(n, n)
b = ((np.arange(n * n) % 13 - 6) / 6).astype(np.float32).reshape(n, n)
c = a @ b
best = float("inf")
for _ in range(reps):
    # One thread: its CPU time (robust to other jobs); several: wall time, as bench_peak.rs.
    t0, c0 = time.perf_counter(), time.thread_time()
    np.matmul(a, b, out=c)
    best = min(best, time.thread_time() - c0 if t == 1 else time.perf_counter() - t0)
print(json.dumps({"impl": "numpy-" + np.__version__ + "-openblas", "n": n, "threads": t,
                  "gflops": round(2 * n**3 / best / 1e9, 2)}))
PY
    [ "$cores" -eq 1 ] && break
done
steal_ms=$(( ($(steal) - steal0) * 1000 / $(getconf CLK_TCK) ))
load1="$(cut -d' ' -f1-3 /proc/loadavg)"
for m in "${models[@]}"; do
    for b in 1 8; do
        "$py" bench/onnx_flops.py "$m" "$b" >>"$results"
    done
done

"$py" - "$results" "$cores" "$load0" "$load1" "$steal_ms" <<'PY'
import json, platform, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
cores, load0, load1, steal_ms = int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.machine())
gemm = [r for r in rows if "gflops" in r]
peak = {}
for r in gemm:
    k = "single" if r["threads"] == 1 else "all"
    peak[k] = max(peak.get(k, 0), r["gflops"])
peak.setdefault("all", peak["single"])
flops = {}
for r in (r for r in rows if "flops" in r):
    flops.setdefault(r["model"], {})[str(r["batch"])] = r["flops"]
out = {"cpu": cpu, "cores": cores, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "loadavg_before": load0, "loadavg_after": load1, "steal_ms": steal_ms,
       "gemm": gemm, "peak_gflops": peak, "model_flops": flops}
json.dump(out, open("runs/bench-peak.json", "w"), indent=1)
print(f"{cpu}, {cores} cores; load average {load0} before, {load1} after; "
      f"hypervisor steal {steal_ms} ms during the sgemm runs")
for r in gemm:
    print(f"  sgemm {r['n']}² {r['impl']:>24} {r['threads']:>2} thread(s): {r['gflops']:8.2f} GFLOP/s")
print(f"peak (best of both): single core {peak['single']:.1f} GFLOP/s, all {cores} cores {peak['all']:.1f} GFLOP/s")
for m, f in flops.items():
    print(f"  {m}: {f['1'] / 1e6:.1f} MFLOP per image (Conv, ConvTranspose, Gemm, MatMul; 2·MACs)")
print("wrote runs/bench-peak.json")
PY
rm -f "$results"
