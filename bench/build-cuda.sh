#!/usr/bin/env bash
# `just build-cuda`: build `vigil` with Candle's CUDA backend on a machine with no CUDA toolkit
# and no GPU, using NVIDIA's PyPI wheels as the toolkit (docs/gpu.md, "Building the CUDA path").
#
#   1. target/cuda-toolchain/venv: a venv holding the pinned CUDA 13.0 wheels (nvcc + cicc,
#      headers, cudart, cuBLAS, cuRAND, NVRTC); ~1.2 GB on disk, reused while the pins match.
#   2. Makes the wheel tree link like a toolkit install: unversioned dev symlinks (libcublas.so,
#      ...) and lib/stubs/libcuda.so, a stub of the driver library built from the symbol list of
#      the locked cudarc (the real libcuda.so.1 comes with the GPU machine's driver).
#   3. cargo build --release -p vigil-host --features cuda into target/cuda (its own target
#      dir, so the CPU build in target/release that CI uses is never invalidated).
#   4. target/cuda/carry/vigil.xz: a stripped, compressed copy small enough to carry to the GPU
#      machine.
#
# Environment: CUDA_COMPUTE_CAP (default 90: H100/H200; no GPU here to detect it from),
# CUDAFORGE_THREADS (parallel nvcc jobs, default: all cores).
# CUDA 13.0 is pinned on purpose: Candle loads its kernels as PTX, which the driver compiles at
# start, and a driver only reads PTX from toolkits no newer than itself. The GPU machines run
# driver 580 (CUDA 13.0) with PyTorch's CUDA 13 libraries, which the binary links against.
set -euo pipefail
cd "$(dirname "$0")/.."

tc=target/cuda-toolchain
venv="$tc/venv"
pins=(
    nvidia-cuda-nvcc==13.0.88    # nvcc, cudafe++, ptxas, fatbinary, nvlink
    nvidia-nvvm==13.0.88         # cicc and libdevice; unpinned, pip takes the newest (13.5)
    nvidia-cuda-crt==13.0.88     # crt/ headers nvcc includes
    nvidia-cuda-cccl==13.0.85    # CUB/Thrust/libcu++ headers
    nvidia-cuda-runtime==13.0.96 # cuda_runtime.h, libcudart.so.13 (candle-kernels' MoE lib)
    nvidia-cuda-nvrtc==13.0.88   # libnvrtc.so.13
    nvidia-cublas==13.0.2.14     # libcublas.so.13, libcublasLt.so.13
    nvidia-curand==10.4.0.35     # libcurand.so.10 (CUDA 13.0's cuRAND)
)

die() {
    echo "build-cuda: $*" >&2
    exit 1
}

for tool in python3 cargo gcc g++ strip xz; do
    command -v "$tool" >/dev/null || die "$tool is needed (Debian: python3, build-essential, binutils, xz-utils; cargo: rustup)"
done
python3 -c 'import venv, ensurepip' 2>/dev/null ||
    die "python3 with the venv module is needed (Debian: apt-get install python3-venv)"

# 1. The toolkit wheels.
stamp="$venv/.vigil-pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
    echo "build-cuda: installing CUDA wheels into $venv (~700 MB download): ${pins[*]}" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${pins[@]}" ||
        die "pip could not install the CUDA wheels (PyPI reachable?)"
    echo "${pins[*]}" >"$stamp"
fi
cu=$(echo "$PWD/$venv"/lib/python3*/site-packages/nvidia/cu13)
for f in bin/nvcc nvvm/bin/cicc include/cuda.h include/cuda_runtime.h include/crt/host_config.h \
    include/cublas_v2.h include/curand.h include/nvrtc.h; do
    [ -e "$cu/$f" ] || die "$cu/$f is missing: the wheels' layout changed; see docs/gpu.md"
done
"$cu/bin/nvcc" --version | grep -q 'release 13\.0' || die "$cu/bin/nvcc is not CUDA 13.0"

# 2. Link like a toolkit: -lcublas etc. need unversioned names, -lcuda needs the driver's stub.
for so in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
    [ -e "$cu/lib/lib$so" ] || die "$cu/lib/lib$so is missing"
    ln -sfn "lib$so" "$cu/lib/lib${so%.so.*}.so"
done
cudarc=$(cargo metadata --locked --format-version 1 --features vigil-host/cuda |
    python3 -c 'import json, sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
cudarc=$(dirname "$cudarc")
mkdir -p "$cu/lib/stubs"
# The link only needs each symbol to exist in a library whose soname is libcuda.so.1; the
# bodies never run, since the stub stays here and the driver's library is loaded at run time.
grep -oE 'load::<_F>\("cu[A-Za-z0-9_]+"\)' "$cudarc/src/driver/sys/mod.rs" |
    sed -E 's/.*\("(.*)"\)/void \1(void) {}/' | sort -u >"$tc/libcuda-stub.c"
[ -s "$tc/libcuda-stub.c" ] || die "found no driver symbols in $cudarc/src/driver/sys/mod.rs"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so" "$tc/libcuda-stub.c"

# 3. Build.
export PATH="$cu/bin:$PATH"         # nvcc, for candle-kernels (cudaforge) and cudarc's version probe
export CUDA_HOME="$cu"              # cudarc's link search: $CUDA_HOME/lib and lib/stubs
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export CARGO_TARGET_DIR="$PWD/target/cuda"
echo "build-cuda: nvcc $("$cu/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_$CUDA_COMPUTE_CAP, into $CARGO_TARGET_DIR" >&2
start=$(date +%s)
cargo build --release --locked -p vigil-host --features cuda
echo "build-cuda: cargo build took $(($(date +%s) - start)) s" >&2

# 4. A stripped, xz-compressed copy to carry (the device tool carries 64 MiB a call; the
#    stripped binary is ~80 MB because of candle-kernels' static quantised kernels, ~12 MB
#    compressed). On the GPU machine: `xz -dc vigil.xz > vigil && chmod +x vigil` (or Python's
#    lzma module).
mkdir -p target/cuda/carry
strip -o target/cuda/carry/vigil target/cuda/release/vigil
xz -T0 -6 -c target/cuda/carry/vigil >target/cuda/carry/vigil.xz
ls -l target/cuda/release/vigil target/cuda/carry/vigil target/cuda/carry/vigil.xz >&2
echo "build-cuda: shared libraries it needs (the CUDA ones come from the GPU machine):" >&2
readelf -d target/cuda/carry/vigil | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p' >&2
