"""Training beside other programs: with and without cnnlab's ShareCpu (cnnlab/train/cpu_share.py).

Three scenarios on this machine, each with ``CNNLAB_SHARE_CPU=0`` (torch's threads, one per
core, as plain PyTorch runs) and with the default (ShareCpu on):

* ``alone``      one ``cnnlab train`` run, nothing else running (sharing must cost nothing);
* ``two runs``   two identical runs started together (a notebook beside a CLI run);
* ``busy loop``  one run beside a Python busy loop that wants one core.

Each run trains the built-in digits (written once to a temporary folder) for ``--epochs``
epochs; the figure is the median images/s of epochs 3 to the last (the first two hold the
switch), and the wall time of the whole command. Run it alone on the machine.

    .venv/bin/python benchmarks/bench_share_cpu.py                       # seed at 64 px and airbench_small at 32
    .venv/bin/python benchmarks/bench_share_cpu.py --models seed:64 --epochs 8
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CNNLAB = [sys.executable, "-m", "cnnlab"]


def train(data: Path, out: Path, model: str, size: int, epochs: int, share: bool) -> subprocess.Popen:
    env = {**os.environ, "CNNLAB_SHARE_CPU": "1" if share else "0"}
    env.pop("OMP_NUM_THREADS", None)
    name = f"{model}-{size}-{'share' if share else 'plain'}-{time.monotonic_ns()}"
    return subprocess.Popen([*CNNLAB, "train", str(data), "--model", model, "--img-size", str(size), "--epochs",
                             str(epochs), "--batch-size", "32", "--out", str(out), "--name", name, "--no-evaluate"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rate(out: Path, p: subprocess.Popen) -> float:
    run = out / p.args[p.args.index("--name") + 1]
    rows = list(csv.DictReader((run / "history.csv").open()))
    return statistics.median(float(r["images_per_s"]) for r in rows[2:])


def scenario(kind: str, data: Path, out: Path, model: str, size: int, epochs: int, share: bool) -> str:
    busy = None
    if kind == "busy loop":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    t0 = time.perf_counter()
    procs = [train(data, out, model, size, epochs, share) for _ in range(2 if kind == "two runs" else 1)]
    said = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(stderr)
        said.append(sum(line.strip().startswith("threads:") for line in stdout.splitlines()))
    wall = time.perf_counter() - t0
    if busy is not None:
        busy.kill()
    rates = [rate(out, p) for p in procs]
    shown = " + ".join(f"{r:,.0f}" for r in rates)
    return (f"| {model} {size} px | {kind} | {'on' if share else 'off'} | {shown} | {wall:.1f} | "
            f"{' + '.join(map(str, said))} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["seed:64", "airbench_small:32"], help="MODEL:SIZE")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    from cnnlab.train.demo import write_digits

    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits")
        out = Path(tmp) / "runs"
        out.mkdir()
        print(f"load before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; {args.epochs} epochs of the digits")
        print("| model | scenario | ShareCpu | train img/s (median of epochs 3+, per run) | wall s | thread changes |")
        print("|---|---|---|---:|---:|---:|")
        for spec in args.models:
            model, size = spec.split(":")
            for kind in ("alone", "two runs", "busy loop"):
                for share in (False, True):
                    print(scenario(kind, data, out, model, int(size), args.epochs, share), flush=True)


if __name__ == "__main__":
    main()
