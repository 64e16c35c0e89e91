"""Faults: a training run killed again and again, a full disk, a read-only folder, NaN.

- SIGKILL: one ``cnnlab train`` run is killed eight times -- at seeded random moments and,
  through a hook, in the middle of writing its first file, its checkpoint, its weights and
  its history (the temporary file half written, or complete but not yet renamed) -- and
  started again each time: the same command while it has no config.yaml yet, then
  ``cnnlab train --resume``. After every kill each file of the run must still
  load; at the end the weights must be bit for bit those of an uninterrupted run, and no
  temporary file may be left. The killed processes are forked from a server that has
  imported torch once (``multiprocessing`` forkserver), so eight restarts cost seconds.
- A full disk (``OSError(ENOSPC)`` injected where the atomic writer syncs its temporary
  file, as a real full disk fails there) and a read-only output folder (chmod 555, or,
  for root, who may write anyway, the same refusal injected into the calls that create
  files): one sentence, exit code 2, no half-written or temporary files, and the files
  written before are intact.
- NaN: a diverging run stops with one sentence and keeps finite weights.
"""

from __future__ import annotations

import csv
import errno
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnlab.cli import main
from cnnlab.formats.weights import load_weights
from cnnlab.io.checkpoint import load_checkpoint
from imagegen import make_split_folder
from tinymodels import TINY_BN as TINY, history, same_weights as same_tensors

EPOCHS = 10


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    make_split_folder(root / "data", n={"train": 16, "val": 4})
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root


def train_args(ws: Path, name: str, *extra: str) -> list[str]:
    return ["train", str(ws / "data"), "--model", str(ws / "tiny.yaml"), "--epochs", str(EPOCHS),
            "--batch-size", "4", "--seed", "3", "--workers", "0", "--cache-dir", str(ws / "cache"),
            "--out", str(ws / "runs"), "--name", name, "--no-evaluate", "--device", "cpu", "-q", *extra]


def one_thread_main(argv: list[str]) -> int:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed children: bit-exact results need the same threads
    try:
        return main(argv)
    finally:
        torch.set_num_threads(before)


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp"))


def assert_every_file_loads(run: Path) -> None:
    """What a crash must never leave: a checkpoint, weights file, or log that does not load."""
    if (run / "resume.safetensors").exists():
        state = load_checkpoint(run / "resume.safetensors")
        assert 0 <= state["epoch"] <= EPOCHS
    for w in (run / "weights").glob("*.safetensors"):
        model, meta = load_weights(w)
        assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    if (run / "history.csv").exists():
        rows = history(run)
        assert [r["epoch"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    for name in ("config.yaml", "model.yaml"):
        if (run / name).exists():
            assert isinstance(yaml.safe_load((run / name).read_text()), dict)
    for name in ("classes.json", "split.json"):
        if (run / name).exists():
            json.loads((run / name).read_text())


# ---------------------------------------------------------------------------- killed children


def _kill_hook(target: str, nth: int, half: bool) -> None:
    """SIGKILL this process at the nth atomic write of `target`, just before its rename.

    The atomic writer fsyncs the finished temporary file and then renames it into place;
    the hook runs at that fsync. With ``half`` the temporary file is first cut to half its
    size: the process died while the bytes were being written.
    """
    real_fsync, seen = os.fsync, [0]

    def fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if name.startswith(f".{target}.") and name.endswith(".tmp"):
            seen[0] += 1
            if seen[0] == nth:
                if half:
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(fd)

    os.fsync = fsync


def _child(argv: list[str], hook: tuple[str, int, bool] | None) -> None:
    """A `cnnlab train` process (forked from the forkserver)."""
    import sys

    torch.set_num_threads(1)
    if hook:
        _kill_hook(*hook)
    sys.exit(main(argv))


def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "cnnlab.cli", "cnnlab.train.api", "cnnlab.train.loop",
                                "cnnlab.train.setup", "cnnlab.data.loader", "safetensors.torch"])
    return ctx


def epochs_done(run: Path) -> int:
    try:
        return len(history(run))
    except (OSError, csv.Error):
        return 0


