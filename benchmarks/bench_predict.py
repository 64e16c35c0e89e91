"""Prediction and evaluation throughput on CIFAR-10 JPEGs (images per second).

For a model at 32x32 (untrained weights: speed does not depend on what was learned) it
prints, over the same files:

  one by one    a loop that decodes one file and runs the model on it (a tutorial's
                `for f in files: model.predict(load(f))`)
  decode only   Preprocessor.load_batch over all files (no model); then with one thread
                per CPU side by side, as predict decodes when the model is on a GPU
  model only    forward passes over already-decoded tensors, batch 64
  predict       cnnlab.predict: batches of 64, the next batch decoded in a background
                thread while the model runs on this one; also with --tta
  evaluate      cnnlab.evaluate on the same files as a test split: inference, metrics,
                predictions.csv, three figures and the report

If `predict` is close to max(decode, model) rather than their sum, the overlap works.

    .venv/bin/python benchmarks/bench_predict.py                    # 2000 test images
    .venv/bin/python benchmarks/bench_predict.py --n 10000 --model resnet_small

Needs /root/data/cifar10 (see the README's benchmark note); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from cnnlab.data.normalize import Normalization
from cnnlab.eval.evaluate import evaluate_run
from cnnlab.eval.predict import predict
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model
from cnnlab.run import Run


def make_run(root: Path, model_name: str, files: list[tuple[str, int]], classes: list[str]) -> Path:
    """A run directory with an untrained model and `files` as its test split."""
    model = build_model(model_name, input=(32, 32, 3), classes=len(classes), seed=0).eval()
    run = root / "runs" / "bench"
    meta = {"spec": model.spec.to_dict(), "classes": classes, "input": [32, 32, 3], "resize": "stretch",
            "normalization": Normalization.rescale(3).to_dict(), "epoch": 0, "metric": {}}
    save_weights(run / "weights" / "best.safetensors", model, meta)
    (run / "classes.json").write_text(json.dumps(classes))
    (run / "split.json").write_text(json.dumps({"test": [[p, y] for p, y in files]}))
    return run


def timed(label: str, n: int, fn, repeat: int = 1) -> float:
    """Best of `repeat` runs: on a shared machine the fastest run is the least disturbed."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    seconds = min(runs)
    print(f"{label:<28} {n / seconds:>9,.0f} images/s   ({seconds:.2f} s, best of {repeat})")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/root/data/cifar10/test")
    ap.add_argument("--n", type=int, default=2000, help="number of test images (10000 at most)")
    ap.add_argument("--model", default="tinyvgg")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per figure")
    args = ap.parse_args()

    data = Path(args.data)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    per_class = [sorted((data / c).glob("*.jpg")) for c in classes]
    files = [(str(f), y) for i in range(max(map(len, per_class)))
             for y, fs in enumerate(per_class) if i < len(fs) for f in [fs[i]]][:args.n]
    n = len(files)
    print(f"{n} CIFAR-10 JPEGs, model {args.model} at 32x32, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp), args.model, files, classes)
        run = Run(run_dir)
        model, meta = run.load_model("best", device=args.device)
        pre = run.preprocessor(meta)
        paths = [p for p, _ in files]

        @torch.inference_mode()
        def one_by_one():
            for p in paths[:300]:
                model.probabilities(model(pre.load(p)[None].to(args.device)))

        r = args.repeat
        timed("one by one (300 images)", min(n, 300), one_by_one, r)
        batch = {}
        timed("decode only", n, lambda: batch.update(x=pre.load_batch(paths)[0]), r)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # as predict does beside a GPU
            timed(f"decode only, {os.cpu_count()} threads", n, lambda: pre.load_batch(paths, pool), r)

        @torch.inference_mode()
        def model_only():
            x = batch["x"]
            for i in range(0, len(x), 64):
                model.probabilities(model(x[i:i + 64].to(args.device)))

        timed("model only (batch 64)", n, model_only, r)
        timed("predict (batch 64)", n, lambda: predict(run, paths, top_k=3, device=args.device), r)
        timed("predict --tta", n, lambda: predict(run, paths, top_k=3, tta=True, device=args.device), r)
        timed("evaluate (with figures)", n, lambda: evaluate_run(run, "test", device=args.device), r)


if __name__ == "__main__":
    main()
