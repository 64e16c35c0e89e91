"""CIFAR-10 with the airbench recipe (``cnnlab train DATA --recipe airbench``): accuracy and time.

One run per budget (``--minutes``) or one fixed-length run (``--epochs``), through the
public API, exactly what the command line does. Decoding the JPEGs happens once, before
the clock of ``--time-limit`` starts (later runs read the decode cache). The test split
(10,000 images) is evaluated at the end with the recipe's 6-view TTA; ``--no-tta-too``
skips the extra evaluation without TTA.

    flock /tmp/cnnlab-bench.lock .venv/bin/python benchmarks/bench_cifar_recipe.py --minutes 15 8
    flock /tmp/cnnlab-bench.lock .venv/bin/python benchmarks/bench_cifar_recipe.py --epochs 10
    .venv/bin/python benchmarks/bench_cifar_recipe.py --data /root/data/cifar10-small --epochs 10 --batch-size 256 --lr 0.375

Prints one Markdown row per run (and the per-epoch history), ready for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def one_run(data: str, out: str, tta_too: bool, **options) -> dict:
    import cnnlab
    from cnnlab.eval.evaluate import evaluate_run
    from cnnlab.run import Run

    budget = f"{options['time_limit']:g}min" if options.get("time_limit") else f"{options.get('epochs')}ep"
    name = f"cifar-airbench-{budget}-{time.strftime('%Y%m%d-%H%M%S')}"
    load_before = load()
    t0 = time.perf_counter()
    run = cnnlab.train(data, recipe="airbench", out=out, name=name, **options)
    wall = time.perf_counter() - t0
    history = Run(run.path).history()
    for h in history:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}), flush=True)
    metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
    plain = evaluate_run(run, split="test", weights="last", tta=False, report=False)["accuracy"] if tta_too else None
    return {"budget": budget, "epochs": len(history), "train_minutes": sum(h["seconds"] for h in history) / 60,
            "wall_minutes": wall / 60, "images_per_s": sum(h["images_per_s"] for h in history) / len(history),
            "test_acc_tta": metrics["accuracy"], "test_acc": plain, "run": str(run.path),
            "load": f"{load_before} -> {load()}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/root/data/cifar10", help="cifar10 folder with train/ and test/")
    ap.add_argument("--minutes", type=float, nargs="*", default=[], help="time budgets (--time-limit)")
    ap.add_argument("--epochs", type=int, help="a fixed number of epochs instead of a budget")
    ap.add_argument("--precision", default="bf16", help="fp32, bf16 or auto (default bf16)")
    ap.add_argument("--batch-size", type=int, help="override the recipe's 1024 (scale --lr with it)")
    ap.add_argument("--lr", type=float, help="override the recipe's 1.5 (at batch 1024)")
    ap.add_argument("--model", help="another preset or spec file in place of the recipe's")
    ap.add_argument("--out", default="runs/bench", help="where the runs go")
    ap.add_argument("--no-tta-too", action="store_true", help="skip the evaluation without TTA")
    args = ap.parse_args()
    if not (Path(args.data) / "train").is_dir():
        raise SystemExit(f"{args.data}: no train/ folder")
    extra = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr, "precision": args.precision,
                                 "model": args.model}.items() if v}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load {load()}", flush=True)
    plans = [{"time_limit": m} for m in args.minutes] or [{"epochs": args.epochs or 10}]
    rows = [one_run(args.data, args.out, not args.no_tta_too, **plan, **extra) for plan in plans]
    print("\n| budget | epochs | training min | wall min | img/s | test acc (6-view TTA) | test acc (no TTA) | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        plain = f"{r['test_acc']:.4f}" if r["test_acc"] is not None else "-"
        print(f"| {r['budget']} | {r['epochs']} | {r['train_minutes']:.1f} | {r['wall_minutes']:.1f} | "
              f"{r['images_per_s']:.0f} | {r['test_acc_tta']:.4f} | {plain} | {r['load']} |")


if __name__ == "__main__":
    main()
