"""The photo sets the photo recipe is measured on, cut from Imagenette (no copies: links).

* ``imagenette``: Imagenette's own split, as the leaderboard uses it: its ``train`` folder
  trains (cnnlab draws its validation images from it) and its ``val`` folder is the test set.
* ``pair-<a>-<b>``: two classes, 2,000 photos drawn with a fixed seed from both of their
  folders: 1,600 train, 400 val, the rest test, the size of the sets users bring (Dogs vs Cats'
  2,000 photos in the lecture).

    python benchmarks/make_imagenette_sets.py --src ~/data/imagenette --dst ~/data/photo-sets
    python benchmarks/make_imagenette_sets.py --src ~/data/imagenette --dst ~/data/photo-sets --pairs 3
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

NAMES = {"n01440764": "tench", "n02102040": "springer", "n02979186": "cassette_player", "n03000684": "chain_saw",
         "n03028079": "church", "n03394916": "french_horn", "n03417042": "garbage_truck", "n03425413": "gas_pump",
         "n03445777": "golf_ball", "n03888257": "parachute"}


def link(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / f.name
        if not target.exists():
            os.symlink(f.resolve(), target)


def whole(src: Path, dst: Path) -> None:
    out = dst / "imagenette"
    for split, name in (("train", "train"), ("val", "test")):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            link(sorted(cls.iterdir()), out / name / NAMES.get(cls.name, cls.name))
    print(f"{out}: Imagenette's train as train, its val as test")


def pair(src: Path, dst: Path, classes: list[str], seed: int) -> None:
    out = dst / ("pair-" + "-".join(NAMES.get(c, c) for c in classes))
    rng = random.Random(seed)
    for cls in classes:
        files = sorted((src / "train" / cls).iterdir()) + sorted((src / "val" / cls).iterdir())
        rng.shuffle(files)
        name = NAMES.get(cls, cls)
        link(files[:800], out / "train" / name)
        link(files[800:1000], out / "val" / name)
        link(files[1000:], out / "test" / name)
    print(f"{out}: 1,600 train, 400 val, the rest test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="the unpacked imagenette folder (train/, val/)")
    ap.add_argument("--dst", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=2, help="how many 2-class sets to draw")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    whole(args.src, args.dst)
    rng = random.Random(args.seed)
    classes = sorted(p.name for p in (args.src / "train").iterdir() if p.is_dir())
    for i in range(args.pairs):
        pair(args.src, args.dst, sorted(rng.sample(classes, 2)), args.seed + i)


if __name__ == "__main__":
    main()
