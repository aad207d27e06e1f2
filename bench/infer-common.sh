# Sourced by bench/bench-infer.sh and bench/bench-decoder.sh: the engines' build and the timing
# bundles both scripts train. Expects $target (the cargo target dir).

# Builds vigild's engines and the bench_infer example; sets engines ("tract", or "tract ort"
# when the build with `--features ort` works and ORT != 0), vigil, py (the onnxruntime venv's
# python) and exports ORT_DYLIB_PATH (that wheel's library).
# --workspace builds (as CI's): the other crates keep the features of `cargo build --workspace`,
# so nothing but vigil-appliance is rebuilt for the feature.
build_engines() {
    engines="tract"
    if [ "${ORT:-1}" != 0 ] &&
        cargo build --release -q --workspace --features vigil-appliance/ort --bins --example bench_infer; then
        engines="tract ort"
    else
        cargo build --release -q --workspace --bins --example bench_infer
    fi
    vigil="$target/release/vigil"
    py="$(bash tests/support/ort-venv.sh)"
    ORT_DYLIB_PATH="$("$py" -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so*")))[0])')"
    export ORT_DYLIB_PATH
}

# bench_bundle SIZE DIR [TRAIN FLAG...]: a GANomaly bundle at SIZE² in DIR, exported f32 and int8,
# unless there already. Timing depends on the graph's shape only, not on how well it is trained:
# 64² trains one epoch of synthetic metal (1000 images, as bench-loop does); larger sizes one
# epoch of a 16-image `vigil synth` metal folder (one step of batch 8), since a 1000-image epoch
# at 256² takes a long time on a small shared CPU.
bench_bundle() {
    local s=$1 b=$2 data cal=64
    shift 2
    if [ ! -f "$b/manifest.json" ]; then
        if [ "$s" -le 64 ]; then
            data=synthetic:metal
        else
            data="folder:runs/bench-infer-synth-$s"
            [ -d "runs/bench-infer-synth-$s/train" ] ||
                "$vigil" synth --kind metal --count 16 --size "$s" --out "runs/bench-infer-synth-$s"
        fi
        "$vigil" train --detector ganomaly --data "$data" --image-size "$s" --channels 1 --epochs 1 --batch 8 "$@" --out "$b"
    fi
    if [ ! -f "$b/model.int8.onnx" ]; then
        [ "$s" -gt 64 ] && cal=8
        "$vigil" export --model "$b" --quantize int8 --calibration "$cal"
    fi
}
