#!/usr/bin/env bash
# `just bench-accuracy`: image AUROC of every detector on the Fashion-MNIST one-class tasks
# (train on class C, test on the whole test split), the protocol of docs/design.md.
#
#   bench/bench-accuracy.sh [DETECTORS] [CLASSES] [EPOCHS] [SEEDS]
#   e.g. bench/bench-accuracy.sh "ganomaly wild" "0 1 2 3 4 5 6 7 8 9" 2 "1 2"
#
# Env:
#   SIZE           image side (32)
#   DECODER        `vigil train --decoder` (deconv, the default, or upsample); give each its own OUT
#   CONTAMINATION  fraction of anomalies mixed into the training data (unset: clean)
#   OUT            where bundles and results go (runs/accuracy)
#   SCORES         "all", or score names like "residual origin": also evaluate these scores of
#                  every model (one `vigil eval --score all` pass, thresholds recalibrated);
#                  unset: only the bundle's default score
#   JOBS           runs in parallel (1). Each gets RAYON_NUM_THREADS = cores / JOBS unless set:
#                  on a 2-core machine two 1-thread runs side by side take about as long each as
#                  one 2-thread run alone, so JOBS=2 halves the table's wall time there
#   VIGIL          a prebuilt vigil binary (unset: build this checkout's)
#   REPORT_ONLY    set: run nothing, print the table of the runs already in $OUT ("–" for
#                  missing cells, and no mean for a row that lacks any)
#   VIGIL_ANOGAN_STEPS  AnoGAN's latent-search steps when scoring (500; hours on a CPU, see
#                  docs/benchmarks.md)
# Each run's eval JSON goes to $OUT/<det>-c<C>-s<seed>.json (other scores:
# <det>-c<C>-s<seed>.<score>.json); finished runs are skipped, so an interrupted table resumes.
# Prints a markdown table with the per-class AUROC and the mean per detector and score.
set -euo pipefail
cd "$(dirname "$0")/.."
detectors=${1:-"anogan egbad ganomaly alad fanogan gaae wild seg"}
classes=${2:-"0 1 2 3 4 5 6 7 8 9"}
epochs=${3:-2}
seeds=${4:-1}
size=${SIZE:-32}
decoder=${DECODER:-deconv}
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
    seg) echo "seg-max seg-topk residual" ;;
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
report_only=${REPORT_ONLY:-}
if [ -z "$vigil" ] && [ -z "$report_only" ]; then
  cargo build -q --release -p vigil-host
  vigil=target/release/vigil
fi

jobs=${JOBS:-1}
if [ "$jobs" -gt 1 ] && [ -z "${RAYON_NUM_THREADS:-}" ]; then
  per=$(( $(nproc) / jobs )); export RAYON_NUM_THREADS=$(( per > 0 ? per : 1 ))
fi

# One table cell: train (unless done), then evaluate: the default score alone, or with SCORES
# every score from one `vigil eval --score all` pass (AnoGAN's latent search is run once, not
# once per score).
run_one() {
  local det=$1 c=$2 seed=$3
  local tag="$det-c$c-s$seed${contam:+-p$contam}"
  local start default s missing=
  start=$(date +%s)
  default=$(scores_of "$det"); default=${default%% *}
  for s in $(scores_for "$det"); do
    if [ "$s" = "$default" ]; then [ -s "$out/$tag.json" ] || missing=1
    else [ -s "$out/$tag.$s.json" ] || missing=1; fi
  done
  [ -n "$missing" ] || return 0
  # A bundle is complete once its manifest is written (last, it hashes the other files), so a
  # run interrupted between training and eval only repeats the eval.
  if [ ! -s "$out/$tag/manifest.json" ]; then
    "$vigil" train --detector "$det" \
      --data "fashion-mnist:normal=$c${contam:+,contamination=$contam}" --image-size "$size" \
      --epochs "$epochs" --seed "$seed" --decoder "$decoder" --out "$out/$tag" >/dev/null
  fi
  local all=; [ -z "$want_scores" ] || all=1
  "$vigil" eval --model "$out/$tag" --data "fashion-mnist:normal=$c" ${all:+--score all} \
    >"$out/$tag.eval.tmp"
  # One JSON object per line, the bundle's own (default) score first.
  python3 -c '
import json, sys
tag, default = sys.argv[1], sys.argv[3]
for l in open(sys.argv[2]).read().splitlines():
    r = json.loads(l)
    s = r.get("score", default)
    json.dump(r, open(tag + ("" if s == default else "." + s) + ".json", "w"))
' "$out/$tag" "$out/$tag.eval.tmp" "$default"
  rm "$out/$tag.eval.tmp"
  echo "$tag: $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["image_auroc"], 4))' "$out/$tag.json") ($(( $(date +%s) - start )) s)" >&2
}
export -f run_one scores_of scores_for
export vigil out size epochs contam want_scores decoder

if [ -z "$report_only" ]; then
  for det in $detectors; do
    for c in $classes; do
      for seed in $seeds; do echo "$det $c $seed"; done
    done
  done | xargs -r -n 3 -P "$jobs" bash -c 'set -euo pipefail; run_one "$@"' _
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