def kill_after(proc, run: Path, seconds: float, max_epochs: int = 2) -> None:
    """SIGKILL ``proc`` after ``seconds``, or as soon as it has finished ``max_epochs`` more
    epochs, so that a fast machine cannot finish the run before the kills are done."""
    start, deadline = epochs_done(run), time.monotonic() + seconds
    while proc.is_alive() and time.monotonic() < deadline and epochs_done(run) < start + max_epochs:
        time.sleep(0.005)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)


# Eight kills: five inside writes (the run's first file, checkpoint, weights, history), three
# at random moments. ("write", file, nth write of it in that process, cut it in half?)
PLAN = [("write", "config.yaml", 1, True),  # the run folder is made, its first file half written
        ("write", "resume.safetensors", 1, True),  # the very first checkpoint, before epoch 1
        ("delay",), ("write", "last.safetensors", 2, False), ("delay",),
        ("write", "resume.safetensors", 2, False), ("delay",), ("write", "history.csv", 1, True)]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the write hook reads /proc/self/fd")
def test_sigkill_again_and_again_then_the_same_weights(ws):
    assert one_thread_main(train_args(ws, "reference")) == 0
    reference = ws / "runs" / "reference"

    run = ws / "runs" / "killed"
    ctx = forkserver()
    rng = np.random.default_rng(7)
    kills = in_writes = 0
    for step in PLAN:
        argv = (["train", "--resume", str(run), "-q"] if (run / "config.yaml").exists()
                else train_args(ws, "killed"))
        hook = step[1:] if step[0] == "write" else None
        proc = ctx.Process(target=_child, args=(argv, hook))
        proc.start()
        if hook is None:  # a random moment: set-up, a batch, validation, a write...
            kill_after(proc, run, float(rng.uniform(0.1, 1.5)))
        proc.join(120)
        assert proc.exitcode == -signal.SIGKILL, f"{step}: the run was not killed (exit {proc.exitcode})"
        kills += 1
        in_writes += hook is not None
        assert_every_file_loads(run)
    assert kills == len(PLAN) >= 5 and in_writes >= 2
    assert len(history(run)) < EPOCHS  # there was work left for the last resume

    assert one_thread_main(["train", "--resume", str(run), "-q"]) == 0
    assert history(run) == history(reference)
    for which in ("best", "last"):
        assert same_tensors(run / "weights" / f"{which}.safetensors", reference / "weights" / f"{which}.safetensors")
    assert temporaries(run) == []


# ---------------------------------------------------------------------------- a full disk


def full_disk_after(monkeypatch, target: str, successes: int = 0) -> list[int]:
    """Writes of files named `target` fail with ENOSPC after `successes` of them went through.

    The atomic writer syncs its finished temporary file before renaming it, and that is
    where a full disk shows (or earlier, at a write): the injected error comes from there.
    Returns a list holding the number of failures so far.
    """
    real_fsync, seen, failed = os.fsync, [0], [0]

    def fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if name.startswith(f".{target}.") and name.endswith(".tmp"):
            seen[0] += 1
            if seen[0] > successes:
                failed[0] += 1
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def assert_one_sentence(err: str, *fragments: str) -> None:
    assert err.startswith("cnnlab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target, successes", [("resume.safetensors", 3), ("last.safetensors", 2),
                                               ("history.csv", 2)])
def test_full_disk_while_training(ws, monkeypatch, capsys, target, successes):
    run = ws / "runs" / f"full-{target}"
    failed = full_disk_after(monkeypatch, target, successes)
    assert one_thread_main(train_args(ws, run.name, "--epochs", "4")) == 2
    assert failed[0] == 1
    assert_one_sentence(capsys.readouterr().err, f"cannot write {run}", target, "No space left on device")
    assert temporaries(run) == []  # no half-written file
    assert_every_file_loads(run)  # and what was written before is intact
    assert load_checkpoint(run / "resume.safetensors")["epoch"] >= 1

    monkeypatch.undo()  # space was freed: the run goes on where it stopped
    assert one_thread_main(["train", "--resume", str(run), "-q"]) == 0
    assert [r["epoch"] for r in history(run)] == ["1", "2", "3", "4"]
    assert temporaries(run) == []


