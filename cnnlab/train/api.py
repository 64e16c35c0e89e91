"""``cnnlab.train(DATA, **options)``: data -> model -> fit -> files, the whole run.

    import cnnlab
    run = cnnlab.train("data/leaves", model="vgg_bn", epochs=20)
    run.history()[-1]["val_accuracy"]
    model, meta = run.load_model("best")

    run = cnnlab.train(resume="runs/leaves-vgg_bn")     # after a crash or Ctrl-C

What it writes (see :mod:`cnnlab.run`): ``config.yaml`` (the resolved options),
``model.yaml``, ``classes.json``, ``split.json``, ``skipped.csv``, ``history.csv``,
``weights/best.safetensors`` and ``weights/last.safetensors``, and ``resume.safetensors``
(the full training state, rewritten after every epoch). With a test split it then evaluates
the best weights on it (``eval/test/``) and writes ``report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cnnlab.display import count
from cnnlab.errors import CnnlabError, SaidByMainProcess, is_main_process
from cnnlab.eval.evaluate import evaluate_run
from cnnlab.eval.report import write_report
from cnnlab.model.summary import summary
from cnnlab.run import RESUME_FILE, Run, read_split
from cnnlab.train import callbacks as cb
from cnnlab.train import distributed
from cnnlab.train.averaging import Lookahead
from cnnlab.train.config import MONITORS, TrainConfig, make_config, read_config_file
from cnnlab.train.cpu_share import ShareCpu, should_share
from cnnlab.train.lr_finder import range_test
from cnnlab.train.runfolder import (
    check_resumable,
    check_unfinished,
    new_run_dir,
    remove_stale_temporaries,
    start_run_folder,
    write_run_files,
)
from cnnlab.train.setup import build

# What may change when resuming: where it runs, not what it computes.
RESUME_OVERRIDES = ("device", "workers", "cache_dir", "evaluate", "tensorboard")
# Options decided from the data when left at None/auto: a resumed run keeps what was decided.
AUTO = {"precision": "auto", "shuffle": "auto"}


def say(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, flush=True)


def make_callbacks(setup, run_dir: Path, verbose: bool, has_val: bool) -> list[cb.Callback]:
    """The built-in callbacks a config asks for, in the order they must run at epoch end.

    TerminateOnNaN first (no checkpoint of broken weights), the time limit and schedules,
    then early stopping, the checkpoints and the logs.
    """
    cfg, hp = setup.cfg, setup.hparams
    monitor = cfg.monitor
    if not has_val and monitor.startswith("val_"):  # no validation data: val_accuracy -> accuracy
        monitor = monitor[4:]
    callbacks: list[cb.Callback] = [cb.TerminateOnNaN()]
    if cfg.time_limit:
        callbacks.append(cb.TimeLimit(cfg.time_limit))
    if cfg.scheduler == "plateau":  # a metric decides when, not the progress
        callbacks.append(cb.ReduceLROnPlateau("val_loss" if has_val else "loss", factor=cfg.gamma,
                                              patience=max(2, cfg.patience // 3)))
    elif cfg.scheduler != "none":  # a factor of progress (cnnlab.train.schedules), before every batch
        callbacks.append(cb.LRSchedule(cfg.scheduler, hp["warmup"], hp["step_size"], cfg.gamma))
    if cfg.weight_averaging != "none":  # before the checkpoints: they save the averaged weights
        callbacks.append(Lookahead(lookahead=cfg.weight_averaging == "lookahead"))
    if cfg.patience > 0:
        callbacks.append(cb.EarlyStopping(monitor, patience=cfg.patience, restore_best_weights=True))
    callbacks.append(cb.ModelCheckpoint(run_dir / "weights", monitor=monitor, meta=setup.meta()))
    callbacks.append(cb.CSVLogger(run_dir / "history.csv"))
    if cfg.tensorboard:
        callbacks.append(cb.TensorBoard(run_dir / "tensorboard"))
    if verbose:
        callbacks.append(cb.ProgressBar())

    given = cfg.precision if "precision" in cfg.model_fields_set else None
    if should_share(setup.device, given)[0]:  # after the bar: its notes follow the epoch's line
        callbacks.append(ShareCpu(verbose=verbose, start_share=getattr(setup, "busy_share", 0.0)))
    return callbacks


def describe(setup) -> str:
    """What is about to be trained: the data, the model (and why its precision), the recipe."""
    s = summary(setup.model)  # counted as Keras counts them, as `cnnlab summary` shows
    counts = f"{s.total_params:,} parameters" + (f", {s.trainable_params:,} trainable"
                                                if s.trainable_params != s.total_params else "")
    val = setup.val_loader.num_samples if setup.val_loader is not None else 0
    splits = f"{setup.train_loader.num_samples:,} train / {val:,} val"
    if "test" in setup.index.splits:
        splits += f" / {len(setup.index.splits['test']):,} test"
    h, w = setup.size
    cfg = setup.cfg
    return (f"data    {cfg.data}: {len(setup.index.classes)} classes, {splits} images, {h}x{w}x{setup.channels}\n"
            f"model   {setup.spec.name} ({counts}) on {setup.device} {setup.precision}, "
            f"{cfg.optimizer} lr {setup.hparams['lr']:g} {'constant' if cfg.scheduler == 'none' else cfg.scheduler}, "
            f"batch {cfg.batch_size}, "
            + count(cfg.epochs, "epoch") + (f" or {cfg.time_limit:g} min" if cfg.time_limit else "")
            + (f"\n        precision: {setup.precision_why}" if setup.precision_why else "")
            + (f"\n        busy: {setup.busy_note}" if setup.busy_note else "")
            + (f"\n        order: {setup.shuffle_why}" if getattr(setup, "shuffle_why", "") else "")
            + (f"\nrecipe  {cfg.recipe}: augment {cfg.augment}, label smoothing {cfg.label_smoothing:g}, "
               f"weight averaging {cfg.weight_averaging}, test TTA {cfg.tta}" if cfg.recipe else ""))


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
    trainer = None
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
                # Averaged weights are the model's final state: evaluate those (the last).
                weights = "last" if setup.cfg.weight_averaging != "none" else "best"
                _evaluate(run, "test" in setup.index.splits, setup.device, verbose, setup.cfg.tta, weights)
        distributed.barrier()
        return run
    finally:
        if trainer is not None:
            trainer.release()
        distributed.shutdown()


def _prepare(data, config, resume, callbacks, verbose: bool, run_base: str | None, options: dict[str, Any]):
    """(run folder, setup, trainer, resuming?): a new run's folder and files, or a run to resume."""
    if resume is not None:
        run_dir = Path(resume)
        cfg, setup = _resume_setup(run_dir, data, config, options, verbose)
        if not (run_dir / RESUME_FILE).is_file() and distributed.rank() == 0:  # it never got going
            write_run_files(run_dir, setup)
    else:
        cfg = make_config(config, data=str(data) if data is not None else None, **options)
        if not callbacks and cfg.monitor is not None and cfg.monitor not in MONITORS:  # custom callbacks may log other metrics
            raise CnnlabError(f"--monitor {cfg.monitor!r} is not a metric a run logs; use one of "
                              f"{', '.join(MONITORS)}")
        setup = build(cfg, None, verbose)
        main = distributed.rank() == 0
        run_dir = None
        if main:  # under torchrun, the main process names the run and writes its files
            base = run_base or f"{Path(str(cfg.data)).stem or 'data'}-{setup.spec.name}"
            run_dir = new_run_dir(cfg.out, cfg.name, base)
            start_run_folder(run_dir, setup)
        run_dir = Path(distributed.broadcast(str(run_dir) if main else None))
    resuming = distributed.broadcast((run_dir / RESUME_FILE).is_file())  # as the main process sees it
    has_val = setup.val_loader is not None
    verbose = verbose and distributed.rank() == 0
    trainer = setup.trainer(make_callbacks(setup, run_dir, verbose, has_val) + list(callbacks))
    return run_dir, setup, trainer, resuming


