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

import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from cnnlab.data.decode import BadImage
from cnnlab.data.preprocess import Preprocessor
from cnnlab.display import count
from cnnlab.errors import CnnlabError, SaidByAnotherProcess, is_main_process
from cnnlab.eval.evaluate import evaluate_run
from cnnlab.eval.report import write_report
from cnnlab.eval.tta import views
from cnnlab.model.summary import summary
from cnnlab.run import RESUME_FILE, Run, read_split
from cnnlab.train import callbacks as cb
from cnnlab.train import distributed
from cnnlab.train.averaging import Lookahead
from cnnlab.train.config import MONITORS, TrainConfig, make_config, read_config_file
from cnnlab.train.cpu_share import ShareCpu, should_share
from cnnlab.train.lr_finder import range_test
from cnnlab.train.resume import position
from cnnlab.train.runfolder import (
    check_resumable,
    check_unfinished,
    find_job_run,
    mark_job_run,
    new_run_dir,
    remove_stale_temporaries,
    start_run_folder,
    write_run_files,
)
from cnnlab.train.setup import build

# What may change when resuming: where it runs, not what it computes.
RESUME_OVERRIDES = ("device", "workers", "cache_dir", "evaluate", "tensorboard", "checkpoint_every")
# Options decided from the data when left at None/auto: a resumed run keeps what was decided.
AUTO = {"precision": "auto", "shuffle": "auto"}


def say(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, flush=True)


# Seconds the test evaluation's figures (two confusion matrices, the top losses) and the
# report take after its predictions: 5.2 s for Imagenette's 10 classes on a 2-core AVX2-only
# EPYC (the files' times in the run folder), 3.4 of them the evaluation's figures.
EVAL_FIGURES_S = 6.0


