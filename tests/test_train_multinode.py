"""Several machines and elastic restarts under torchrun (CPU, gloo), and the step checkpoint.

"Two nodes" are two torchrun launches on this machine, each in a folder of its own (its own
working directory: its own relative ``--out`` and, where a test wants it, its own copy of
``data``), meeting through a c10d rendezvous on 127.0.0.1. ``--local-addr`` 127.0.0.1 and
127.0.0.2 (both loopback) order them: c10d numbers nodes by address, so launch "a" holds rank 0.

The oracle for the weights is the one in tests/test_train_ddp.py: two processes with batches
of 4 train what one process trains with batches of 8 (no batch norm, no dropout, no
augmentation), here computed in this process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import cnnlab
from cnnlab.cli import main
from cnnlab.io.checkpoint import read_state_header
from cnnlab.train.callbacks import Callback
from cnnlab.train.distributed import sync_batch_norm
from cnnlab.train.resume import position
from imagegen import make_split_folder
from test_train_ddp import PLAIN, _free_port

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")

HERE = Path(__file__).resolve().parent
ENV = dict(os.environ, OMP_NUM_THREADS="1")
RUN = sys.executable, "-m", "torch.distributed.run"


def common(data, tmp_path, epochs: int = 3) -> list[str]:
    return [str(data), "--model", str(tmp_path / "plain.yaml"), "--epochs", str(epochs), "--augment", "none",
            "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-evaluate"]


def one_process_weights(tmp_path, data, epochs: int = 3) -> dict[str, torch.Tensor]:
    """The oracle: one process, batches of 8, trained here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *common(data, tmp_path, epochs), "--batch-size", "8", "--out", str(tmp_path / "ref"),
                     "--name", "one", "-q"]) == 0
    finally:
        torch.set_num_threads(before)
    return load_file(str(tmp_path / "ref" / "one" / "weights" / "last.safetensors"))


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5), k


def two_nodes(tmp_path, args: list[str], program: list[str] | None = None, timeout: int = 120):
    """The same command on two "nodes" (launches "a" and "b", each in tmp_path/a, tmp_path/b);
    returns their CompletedProcess-like (returncode, stdout, stderr), a first."""
    port = _free_port()
    procs = []
    for node, addr in (("a", "127.0.0.1"), ("b", "127.0.0.2")):
        (tmp_path / node).mkdir(exist_ok=True)
        cmd = [*RUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", addr,
               *(program or ["-m", "cnnlab"]), "train", *args]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path / node, env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def ours(stderr: str) -> list[str]:
    """cnnlab's own lines on stderr (torchrun's report follows them)."""
    return [line for line in stderr.splitlines() if line.startswith("cnnlab: ")]


def no_cnnlab_traceback(stderr: str) -> bool:
    """No traceback through cnnlab's code (torchrun's launcher prints its own for a failed group)."""
    return not any('File "' in line and "cnnlab" in line for line in stderr.splitlines()) and "[rank" not in stderr


@pytest.fixture
def plain(tmp_path):
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(PLAIN))
    return make_split_folder(tmp_path / "data", n={"train": 40, "val": 10})


def test_two_nodes_train_what_one_process_does_with_twice_the_batch(tmp_path, plain):
    a, b = two_nodes(tmp_path, [*common(plain, tmp_path), "--batch-size", "4", "--out", "runs", "--name", "two"])
    assert a.returncode == 0 and b.returncode == 0, (a.stderr[-2000:], b.stderr[-2000:])
    assert a.stdout.count("epoch 3/3") == 1 and b.stdout == ""  # only global rank 0 prints
    assert sorted(p.name for p in (tmp_path / "a" / "runs").iterdir()) == ["two"]
    assert not (tmp_path / "b" / "runs").exists()  # the other node's --out is never made
    two = load_file(str(tmp_path / "a" / "runs" / "two" / "weights" / "last.safetensors"))
    assert_same_weights(two, one_process_weights(tmp_path, plain))


