#!/usr/bin/env bash
# `just bench-real`: detectors on real photographs of surfaces (docs/benchmarks.md, "Real
# surfaces"). Builds the datasets (bench/make_real.py: 128² grey crops of photographs from
# Debian's ufoai-textures, train and test crops from disjoint regions, defects with pixel
# masks from PyPI's defect-synthesis, MVTec layout), trains every detector on every category
# with `vigil train --data folder:...`, evaluates with `vigil eval`, and prints one table:
# image AUROC, pixel AUROC, AUPRO and training wall time per category, and the mean.
#
#   bench/bench-real.sh [DETECTORS] [CATEGORIES] [EPOCHS] [SIZE]
#   e.g. bench/bench-real.sh "ganomaly gaae" "bricks gravel wood" 20 64
#
# Thresholds and every other setting come from training data only: `vigil train` calibrates
# on a held-out tenth of train/good and keeps the last epoch; the test split is read only by
# `vigil eval`, and AUROC / AUPRO need no threshold.
#
# Env:
#   MODE         whole (default): the model sees the whole 128² crop resized to SIZE². patch:
#                the crops stay at their native 128², the model trains on random SIZE² patches
#                of them (`vigil train --patch SIZE`) and scores each image as overlapping tiles
#                (stride SIZE/2) with the maps stitched at 128²; results of each mode live in
#                their own cells
#   CROPS        patch mode: random patches per image and epoch (default: as many as fit
#                without overlap, (128/SIZE)²)
#   ALL_SCORES   set: also `vigil eval --score all` per cell (OUT/results/<tag>.all.jsonl: every
#                detector score and map score, one JSON line each)
#   SEEDS        training seeds (1); with several, each cell is the mean ± the standard
#                deviation over them
#   DECODER      `vigil train --decoder`: deconv (default) or upsample; upsample cells are
#                tagged `-upsample` after the size
#   DATA_SEED    seed of the crop positions and defects (0)
#   OUT          where data, bundles and results go (runs/bench-real)
#   VENV         Python venv for the dataset builder (OUT/venv, made by bench/setup-real-venv.sh)
#   JOBS         runs in parallel (1); each gets RAYON_NUM_THREADS = cores / JOBS unless set
#   VIGIL        a prebuilt vigil binary (unset: build this checkout's)
#   REPORT_ONLY  set: run nothing, print the table of the cells already in OUT
# A cell's eval JSON is OUT/results/<det>-<category>-<mode>-<size>[-c<crops>]-e<epochs>-s<seed>.json and its
# training time .train.json beside it; finished cells are skipped, so an interrupted table
# resumes. Bundles are in OUT/models/<same tag>.
set -euo pipefail
cd "$(dirname "$0")/.."
detectors=${1:-"ganomaly anogan egbad alad fanogan gaae wild"}
categories=${2:-"bricks gravel wood"}
epochs=${3:-20}
size=${4:-64}
mode=${MODE:-whole}
seeds=${SEEDS:-1}
data_seed=${DATA_SEED:-0}
out=${OUT:-runs/bench-real}
venv=${VENV:-$out/venv}
report_only=${REPORT_ONLY:-}
data="$out/data-s$data_seed"

case $mode in
  whole | patch) ;;
  *) echo "bench-real: MODE must be whole or patch, not $mode" >&2; exit 2 ;;
esac
crops=${CROPS:-}
decoder=${DECODER:-deconv}
case $decoder in
  deconv) variant="" ;;
  upsample) variant="-upsample" ;;
  *) echo "bench-real: DECODER must be deconv or upsample, not $decoder" >&2; exit 2 ;;
esac
all_scores=${ALL_SCORES:-}

