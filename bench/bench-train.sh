#!/usr/bin/env bash
# `just bench-train`: GANomaly training throughput (CPU, 32×32×1, batch 64, one step = G + D
# update), Candle (vigil-models) against PyTorch on the same network, measured in one run,
# alternating the two so machine noise hits both alike. Prints a markdown table with ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20}
warmup=${2:-3}
size=${SIZE:-32}
batch=${BATCH:-64}

bash bench/setup-venv.sh
cargo bench -q -p vigil-models --bench train_step --no-run 2>/dev/null
bin=$(ls -t target/release/deps/train_step-* | grep -v '\.d$' | head -n 1)

results=$(mktemp)
for threads in 1 2; do
  for round in 1 2; do
    RAYON_NUM_THREADS=$threads "$bin" --size "$size" --batch "$batch" --steps "$steps" --warmup "$warmup" >>"$results"
    bench/.venv/bin/python bench/ganomaly_torch.py --threads "$threads" --size "$size" --batch "$batch" \
      --steps "$steps" --warmup "$warmup" >>"$results"
  done
done

python3 - "$results" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
best = {}
for r in rows:  # best of the rounds: the least disturbed measurement of each
    k = (r["framework"], r["threads"])
    best[k] = max(best.get(k, 0.0), r["images_per_s"])
print(f"CPU: {sys.argv[3]} ({sys.argv[2]} cores); GANomaly {rows[0]['size']}², batch {rows[0]['batch']}, {rows[0]['steps']} steps")
print()
print("| threads | Candle img/s | PyTorch img/s | PyTorch / Candle time ratio |")
print("| --- | --- | --- | --- |")
for t in sorted({k[1] for k in best}):
    c, p = best[("candle", t)], best[("pytorch", t)]
    print(f"| {t} | {c:.1f} | {p:.1f} | Candle takes {p / c:.2f}× PyTorch's time |")
PY
rm -f "$results"