def test_a_node_with_other_data_stops_every_process_with_one_sentence(tmp_path):
    """Each node its own copy of `data` (a relative path, the same command): node b's lacks one
    training image. Then node b's has no `data` at all."""
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(PLAIN))
    for node in ("a", "b"):
        make_split_folder(tmp_path / node / "data", n={"train": 10, "val": 4})
    (tmp_path / "b" / "data" / "train" / "vbar" / "vbar_003.png").unlink()
    args = ["data", "--model", str(tmp_path / "plain.yaml"), "--epochs", "1", "--workers", "0",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--out", "runs"]
    a, b = two_nodes(tmp_path, args)
    assert ours(a.stderr) == [], a.stderr[-2000:]  # rank 0's node found nothing wrong with its own data
    assert ours(b.stderr) == ["cnnlab: error: rank 1 (node %s) sees 19 training images in 2 classes, rank 0 sees "
                              "20: every node must read the same data (a shared folder, or the same copy on "
                              "each node)" % os.uname().nodename], b.stderr[-2000:]
    for done in (a, b):
        assert done.returncode != 0 and "exitcode  : 2" in done.stderr and no_cnnlab_traceback(done.stderr)
    assert not (tmp_path / "a" / "runs").exists()  # stopped before any run folder was made

    shutil.rmtree(tmp_path / "b" / "data")
    a, b = two_nodes(tmp_path, args)
    assert ours(a.stderr) == [] and ours(b.stderr) == [
        f"cnnlab: error: rank 1 (node {os.uname().nodename}): data: no such file or folder"], b.stderr[-2000:]
    for done in (a, b):
        assert "exitcode  : 2" in done.stderr and no_cnnlab_traceback(done.stderr)


def test_a_restarted_group_continues_its_run_from_the_step_checkpoint(tmp_path, plain):
    """torchrun --max-restarts 2; rank 1 is killed (SIGKILL) at step 18 of 30, in the middle of
    epoch 2, after the checkpoint of step 16 (--checkpoint-every 4; 10 steps an epoch). Before:
    the restarted group refused its own folder ("runs/el already exists; continue it with
    --resume"), then hung in init_process_group on the store keys of the group before it."""
    run = tmp_path / "runs" / "el"
    cmd = [*RUN, "--nproc_per_node", "2", "--max-restarts", "2", f"--master_port={_free_port()}",
           str(HERE / "ddp_kill.py"), "1", "18", str(run / "resume.safetensors"),
           "train", *common(plain, tmp_path), "--batch-size", "4", "--checkpoint-every", "4",
           "--out", str(tmp_path / "runs"), "--name", "el"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed (exitcode: " in done.stderr  # torchrun saw the group fail (-9, or 2 from rank 0 after it) ...
    assert done.stdout.count("restart 1 of the group") == 1  # ... and restarted it, once
    assert f"restart 1 of the group: continuing {run} from epoch 2, batch 7" in done.stdout
    assert "already exists" not in done.stderr and no_cnnlab_traceback(done.stderr)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["el"]

    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3"]  # one row per epoch, none lost or doubled
    assert_same_weights(load_file(str(run / "weights" / "last.safetensors")), one_process_weights(tmp_path, plain))
    # epoch 2's loss and accuracy sum both processes' batches, those before the kill included
    # (each rank's running sums are in the checkpoint), as one process's over its batches of 8
    ref = (tmp_path / "ref" / "one" / "history.csv").read_text().splitlines()[1:]
    for got, want in zip(rows, ref):
        (loss, acc, val_loss, val_acc), (loss1, acc1, val_loss1, val_acc1) = (
            [float(v) for v in row.split(",")[1:5]] for row in (got, want))
        assert abs(loss - loss1) < 1e-4 and acc == acc1 and abs(val_loss - val_loss1) < 1e-4 and val_acc == val_acc1


class Crash(Callback):
    """Stands for a crash (a kill, a power cut) after step ``at``; it has no state to save."""

    def __init__(self, at: int):
        self.at = at

    def on_batch_end(self, trainer):
        if trainer.step == self.at:
            raise RuntimeError("crash")


DROPOUT = {**PLAIN, "layers": [*PLAIN["layers"][:3], {"Dropout": {"rate": 0.3}}, PLAIN["layers"][3]]}


def test_the_step_checkpoint_resumes_exactly_mid_epoch(tmp_path, one_thread):
    """One process, with dropout and augmentation (their random streams must continue as they
    were): a run that crashes at step 18 (epoch 2, batch 8 of 10), after the checkpoint of
    step 16, resumed, ends with the weights of an uninterrupted run, bit for bit."""
    data = make_split_folder(tmp_path / "data", n={"train": 40, "val": 10})
    opts = dict(model=DROPOUT, epochs=3, batch_size=8, augment="flip,translate=2", workers=0,
                cache_dir=str(tmp_path / "cache"), device="cpu", precision="fp32", evaluate=False,
                out=str(tmp_path / "runs"), verbose=False, checkpoint_every=4)
    cnnlab.train(data, name="whole", **opts)
    with pytest.raises(RuntimeError, match="crash"):
        cnnlab.train(data, name="cut", callbacks=[Crash(18)], **opts)
    cut = tmp_path / "runs" / "cut"
    assert position(cut / "resume.safetensors") == (2, 7)  # the step checkpoint: epoch 2 goes on at batch 7
    assert read_state_header(cut / "resume.safetensors")["partial"]["step"] == 16
    cnnlab.train(resume=cut, verbose=False)
    whole, resumed = (load_file(str(tmp_path / "runs" / n / "weights" / "last.safetensors")) for n in ("whole", "cut"))
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    assert (cut / "history.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_a_process_that_stops_answering_ends_the_run_with_one_sentence(tmp_path, plain):
    """Rank 1 sleeps 30 s before reading its data; with CNNLAB_DIST_TIMEOUT=4, rank 0 gives up
    waiting for it after 4 s and says so (no silent hang, no traceback)."""
    cmd = [*RUN, "--nproc_per_node", "2", f"--master_port={_free_port()}", str(HERE / "ddp_slow_rank.py"), "1", "30",
           "train", *common(plain, tmp_path), "--out", str(tmp_path / "runs")]
    done = subprocess.run(cmd, env=dict(ENV, CNNLAB_DIST_TIMEOUT="4"), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert ours(done.stderr)[0] == (f"cnnlab: error: rank 0 (node {os.uname().nodename}) stopped waiting after 4 s "
                                    "for the other processes while each process read its data "
                                    "(CNNLAB_DIST_TIMEOUT sets the limit)"), done.stderr[-3000:]
    assert no_cnnlab_traceback(done.stderr)


def test_sync_bn_is_refused_on_the_cpu_under_torchrun_in_one_sentence(tmp_path, plain):
    """torch's SyncBatchNorm raises on CPU tensors (torch 2.13: "SyncBatchNorm expected input
    tensor to be on GPU"); cnnlab says so before decoding anything."""
    cmd = [*RUN, "--nproc_per_node", "2", f"--master_port={_free_port()}", "-m", "cnnlab",
           "train", *common(plain, tmp_path), "--sync-bn", "--out", str(tmp_path / "runs")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "exitcode  : 2" in done.stderr
    assert ours(done.stderr) == ["cnnlab: error: --sync-bn: torch's SyncBatchNorm runs on GPUs only (it refuses CPU "
                                 "tensors), so on the CPU each process keeps its own batch statistics; leave "
                                 "--sync-bn out"], done.stderr[-3000:]
    assert no_cnnlab_traceback(done.stderr) and not (tmp_path / "cache").exists()


def test_sync_bn_in_one_process_is_said_and_ignored(tmp_path, plain, capsys, one_thread):
    """One process has no other batches to share statistics with: the run says so and trains
    with plain batch norm (so the same config serves one GPU and many)."""
    cnnlab.train(plain, model="tinyvgg", img_size=16, epochs=1, batch_size=16, augment="none", workers=0,
                 cache_dir=str(tmp_path / "cache"), device="cpu", evaluate=False, out=str(tmp_path / "runs"),
                 sync_bn=True)
    assert "sync-bn: one process, nothing to synchronise: plain batch norm" in capsys.readouterr().out


def test_sync_bn_turns_every_batch_norm_into_a_sync_batch_norm_with_its_numbers():
    """What --sync-bn does to the model under torchrun on GPUs, checked here on the CPU without a
    group (where SyncBatchNorm computes as BatchNorm): vgg_bn's batch norms, and the airbench
    model's, whose γ is a constant (a buffer, which torch's convert_sync_batchnorm cannot copy)."""
    for name in ("vgg_bn", "airbench_small"):
        model = cnnlab.create_model(name, classes=3, input=(32, 32, 3))
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        model.train()
        before_state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(1)  # the same dropout masks in both forward passes
        before_out = model(x)
        n = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        model.load_state_dict(before_state)  # the forward above moved the running statistics
        assert sync_batch_norm(model) == n > 0
        assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == n
        assert not any(type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d) for m in model.modules())
        assert model.state_dict().keys() == before_state.keys()
        torch.manual_seed(1)
        assert torch.equal(model(x), before_out)  # batch statistics and γ, β as before