def _resume_setup(run_dir: Path, data, config, options: dict[str, Any], verbose: bool):
    """The config and data of an existing run, exactly as it started."""
    fresh = check_resumable(run_dir)
    if config is not None:
        raise CnnlabError("--resume takes the run's own config.yaml; do not pass --config")
    # a run from before --shuffle existed was shuffled fully: it goes on so, whatever the memory says now
    legacy = {} if "shuffle" in read_config_file(run_dir / "config.yaml") else {"shuffle": "full"}
    saved = make_config(run_dir / "config.yaml", **legacy)
    _check_unchanged(saved, run_dir, {k: v for k, v in options.items() if k not in RESUME_OVERRIDES})
    cfg = make_config(run_dir / "config.yaml", **legacy,
                      **{k: v for k, v in options.items() if k in RESUME_OVERRIDES})
    if data is not None and Path(str(data)).resolve() != Path(str(cfg.data)).resolve():
        raise CnnlabError(f"{run_dir} was trained on {cfg.data}, not {data}")
    if not fresh:
        check_unfinished(run_dir)
    remove_stale_temporaries(run_dir)
    if fresh:
        return cfg, build(cfg, None, verbose)
    index = read_split(run_dir)
    if index is None:
        raise CnnlabError(f"{run_dir / 'split.json'}: missing, so the run cannot go on with the same images")
    return cfg, build(cfg, index, verbose)


