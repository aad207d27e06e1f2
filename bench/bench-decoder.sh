#!/usr/bin/env bash
# `just bench-decoder`: what the decoder without transposed convolutions (`vigil train --decoder
# upsample`: nearest ×2 + 3×3 conv, the stem a matrix product) costs or saves at inference,
# against the DCGAN decoder (`deconv`), in both of vigild's engines. For GANomaly at each size
# (64², 128², 256² by default), one bundle per decoder trained exactly as `just bench-infer`
# trains its own (timing depends on the graph's shape only), exported f32 and int8; batch-1
# latency and batch-8 throughput of tract and of the `ort` backend (appliance/examples/
# bench_infer.rs), 1 and 2 threads, and each graph's FLOPs (bench/onnx_flops.py). The two
# decoders of one size are timed back to back, cell by cell, so load drifts hit both alike.
# Accuracy of the two is measured by `DECODER=upsample just bench-real` / `bench-accuracy`.
#   bench/bench-decoder.sh [SIZES] [ITERS] [SECONDS]
# Env: TRACT_INT8=all also times tract's int8 above 128² (left out by default: tract's int8
# kernels are 20-28x slower than its f32, one batch-8 run at 256² takes ~45 s here, and vigild
# refuses tract int8 unless asked); ROWS=FILE prints the table of rows kept from an earlier run.
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
bundle() { echo "runs/bench-decoder-$1-$2"; }
for s in $sizes; do
    for d in deconv upsample; do
        bench_bundle "$s" "$(bundle "$s" "$d")" --decoder "$d"
    done
done

results="$(mktemp)"
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${ROWS:-}" ] && { cp "$ROWS" "$results"; sizes=""; }
for s in $sizes; do
    for d in deconv upsample; do
        b="$(bundle "$s" "$d")"
        echo "{\"flops\":$("$py" bench/onnx_flops.py "$b/model.onnx" 1),\"size\":$s,\"decoder\":\"$d\"}" >>"$results"
    done
    for threads in 1 2; do
        for p in f32 int8; do
            for e in $engines; do
                if [ "$e$p" = tractint8 ] && [ "$s" -gt 128 ] && [ "${TRACT_INT8:-}" != all ]; then
                    continue
                fi
                for d in deconv upsample; do
                    "$target/release/examples/bench_infer" "$(bundle "$s" "$d")" "$e" "$p" "$threads" "$iters" "$seconds" |
                        sed "s/^{/{\"decoder\":\"$d\",/" >>"$results"
                done
            done
        done
    done
done
load1="$(cut -d' ' -f1-3 /proc/loadavg)"
# The load of the timing run travels with its rows (ROWS= reprints them later, on another load).
[ -n "${ROWS:-}" ] || echo "{\"load\":[\"$load0\",\"$load1\"]}" >>"$results"

"$py" - "$results" "$load0" "$load1" "$(nproc)" <<'PY'
import json, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
load0, load1, cores = sys.argv[2], sys.argv[3], int(sys.argv[4])
load0, load1 = next((r["load"] for r in rows if "load" in r), (load0, load1))
busy = float(load0.split()[0]) > cores
# As bench-infer: on a box busier than its cores, 1-thread cells use the scoring thread's CPU time.
def ms(r, k):
    return r[k.replace("_ms", "_cpu_ms")] if busy and r["threads"] == 1 else r[k]
flops = {(r["size"], r["decoder"]): r["flops"] for r in rows if "flops" in r}
timed = [r for r in rows if "runtime" in r]
def get(size, d, rt, p, t):
    return next((r for r in timed if (r["size"], r["decoder"], r["runtime"], r["precision"], r["threads"]) == (size, d, rt, p, t)), None)
print(f"Decoders (bench-decoder), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, "
      f"load average {load0} before, {load1} after{' (1-thread cells: CPU time of the scoring thread)' if busy else ''}.")
print()
print("| size | MFLOP deconv → upsample | threads | engine | precision | b1 ms deconv | b1 ms upsample | b1 upsample speed | b8 img/s deconv | b8 img/s upsample |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for size in sorted({r["size"] for r in timed}):
    f0, f1 = flops[(size, "deconv")]["flops"] / 1e6, flops[(size, "upsample")]["flops"] / 1e6
    for t in (1, 2):
        for rt in sorted({r["runtime"] for r in timed}, key=lambda x: x != "tract"):
            for p in ("f32", "int8"):
                a, b = get(size, "deconv", rt, p, t), get(size, "upsample", rt, p, t)
                if a is None or b is None:
                    continue
                print(f"| {size}² | {f0:.1f} → {f1:.1f} | {t} | {rt} | {p} | {ms(a, 'b1_ms'):.3f} | {ms(b, 'b1_ms'):.3f} | "
                      f"×{ms(a, 'b1_ms') / ms(b, 'b1_ms'):.2f} | {8000 / ms(a, 'b8_ms'):.1f} | {8000 / ms(b, 'b8_ms'):.1f} |")
print()
print("b1 upsample speed: deconv latency / upsample latency (above 1: the upsample decoder is faster).")
PY
rm -f "$results"