# The photographs: ufoai-textures 2.5-2 (UFO: Alien Invasion's textures, Debian main, GPL-2 /
# GPL-2+ for the three files used), fetched with apt-get download and unpacked without
# installing. make_real.py checks each photograph's sha256.
deb_version=2.5-2
deb_sha256=51c9c6a778249a3fa432c81c8c30ac5675ae5a1e675a33b0ce04545753d3218c
fetch_textures() {
  local cache="$out/debs" pk3="$out/debs/root/usr/share/games/ufoai/base/0textures.pk3"
  if [ ! -s "$pk3" ]; then
    mkdir -p "$cache"
    local deb="$cache/ufoai-textures_${deb_version}_all.deb"
    if [ ! -s "$deb" ]; then
      echo "bench-real: apt-get download ufoai-textures=$deb_version (336 MB)" >&2
      (cd "$cache" && apt-get download "ufoai-textures=$deb_version" >&2) || {
        echo "bench-real: apt-get download failed; run apt-get update first, or put" \
          "ufoai-textures_${deb_version}_all.deb in $cache" >&2
        exit 1
      }
    fi
    echo "$deb_sha256  $deb" | sha256sum -c --quiet - ||
      { echo "bench-real: $deb is not the pinned ufoai-textures $deb_version" >&2; exit 1; }
    dpkg -x "$deb" "$cache/root"
  fi
  echo "$pk3"
}

vigil=${VIGIL:-}
if [ -z "$report_only" ]; then
  VENV="$venv" bash bench/setup-real-venv.sh
  pk3=$(fetch_textures)
  # shellcheck disable=SC2086
  "$venv/bin/python" bench/make_real.py --pk3 "$pk3" --out "$data" --seed "$data_seed" \
    --categories $categories
  if [ -z "$vigil" ]; then
    cargo build -q --release -p vigil-host
    vigil=target/release/vigil
  fi
fi

jobs=${JOBS:-1}
if [ "$jobs" -gt 1 ] && [ -z "${RAYON_NUM_THREADS:-}" ]; then
  per=$(( $(nproc) / jobs )); export RAYON_NUM_THREADS=$(( per > 0 ? per : 1 ))
fi
mkdir -p "$out/results" "$out/models"

