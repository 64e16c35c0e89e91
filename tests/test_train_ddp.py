"""Multi-process training with torchrun (DDP on the CPU, gloo backend, two processes).

Two processes with batches of 4 must train exactly what one process does with batches of 8:
the same shuffled order is split between them (rank 0 takes positions 0, 2, 4..., rank 1
positions 1, 3, 5...) and DDP averages their gradients. The model has no batch norm and no
dropout (those legitimately differ per process), so the weights agree up to float rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from cnnlab.cli import main
from imagegen import make_split_folder

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")

PLAIN = {  # no BatchNormalization, no Dropout
    "name": "plain",
    "input": [32, 32, 3],
    "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 4}},
        {"Flatten": {}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_what_one_process_does_with_twice_the_batch(tmp_path, capsys):
    data = make_split_folder(tmp_path / "data", n={"train": 40, "val": 10})
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(PLAIN))
    common = [str(data), "--model", str(tmp_path / "plain.yaml"), "--epochs", "3", "--augment", "none",
              "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "runs"),
              "--device", "cpu", "--no-evaluate"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *common, "--batch-size", "8", "--name", "one", "-q"]) == 0
    finally:
        torch.set_num_threads(before)

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "cnnlab", "train", *common, "--batch-size", "4", "--name", "two"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 3/3") == 1  # only the main process prints
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["one", "two"]  # one run folder, written once

    one, two = (load_file(str(tmp_path / "runs" / n / "weights" / "last.safetensors")) for n in ("one", "two"))
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k

    rows = [(tmp_path / "runs" / n / "history.csv").read_text().splitlines() for n in ("one", "two")]
    val = [[float(r.split(",")[4]) for r in rs[1:]] for rs in rows]  # val_accuracy, all 20 images on both
    assert val[0] == val[1]
    loss = [[float(r.split(",")[1]) for r in rs[1:]] for rs in rows]  # loss over all 80 images
    assert np.allclose(loss[0], loss[1], atol=1e-4)


def test_shards_cover_every_image_once(tmp_path):
    from cnnlab.data.loader import make_loader
    from cnnlab.train.distributed import ShardedLoader

    data = make_split_folder(tmp_path / "data", n={"train": 11})
    items = [(str(p), i) for i, c in enumerate(("hbar", "vbar")) for p in sorted((data / "train" / c).iterdir())]
    loader = make_loader(items, size=32, batch_size=3, shuffle=True, seed=5, cache_dir=False)
    shards = [ShardedLoader(loader, r, 2, train=True) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    positions = [s._positions() for s in shards]
    assert len(positions[0]) == len(positions[1]) == 11  # 22 images, 11 each
    assert sorted(np.concatenate(positions)) == sorted(loader.order(4))
    assert len(shards[0]) == len(shards[1]) == 4  # ceil(11 / 3) batches each, in step
    val = [ShardedLoader(loader, r, 3, train=False) for r in range(3)]
    assert sum(len(v._positions()) for v in val) == 22  # validation: every image, unevenly
    x, y = next(iter(shards[1]))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8


def test_under_torchrun_the_main_process_chooses_and_the_others_follow(tmp_path):
    """--time-limit with photos larger than the model: the image size comes from timed steps,
    which differ between processes. Here they differ on purpose (tests/ddp_rank_rates.py:
    rank 0 measures a fast machine, rank 1 a slow one, which alone would pick 64 px and 32
    px). The main process chooses; the other trains with its resolved config (a model built
    for another size has other Flatten weights, and DDP refuses to start)."""
    data = make_split_folder(tmp_path / "data", n={"train": 24, "val": 8}, size=(64, 64))
    spec = {**PLAIN, "input": [48, 48, 3]}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = os.path.join(os.path.dirname(__file__), "ddp_rank_rates.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           script, "train", str(data), "--model", str(tmp_path / "plain.yaml"), "--time-limit", "0.05",
           "--augment", "none", "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
           "--out", str(tmp_path / "runs"), "--device", "cpu", "--no-evaluate", "--name", "two"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("auto    ") == 1 and "img_size 64: largest size" in done.stdout
    cfg = yaml.safe_load((tmp_path / "runs" / "two" / "config.yaml").read_text())
    assert cfg["img_size"] == 64


def test_a_mistake_under_torchrun_is_said_once_without_tracebacks(tmp_path):
    """A bad path: the main process said it in one line, and the other process printed a
    30-line gloo traceback ("Connection closed by peer") when the main one left. torchrun's
    own failure report (its launcher's) still follows; it is not cnnlab's to change."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "cnnlab", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "runs"), "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("cnnlab: ")]
    assert ours == [f"cnnlab: error: {tmp_path / 'missing'}: no such file or folder"], done.stderr[-3000:]
    assert "[rank1]" not in done.stderr and "Connection closed by peer" not in done.stderr
    assert "exitcode  : 2" in done.stderr  # both processes ended with cnnlab's code for a user's mistake


LEFTOVERS = """
import gc, sys
gc.disable()  # only cnnlab's own collection may free what a cycle holds
import cnnlab
from torch.nn.parallel import DistributedDataParallel
cnnlab.train(sys.argv[1], model=sys.argv[2], epochs=1, augment="none", workers=0, cache_dir=sys.argv[3] + "/cache",
             out=sys.argv[3], name="two", device="cpu", evaluate=False, batch_size=4, verbose=False)
alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
print(f"ddp alive after train: {alive}")
"""


def test_train_frees_the_process_group_before_the_interpreter_exits(tmp_path):
    """A DDP wrapper (it holds the gloo group) left for the interpreter's teardown aborted a
    process now and then ("terminate called without an active exception", SIGABRT, about 1
    run in 5 on a loaded machine). After train() returns, no wrapper may be alive, even with
    Python's automatic collection off."""
    data = make_split_folder(tmp_path / "data", n={"train": 16, "val": 4})
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(PLAIN))
    (tmp_path / "leftovers.py").write_text(LEFTOVERS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(tmp_path / "leftovers.py"), str(data), str(tmp_path / "plain.yaml"), str(tmp_path / "runs")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ddp alive after train: 0") == 2, done.stdout[-2000:]


def test_lr_find_under_torchrun_says_once_to_run_it_in_one_process(tmp_path):
    """lr-find has no multi-process sweep: under torchrun each process swept on its own
    (a plot written twice) and left its group to the interpreter's exit."""
    data = make_split_folder(tmp_path / "data", n={"train": 16})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "cnnlab", "lr-find", str(data), "--out", str(tmp_path / "out"), "--batch-size", "8"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("cnnlab: ")]
    assert ours == ["cnnlab: error: lr-find sweeps in one process; run it without torchrun (for 2 processes of "
                    "--batch-size B, sweep with --batch-size 2*B)"], done.stderr[-3000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("lr_find.png"))
