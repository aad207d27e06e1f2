#!/usr/bin/env bash
# vigild's GPU path (`--backend ort --ep cuda|tensorrt`) on a machine with an NVIDIA GPU:
# parity with tract on the CPU and latency, for the bench-infer GANomaly bundles. docs/gpu.md.
#
#   bash bench/gpu-ort.sh pack          here (no GPU needed): build vigild and examples/ort_check
#                                       with --features ort, gather them and the 64²/128²/256²
#                                       bundles (runs/bench-infer-*, made by `just bench-infer`)
#                                       into target/gpu-ort/carry (a few MiB)
#   bash bench/gpu-ort.sh run [CARRY]   there: finds an onnxruntime with the CUDA provider
#                                       (ORT_DYLIB_PATH, a Python's onnxruntime-gpu, or
#                                       `pip install onnxruntime-gpu==1.31.1` into a venv), then
#                                       for each bundle and each of cuda, tensorrt prints parity
#                                       and batch-1/batch-8 latency; ends with a 200-frame
#                                       vigild run on CUDA. Every step has a timeout; the whole
#                                       run stays under 10 minutes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-}"
ORT=1.31.1

case "$mode" in
pack)
    cd "$root"
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -q --workspace --features vigil-appliance/ort --bin vigild --example ort_check
    out=target/gpu-ort/carry
    rm -rf "$out"
    mkdir -p "$out/bundles"
    cp "$target/release/vigild" "$target/release/examples/ort_check" "$out/"
    strip "$out/vigild" "$out/ort_check" 2>/dev/null || true
    for s in 64 128 256; do
        b="runs/bench-infer-$s"
        [ -f "$b/model.onnx" ] || { echo "gpu-ort: $b/model.onnx is missing: run \`just bench-infer\` first" >&2; exit 1; }
        mkdir -p "$out/bundles/$s"
        cp "$b/manifest.json" "$b/model.onnx" "$out/bundles/$s/"
        [ -f "$b/model.int8.onnx" ] && cp "$b/model.int8.onnx" "$out/bundles/$s/"
    done
    cp bench/gpu-ort.sh "$out/"
    du -sh "$out"
    echo "carry $out (e.g. the device tool's carry: [\"$out\"]), then: bash $out/gpu-ort.sh run $out"
    ;;
run)
    carry="$(cd "${2:-$root/target/gpu-ort/carry}" && pwd)"
    nvidia-smi -L || { echo "gpu-ort: no NVIDIA GPU visible (nvidia-smi)" >&2; exit 1; }
    has_cuda() { "$1" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' 2>/dev/null; }
    py=""
    for cand in python3 python; do
        command -v "$cand" >/dev/null && has_cuda "$cand" && { py="$cand"; break; }
    done
    if [ -z "$py" ] && [ -z "${ORT_DYLIB_PATH:-}" ]; then
        venv="$carry/venv-ort-gpu"
        python3 -m venv "$venv"
        timeout 300 "$venv/bin/pip" install --quiet "onnxruntime-gpu==$ORT" ||
            { echo "gpu-ort: no onnxruntime with the CUDA provider here and pip could not install onnxruntime-gpu==$ORT; set ORT_DYLIB_PATH to a CUDA-enabled libonnxruntime.so" >&2; exit 1; }
        py="$venv/bin/python"
    fi
    if [ -z "${ORT_DYLIB_PATH:-}" ]; then
        ORT_DYLIB_PATH="$("$py" -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so*")))[0])')"
    fi
    export ORT_DYLIB_PATH
    # The CUDA provider dlopens cudart, cublas, cudnn (and TensorRT's nvinfer): from the pip
    # wheels next to onnxruntime when they are there, else from the system.
    if [ -n "$py" ]; then
        extra="$("$py" - <<'PY'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib")) + glob.glob(os.path.join(sp, "tensorrt_libs"))
print(":".join(dirs))
PY
)"
        export LD_LIBRARY_PATH="${extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    echo "onnxruntime: $ORT_DYLIB_PATH"
    results="$(mktemp)"
    for s in 64 128 256; do
        for ep in cuda tensorrt; do
            if ! timeout 120 "$carry/ort_check" "$carry/bundles/$s" "$ep" 30 >>"$results"; then
                echo "{\"size\": $s, \"requested_ep\": \"$ep\", \"error\": \"ort_check failed or timed out (120 s)\"}" >>"$results"
            fi
        done
    done
    python3 - "$results" <<'PY'
import json, sys
print("| size | ep asked | ep ran | parity | max score diff | max map diff | load s | ort b1 ms | ort b8 ms | tract CPU b1 ms | tract CPU b8 ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for l in open(sys.argv[1]):
    r = json.loads(l)
    if "error" in r:
        print(f"| {r['size']} | {r['requested_ep']} | – | {r['error']} | | | | | | | |")
        continue
    print(f"| {r['size']} | {r['requested_ep']} | {r['ep']} | {'yes' if r['parity'] else 'NO'} | {r['max_score_diff']:.2e} | "
          f"{r['max_map_diff']:.2e} | {r['load_s']:.1f} | {r['ort_b1_ms']:.3f} | {r['ort_b8_ms']:.3f} | "
          f"{r['tract_cpu_b1_ms']:.3f} | {r['tract_cpu_b8_ms']:.3f} |")
    if r.get("fallback"):
        print(f"|  | fell back: {r['fallback']} |  |  |  |  |  |  |  |  |  |")
PY
    echo "vigild --backend ort --ep cuda, 200 frames unpaced (64²):"
    timeout 120 "$carry/vigild" --model "$carry/bundles/64" --backend ort --ep cuda --frames 200 --fps 0 \
        --masks none >/dev/null 2>"$results.vigild" || true
    grep -E '^vigild: (backend|warning|[0-9]+ frames)' "$results.vigild" || tail -5 "$results.vigild"
    rm -f "$results" "$results.vigild"
    ;;
*)
    echo "usage: $0 pack | run [CARRY]" >&2
    exit 2
    ;;
esac
