"""``cnnlab.train(DATA, **options)``: data -> model -> fit -> files, the whole run.

    import cnnlab
    run = cnnlab.train("data/leaves", model="vgg_bn", epochs=20)
    run.history()[-1]["val_acc"]
    model, meta = run.load_model("best")

    run = cnnlab.train(resume="runs/leaves-vgg_bn")     # after a crash or Ctrl-C

What it writes (see :mod:`cnnlab.run`): ``config.yaml`` (the resolved options),
``model.yaml``, ``classes.json``, ``split.json``, ``skipped.csv``, ``history.csv``,
``weights/best.safetensors`` and ``weights/last.safetensors``, and ``resume.safetensors``
(the full training state, rewritten after every epoch). With a test split it then evaluates
the best weights on it (``eval/test/``) and writes ``report.html``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from cnnlab.errors import CnnlabError
from cnnlab.io.fs import atomic_write_text
from cnnlab.train import callbacks as cb
from cnnlab.train.config import TrainConfig, make_config

RESUME_FILE = "resume.safetensors"
# What may change when resuming: where it runs, not what it computes.
RESUME_OVERRIDES = ("device", "workers", "cache_dir", "evaluate", "tensorboard")
MONITORS = ("val_acc", "val_loss", "train_acc", "train_loss")


def say(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, flush=True)


def new_run_dir(out: str | Path, name: str | None, base: str) -> Path:
    """out/name (which must be new), or out/base, out/base-2, out/base-3... (the first free)."""
    out = Path(out)
    if name:
        path = out / name
        if path.exists() and not _abandoned(path):
            raise CnnlabError(f"{path} already exists; continue it with --resume {path}, or pick another --name")
        return path
    path, i = out / base, 1
    while path.exists():
        i += 1
        path = out / f"{base}-{i}"
    return path


def _abandoned(path: Path) -> bool:
    """A run folder killed before it wrote config.yaml: an empty weights/ and temporary files."""
    if not (path / "weights").is_dir():
        return False
    for p in path.iterdir():
        empty_weights = p.name == "weights" and p.is_dir() and not any(p.iterdir())
        if not (empty_weights or (p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"))):
            return False
    return True


def make_callbacks(setup, run_dir: Path, verbose: bool, has_val: bool) -> list[cb.Callback]:
    """The built-in callbacks a config asks for, in the order they must run at epoch end.

    TerminateOnNaN first (no checkpoint of broken weights), the time limit and schedules,
    then early stopping, the checkpoints and the logs.
    """
    cfg, hp = setup.cfg, setup.hparams
    monitor = cfg.monitor
    if not has_val and monitor.startswith("val_"):
        monitor = "train_" + monitor[4:]
    callbacks: list[cb.Callback] = [cb.TerminateOnNaN()]
    if cfg.time_limit:
        callbacks.append(cb.TimeLimit(cfg.time_limit))
    if cfg.scheduler in ("cosine", "onecycle", "step"):
        callbacks.append(cb.LRSchedule(cfg.scheduler, hp["warmup"], hp["step_size"], cfg.gamma))
    elif cfg.scheduler == "plateau":
        callbacks.append(cb.ReduceLROnPlateau("val_loss" if has_val else "train_loss", factor=cfg.gamma,
                                              patience=max(2, cfg.patience // 3)))
    if cfg.patience > 0:
        callbacks.append(cb.EarlyStopping(monitor, patience=cfg.patience, restore_best_weights=True))
    callbacks.append(cb.ModelCheckpoint(run_dir / "weights", monitor=monitor, meta=setup.meta()))
    callbacks.append(cb.CSVLogger(run_dir / "history.csv"))
    if cfg.tensorboard:
        callbacks.append(cb.TensorBoard(run_dir / "tensorboard"))
    if verbose:
        callbacks.append(cb.ProgressBar())
    return callbacks


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


def _start_run_folder(run_dir: Path, setup) -> None:
    """write_run_files into a new folder; if that fails (a full disk...), no half-made run is left."""
    import shutil

    existed = run_dir.exists()
    if existed:  # abandoned (see new_run_dir): clear its temporary files
        _remove_stale_temporaries(run_dir)
    try:
        write_run_files(run_dir, setup)
    except BaseException:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _never_started(run_dir: Path) -> bool:
    """A run killed before its first checkpoint: its files are written, no epoch ever began."""
    return (not (run_dir / RESUME_FILE).exists() and not (run_dir / "history.csv").exists()
            and not any((run_dir / "weights").glob("*.safetensors")))


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a crash cut short (``.name.XXXX.tmp``): never the real files.

    This also checks, before any training, that the run folder can still be written to.
    """
    import os
    import tempfile

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


