"""Photo-sized stand-ins for the issue's Dogs-vs-Cats and potato-leaf sets, made from CIFAR-10.

The machine has no photo sets and nothing may be downloaded, so these are CIFAR-10 images
blown up (bicubic) to photo sizes, in the shapes of the real sets, to check that
``cnnlab train DATA --time-limit M`` chooses image size, batch, sampling and metric from
the data as it should (they are blurrier than photos: accuracies are not the real sets'):

* ``catdog``: cat and dog, 1,000 train + 1,000 test each, 256x256 (Dogs vs Cats' 2,000
  training photos, the lecture's set);
* ``leaf3``: three classes with one small one, as PlantVillage's potato leaves (1,000
  early blight, 1,000 late blight, 152 healthy): airplane 1,000, ship 1,000, bird 152
  (test 300 / 300 / 45), 256x256.

    python benchmarks/make_photo_standins.py --src ~/data/cifar10 --dst ~/data/standins
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

SETS = {
    "catdog": {"cat": (1000, 1000), "dog": (1000, 1000)},
    "leaf3": {"airplane": (1000, 300), "ship": (1000, 300), "bird": (152, 45)},
}


def make(src: Path, dst: Path, size: int) -> None:
    for name, classes in SETS.items():
        for cls, counts in classes.items():
            for split, count in zip(("train", "test"), counts):
                out = dst / name / split / cls
                out.mkdir(parents=True, exist_ok=True)
                for f in sorted((src / split / cls).iterdir())[:count]:
                    target = out / f.name
                    if not target.exists():
                        Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC).save(target, quality=90)
        print(f"{dst / name}: " + ", ".join(f"{c} {n[0]}+{n[1]}" for c, n in classes.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path.home() / "data" / "cifar10")
    ap.add_argument("--dst", type=Path, default=Path.home() / "data" / "standins")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    make(args.src, args.dst, args.size)


if __name__ == "__main__":
    main()