# One cell: train (unless its bundle is complete), timing it, then evaluate on the test split.
run_one() {
  local det=$1 cat=$2 seed=$3
  local tag="$det-$cat-$mode-$size${crops:+-c$crops}$variant-e$epochs-s$seed"
  local res="$out/results/$tag" bundle="$out/models/$tag"
  [ -s "$res.json" ] && return 0
  # A bundle is complete once its manifest is written (last), so a run interrupted between
  # training and eval only repeats the eval.
  if [ ! -s "$bundle/manifest.json" ] || [ ! -s "$res.train.json" ]; then
    local t0 t1
    t0=$(date +%s.%N)
    # Eval follows the bundle's geometry (whole image or tiles) by itself.
    local geometry=(--image-size "$size")
    if [ "$mode" = patch ]; then
      geometry=(--image-size native --patch "$size")
      [ -n "$crops" ] && geometry+=(--crops "$crops")
    fi
    "$vigil" train --detector "$det" --data "folder:$data/$cat" "${geometry[@]}" \
      --channels 1 --epochs "$epochs" --seed "$seed" --decoder "$decoder" --out "$bundle" \
      2>"$res.train.log" ||
      { echo "bench-real: training $tag failed:" >&2; tail -n 5 "$res.train.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c 'import json,sys; json.dump({"train_seconds": float(sys.argv[2]) - float(sys.argv[1])}, open(sys.argv[3], "w"))' \
      "$t0" "$t1" "$res.train.json"
  fi
  if [ -n "$all_scores" ]; then
    # Every score of the detector and every map score, each with its own threshold from
    # held-out normals: reported side by side, none picked on the test split.
    "$vigil" eval --model "$bundle" --data "folder:$data/$cat" --score all >"$res.all.jsonl.tmp"
    mv "$res.all.jsonl.tmp" "$res.all.jsonl"
  fi
  "$vigil" eval --model "$bundle" --data "folder:$data/$cat" >"$res.json.tmp"
  mv "$res.json.tmp" "$res.json"
  echo "$tag: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("image", round(r["image_auroc"], 3), "pixel", round(r["pixel_auroc"], 3))' "$res.json") (train $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["train_seconds"]))' "$res.train.json") s)" >&2
}
export -f run_one
export vigil out data size epochs mode crops all_scores decoder variant

if [ -z "$report_only" ]; then
  for det in $detectors; do
    for cat in $categories; do
      for seed in $seeds; do echo "$det $cat $seed"; done
    done
  done | xargs -r -n 3 -P "$jobs" bash -c 'set -euo pipefail; run_one "$@"' _
fi

# shellcheck disable=SC2086
python3 - "$out/results" "$mode" "$size" "$epochs" "$data_seed" "${crops:+-c$crops}$variant" -- $detectors -- $categories -- $seeds <<'PY'
import json, os, sys
res, mode, size, epochs, data_seed, crops = sys.argv[1:7]
rest = sys.argv[8:]
i = rest.index("--"); dets = rest[:i]; rest = rest[i + 1:]
j = rest.index("--"); cats = rest[:j]; seeds = rest[j + 1:]
geometry = (f"{size}² model input from 128² crops" if mode == "whole"
            else f"{size}² patches of the native 128² crops, stride {int(size) // 2}, maps stitched at 128²")
decoder = "upsample decoder, " if "-upsample" in crops else ""
print(f"Real surfaces (bench-real): {mode} mode, {geometry}, {decoder}{epochs} epochs, "
      f"training seeds {' '.join(seeds)}, data seed {data_seed}")
print()
if len(seeds) > 1:
    print("Each cell: the mean over the training seeds ± their standard deviation (the mean row: "
          "of each seed's mean over the categories, over the seeds that finished every category).")
    print()
print("| detector | category | image AUROC | pixel AUROC | AUPRO | train s |")
print("| --- | --- | --- | --- | --- | --- |")
keys = ["image_auroc", "pixel_auroc", "pixel_aupro", "train_seconds"]

def cell(vals, digits):
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return f"{m:.{digits}f}"
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{m:.{digits}f} ± {sd:.{digits}f}"

for d in dets:
    per = {}
    for c in cats:
        for s in seeds:
            p = os.path.join(res, f"{d}-{c}-{mode}-{size}{crops}-e{epochs}-s{s}")
            if os.path.exists(p + ".json") and os.path.exists(p + ".train.json"):
                r = json.load(open(p + ".json")); r.update(json.load(open(p + ".train.json")))
                per.setdefault(c, {})[s] = r
        if c in per:
            runs = list(per[c].values())
            cells = [cell([r[k] for r in runs], 3) for k in keys[:3]]
            cells.append(cell([r[keys[3]] for r in runs], 0))
            if len(runs) < len(seeds):
                cells[-1] += f" ({len(runs)} of {len(seeds)} seeds)"
        else:
            cells = ["–"] * 4
        print(f"| {d} | {c} | " + " | ".join(cells) + " |")
    full = [s for s in seeds if all(s in per.get(c, {}) for c in cats)]
    if full:
        means = {k: [sum(per[c][s][k] for c in cats) / len(cats) for s in full] for k in keys}
        m = [cell(means[k], 3) for k in keys[:3]]
        tail = "" if len(full) == len(seeds) else f" ({len(full)} of {len(seeds)} seeds)"
        print(f"| **{d}** | **mean** | **{m[0]}** | **{m[1]}** | **{m[2]}** | "
              f"{cell(means[keys[3]], 0)}{tail} |")
    else:
        print(f"| **{d}** | **mean** | – | – | – | – |")

# ALL_SCORES cells: every score side by side (each thresholded on held-out normals; none is
# picked here, the test split only measures them). Pixel AUROC belongs to the score's map.
for d in dets:
    table = {}
    for c in cats:
        for s in seeds:
            p = os.path.join(res, f"{d}-{c}-{mode}-{size}{crops}-e{epochs}-s{s}.all.jsonl")
            if not os.path.exists(p):
                continue
            for line in open(p):
                r = json.loads(line)
                table.setdefault(r["score"], {}).setdefault(c, []).append(r)
    if not table:
        continue
    print()
    print(f"{d}, every score (`vigil eval --score all`), image AUROC / pixel AUROC:")
    print()
    print("| score | " + " | ".join(cats) + " | mean |")
    print("| --- |" + " --- |" * (len(cats) + 1))
    for name, per in table.items():
        cells, im, px = [], [], []
        for c in cats:
            rs = per.get(c, [])
            if not rs:
                cells.append("–"); continue
            i = sum(r["image_auroc"] for r in rs) / len(rs)
            q = sum(r["pixel_auroc"] or 0 for r in rs) / len(rs)
            im.append(i); px.append(q); cells.append(f"{i:.3f} / {q:.3f}")
        mean = f"{sum(im)/len(im):.3f} / {sum(px)/len(px):.3f}" if len(im) == len(cats) else "–"
        print(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
PY
