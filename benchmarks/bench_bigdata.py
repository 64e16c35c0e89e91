"""Data larger than the memory: training speed, memory and decode time as the data set grows.

For training sets of 10,000 to 200,000 generated 32x32 JPEGs (10 classes, a class-dependent
stripe pattern with random phase, tint and noise; written once with a fixed seed under
/tmp/bigdata and reused), each size trains `tinyvgg` at 32 px in a child process
(`cnnlab.train`: augmentation off, batch 128, fp32, 2 decode workers, no validation) in
three settings:

  ram          the cache file stays in the page cache (--shuffle full); 2 epochs. Its cache
               is built afresh, so this run also gives the first epoch's decode time
  cold-full    the cache file's pages are dropped at the start of every epoch
               (fdatasync, then posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)); --shuffle
               full: every image is read from the disk, one small read each; 1 epoch
  cold-block   the same drop; --shuffle block (windows of 8 blocks of 16 MiB, the next
               window read ahead); 1 epoch

and, at the largest size, "ram-mmap": the batches indexed out of the memory map as
cnnlab did before it read rows with preadv (cnnlab.data.rows.HAS_PREAD set False in the
child), for the memory that held. "read-full" and "read-block" time the loader alone
(make_loader on the cached file, pages dropped, one epoch of batches read and nothing
trained): what the order costs the disk, without the training's noise.

Printed per run: the decode time (ms per 1,000 images, when the run built the cache),
training images/s per epoch (the loop's own figure: batches read and trained, validation
and checkpoints left out), and the peaks of the training process's RSS (VmRSS, and its
anonymous and file-backed parts, RssAnon and RssFile) and of the process tree's PSS (the
child and its decode workers, summed from /proc/<pid>/smaps_rollup), sampled every 0.1 s,
split into the set-up (decoding) and the training.

Dropping the pages at the start of each epoch models a data set several times larger than
the memory, where an epoch's reads evict the previous epoch's pages long before they are
needed again. Within the epoch the pages read stay cached, which flatters the full shuffle
a little (two images sharing a 4 KiB page are read once). The disk here may be a virtual
one whose reads the host caches: the script measures it first (sequential MB/s, random
4 KiB reads/s on a cold 256 MiB file) so that the figures can be scaled to another disk.

Run it alone (check `uptime` first); about 10 minutes on 2 cores:

    .venv/bin/python benchmarks/bench_bigdata.py                     # 10k, 50k, 100k, 200k
    .venv/bin/python benchmarks/bench_bigdata.py --sizes 10000,20000 --settings ram,cold-block
    .venv/bin/python benchmarks/bench_bigdata.py --clean             # delete /tmp/bigdata
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import cnnlab.data.loader as loader_mod
from cnnlab.data.datasets import discover
from cnnlab.train import Callback, train

SETTINGS = {  # name: (--shuffle, drop pages each epoch, epochs, memory map, read the batches only)
    "ram": ("full", False, 2, False, False),
    "cold-full": ("full", True, 1, False, False),
    "cold-block": ("block", True, 1, False, False),
    "ram-mmap": ("full", False, 1, True, False),  # the largest size only
    "read-full": ("full", True, 1, False, True),
    "read-block": ("block", True, 1, False, True),
}
CLASSES = 10
SIZE = 32


# -- the images ---------------------------------------------------------------------------------


def picture(i: int) -> np.ndarray:
    """Image i: stripes at an angle set by its class (i % 10), random phase, tint and noise."""
    rng = np.random.default_rng([7, i])
    angle = math.pi * (i % CLASSES) / CLASSES
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 0.6 + rng.uniform(0, 2 * math.pi))
    tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    img = (0.5 + 0.35 * wave)[..., None] * tint * 255 + rng.normal(0, 18, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def image_path(root: Path, i: int) -> Path:
    return root / "images" / f"{i // 1000:03d}" / f"{i:06d}.jpg"


def _write_range(args) -> None:
    root, start, stop = args
    for i in range(start, stop):
        p = image_path(root, i)
        if not p.is_file():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture(i)).save(p, quality=90)


def make_images(root: Path, n: int) -> None:
    """Images 0..n-1 (the ones already there are kept); a CSV of the first k for each size."""
    marker = root / "images" / "count"
    have = int(marker.read_text()) if marker.is_file() else 0
    if have < n:
        t0 = time.perf_counter()
        chunks = [(root, s, min(s + 2000, n)) for s in range(have - have % 2000, n, 2000)]
        with mp.get_context("fork").Pool(2) as pool:
            pool.map(_write_range, chunks)
        marker.write_text(str(n))
        print(f"wrote images {have:,}..{n:,} in {time.perf_counter() - t0:.0f} s", flush=True)


def write_csv(root: Path, n: int) -> Path:
    path = root / "sets" / f"train-{n}.csv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("path,label\n" + "".join(f"{image_path(root, i)},c{i % CLASSES}\n" for i in range(n)))
    return path


# -- the disk -----------------------------------------------------------------------------------


def drop_pages(path: Path) -> None:
    """Write back, then drop, the page cache's copy of a file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure_disk(root: Path) -> str:
    """Sequential MB/s and random 4 KiB reads/s on a 256 MiB file whose pages were dropped."""
    path = root / "disk-probe.bin"
    size = 256 * 2**20
    if not path.is_file() or path.stat().st_size != size:
        with open(path, "wb") as f:
            for _ in range(size // 2**24):
                f.write(os.urandom(2**24))
    drop_pages(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for at in range(0, size, 2**20):
            os.pread(fd, 2**20, at)
        seq = size / (time.perf_counter() - t0) / 1e6
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        offsets = np.random.default_rng(0).integers(0, size // 4096, 4000) * 4096
        t0 = time.perf_counter()
        for at in offsets:
            os.pread(fd, 4096, int(at))
        rnd = len(offsets) / (time.perf_counter() - t0)
    finally:
        os.close(fd)
    return f"disk: sequential {seq:,.0f} MB/s, random 4 KiB reads {rnd:,.0f}/s (cold)"


# -- memory of a process tree --------------------------------------------------------------------


def _fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    out = dict.fromkeys(names, 0)
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def sample(pid: int) -> dict[str, int]:
    """The process's RSS (and its parts) and the PSS of it and its descendants, in bytes."""
    s = _fields(f"/proc/{pid}/status", ("VmRSS", "RssAnon", "RssFile"))
    pss = {"Pss": 0, "Pss_Anon": 0, "Pss_File": 0}
    for p in _tree(pid):
        for k, v in _fields(f"/proc/{p}/smaps_rollup", tuple(pss)).items():
            pss[k] += v
    return {**s, **pss, "t": time.time()}


# -- one run -------------------------------------------------------------------------------------


def child(spec: dict) -> None:
    """Train once, as the parent asked, and write what happened to spec['result']."""
    if spec["mmap"]:
        loader_mod.HAS_PREAD = False
    cache = Path(spec["cache"])
    if spec["read_only"]:
        index = discover(spec["csv"], val_split=0)
        loader = loader_mod.make_loader(index.splits["train"], size=SIZE, batch_size=128, shuffle=spec["shuffle"],
                                        workers=2, cache_dir=str(cache), progress=False)
        for npy in cache.rglob("*.npy"):
            drop_pages(npy)
        fit = time.time()
        t0 = time.perf_counter()
        seen = sum(len(y) for _, y in loader)
        seconds = time.perf_counter() - t0
        Path(spec["result"]).write_text(json.dumps({"decodes": [], "fit": fit, "epochs": [
            {"images_per_s": seen / seconds, "seconds": seconds}]}))
        return
    decodes = []
    real = loader_mod.decode_all

    def timed(paths, *a, **k):
        t0 = time.perf_counter()
        d = real(paths, *a, **k)
        decodes.append({"images": len(paths), "decoded": d.decoded, "seconds": time.perf_counter() - t0})
        return d

    loader_mod.decode_all = timed
    marks = {"epochs": []}

    class Probe(Callback):
        def on_train_begin(self, trainer):
            marks["fit"] = time.time()

        def on_epoch_begin(self, trainer):
            if spec["drop"]:
                for npy in cache.rglob("*.npy"):
                    drop_pages(npy)

        def on_epoch_end(self, trainer):
            marks["epochs"].append({"images_per_s": trainer.logs["images_per_s"],
                                    "seconds": trainer.logs["seconds"]})

    train(spec["csv"], model="tinyvgg", img_size=SIZE, epochs=spec["epochs"], batch_size=128, augment="none",
          shuffle=spec["shuffle"], workers=2, cache_dir=str(cache), out=spec["out"], val_split=0,
          precision="fp32", evaluate=False, verbose=False, callbacks=[Probe()])
    Path(spec["result"]).write_text(json.dumps({"decodes": decodes, **marks}))


def run(root: Path, n: int, setting: str, fresh_cache: bool) -> dict:
    shuffle, drop, epochs, mmap, read_only = SETTINGS[setting]
    cache = root / "cache" / str(n)
    if fresh_cache:
        shutil.rmtree(cache, ignore_errors=True)
    result = root / "result.json"
    result.unlink(missing_ok=True)
    out = root / "runs"
    shutil.rmtree(out, ignore_errors=True)
    spec = {"csv": str(write_csv(root, n)), "cache": str(cache), "shuffle": shuffle, "drop": drop,
            "epochs": epochs, "mmap": mmap, "read_only": read_only, "out": str(out), "result": str(result)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)])
    samples = []
    while proc.poll() is None:
        samples.append(sample(proc.pid))
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"the {setting} run of {n:,} images failed ({proc.returncode})")
    info = json.loads(result.read_text())
    fit = info["fit"]
    peak = lambda key, phase: max((s[key] for s in samples if (s["t"] >= fit) == phase), default=0)  # noqa: E731
    decode = next((d for d in info["decodes"] if d["decoded"]), None)
    return {"n": n, "setting": setting, "decode_ms_per_1k": decode and 1e6 * decode["seconds"] / decode["decoded"],
            "images_per_s": [e["images_per_s"] for e in info["epochs"]],
            "train": {k: peak(k, True) for k in ("VmRSS", "RssAnon", "RssFile", "Pss", "Pss_Anon", "Pss_File")},
            "setup": {k: peak(k, False) for k in ("VmRSS", "RssAnon", "RssFile", "Pss", "Pss_Anon", "Pss_File")},
            "cache_mb": sum(p.stat().st_size for p in cache.rglob("*.npy")) / 1e6}


