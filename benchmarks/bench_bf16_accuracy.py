"""Does bf16 autocast cost accuracy? The same runs in fp32 and bf16, seed for seed.

* digits: ``cnnlab demo`` (scikit-learn's digits, the demo CNN, 15 epochs), test accuracy;
* CIFAR-10: ``vgg_bn`` at 32 px on a subset (default /root/data/cifar10-small: 5,000 train,
  1,000 test), a short fixed number of epochs, test accuracy.

"Within noise" is judged against the spread between seeds of the same precision, printed
alongside.

    .venv/bin/python benchmarks/bench_bf16_accuracy.py --seeds 0,1 --cifar-epochs 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cifar", default="/root/data/cifar10-small", help="folder with train/ and test/")
    ap.add_argument("--cifar-epochs", type=int, default=4)
    ap.add_argument("--skip", default="", help="digits or cifar")
    args = ap.parse_args()
    from cnnlab.train.api import train
    from cnnlab.train.demo import demo

    work = Path(tempfile.mkdtemp(prefix="bf16-acc-"))
    print(f"{'task':<8} {'precision':<9} {'seed':>4} {'test acc':>9} {'val acc':>8} {'img/s':>7} {'wall s':>7}")
    for task in ("digits", "cifar"):
        if task in args.skip:
            continue
        for precision in ("fp32", "bf16"):
            for seed in (int(s) for s in args.seeds.split(",")):
                t0 = time.perf_counter()
                name = f"{task}-{precision}-{seed}"
                common = dict(precision=precision, seed=seed, name=name, verbose=False, device="cpu",
                              cache_dir=str(work / "cache"))
                if task == "digits":
                    run = demo(out=work / "runs", data=work / "digits", **common)
                else:
                    run = train(args.cifar, model="vgg_bn", epochs=args.cifar_epochs, img_size=32,
                                out=str(work / "runs"), **common)
                import json

                metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
                hist = run.history()
                rate = sum(float(h["images_per_s"]) for h in hist) / len(hist)
                print(f"{task:<8} {precision:<9} {seed:>4} {metrics['accuracy']:>9.4f} "
                      f"{float(hist[-1]['val_accuracy']):>8.4f} {rate:>7.0f} {time.perf_counter() - t0:>7.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
