"""Builds the `just bench-real` datasets: 128² grayscale crops of real photographs of surfaces,
MVTec AD layout, with defects drawn by the third-party `defect-synthesis` package.

    python bench/make_real.py --pk3 PATH/0textures.pk3 --out DIR [--seed 0] [--categories ...]

The photographs come from Debian's `ufoai-textures` package (UFO: Alien Invasion, section
games): one PK3 (a zip) that bench/bench-real.sh downloads with `apt-get download` and unpacks
with `dpkg -x`. Every photograph is checked against the sha256 below, so a different package
version fails loudly instead of silently changing the benchmark.

Per category, from one photograph:
- the photograph (grey, PIL's ITU-R 601-2 luma) is cut at 70 % of its usable height: crops of
  the **train region** (the rows above the cut) and of the **test region** (the rows below)
  never share a pixel, so a test crop is never a shifted copy of a training crop;
- 240 good training crops, 60 good test crops and 60 defective test crops (12 each of scratch,
  crack, stain, pit, burn), 128 × 128, at positions drawn uniformly inside their region;
  crops of one split overlap each other, as patches of one surface do;
- each defective crop gets one defect from `defect-synthesis`'s generator of that type, with
  size ranges scaled to a 128² crop, and its mask from the generator (0/255), kept only when
  it covers at least 12 pixels (otherwise the draw is repeated with the next seed).

Everything is seeded: the same seed gives byte-identical PNGs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import zipfile
from pathlib import Path

import cv2
import defect_synthesis as ds
import numpy as np
from PIL import Image

CROP = 128
N_TRAIN = 240
N_TEST_GOOD = 60
N_TEST_BAD = 60
TRAIN_FRACTION = 0.7
MIN_MASK_PIXELS = 12

# name: (file in the PK3, sha256 of that file, licence in debian/copyright, usable box
# (x0, y0, x1, y1) in pixels, character). The brick photograph's bottom 48 rows show the
# ground in front of the wall, not bricks: left out.
CATEGORIES = {
    "bricks": (
        "textures/tex_mattn/wall_bricks006.png",
        "fb729e7e8213d0a9fde0fc59d7e536bb7c445a3f157b587c96c6938cb025331f",
        "GPL-2+",
        (0, 0, 1024, 976),
        "regular",
    ),
    "gravel": (
        "textures/tex_ctp1/concrete_g_10.jpg",
        "eae9d4eebc3669cb90f3965c91646d435e4d989862d96d96b672d2435f8b9088",
        "GPL-2",
        (0, 0, 1024, 1024),
        "stochastic",
    ),
    "wood": (
        "textures/tex_mattn/wood008.jpg",
        "4ab2501d60c55c198c8be39c584143ed2f3d11d965b4092e00541a7bebe843e0",
        "GPL-2+",
        (0, 0, 840, 923),
        "oriented",
    ),
}

DEFECTS = ["scratch", "crack", "stain", "pit", "burn"]


def generator(kind: str):
    """defect-synthesis generators with sizes for a 128² crop (their defaults are for
    ~512² part photos: a 60-pixel burn radius would not fit)."""
    if kind == "scratch":
        return ds.ScratchGenerator(stroke_count_range=(1, 3), length_range=(25, 80),
                                   width_range=(1, 3))
    if kind == "crack":
        return ds.CrackGenerator(base_length_range=(30, 90), base_width_range=(1, 3),
                                 max_branches=3, roughness=2.0)
    if kind == "stain":
        return ds.StainGenerator(radius_range=(8, 22), opacity_range=(0.45, 0.75))
    if kind == "pit":
        return ds.PittingGenerator(cluster_size_range=(4, 12), pit_radius_range=(1, 4),
                                   spread_radius=14)
    if kind == "burn":
        return ds.BurnGenerator(radius_range=(6, 16))
    raise ValueError(kind)


def load_photo(pk3: zipfile.ZipFile, name: str, member: str, sha: str) -> np.ndarray:
    data = pk3.read(member)
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        sys.exit(f"make_real: {member} ({name}) has sha256 {got}, expected {sha}: another "
                 f"ufoai-textures version? The benchmark is defined on 2.5-2.")
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def positions(rng: np.random.Generator, box: tuple[int, int, int, int], n: int):
    """n top-left corners of CROP² windows inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if x1 - x0 < CROP or y1 - y0 < CROP:
        sys.exit(f"make_real: region {box} is smaller than a {CROP}² crop")
    xs = rng.integers(x0, x1 - CROP + 1, n)
    ys = rng.integers(y0, y1 - CROP + 1, n)
    return list(zip(xs.tolist(), ys.tolist()))


