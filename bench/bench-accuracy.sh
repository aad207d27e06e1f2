#!/usr/bin/env bash
# `just bench-accuracy`: image AUROC of every detector on the Fashion-MNIST one-class tasks
# (train on class C, test on the whole test split), the protocol of DESIGN.md.
#
#   bench/bench-accuracy.sh [DETECTORS] [CLASSES] [EPOCHS] [SEEDS]
#   e.g. bench/bench-accuracy.sh "ganomaly wild" "0 1 2 3 4 5 6 7 8 9" 2 "1 2"
#
# Env: SIZE (32), CONTAMINATION (unset: clean training data), OUT (runs/accuracy),
# VIGIL (a vigil binary to use; unset: build this checkout's), VIGIL_ANOGAN_STEPS (AnoGAN's latent-search steps at scoring; default 500, which costs hours
# on a CPU: see docs/benchmarks.md), SCORES ("all", or names like "residual origin": also
# evaluate these scores of every model, each with its threshold recalibrated; unset: only the
# bundle's default). Each run's eval JSON goes to $OUT/<det>-c<C>-s<seed>.json (other scores:
# <det>-c<C>-s<seed>.<score>.json); finished runs are skipped, so an interrupted table resumes.
# Prints a markdown table with the per-class AUROC and the mean per detector and score.
set -euo pipefail
cd "$(dirname "$0")/.."
detectors=${1:-"anogan egbad ganomaly alad fanogan gaae wild"}
classes=${2:-"0 1 2 3 4 5 6 7 8 9"}
epochs=${3:-2}
seeds=${4:-1}
size=${SIZE:-32}
out=${OUT:-runs/accuracy}
contam=${CONTAMINATION:-}
want_scores=${SCORES:-}
mkdir -p "$out"

# Each detector's scores, default first (vigil-models' `SCORES`; `vigil eval --score` refuses a
# name the detector does not have, so a stale list fails loudly).
scores_of() {
  case $1 in
    anogan) echo "search residual" ;;
    egbad) echo "residual combined features" ;;
    ganomaly) echo "residual encoder" ;;
    alad) echo "features l1 l2 logits" ;;
    fanogan) echo "izif residual origin" ;;
    gaae) echo "combined residual features latent" ;;
    wild) echo "combined residual origin" ;;
    *) echo "unknown detector $1" >&2; exit 2 ;;
  esac
}
# The scores evaluated for detector $1 (the first is the bundle's default).
scores_for() {
  local all; all=$(scores_of "$1")
  case $want_scores in
    "") echo "${all%% *}" ;;
    all) echo "$all" ;;
    *) echo "${all%% *} $want_scores" ;;
  esac
}

# VIGIL: a prebuilt vigil binary to use instead of building this checkout's.
vigil=${VIGIL:-}
if [ -z "$vigil" ]; then
  cargo build -q --release -p vigil-host
  vigil=target/release/vigil
fi

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

# Other scores of the same models: one `vigil eval --score all` per model, no training.
if [ -n "$want_scores" ]; then
  for det in $detectors; do
    default=$(scores_of "$det"); default=${default%% *}
    for c in $classes; do
      for seed in $seeds; do
        tag="$det-c$c-s$seed${contam:+-p$contam}"
        [ -s "$out/$tag.json" ] || continue
        missing=
        for s in $(scores_for "$det"); do
          [ "$s" = "$default" ] || [ -s "$out/$tag.$s.json" ] || missing=1
        done
        [ -n "$missing" ] || continue
        "$vigil" eval --model "$out/$tag" --data "fashion-mnist:normal=$c" --score all \
          >"$out/$tag.all.tmp"
        python3 - "$out/$tag" "$out/$tag.all.tmp" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
for r in lines[1:]:  # the first is the bundle's own score, already in <tag>.json
    with open(f"{sys.argv[1]}.{r['score']}.json", "w") as f:
        json.dump(r, f)
PY
        rm "$out/$tag.all.tmp"
      done
    done
  done
fi

rows=()
for det in $detectors; do
  for s in $(scores_for "$det"); do rows+=("$det:$s"); done
done
python3 - "$out" "$epochs" "$size" "$contam" "${rows[@]}" -- $classes -- $seeds <<'PY'
import json, os, sys
out, epochs, size, contam = sys.argv[1:5]
rest = sys.argv[5:]
i = rest.index("--"); rows = [r.split(":") for r in rest[:i]]; rest = rest[i + 1:]
j = rest.index("--"); classes = rest[:j]; seeds = rest[j + 1:]
defaults = {}
for d, s in rows:
    defaults.setdefault(d, s)
suffix = f"-p{contam}" if contam else ""
print(f"Fashion-MNIST one-class image AUROC, {size}², {epochs} epochs, seeds {' '.join(seeds)}"
      + (f", training contamination {contam}" if contam else ""))
print()
print("| detector (score) | " + " | ".join(classes) + " | mean |")
print("| --- " * (len(classes) + 2) + "|")
for d, score in rows:
    cells, vals = [], []
    ext = "" if score == defaults[d] else f".{score}"
    for c in classes:
        runs = []
        for s in seeds:
            p = os.path.join(out, f"{d}-c{c}-s{s}{suffix}{ext}.json")
            if os.path.exists(p):
                r = json.load(open(p)); runs.append(r["image_auroc"])
        if runs:
            m = sum(runs) / len(runs); vals.append(m); cells.append(f"{m:.3f}")
        else:
            cells.append("–")
    mean = f"**{sum(vals) / len(vals):.3f}**" if len(vals) == len(classes) else "–"
    print(f"| {d} ({score}) | " + " | ".join(cells) + f" | {mean} |")
PY
