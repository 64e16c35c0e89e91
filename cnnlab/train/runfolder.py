"""The run folder's life, from ``cnnlab train`` to ``--resume``.

A new run gets a free name (:func:`new_run_dir`) and its files before epoch 1
(:func:`start_run_folder`); a folder killed before it wrote them is *abandoned* and may be
reused; one killed before its first epoch has *never started* and starts again from its
config; any other is resumed from ``resume.safetensors`` (:func:`check_resumable`,
:func:`latest_unfinished`). What a finished folder holds, and how to read it:
:mod:`cnnlab.run`.

Under torchrun, the folder a job started holds ``.torchrun-job`` (a token the job also noted
in torchrun's store), so that a group torchrun restarts finds it again (:func:`find_job_run`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from cnnlab.display import count
from cnnlab.errors import CnnlabError
from cnnlab.io.checkpoint import load_checkpoint
from cnnlab.io.fs import atomic_write_text
from cnnlab.run import RESUME_FILE

JOB_FILE = ".torchrun-job"  # the token of the torchrun job that started the run (find_job_run)


def new_run_dir(out: str | Path, name: str | None, base: str) -> Path:
    """out/name (which must be new), or out/base, out/base-2, out/base-3... (the first free)."""
    out = Path(out)
    if name:
        path = out / name
        if path.exists() and not is_abandoned(path):
            raise CnnlabError(f"{path} already exists; continue it with --resume {path}, or pick another --name")
        return path
    path, i = out / base, 1
    while path.exists():
        i += 1
        path = out / f"{base}-{i}"
    return path


def is_abandoned(path: Path) -> bool:
    """A run folder killed before it wrote config.yaml: an empty weights/ and temporary files."""
    if not (path / "weights").is_dir():
        return False
    for p in path.iterdir():
        empty_weights = p.name == "weights" and p.is_dir() and not any(p.iterdir())
        if not (empty_weights or (p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"))):
            return False
    return True


def never_started(run_dir: Path) -> bool:
    """A run killed before its first checkpoint: its files are written, no epoch ever began."""
    return (not (run_dir / RESUME_FILE).exists() and not (run_dir / "history.csv").exists()
            and not any((run_dir / "weights").glob("*.safetensors")))


def write_run_files(run_dir: Path, setup) -> None:
    """config.yaml, model.yaml, classes.json, split.json, skipped.csv: all before epoch 1."""
    try:
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --out is a file, a read-only folder...
        raise CnnlabError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
    atomic_write_text(run_dir / "config.yaml", setup.resolved_config().to_yaml())
    atomic_write_text(run_dir / "model.yaml", setup.spec.to_yaml())
    atomic_write_text(run_dir / "classes.json", json.dumps(list(setup.index.classes), indent=1) + "\n")
    atomic_write_text(run_dir / "split.json", json.dumps(setup.index.to_json()) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["split", "path", "reason"])
    w.writerows(setup.bad_files)
    atomic_write_text(run_dir / "skipped.csv", buf.getvalue())


def start_run_folder(run_dir: Path, setup) -> None:
    """write_run_files into a new folder; if that fails (a full disk...), no half-made run is left."""
    existed = run_dir.exists()
    if existed:  # abandoned (see new_run_dir): clear its temporary files
        remove_stale_temporaries(run_dir)
    try:
        write_run_files(run_dir, setup)
    except BaseException:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a crash cut short (``.name.XXXX.tmp``): never the real files.

    This also checks, before any training, that the run folder can still be written to.
    """
    try:
        for folder in (run_dir, run_dir / "weights"):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise CnnlabError(f"cannot write in {run_dir} ({e.strerror or e}); copy the run to a folder "
                          "you can write to and resume it there") from None


def check_resumable(run_dir: Path) -> bool:
    """Raise unless ``run_dir`` is a run to resume; True if it never started (it starts afresh)."""
    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir}: not a cnnlab training run (no config.yaml), nothing to resume")
    fresh = never_started(run_dir)  # killed while setting up: it starts again from its config
    if not fresh and not (run_dir / RESUME_FILE).is_file():
        raise CnnlabError(f"{run_dir}: has no {RESUME_FILE} to resume from (was it trained by an older cnnlab?)")
    return fresh


def check_unfinished(run_dir: Path) -> None:
    """Raise if the run's checkpoint says it has finished (stopped early, or all its epochs)."""
    state = load_checkpoint(run_dir / RESUME_FILE)
    if state["stopped"] or state["epoch"] >= state["epochs"]:
        raise CnnlabError(f"{run_dir} has finished ({count(state['epoch'], 'epoch')}); nothing to resume")


def latest_unfinished(out: str | Path) -> Path:
    """The run under ``out`` whose checkpoint was written last and is not finished."""
    candidates = sorted(Path(out).glob(f"*/{RESUME_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        state = load_checkpoint(path)
        if not state["stopped"] and state["epoch"] < state["epochs"]:
            return path.parent
    raise CnnlabError(f"{out}: no unfinished run to resume (name one: --resume runs/NAME)")


def mark_job_run(run_dir: Path, token: str) -> None:
    """Write the torchrun job's token into the run folder it started."""
    atomic_write_text(Path(run_dir) / JOB_FILE, token + "\n")


def find_job_run(record: dict | None, host: str) -> str | None:
    """The run folder a restarted torchrun job continues, from what its first group noted
    (``record``: run, token, host; None when nothing was noted): None to start a new run.

    The folder must hold the same token. Not finding it from another node than the one that
    made it means the folder is not shared: a restarted group cannot continue it there."""
    if record is None:
        return None
    run_dir = Path(record["run"])
    marker = run_dir / JOB_FILE
    if marker.is_file():
        if marker.read_text().strip() != record["token"]:
            raise CnnlabError(f"{run_dir} belongs to another torchrun job ({JOB_FILE} differs), so this restarted "
                              "group cannot continue it there; give another --name")
        return str(run_dir)
    if record["host"] != host:
        raise CnnlabError(f"torchrun restarted the group, and rank 0 now runs on node {host}, where {run_dir} "
                          f"(started on node {record['host']}) is not: for elastic restarts across nodes, put "
                          "--out on a filesystem every node shares")
    if (run_dir / "config.yaml").is_file():  # stopped after its files, before its token: ours all the same
        return str(run_dir)
    return None  # stopped before it wrote its files: start it anew
