"""Time and accuracy on CIFAR-10 (JPEG folders) with `cnnlab train`'s default settings.

For each time budget, one run of ``cnnlab.train(DATA, model=MODEL, time_limit=MINUTES)``:
the one-cycle schedule is fitted to the budget (see cnnlab.train.callbacks.TimeLimit), the
best weights (by val accuracy on the 20 % held out of train/) are evaluated on test/ at the
end. Decoding the 60,000 JPEGs happens once, before the clock starts, into the decode cache
(it is reported separately; later runs read the cache).

    mkdir -p /root/data && tar -xzf /work/shared/data/cifar10-jpg.tar.gz -C /root/data
    .venv/bin/python benchmarks/bench_cifar.py --data /root/data/cifar10 --minutes 10 20
    .venv/bin/python benchmarks/bench_cifar.py --minutes 1 --model vgg_bn      # a quick check

Prints one Markdown table row per budget, ready for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def one_run(data: str, model: str, minutes: float, out: str, extra: dict) -> dict:
    import cnnlab
    from cnnlab.run import Run

    name = f"cifar-{model}-{minutes:g}min-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    run = cnnlab.train(data, model=model, time_limit=minutes, epochs=200, out=out, name=name, **extra)
    wall = time.perf_counter() - t0
    history = Run(run.path).history()
    metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
    train_seconds = sum(h["seconds"] for h in history)
    return {
        "model": model, "minutes": minutes, "epochs": len(history),
        "train_minutes": train_seconds / 60, "wall_minutes": wall / 60,
        "images_per_s": sum(h["images_per_s"] for h in history) / len(history),
        "best_val_accuracy": max(h["val_accuracy"] for h in history), "test_acc": metrics["accuracy"],
        "run": str(run.path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/root/data/cifar10", help="cifar10 folder with train/ and test/")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 20], help="time budgets")
    ap.add_argument("--model", default="vgg_bn", help="a preset or model YAML (default: the default of cnnlab train)")
    ap.add_argument("--out", default="runs/bench", help="where the runs go")
    ap.add_argument("--batch-size", type=int, help="override the default batch size")
    ap.add_argument("--img-size", help="override the automatic image size (32 for CIFAR)")
    args = ap.parse_args()
    if not (Path(args.data) / "train").is_dir():
        raise SystemExit(f"{args.data}: no train/ folder; unpack cifar10-jpg.tar.gz first (see --help)")
    extra = {k: v for k, v in {"batch_size": args.batch_size, "img_size": args.img_size}.items() if v}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), cuda: {torch.cuda.is_available()}")
    rows = [one_run(args.data, args.model, m, args.out, extra) for m in args.minutes]
    print("\n| model | budget | epochs | training min | wall min | img/s | best val acc | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['minutes']:g} min | {r['epochs']} | {r['train_minutes']:.1f} | "
              f"{r['wall_minutes']:.1f} | {r['images_per_s']:.0f} | {r['best_val_accuracy']:.4f} | "
              f"{r['test_acc']:.4f} |")


if __name__ == "__main__":
    main()