@pytest.fixture
def evaluated_run(trained_run, tmp_path):
    """A copy of the trained run with predictions and an evaluation already written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    image = next((trained_run.parent.parent / "data" / "test" / "vbar").glob("*.png"))
    assert main(["evaluate", str(run), "--no-report", "--device", "cpu"]) == 0
    assert main(["predict", str(run), str(image), "--out", str(run / "preds.csv"), "--device", "cpu"]) == 0
    assert main(["explain", str(run), "--out", str(run / "page.html")]) == 0
    return run, image


def test_full_disk_when_writing_results(evaluated_run, monkeypatch, capsys):
    run, image = evaluated_run
    capsys.readouterr()
    before = snapshot(run)
    cases = [
        ("metrics.json", ["evaluate", run, "--no-report", "--device", "cpu"]),
        ("preds.csv", ["predict", run, image, "--out", run / "preds.csv", "--device", "cpu"]),
        ("page.html", ["explain", run, "--out", run / "page.html"]),
        ("filters.png", ["viz", "filters", run, "--out", run / "filters.png"]),
    ]
    for target, argv in cases:
        with monkeypatch.context() as m:
            full_disk_after(m, target)
            assert main([str(a) for a in argv]) == 2, target
        assert_one_sentence(capsys.readouterr().err, target, "No space left on device")
        assert temporaries(run) == []
    after = snapshot(run)
    assert after["eval/test/metrics.json"] == before["eval/test/metrics.json"]  # the old results are kept
    assert after["preds.csv"] == before["preds.csv"] and after["page.html"] == before["page.html"]
    assert "filters.png" not in after
    json.loads(after["eval/test/metrics.json"])


# ---------------------------------------------------------------------------- a read-only folder


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: nothing may be created, replaced or removed inside ``folder``.

    chmod 555 does that for a normal user; root may write anyway, so then the calls that
    create files and folders are made to fail the way the kernel would (EACCES).
    """
    import builtins

    folders: list[Path] = []

    def inside(path) -> bool:
        real = os.path.realpath(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
        return any(real == str(f) or real.startswith(str(f) + os.sep) for f in folders)

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def patch() -> None:
        real = {"mkdir": os.mkdir, "open": os.open, "replace": os.replace, "rename": os.rename,
                "unlink": os.unlink, "builtin_open": builtins.open}
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

        def mkdir(path, *a, **k):
            return refuse(path) if inside(path) else real["mkdir"](path, *a, **k)

        def os_open(path, flags, *a, **k):
            return refuse(path) if inside(path) and flags & writing else real["open"](path, flags, *a, **k)

        def replace(src, dst, *a, **k):
            return refuse(dst) if inside(dst) or inside(src) else real["replace"](src, dst, *a, **k)

        def unlink(path, *a, **k):
            return refuse(path) if inside(path) else real["unlink"](path, *a, **k)

        def builtin_open(file, mode="r", *a, **k):
            if inside(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real["builtin_open"](file, mode, *a, **k)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "rename", replace)
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(builtins, "open", builtin_open)

    def make(folder: Path) -> Path:
        folder = Path(os.path.realpath(folder))
        for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
            d.chmod(0o555)
        folders.append(folder)
        if os.access(folder, os.W_OK) and len(folders) == 1:  # root: the bits stop nothing
            patch()
        return folder

    yield make
    monkeypatch.undo()
    for folder in folders:
        for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
            d.chmod(0o755)


def test_read_only_output_folder(ws, evaluated_run, read_only, monkeypatch, capsys):
    run, image = evaluated_run
    # An unfinished run (the disk filled at its second checkpoint) with a temporary file left.
    unfinished = run.parent / "unfinished"
    with monkeypatch.context() as m:
        full_disk_after(m, "resume.safetensors", 2)
        assert one_thread_main(train_args(ws, "u", "--epochs", "4", "--out", str(run.parent), "--name",
                                          unfinished.name)) == 2
    (unfinished / ".resume.safetensors.stale.tmp").write_bytes(b"half")
    capsys.readouterr()
    locked = read_only(run.parent)
    before = snapshot(locked)
    cases = [
        (train_args(ws, "x", "--out", str(locked / "runs")), "cannot create the run folder"),
        # said before any image is predicted, with the way out
        (["evaluate", run, "--no-report", "--device", "cpu"], "Permission denied); write them elsewhere with --out DIR"),
        (["export", run, "--format", "onnx"], "cannot write there"),  # into RUN/export/: was a traceback
        (["lr-find", ws / "data", "--out", locked / "lr", "--workers", "0"], "cannot write there"),  # before the sweep
        (["predict", run, image, "--out", run / "new.csv", "--device", "cpu"], "new.csv: Permission denied"),
        (["explain", run, "--out", locked / "page.html"], "page.html: Permission denied"),
        (["viz", "filters", run, "--out", locked / "f.png"], "f.png: Permission denied"),
        (["train", "--resume", unfinished, "-q"], "cannot write in"),  # said before any training
        (["demo", "--out", locked / "demo", "--epochs", "1"], "cannot write the demo's images in"),  # a traceback
    ]
    for argv, fragment in cases:
        assert main([str(a) for a in argv]) == 2, argv
        assert_one_sentence(capsys.readouterr().err, fragment)
    # --out puts the evaluation somewhere writable: the same figures as the run's own files.
    elsewhere = ws / "evaluated-elsewhere"
    assert main(["evaluate", str(run), "--device", "cpu", "--out", str(elsewhere), "--format", "json"]) == 0
    got = json.loads((elsewhere / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out)["eval_dir"] == str(elsewhere) and got["report"] is None
    own = json.loads(before[f"{run.name}/eval/test/metrics.json"])
    assert got["accuracy"] == own["accuracy"] and got["confusion_matrix"] == own["confusion_matrix"]
    assert (elsewhere / "predictions.csv").is_file()
    assert snapshot(locked) == before  # nothing changed, nothing added


# ---------------------------------------------------------------------------- NaN


def test_nan_loss_stops_cleanly_and_keeps_finite_weights(ws, capsys):
    run = ws / "runs" / "nan"
    argv = train_args(ws, "nan", "--optimizer", "sgd", "--lr", "1e12", "--scheduler", "none")
    assert one_thread_main(argv) == 2
    assert_one_sentence(capsys.readouterr().err, "training diverged", "try a lower --lr")
    assert_every_file_loads(run)  # weights (if any epoch finished) and checkpoint: all finite
    state = load_checkpoint(run / "resume.safetensors")
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert temporaries(run) == []
    # Resuming the same recipe diverges the same way, with the same one sentence.
    assert one_thread_main(["train", "--resume", str(run), "-q"]) == 2
    assert_one_sentence(capsys.readouterr().err, "training diverged")


# ---------------------------------------------------------------------------- damaged files


def test_damaged_checkpoint_weights_and_cache(ws, tmp_path, capsys):
    """Files damaged after they were written (a bad disk, a copy cut short) are named, not loaded."""
    import shutil

    from cnnlab.data.decode import load_image
    from cnnlab.data.loader import make_loader

    run = tmp_path / "run"
    assert one_thread_main(train_args(ws, "damaged", "--epochs", "2", "--out", str(tmp_path), "--name", "run")) == 0
    capsys.readouterr()
    for name in ("resume.safetensors", "weights/best.safetensors"):
        path = run / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    code = main(["train", "--resume", str(run)])
    assert_one_sentence(capsys.readouterr().err, "resume.safetensors", "truncated or corrupt")
    assert code == 2
    assert main(["evaluate", str(run), "--split", "val", "--no-report", "--device", "cpu"]) == 2
    assert_one_sentence(capsys.readouterr().err, "best.safetensors: refused", "truncated or corrupt")
    assert main(["evaluate", str(run), "--split", "val", "--weights", "last", "--no-report", "--device", "cpu"]) == 0

    # A decode-cache file cut short is decoded again, not read as pixels.
    items = [(str(p), 0) for p in sorted((ws / "data" / "train").rglob("*.png"))]
    cache = tmp_path / "cache"
    make_loader(items, size=16, cache_dir=cache, progress=False)
    (npy,) = cache.rglob("*.npy")
    npy.write_bytes(npy.read_bytes()[:200])
    loader = make_loader(items, size=16, cache_dir=cache, progress=False)
    assert not loader.cache_hit
    x, _ = loader.batch(np.arange(1))
    assert torch.equal(x[0], torch.from_numpy(load_image(items[0][0], (16, 16))).permute(2, 0, 1))
    shutil.rmtree(cache)
