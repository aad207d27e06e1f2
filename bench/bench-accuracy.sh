#!/usr/bin/env bash
# `just bench-accuracy`: image AUROC of every detector on the Fashion-MNIST one-class tasks
# (train on class C, test on the whole test split), the protocol of DESIGN.md.
#
#   bench/bench-accuracy.sh [DETECTORS] [CLASSES] [EPOCHS] [SEEDS]
#   e.g. bench/bench-accuracy.sh "ganomaly wild" "0 1 2 3 4 5 6 7 8 9" 2 "1 2"
#
# Env: SIZE (32), CONTAMINATION (unset: clean training data), OUT (runs/accuracy),
# VIGIL_ANOGAN_STEPS (AnoGAN's latent-search steps at scoring; default 500, which costs hours
# on a CPU: see docs/benchmarks.md). Each run's eval JSON goes to $OUT/<det>-c<C>-s<seed>.json;
# finished runs are skipped, so an interrupted table resumes. Prints a markdown table with the
# per-class AUROC and the mean per detector.
set -euo pipefail
cd "$(dirname "$0")/.."
detectors=${1:-"anogan egbad ganomaly alad fanogan gaae wild"}
classes=${2:-"0 1 2 3 4 5 6 7 8 9"}
epochs=${3:-2}
seeds=${4:-1}
size=${SIZE:-32}
out=${OUT:-runs/accuracy}
contam=${CONTAMINATION:-}
mkdir -p "$out"

cargo build -q --release -p vigil-host
vigil=target/release/vigil

for det in $detectors; do
  for c in $classes; do
    for seed in $seeds; do
      tag="$det-c$c-s$seed${contam:+-p$contam}"
      [ -s "$out/$tag.json" ] && continue
      spec="fashion-mnist:normal=$c${contam:+,contamination=$contam}"
      start=$(date +%s)
      "$vigil" train --detector "$det" --data "$spec" --image-size "$size" --epochs "$epochs" \
        --seed "$seed" --out "$out/$tag" >/dev/null
      "$vigil" eval --model "$out/$tag" --data "fashion-mnist:normal=$c" >"$out/$tag.json.tmp"
      mv "$out/$tag.json.tmp" "$out/$tag.json"
      echo "$tag: $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["image_auroc"], 4))' "$out/$tag.json") ($(( $(date +%s) - start )) s)" >&2
    done
  done
done

python3 - "$out" "$epochs" "$size" "$contam" $detectors -- $classes -- $seeds <<'PY'
import json, os, sys
out, epochs, size, contam = sys.argv[1:5]
rest = sys.argv[5:]
i = rest.index("--"); dets = rest[:i]; rest = rest[i + 1:]
j = rest.index("--"); classes = rest[:j]; seeds = rest[j + 1:]
suffix = f"-p{contam}" if contam else ""
print(f"Fashion-MNIST one-class image AUROC, {size}², {epochs} epochs, seeds {' '.join(seeds)}"
      + (f", training contamination {contam}" if contam else ""))
print()
print("| detector (score) | " + " | ".join(classes) + " | mean |")
print("| --- " * (len(classes) + 2) + "|")
for d in dets:
    cells, vals, score = [], [], "?"
    for c in classes:
        runs = []
        for s in seeds:
            p = os.path.join(out, f"{d}-c{c}-s{s}{suffix}.json")
            if os.path.exists(p):
                r = json.load(open(p)); runs.append(r["image_auroc"]); score = r["score"]
        if runs:
            m = sum(runs) / len(runs); vals.append(m); cells.append(f"{m:.3f}")
        else:
            cells.append("–")
    mean = f"**{sum(vals) / len(vals):.3f}**" if len(vals) == len(classes) else "–"
    print(f"| {d} ({score}) | " + " | ".join(cells) + f" | {mean} |")
PY