def describe(setup) -> str:
    """Two lines on what is about to be trained."""
    n_params = sum(p.numel() for p in setup.model.parameters())
    val = setup.val_loader.num_samples if setup.val_loader is not None else 0
    splits = f"{setup.train_loader.num_samples:,} train / {val:,} val"
    if "test" in setup.index.splits:
        splits += f" / {len(setup.index.splits['test']):,} test"
    h, w = setup.size
    cfg = setup.cfg
    return (f"data    {cfg.data}: {len(setup.index.classes)} classes, {splits} images, {h}x{w}x{setup.channels}\n"
            f"model   {setup.spec.name} ({n_params:,} parameters) on {setup.device} {setup.precision}, "
            f"{cfg.optimizer} lr {setup.hparams['lr']:g} {cfg.scheduler}, batch {cfg.batch_size}, "
            f"{cfg.epochs} epochs" + (f" or {cfg.time_limit:g} min" if cfg.time_limit else ""))


def train(data: str | Path | None = None, *, config: str | Path | None = None,
          resume: str | Path | None = None, callbacks: Sequence[cb.Callback] = (),
          verbose: bool = True, run_base: str | None = None, **options: Any):
    """Train a CNN on ``data`` and return its :class:`cnnlab.run.Run`.

    ``options`` are the keys of :class:`~cnnlab.train.config.TrainConfig` (``model``,
    ``epochs``, ``lr``...); ``config`` a YAML file of them (options win). ``resume`` is a
    run folder to continue from its last checkpoint. ``callbacks`` are added after the
    built-in ones (they must be the same when resuming). ``run_base`` names the run folder
    when ``name`` is not given (default ``<data>-<model>``; -2, -3... when taken).
    """
    from cnnlab.run import Run
    from cnnlab.train import distributed

    try:
        run_dir, setup, trainer, resuming = _prepare(data, config, resume, callbacks, verbose, run_base,
                                                     options)
        verbose = verbose and trainer.is_main
        say(describe(setup), verbose)
        say(f"run     {run_dir}" + ("  (resumed)" if resume is not None else ""), verbose)
        trainer.fit(setup.train_loader, setup.val_loader, epochs=setup.cfg.epochs,
                    checkpoint=run_dir / RESUME_FILE, resume=resuming)
        run = Run(run_dir)
        if trainer.is_main:
            _finish(trainer, run_dir, verbose)
            if setup.cfg.evaluate:
                _evaluate(run, "test" in setup.index.splits, setup.device, verbose)
        distributed.barrier()
        return run
    finally:
        distributed.shutdown()


def _prepare(data, config, resume, callbacks, verbose: bool, run_base: str | None, options: dict[str, Any]):
    """(run folder, setup, trainer, resuming?): a new run's folder and files, or a run to resume."""
    from cnnlab.train import distributed

    if resume is not None:
        run_dir = Path(resume)
        cfg, setup = _resume_setup(run_dir, data, config, options, verbose)
        if not (run_dir / RESUME_FILE).is_file() and distributed.rank() == 0:  # it never got going
            write_run_files(run_dir, setup)
    else:
        cfg = make_config(config, data=str(data) if data is not None else None, **options)
        if not callbacks and cfg.monitor not in MONITORS:  # custom callbacks may log other metrics
            raise CnnlabError(f"--monitor {cfg.monitor!r} is not a metric a run logs; use one of "
                              f"{', '.join(MONITORS)}")
        setup = _build(cfg, None, verbose)
        main = distributed.rank() == 0
        run_dir = None
        if main:  # under torchrun, the main process names the run and writes its files
            from cnnlab.model.spec import load_spec

            base = run_base or f"{Path(str(cfg.data)).stem or 'data'}-{load_spec(cfg.model).name}"
            run_dir = new_run_dir(cfg.out, cfg.name, base)
            _start_run_folder(run_dir, setup)
        run_dir = Path(distributed.broadcast(str(run_dir) if main else None))
    resuming = distributed.broadcast((run_dir / RESUME_FILE).is_file())  # as the main process sees it
    has_val = setup.val_loader is not None
    verbose = verbose and distributed.rank() == 0
    trainer = _trainer(setup, make_callbacks(setup, run_dir, verbose, has_val) + list(callbacks))
    return run_dir, setup, trainer, resuming