def mb(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="/tmp/bigdata")
    ap.add_argument("--sizes", default="10000,50000,100000,200000")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--clean", action="store_true", help="delete --root and stop")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    root = Path(args.root)
    if args.clean:
        shutil.rmtree(root, ignore_errors=True)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting {unknown[0]!r}; the settings are {', '.join(SETTINGS)}")
    root.mkdir(parents=True, exist_ok=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {' '.join(load)}", flush=True)
    make_images(root, max(sizes))
    print(measure_disk(root), flush=True)
    header = ("| images | setting | cache MB | decode ms / 1k img | img/s (epochs; read-*: read only) | training: RSS "
              "(anon + file) MiB | training: PSS tree MiB | set-up: RSS MiB | set-up: PSS tree MiB |")
    print(header + "\n|" + "---|" * 9, flush=True)
    for n in sizes:
        for i, setting in enumerate(s for s in settings if s != "ram-mmap" or n == max(sizes)):
            r = run(root, n, setting, fresh_cache=i == 0 and not SETTINGS[setting][4])  # read-*: the cache as it is
            t, s = r["train"], r["setup"]
            decode = f"{r['decode_ms_per_1k']:,.0f}" if r["decode_ms_per_1k"] else "(cached)"
            print(f"| {n:,} | {setting} | {r['cache_mb']:,.0f} | {decode} | "
                  f"{', '.join(f'{v:,.0f}' for v in r['images_per_s'])} | "
                  f"{mb(t['VmRSS'])} ({mb(t['RssAnon'])} + {mb(t['RssFile'])}) | {mb(t['Pss'])} | "
                  f"{mb(s['VmRSS'])} | {mb(s['Pss'])} |", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