def after_training(setup, sample: int = 8) -> cb.AfterTraining:
    """What this command does once training stops, for ``--time-limit`` to keep time for: the
    test split's evaluation (``--evaluate``, with the run's TTA views; the decoding of an image
    timed on up to ``sample`` test files now) and the report."""
    test = (setup.index.splits.get("test") or []) if setup.cfg.evaluate else []
    if not test:
        return cb.AfterTraining()
    files = [p for p, _ in test[::max(1, len(test) // sample)][:sample]]
    pre = Preprocessor.from_meta(setup.meta())
    t0 = time.perf_counter()
    for path in files:
        try:
            pre.load_uint8(path)
        except BadImage:  # the evaluation says so; its time is what counts here
            pass
    decode = (time.perf_counter() - t0) / len(files)
    return cb.AfterTraining(len(test), len(views(setup.cfg.tta or "none")), decode, fixed=EVAL_FIGURES_S)


def make_callbacks(setup, run_dir: Path, verbose: bool, has_val: bool,
                   started: float | None = None) -> list[cb.Callback]:
    """The built-in callbacks a config asks for, in the order they must run at epoch end.

    TerminateOnNaN first (no checkpoint of broken weights), the time limit and schedules,
    then early stopping, the checkpoints and the logs. ``started``: the command's start
    (``time.perf_counter()``), so that ``--time-limit`` counts the time before training too.
    """
    cfg, hp = setup.cfg, setup.hparams
    monitor = cfg.monitor
    if not has_val and monitor.startswith("val_"):  # no validation data: val_accuracy -> accuracy
        monitor = monitor[4:]
    callbacks: list[cb.Callback] = [cb.TerminateOnNaN()]
    if cfg.time_limit:
        spent = time.perf_counter() - started if started is not None else 0.0
        callbacks.append(cb.TimeLimit(cfg.time_limit, spent_before=spent, after=after_training(setup)))
    if cfg.progressive or cfg.train_scale < 1:  # before TimeLimit's first plan: it reads the steps' cost
        callbacks.append(cb.ProgressiveResize.from_options(setup.size, cfg.progressive, cfg.train_scale, setup.stride))
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
               f"weight averaging {cfg.weight_averaging}, test TTA {cfg.tta}" if cfg.recipe else "")
            + (f"\nsizes   {line}" if (line := resize_line(setup)) else ""))


def resize_line(setup) -> str:
    """'trains at 80x80 px, growing to 112x112 over the middle half of the steps; validated and
    tested at 128x128 (FixRes)'."""
    cfg, (h, w) = setup.cfg, setup.size
    plan = cb.ProgressiveResize.from_options(setup.size, cfg.progressive, cfg.train_scale, setup.stride)
    if plan is None:
        return ""
    first, last = plan.size_at(0.0), plan.size_at(1.0)
    grows = f", growing to {last[0]}x{last[1]} over the middle half of the steps" if first != last else ""
    return (f"trains at {first[0]}x{first[1]} px{grows} (multiples of {setup.stride}, the model's stride); "
            f"validated and tested at {h}x{w}" + (" (FixRes)" if last != (h, w) else ""))


def train(data: str | Path | None = None, *, config: str | Path | None = None,
          resume: str | Path | None = None, callbacks: Sequence[cb.Callback] = (),
          verbose: bool = True, run_base: str | None = None, **options: Any):
    """Train a CNN on ``data`` and return its :class:`cnnlab.run.Run`.

    ``options`` are the keys of :class:`~cnnlab.train.config.TrainConfig` (``model``,
    ``epochs``, ``lr``...); ``config`` a YAML file of them (options win). ``resume`` is a
    run folder to continue from its last checkpoint. ``callbacks`` are added after the
    built-in ones (they must be the same when resuming). ``run_base`` names the run folder
    when ``name`` is not given (default ``<data>-<model>``; -2, -3... when taken).

    Under torchrun with ``--max-restarts``, a group that torchrun restarted continues the run
    its job started, from its newest checkpoint, by itself (see :func:`_job_run`). Only rank 0
    writes the run folder; a process on another node, where the folder is not, returns None.
    """
    started = time.perf_counter()  # --time-limit is the whole command's time, not only training's
    trainer = None
    try:
        run_dir, setup, trainer, resuming, continued = _prepare(data, config, resume, callbacks, verbose,
                                                                run_base, options, started)
        verbose = verbose and trainer.is_main
        say(describe(setup) + sync_bn_note(setup, trainer), verbose)
        say(f"run     {run_dir}" + ("  (resumed)" if resume is not None else ""), verbose)
        if continued and verbose:
            say(restart_note(run_dir, distributed.restart_number()), verbose)
        with distributed.watch(lambda: f"while training (epoch {trainer.epoch}, batch {trainer.batch + 1})"):
            trainer.fit(setup.train_loader, setup.val_loader, epochs=setup.cfg.epochs,
                        checkpoint=run_dir / RESUME_FILE, resume=resuming,
                        checkpoint_every=setup.cfg.checkpoint_every)
        # the folder is rank 0's: on another node (no shared filesystem) a process has none to open
        run = Run(run_dir) if trainer.is_main or run_dir.is_dir() else None
        if trainer.is_main:
            _finish(trainer, run_dir, verbose)
            if setup.cfg.evaluate:
                # Averaged weights are the model's final state: evaluate those (the last).
                weights = "last" if setup.cfg.weight_averaging != "none" else "best"
                _evaluate(run, "test" in setup.index.splits, setup.device, verbose, setup.cfg.tta, weights)
        distributed.barrier("while rank 0 finished the run (its last files and the test evaluation)")
        return run
    finally:
        if trainer is not None:
            trainer.release()
        distributed.shutdown()


def sync_bn_note(setup, trainer) -> str:
    """The line under the model's that says what --sync-bn did ("" without it)."""
    if not setup.cfg.sync_bn:
        return ""
    if trainer.world == 1:
        return "\n        sync-bn: one process, nothing to synchronise: plain batch norm"
    if trainer.synced_batch_norms == 0:
        return "\n        sync-bn: the model has no batch norm to synchronise"
    return (f"\n        sync-bn: {count(trainer.synced_batch_norms, 'batch norm')} synchronised over "
            f"{trainer.world} processes (SyncBatchNorm)")


def restart_note(run_dir: Path, restarts: int) -> str:
    """'restart 1 of the group: continuing runs/x from epoch 3, batch 17' (rank 0 reads the checkpoint)."""
    head = f"restart {restarts} of the group" if restarts else "torchrun restarted the group"
    at = position(run_dir / RESUME_FILE)
    if at is None:
        return f"{head}: starting {run_dir} again (it had not begun training)"
    return f"{head}: continuing {run_dir} from epoch {at[0]}, batch {at[1]}"


def _prepare(data, config, resume, callbacks, verbose: bool, run_base: str | None, options: dict[str, Any],
             started: float | None = None):
    """(run folder, setup, trainer, resuming?, continued?): a new run's folder and files, a run to
    resume, or (under torchrun) the run that a restarted group continues."""
    found = None
    if resume is not None:
        run_dir = Path(resume)
        distributed.init(str(options.get("device") or "auto"))
        setup = _resume_setup(run_dir, data, config, options, verbose)
    else:
        cfg = _new_config(data, config, callbacks, options)
        found = _job_run()
        if found is not None:
            run_dir = found
            setup = _resume_setup(run_dir, data, config, options, verbose, restart=True)
        else:
            setup = build(cfg, None, verbose)
            run_dir = _start_run(cfg, setup, run_base)
    if resume is not None or found is not None:
        with distributed.together("while rank 0 rewrote the files of a run that never began"):
            if distributed.rank() == 0 and not (run_dir / RESUME_FILE).is_file():  # it never got going
                write_run_files(run_dir, setup)
    resuming = distributed.broadcast((run_dir / RESUME_FILE).is_file())  # as the main process sees it
    continued = found is not None or (resume is not None and distributed.restart_number() > 0)
    has_val = setup.val_loader is not None
    verbose = verbose and distributed.rank() == 0
    trainer = setup.trainer(make_callbacks(setup, run_dir, verbose, has_val, started) + list(callbacks))
    return run_dir, setup, trainer, resuming, continued


def _new_config(data, config, callbacks, options: dict[str, Any]):
    """The config of a new run. Under torchrun the process joins its group here, and a mistake
    in the options is said once, by rank 0."""
    cfg, error = None, None
    try:
        cfg = make_config(config, data=str(data) if data is not None else None, **options)
        if not callbacks and cfg.monitor is not None and cfg.monitor not in MONITORS:  # custom callbacks may log other metrics
            raise CnnlabError(f"--monitor {cfg.monitor!r} is not a metric a run logs; use one of "
                              f"{', '.join(MONITORS)}")
    except CnnlabError as e:
        error = e
    distributed.init(cfg.device if cfg is not None else str(options.get("device") or "auto"))
    with distributed.together("while each process read the options"):
        if error is not None:
            raise error
    return cfg


def _job_run() -> Path | None:
    """Under torchrun, the run folder an earlier group of this torchrun job started, when
    torchrun restarted the group (``--max-restarts``): that group's rank 0 noted it in torchrun's
    store (which outlives the processes) and in the folder (``.torchrun-job``). None otherwise."""
    if not distributed.is_initialized():
        return None
    found = None
    with distributed.together("while rank 0 looked for the run this torchrun job started"):
        if distributed.rank() == 0:
            found = find_job_run(distributed.job_record(), distributed.host())
    found = distributed.broadcast(found, "while rank 0 looked for the run this torchrun job started")
    return Path(found) if found else None


def _start_run(cfg, setup, run_base: str | None) -> Path:
    """A new run folder and its files, named and written by the main process (under torchrun
    also noted for a restarted group: :func:`_job_run`)."""
    run_dir = None
    with distributed.together("while rank 0 made the run folder"):
        if distributed.rank() == 0:
            base = run_base or f"{Path(str(cfg.data)).stem or 'data'}-{setup.spec.name}"
            run_dir = new_run_dir(cfg.out, cfg.name, base)
            token = uuid.uuid4().hex
            noted = distributed.record_job({"run": str(run_dir), "token": token, "host": distributed.host()})
            start_run_folder(run_dir, setup)
            if noted:
                mark_job_run(run_dir, token)
    return Path(distributed.broadcast(str(run_dir) if run_dir is not None else None, "while rank 0 named the run"))


def _resume_setup(run_dir: Path, data, config, options: dict[str, Any], verbose: bool, restart: bool = False):
    """The setup of an existing run, exactly as it started. Rank 0 reads the run folder and
    sends what it read to the others (only its node needs the folder). ``restart``: torchrun
    restarted the group, which repeats its first command: nothing to compare with the run's."""
    read = None
    with distributed.together(f"while rank 0 read {run_dir}"):
        if distributed.rank() == 0:
            read = _read_run(run_dir, data, config, options, restart)
    cfg, index = distributed.broadcast(read, f"while rank 0 read {run_dir}")
    return build(cfg, index, verbose)


def _read_run(run_dir: Path, data, config, options: dict[str, Any], restart: bool):
    """(config, split) of a run to continue; None for the split of one that never started."""
    fresh = check_resumable(run_dir)
    # a run from before --shuffle existed was shuffled fully: it goes on so, whatever the memory says now
    legacy = {} if "shuffle" in read_config_file(run_dir / "config.yaml") else {"shuffle": "full"}
    if not restart:
        if config is not None:
            raise CnnlabError("--resume takes the run's own config.yaml; do not pass --config")
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
        return cfg, None
    index = read_split(run_dir)
    if index is None:
        raise CnnlabError(f"{run_dir / 'split.json'}: missing, so the run cannot go on with the same images")
    return cfg, index


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
        error = CnnlabError if is_main_process() else SaidByAnotherProcess
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