def _build(cfg: TrainConfig, index, verbose: bool):
    """Data and model; under torchrun, one process per device, each with its shard."""
    from cnnlab.train import distributed
    from cnnlab.train.setup import build

    device = distributed.init(cfg.device)
    if device is None:
        return build(cfg, index, verbose)
    cfg = cfg.model_copy(update={"device": str(device)})
    rank, world = distributed.rank(), distributed.world_size()
    if rank != 0:
        distributed.barrier()  # let the main process fill the decode cache first
    setup = build(cfg, index, verbose and rank == 0)
    if rank == 0:
        distributed.barrier()
    setup.train_loader = distributed.ShardedLoader(setup.train_loader, rank, world, train=True)
    if setup.val_loader is not None:
        setup.val_loader = distributed.ShardedLoader(setup.val_loader, rank, world, train=False)
    return setup


def _trainer(setup, callbacks):
    from cnnlab.train.loop import Trainer
    from cnnlab.train.setup import loss_for, make_optimizer

    hp = setup.hparams
    optimizer = make_optimizer(setup.model, setup.cfg.optimizer, hp["lr"], hp["weight_decay"],
                               setup.cfg.momentum, setup.device)
    return Trainer(setup.model, optimizer, loss_fn=loss_for(setup), device=setup.device,
                   precision=setup.precision, channels_last=setup.channels_last,
                   normalization=setup.normalization, augment=setup.augmenter, seed=setup.cfg.seed,
                   callbacks=callbacks)


def _resume_setup(run_dir: Path, data, config, options: dict[str, Any], verbose: bool):
    """The config and data of an existing run, exactly as it started."""
    from cnnlab.data.datasets import DataIndex
    from cnnlab.train.checkpoint import load_checkpoint

    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir}: not a cnnlab training run (no config.yaml), nothing to resume")
    fresh = _never_started(run_dir)  # killed while setting up: it starts again from its config
    if not fresh and not (run_dir / RESUME_FILE).is_file():
        raise CnnlabError(f"{run_dir}: has no {RESUME_FILE} to resume from (was it trained by an older cnnlab?)")
    if config is not None:
        raise CnnlabError("--resume takes the run's own config.yaml; do not pass --config")
    changed = sorted(k for k, v in options.items() if v is not None and k not in RESUME_OVERRIDES)
    if changed:
        raise CnnlabError(f"--resume continues the run as it was configured; --{changed[0].replace('_', '-')} "
                          f"cannot change (only {', '.join(RESUME_OVERRIDES)} can)")
    cfg = make_config(run_dir / "config.yaml", **{k: v for k, v in options.items() if k in RESUME_OVERRIDES})
    if data is not None and Path(str(data)).resolve() != Path(str(cfg.data)).resolve():
        raise CnnlabError(f"{run_dir} was trained on {cfg.data}, not {data}")
    if not fresh:
        state = load_checkpoint(run_dir / RESUME_FILE)
        if state["stopped"] or state["epoch"] >= state["epochs"]:
            raise CnnlabError(f"{run_dir} has finished ({state['epoch']} epochs); nothing to resume")
    _remove_stale_temporaries(run_dir)
    if fresh:
        return cfg, _build(cfg, None, verbose)
    index = DataIndex.from_json(json.loads((run_dir / "split.json").read_text()))
    return cfg, _build(cfg, index, verbose)


def _finish(trainer, run_dir: Path, verbose: bool) -> None:
    """Say what came out of training."""
    if not verbose or not trainer.history:
        return
    best = None
    for c in trainer.callbacks:
        if isinstance(c, cb.ModelCheckpoint):
            best = c.best
    if trainer.stop_reason:
        print(trainer.stop_reason)
    if best is not None and best.epoch:
        print(f"best    {best.monitor} {best.value:.4f} at epoch {best.epoch}: {run_dir / 'weights' / 'best.safetensors'}")


def _evaluate(run, has_test: bool, device, verbose: bool) -> None:
    """Evaluate the best weights on the test split, then write report.html."""
    from cnnlab.eval.evaluate import evaluate_run
    from cnnlab.eval.report import write_report

    if has_test:  # this also refreshes report.html
        result = evaluate_run(run, split="test", weights="best", device=str(device))
        say(f"test    accuracy {result['accuracy']:.4f} (best weights): {run.eval_dir('test')}", verbose)
    else:
        write_report(run.path)
    say(f"report  {run.path / 'report.html'}", verbose)