def _check_unchanged(saved: TrainConfig, run_dir: Path, given: dict[str, Any]) -> None:
    """Options given with --resume must equal the run's: the same command may be repeated.

    A value left to "auto" when the run started was resolved then (config.yaml holds what was
    decided), so giving "auto" again is no change; --out/--name naming this run are none either.
    """
    given = {k: v for k, v in given.items() if v is not None and AUTO.get(k, object()) != v}
    named = Path(str(given.pop("out", run_dir.parent))) / str(given.pop("name", run_dir.name))
    if named.resolve() != run_dir.resolve():
        raise CnnlabError(f"--resume {run_dir}: --out/--name name another run; give just --resume {run_dir}")
    for key, value in given.items():
        new = getattr(make_config(None, **{key: value}), key)  # as the config reads it (64 -> 64, "64x48"...)
        if new != getattr(saved, key):
            flag = "--" + key.replace("_", "-")
            raise CnnlabError(f"--resume continues {run_dir} as it was configured: {flag} was "
                              f"{_shown(getattr(saved, key))} there, not {_shown(new)} (leave it out, or start "
                              f"a new run without --resume; only {', '.join(RESUME_OVERRIDES)} can change)")


def _shown(value: Any) -> str:
    if isinstance(value, bool):  # a switch (--compile, --tensorboard): "was off there, not on"
        return "on" if value else "off"
    return "none" if value is None else str(value)


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


def _evaluate(run, has_test: bool, device, verbose: bool, tta: str = "none", weights: str = "best") -> None:
    """Evaluate the best (or given) weights on the test split, then write report.html."""
    if has_test:  # this also refreshes report.html
        # in the precision it trained in: fp32 stays exact, bf16 evaluates faster (see cnnlab.eval.infer)
        result = evaluate_run(run, split="test", weights=weights, tta=tta, device=str(device), precision="run")
        how = f"{weights} weights" + (f", TTA {tta}" if tta != "none" else "")
        if result["inference_precision"] != "fp32":
            how += f", {result['inference_precision'].split('+')[0]}"
        say(f"test    accuracy {result['accuracy']:.4f} ({how}): {run.eval_dir('test')}", verbose)
    else:
        write_report(run.path)
    say(f"report  {run.path / 'report.html'}", verbose)


def lr_find(data: str | Path | None = None, *, config: str | Path | None = None, start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 100, verbose: bool = True, **options: Any):
    """The learning-rate range test on a fresh model, built as ``cnnlab.train`` would build it.

    ``options`` are :class:`~cnnlab.train.config.TrainConfig` keys (``model``, ``optimizer``,
    ``batch_size``...). Returns ``(result, setup)``: the
    :class:`~cnnlab.train.lr_finder.LRFinderResult` (``result.suggested``, ``result.lrs``,
    ``result.losses``) and the setup it ran on. Nothing is written; see ``cnnlab lr-find``
    for the plot.
    """
    if distributed.world_size() > 1:  # checked before any process joins a group
        error = CnnlabError if is_main_process() else SaidByMainProcess
        raise error(f"lr-find sweeps in one process; run it without torchrun (for {distributed.world_size()} "
                    f"processes of --batch-size B, sweep with --batch-size {distributed.world_size()}*B)")
    if steps < 10:  # the curve needs points to smooth, and a few to skip at each end
        raise CnnlabError(f"--steps must be at least 10, got {steps}")
    if not 0 < start_lr < end_lr:
        raise CnnlabError(f"--start-lr must be positive and below --end-lr, got {start_lr} and {end_lr}")
    cfg = make_config(config, data=str(data) if data is not None else None, **options)
    setup = build(cfg, verbose=verbose)
    trainer = setup.trainer(lr=start_lr)
    say(f"sweeping the learning rate from {start_lr:g} to {end_lr:g} over {steps} batches of "
        f"{setup.cfg.batch_size} ({setup.spec.name}, {setup.cfg.optimizer}, {setup.device})", verbose)
    return range_test(trainer, setup.train_loader, start_lr, end_lr, steps), setup