def crop(photo: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    x, y = at
    return photo[y:y + CROP, x:x + CROP].copy()


def add_defect(clean: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One defect of `kind` on a grey crop: (image, mask 0/255, seed used). The generators
    draw from Python's and NumPy's global generators, so both are seeded per crop."""
    gen = generator(kind)
    for attempt in range(100):
        s = seed + attempt * 7_919
        random.seed(s)
        np.random.seed(s % 2**32)
        res = gen.apply(cv2.cvtColor(clean, cv2.COLOR_GRAY2BGR))
        mask = (res.anomaly_mask > 0).astype(np.uint8) * 255
        if int(np.count_nonzero(mask)) >= MIN_MASK_PIXELS:
            return cv2.cvtColor(res.image, cv2.COLOR_BGR2GRAY), mask, s
    sys.exit(f"make_real: no {kind} with a mask of {MIN_MASK_PIXELS}+ pixels in 100 draws")


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, optimize=False)


def build(photo: np.ndarray, name: str, box, out: Path, seed: int) -> dict:
    x0, y0, x1, y1 = box
    cut = y0 + int(round((y1 - y0) * TRAIN_FRACTION))
    train_box, test_box = (x0, y0, x1, cut), (x0, cut, x1, y1)
    # One generator per category and seed: adding a category does not move another's crops.
    rng = np.random.default_rng([seed, sum(name.encode())])
    for i, at in enumerate(positions(rng, train_box, N_TRAIN)):
        save(out / "train" / "good" / f"{i:03}.png", crop(photo, at))
    test_at = positions(rng, test_box, N_TEST_GOOD + N_TEST_BAD)
    for i, at in enumerate(test_at[:N_TEST_GOOD]):
        save(out / "test" / "good" / f"{i:03}.png", crop(photo, at))
    per_type = N_TEST_BAD // len(DEFECTS)
    mask_px = {}
    for j, at in enumerate(test_at[N_TEST_GOOD:]):
        kind, k = DEFECTS[j % len(DEFECTS)], j // len(DEFECTS)
        if k >= per_type:
            break
        defect_seed = (seed * 1_000_003 + sum(name.encode()) * 10_007 + 1000 * j) % 2**31
        img, mask, _ = add_defect(crop(photo, at), kind, defect_seed)
        save(out / "test" / kind / f"{k:03}.png", img)
        save(out / "ground_truth" / kind / f"{k:03}_mask.png", mask)
        mask_px.setdefault(kind, []).append(int(np.count_nonzero(mask)))
    return {
        "train_region": list(train_box),
        "test_region": list(test_box),
        "mean_mask_pixels": {k: round(sum(v) / len(v), 1) for k, v in mask_px.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pk3", required=True, type=Path, help="ufoai-textures' 0textures.pk3")
    ap.add_argument("--out", required=True, type=Path, help="one MVTec folder per category")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    a = ap.parse_args()
    with zipfile.ZipFile(a.pk3) as pk3:
        for name in a.categories:
            if name not in CATEGORIES:
                sys.exit(f"make_real: unknown category {name} (have {', '.join(CATEGORIES)})")
            member, sha, licence, box, character = CATEGORIES[name]
            out = a.out / name
            if (out / "info.json").exists():
                print(f"{out}: already built", file=sys.stderr)
                continue
            for sub in ["train", "test", "ground_truth"]:
                if (out / sub).exists():
                    sys.exit(f"make_real: {out / sub} exists without info.json (an interrupted "
                             f"build?): remove {out} and run again")
            photo = load_photo(pk3, name, member, sha)
            info = build(photo, name, box, out, a.seed)
            info.update({
                "category": name, "character": character, "seed": a.seed,
                "source": f"Debian ufoai-textures 2.5-2, {member}", "licence": licence,
                "photo_size": [int(photo.shape[1]), int(photo.shape[0])], "crop": CROP,
                "train_good": N_TRAIN, "test_good": N_TEST_GOOD, "test_defective": N_TEST_BAD,
                "defects": DEFECTS, "defect_generator": f"defect-synthesis {ds.__version__}",
            })
            (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
            print(f"{out}: {json.dumps(info)}", file=sys.stderr)


if __name__ == "__main__":
    main()
