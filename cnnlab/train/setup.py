"""From a config to the pieces the loop needs: data, model, optimiser, loss, device.

Shared by ``cnnlab train`` and ``cnnlab lr-find``, in three steps (:func:`build`):

1. **facts** (:func:`gather_facts`): the data is discovered and checked, a sample of its
   images measured, the device picked -- once;
2. **decisions** (:func:`decide`): :mod:`cnnlab.train.auto`'s pure choices from those facts
   (and, under ``--time-limit``, from steps timed on this machine) give one resolved config;
3. **building** (:func:`assemble`): the model, the loaders and the normalisation, once,
   from that config.

The decisions a user did not make are made from the data:

* image size: the model's input size, or the images' own (median) size when they are
  smaller (CIFAR's 32x32 photos are not blown up to 64x64);
* channels: 1 when every sampled image is grayscale, else 3;
* normalisation: the training images' per-channel mean and std;
* device and precision: CUDA, then MPS, then the CPU; bf16 autocast on GPUs that support
  it (fp16 with a gradient scaler on older ones), fp32 on the CPU;
* no weight decay on biases and batch-norm parameters (decay is for the weights).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data.augment import Augmenter, parse_augment
from cnnlab.data.datasets import DataIndex, discover
from cnnlab.data.decode import BadImage, open_image
from cnnlab.data.loader import make_loader, print_bad_files
from cnnlab.data.normalize import Normalization, class_weights, compute_mean_std
from cnnlab.device import (
    CpuContention,
    choose_precision,
    measure_precision,
    pick_device,
    time_steps,
)
from cnnlab.display import count
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.formats.keras import is_keras_file, preprocessing_inside
from cnnlab.formats.open import init_weights, open_spec
from cnnlab.model.build import build_model
from cnnlab.model.layers import data_init
from cnnlab.model.spec import ModelSpec, size_free
from cnnlab.train import auto, distributed
from cnnlab.train.config import DEFAULT_MODEL, TrainConfig, resolved_defaults
from cnnlab.train.callbacks import ProgressiveResize
from cnnlab.train.distributed import ShardedLoader
from cnnlab.train.loop import Trainer
from cnnlab.train.losses import LOSSES, is_binary
from cnnlab.train.optimizers import make_optimizer
from cnnlab.train.recipes import RECIPES, get_recipe, recipe_options

GRAY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L"}


@dataclass
class Setup:
    """Everything built from a config, before training starts."""

    cfg: TrainConfig
    index: Any  # cnnlab.data.datasets.DataIndex
    size: tuple[int, int]
    channels: int
    spec: Any  # cnnlab.model.spec.ModelSpec
    model: nn.Module
    train_loader: Any
    val_loader: Any | None
    normalization: Any  # cnnlab.data.normalize.Normalization
    augmenter: Any | None
    device: torch.device
    precision: str
    channels_last: bool
    hparams: dict[str, Any]  # lr, weight_decay, warmup, step_size as used
    val_subset: Any | None = None  # a fixed part of the validation set, validated each epoch but the last
    precision_why: str = ""  # why --precision auto chose what it did ("" when it was given)
    busy_note: str = ""  # set when other programs took the CPU while the choices were timed
    busy_share: float = 0.0  # other programs' share of the CPU during the last timed probe (0-1)
    shuffle_why: str = ""  # why --shuffle auto chose the block order ("" when it did not)
    stride: int = 1  # the model's total stride: training sizes are multiples of it (--progressive)

    def meta(self) -> dict[str, Any]:
        """What every weights file carries, so it can be used without the run folder."""
        h, w = self.size
        return {"spec": self.spec.to_dict(), "classes": list(self.index.classes),
                "input": [h, w, self.channels], "resize": self.cfg.resize,
                "normalization": self.normalization.to_dict()}

    @property
    def bad_files(self) -> list[tuple[str, str, str]]:
        """(split, path, reason) of every file that could not be read."""
        out = [("train", p, r) for p, r in self.train_loader.bad_files]
        if self.val_loader is not None:
            out += [("val", p, r) for p, r in self.val_loader.bad_files]
        return out

    def optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        """The config's optimiser (see :mod:`cnnlab.train.optimizers`) at ``lr`` (default: the peak)."""
        return make_optimizer(self.model, self.cfg.optimizer, self.hparams["lr"] if lr is None else lr,
                              self.hparams["weight_decay"], self.cfg, self.device)

    def loss(self) -> nn.Module:
        """The config's loss (see :mod:`cnnlab.train.losses`), with optional class weights."""
        weights = None
        if self.cfg.class_weights:
            weights = class_weights(self.train_loader.labels, len(self.index.classes))
        return LOSSES[self.cfg.loss].build(self.model, self.cfg.label_smoothing, weights)

    def trainer(self, callbacks=(), lr: float | None = None):
        """The :class:`~cnnlab.train.loop.Trainer` of this run: model, optimiser, loss, device..."""
        trainer = Trainer(self.model, self.optimizer(lr), loss_fn=self.loss(), device=self.device,
                          precision=self.precision, channels_last=self.channels_last,
                          normalization=self.normalization, augment=self.augmenter, seed=self.cfg.seed,
                          callbacks=callbacks, compile=self.cfg.compile, sync_bn=self.cfg.sync_bn)
        trainer.val_subset = self.val_subset
        return trainer

    def resolved_config(self) -> TrainConfig:
        """The config with every automatic choice written in (saved as config.yaml). The data
        folder is written as an absolute path, so that ``--config RUN/config.yaml`` repeats the
        run from any working folder."""
        data = str(Path(self.cfg.data).expanduser().absolute()) if self.cfg.data else self.cfg.data
        return self.cfg.model_copy(update={"data": data,
            "img_size": self.size if self.size[0] != self.size[1] else self.size[0],
            "channels": self.channels, "device": str(self.device), "precision": self.precision,
            "channels_last": self.channels_last, **self.hparams})


@dataclass
class Facts:
    """What a build knows before it decides anything: the data, its images, this machine.

    Gathered once by :func:`gather_facts`; :func:`decide` and :func:`assemble` read it. A
    model named in the config (a preset, a YAML or Keras file) is read once, by :meth:`spec`.
    """

    index: DataIndex  # the data's files per split (its val may be redrawn by a recipe's split)
    index_given: bool  # True when resuming: the run's own split.json, never redrawn
    median: tuple[int, int] | None  # the median (height, width) of a sample of training images
    gray: bool  # every sampled image is grayscale
    device: torch.device  # the device the run trains on, picked once
    specs: dict[str, ModelSpec] = field(default_factory=dict)

    def spec(self, model: Any) -> ModelSpec:
        """``model`` (a preset name, a YAML or Keras file, a spec) as a spec, read once per build."""
        if not isinstance(model, (str, Path)):
            return open_spec(model)
        key = str(model)
        if key not in self.specs:
            self.specs[key] = open_spec(model)
        return self.specs[key]


def gather_facts(cfg: TrainConfig, index: DataIndex | None = None) -> Facts:
    """Discover the data (unless ``index`` is given: a resumed run's), refuse what cannot be
    trained on (an empty class folder, a class none of whose files opens), measure a sample of
    the images and pick the device."""
    _probe_busy.clear()
    index_given = index is not None
    if index is None:
        if not cfg.data:
            raise CnnlabError("no data given: cnnlab train DATA (a folder of class sub-folders)")
        index = discover(cfg.data, val_split=cfg.val_split, seed=cfg.seed, label_regex=cfg.label_regex)
    if index.empty_class_folders:
        folder = index.empty_class_folders[0]
        raise CnnlabError(f"{folder}: a class folder with no images; add images of {Path(folder).name!r} "
                          "or remove the folder (a model cannot learn a class it never sees)")
    check_each_class_opens(index)
    median, gray = probe_images(index.splits["train"])
    return Facts(index, index_given, median, gray, pick_device(cfg.device))


def probe_images(items: list[tuple[str, int]], limit: int = 64) -> tuple[tuple[int, int] | None, bool]:
    """(median (height, width), all grayscale?) of up to ``limit`` evenly spaced images."""
    step = max(1, len(items) // limit)
    sizes, gray = [], []
    for path, _ in items[::step][:limit]:
        try:
            with open_image(path) as im:
                sizes.append((im.size[1], im.size[0]))
                gray.append(im.mode in GRAY_MODES)
        except BadImage:
            continue
    if not sizes:
        return None, False
    h = int(statistics.median(s[0] for s in sizes))
    w = int(statistics.median(s[1] for s in sizes))
    return (h, w), all(gray)


def check_each_class_opens(index) -> None:
    """A class none of whose training files opens as an image is refused now, before the
    automatic choices are made from (and printed for) files that cannot be read. One header
    per class on good data; the decode that follows still checks every file."""
    by_class: dict[int, list[str]] = {}
    for path, y in index.splits["train"]:
        by_class.setdefault(y, []).append(path)
    for y, files in sorted(by_class.items()):
        reasons = []
        for path in files:
            try:
                with open_image(path):
                    break
            except BadImage as e:
                reasons.append(e.reason)
        else:
            raise CnnlabError(unreadable_class(index.classes[y], files, reasons[0]))


def unreadable_class(name: str, files: list[str], reason: str) -> str:
    return (f"class {name!r} has no readable training image: none of its {len(files)} training files can be "
            f"decoded (first: {files[0]}: {reason}); replace them or remove the class")


def choose_input(cfg: TrainConfig, spec_input: tuple[int, int, int], items,
                 probe: tuple[tuple[int, int] | None, bool] | None = None) -> tuple[tuple[int, int], int]:
    """(size, channels): the config's, else the model's, shrunk to the images' own size.

    ``probe``: the result of :func:`probe_images` when already known."""
    if probe is None:
        probe = probe_images(items) if (cfg.size is None or cfg.channels is None) else (None, False)
    median, gray = probe
    size = cfg.size
    if size is None:
        size = spec_input[:2]
        if median is not None and min(median) < min(size):
            size = (max(median[0], 16), max(median[1], 16))
    channels = cfg.channels or (1 if gray else spec_input[2])
    return (int(size[0]), int(size[1])), channels


PROBE_BATCH = 32  # images per timed step when --precision auto times bf16 against fp32
BUSY_SHARE = 0.25  # other programs' share of the CPU above which the run says its timings may be low
_probe_busy: list[float] = []  # other programs' share of the CPU during each timed probe of this build


def _timed(timer, *args, **kwargs):
    """``timer(*args, **kwargs)``, noting how much of the CPU other programs took meanwhile."""
    with CpuContention() as contention:
        out = timer(*args, **kwargs)
    if contention.share is not None:
        _probe_busy.append(contention.share)
    return out


def busy_note() -> str:
    """A line for the run's output when other programs took part of the CPU while this build
    timed its steps (the precision, image-size and model choices rest on those timings)."""
    share = max(_probe_busy, default=0.0)
    if share <= BUSY_SHARE:
        return ""
    return (f"other programs used {share:.0%} of the CPU while cnnlab timed its steps, so the speeds "
            f"above may be low and the choices smaller than a quiet machine gets (--img-size, "
            f"--model, --precision fix them)")


def choose_device(cfg: TrainConfig, model: nn.Module | None = None, sample: tuple[int, int, int] | None = None,
                  device: torch.device | None = None) -> tuple[torch.device, str, bool, str]:
    """(device, precision, channels_last, why) for the config's auto values (see cnnlab.device).

    ``device``: the one :attr:`Facts.device` picked (default: ``cfg.device`` picked now).
    With ``sample`` (height, width, channels), a CPU whose bf16 the rule would use times the
    model's own training step both ways first (:func:`cnnlab.device.measure_precision`, a
    second or two) and keeps bf16 only where it is clearly faster: on some CPUs and models
    (vgg_bn at 32 px on an AVX512-BF16 Xeon; benchmarks/bench_precision.py measures it) it is not.
    """
    device = device if device is not None else pick_device(cfg.device)
    precision, channels_last, why = choose_precision(cfg.precision, device, model, cfg.channels_last)
    if cfg.precision == "auto" and device.type == "cpu" and precision == "bf16" and sample is not None:
        h, w, c = sample
        # At the run's own batch (up to PROBE_BATCH): which is faster depends on it (the seed
        # model at 64 px on an AMX Xeon: benchmarks/bench_precision.py --models seed --batch 8, 32).
        n = min(cfg.batch_size or PROBE_BATCH, PROBE_BATCH)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, c, h, w, generator=g)
        y = torch.arange(n) % max(getattr(model, "num_outputs", 2), 2)
        choice = measure_precision(model, x, y, device, channels_last=cfg.channels_last, timer=time_steps_quick)
        precision, channels_last, why = choice.precision, choice.channels_last, choice.reason
    return device, precision, channels_last, why if cfg.precision == "auto" else ""


def time_steps_quick(model, x, y, variants):
    """Two timed steps of each variant after one warm-up (cnnlab.device.time_steps)."""
    return _timed(time_steps, model, x, y, variants, steps=2, warmup=1)


def decide(cfg: TrainConfig, facts: Facts, verbose: bool) -> TrainConfig:
    """The config with the automatic choices of :mod:`cnnlab.train.auto` filled in (and printed).

    Under ``--time-limit`` (and no --img-size), the model's training speed is measured first,
    a few steps at its own input size, to choose the image size the budget allows. A recipe
    that changes ``val_split`` redraws the validation images from the same files
    (:meth:`~cnnlab.data.datasets.DataIndex.with_val_split`): the data is not discovered again.
    """
    index, median, base = facts.index, facts.median, facts.spec(cfg.model)
    channels = cfg.channels or (1 if facts.gray else base.input[2])
    val_split = cfg.val_split
    given = {k for k in TrainConfig.model_fields if getattr(cfg, k) is not None}
    if cfg.model == DEFAULT_MODEL:  # left at the default: a recipe may take its place
        given.discard("model")
    if not cfg.class_weights:  # off (the default) leaves the sampling to the chooser
        given.discard("class_weights")
    labels = [y for _, y in index.splits["train"]]
    n_val = len(index.splits.get("val") or [])
    data = auto.DataFacts.from_labels(labels, len(index.classes), median, n_val, index.classes)
    rate_at = None
    # A recipe (named, or one the chooser is about to pick) plans its own size and model: the
    # size-by-budget rule below is for the plain default, and its timed steps would be wasted.
    recipe_ahead = cfg.recipe or auto.choose(data, given, time_limit=cfg.time_limit, device_type=facts.device.type,
                                             base_size=base.input[0], recipes=RECIPES.names()).values.get("recipe")
    if cfg.time_limit and cfg.img_size is None and median is not None and not recipe_ahead:
        s0 = min(base.input[0], min(median))
        model = build_model(base, input=(s0, s0, channels), classes=len(index.classes), seed=cfg.seed)
        device, precision, cl, _ = choose_device(cfg, model, device=facts.device)
        # timed at the batch the run will train at (was always 32: the CPU default is 64)
        batch = cfg.batch_size or auto.default_batch(data.n_train, device.type, s0)[0]
        rate_at = auto.measured_rate(_step_rate(model, device, precision, cl, s0, channels, batch=batch), s0)
    choice = auto.choose(data, given, time_limit=cfg.time_limit, device_type=facts.device.type,
                         base_size=base.input[0], scheduler=cfg.scheduler, rate_at=rate_at, recipes=RECIPES.names())
    picked = choice.values.get("recipe")
    if picked:  # the recipe's options under the user's, then the chooser for what is still open
        cfg = TrainConfig(**recipe_options(picked, {k: getattr(cfg, k) for k in cfg.model_fields_set}))
        cfg._from_recipe = frozenset(get_recipe(picked).options) - given
        given = {k for k in TrainConfig.model_fields if getattr(cfg, k) is not None} - {"class_weights"}
        if cfg.val_split != val_split and index.val_split is not None and not facts.index_given:
            redrawn = index.with_val_split(cfg.val_split)  # val drawn from train: the recipe's share now
            data = auto.DataFacts.from_labels([y for _, y in redrawn.splits["train"]], len(index.classes), median,
                                              len(redrawn.splits.get("val") or []), index.classes)
        rest = auto.choose(data, given, time_limit=cfg.time_limit, device_type=facts.device.type,
                           base_size=facts.spec(cfg.model).input[0], scheduler=cfg.scheduler)
        rest.values, rest.reasons = ({"recipe": picked, **rest.values},
                                     {"recipe": choice.reasons["recipe"], **rest.reasons})
        choice = rest
    if cfg.recipe and (cfg.time_limit or get_recipe(cfg.recipe).plan_without_limit):
        # the recipe's model and batch for this budget on this machine (and its epochs, planned
        # for the default plan's minutes, when there is no --time-limit)
        size = choice.values.get("img_size", cfg.img_size)
        scaled, rate = _scale_recipe(cfg, facts, data.n_train, channels, size if isinstance(size, int) else None)
        for key, value in scaled.values.items():
            choice.set(key, value, scaled.reasons[key])
        recipe, minutes = get_recipe(cfg.recipe), cfg.time_limit or auto.DEFAULT_MINUTES
        if "model" not in scaled.values and "model" in cfg._from_recipe and recipe.smaller_models and rate:
            fits = auto.fit_epochs(rate, data.n_train, minutes)
            choice.set("model", cfg.model, f"fits {fits:.1f} epochs in {minutes:g} min ({rate:,.0f} img/s measured), "
                                           f"at least the {recipe.min_epochs:g} it wants")
        if rate and recipe.smaller_sizes and "img_size" not in given and isinstance(size, int):
            smaller, rate_there = auto.size_for_budget(recipe, size, rate, data.n_train, minutes)
            if smaller != size:
                model = choice.values.get("model", cfg.model)
                choice.set("img_size", smaller, f"{model} fits only {auto.fit_epochs(rate, data.n_train, minutes):.1f} "
                           f"epochs at {size} px, {auto.fit_epochs(rate_there, data.n_train, minutes):.1f} at {smaller} px "
                           f"(the speed scaled by the pixels): more epochs beat more pixels in a short budget")
                rate = rate_there
        if not cfg.time_limit and "epochs" not in given and rate:
            fits = auto.fit_epochs(rate, data.n_train, auto.DEFAULT_MINUTES)
            choice.set("epochs", int(min(max(fits, 10), 60)), f"what fits {auto.DEFAULT_MINUTES:g} min at {rate:,.0f} "
                       "img/s (measured; 10 to 60); a fixed number, so --config RUN/config.yaml repeats it")
    values = {k: v for k, v in choice.values.items() if k in TrainConfig.model_fields}
    # what neither the user nor the chooser set: the plain defaults, so config.yaml has them all
    values.update({k: v for k, v in auto.FALLBACKS.items() if getattr(cfg, k) is None and k not in values})
    if choice.values and verbose:
        print(choice.block(), flush=True)
    cfg = cfg.model_copy(update={**values, **({"auto": choice.to_dict()} if choice.values else {})})
    if cfg.val_split != val_split and not facts.index_given:  # a recipe's split, from the same files
        facts.index = index.with_val_split(cfg.val_split)
    return cfg


def _scale_recipe(cfg: TrainConfig, facts: Facts, n_train: int, channels: int, size: int | None = None):
    """:func:`cnnlab.train.auto.scale_recipe` for ``cfg``: the models' speeds measured here.

    Returns (the choices, the training images/s of the model the run gets, 0 if not timed).
    Only the options the recipe filled in may change (``TrainConfig._from_recipe``): what the
    user set, on the command line or in a config file, stays theirs. ``size``: the image size
    chosen (default: the config's, else the recipe's). Under progressive resizing a step
    costs, on average over the run, the mean pixel share of its sizes: the speed is divided by it."""
    recipe = get_recipe(cfg.recipe)
    open_keys = [k for k in ("model", "batch_size", "lr") if k in cfg._from_recipe]
    if size is None:
        size = cfg.img_size if isinstance(cfg.img_size, int) else recipe.options.get("img_size", 32)

    # Timed at a batch near the run's (up to 256): at 64 images a step ran slower per image
    # than at 256, and its timing varied more between runs, so that a too small model won
    # (benchmarks/bench_precision.py --batch 64, 256; benchmarks/log/2026-12-02.md).
    batch = min(cfg.batch_size or recipe.options.get("batch_size", 256), 256)
    rates: dict[str, float] = {}

    def rate_of(name: str) -> float:
        spec = facts.spec(name)
        model = build_model(spec, input=(size, size, channels), classes=len(facts.index.classes), seed=cfg.seed)
        device, precision, cl, _ = choose_device(cfg, model, device=facts.device)
        rates[name] = _step_rate(model, device, precision, cl, size, channels, batch=batch) / mean_cost(cfg, model.spec)
        return rates[name]

    scaled = auto.scale_recipe(recipe, n_train, cfg.time_limit or auto.DEFAULT_MINUTES, rate_of, open_keys,
                               model=cfg.model)
    return scaled, rates.get(scaled.values.get("model", cfg.model), 0.0)


def mean_cost(cfg: TrainConfig, spec: ModelSpec) -> float:
    """A training step's mean cost over the run relative to one at the full size: 1, or less
    under --progressive / --train-scale (smaller images cost their pixels' share)."""
    plan = ProgressiveResize.from_options(spec.input[:2], cfg.progressive, cfg.train_scale, check_resizable(cfg, spec))
    return 1.0 if plan is None else plan.mean_cost()


def _step_rate(model: nn.Module, device: torch.device, precision: str, channels_last: bool, size: int,
               channels: int, batch: int = 32) -> float:
    """Training images/s of ``model`` on this machine: a few timed steps on random pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=g).to(device)
    classes = max(model.num_outputs, 2)
    y = (torch.arange(batch) % classes).to(device)
    rates = _timed(time_steps, model, x, y, [(precision, channels_last)], steps=2)
    return next(iter(rates.values()))


def check_outputs(model: nn.Module, classes: list[str], source: str) -> None:
    """The model's output units must match the classes (one sigmoid unit for two classes)."""
    n = model.num_outputs
    if is_binary(model):
        if len(classes) != 2:
            raise SpecError(f"{source}: one sigmoid output is for two classes, but the data has "
                            f"{len(classes)}; use Dense(units: classes, activation: softmax)")
        return
    if n != len(classes):
        raise SpecError(f"{source}: the model has {n} outputs but the data has {len(classes)} classes; "
                        "write `units: classes` in the last Dense layer")


def keras_normalization(cfg: TrainConfig, spec, channels: int):
    """--normalize auto for a Keras --model: what Keras fed it, raw pixels 0-255 when it starts
    with its own Rescaling/Normalization layer, else x/255. None: not a Keras model."""
    if cfg.normalize != "auto" or not isinstance(cfg.model, str) or not is_keras_file(cfg.model):
        return None
    if preprocessing_inside(spec) is not None:
        return Normalization((0.0,) * channels, (1 / 255,) * channels)
    return Normalization.rescale(channels)


def init_from_data(model: nn.Module, loader, normalization, limit: int = 5000) -> list[str]:
    """Fit the model's data-initialised layers (PatchWhitening) to up to ``limit`` training
    images, evenly spaced over the set, normalised as training will see them."""
    if not any(hasattr(m, "fit") for m in getattr(model, "layers", {}).values()):
        return []
    rows = loader.rows[::max(1, len(loader.rows) // limit)][:limit]
    pixels = torch.from_numpy(loader.read(np.sort(rows)))  # at most `limit` images, whatever the data's size
    return data_init(model, normalization.apply(pixels))


def build(cfg: TrainConfig, index=None, verbose: bool = True) -> Setup:
    """Discover the data (unless ``index`` is given), decode it, build model and loaders.

    Under torchrun, each process builds its own, on its device, with its shard of the data:

    1. every rank reads its data folder (a node of its own may have its own copy); a problem
       on any rank (a missing folder) stops every rank, and the rank that found it says so;
    2. the class list and the number of files per split must agree with rank 0's, or the
       first rank that differs says so (every node must read the same data);
    3. the main process builds first: it fills the decode cache and makes the automatic
       choices (some come from timed steps, which differ between processes);
    4. the others then build with its resolved config, so every process trains the same
       model the same way: first one process on each other node (it fills that node's
       cache), then the rest; the images each can read must agree too (step 2's check).
    """
    device = distributed.init(cfg.device)
    if device is None:
        facts = gather_facts(cfg, index)
        return assemble(decide(cfg, facts, verbose), facts, verbose)
    cfg = cfg.model_copy(update={"device": str(device)})
    rank, world = distributed.rank(), distributed.world_size()
    with distributed.together("while each process read its data"):
        if cfg.sync_bn:  # before the data is decoded
            distributed.check_sync_bn(device)
        facts = gather_facts(cfg, index)
    distributed.same_everywhere(data_summary(facts.index), data_difference,
                                "while checking that every node reads the same data")
    resolved = None
    with distributed.together("while rank 0 set up the run (it decodes the data and makes the automatic "
                              "choices first)"):
        if rank == 0:
            setup = assemble(decide(cfg, facts, verbose), facts, verbose, shard=(rank, world))
            resolved = setup.cfg.model_dump()
    resolved = distributed.broadcast(resolved, "while rank 0 shared its choices")
    if rank != 0:
        chosen = TrainConfig(**{**resolved, "device": cfg.device})
        if chosen.val_split != cfg.val_split and not facts.index_given:  # a recipe's split, as rank 0's
            facts.index = facts.index.with_val_split(chosen.val_split)
    first_on_node = int(os.environ.get("LOCAL_RANK", "0")) == 0
    # the first process of each other node decodes into its node's cache, then the rest read it
    for turn, what in ((True, "while the first process of each node built its model and loaders"),
                       (False, "while each process built its model and loaders")):
        with distributed.together(what):
            if rank != 0 and first_on_node == turn:
                setup = assemble(chosen, facts, False, shard=(rank, world))
    distributed.same_everywhere(readable_summary(setup), readable_difference,
                                "while checking that every node can read the same images")
    return setup


SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
SAME_DATA = "every node must read the same data (a shared folder, or the same copy on each node)"


def data_summary(index: DataIndex) -> dict[str, Any]:
    """What every rank's data must agree on: the classes and the files per split."""
    return {"classes": list(index.classes), "files": {s: len(items) for s, items in index.splits.items()}}


def _names(classes: list[str], limit: int = 6) -> str:
    return ", ".join(classes[:limit]) + (", ..." if len(classes) > limit else "")


def data_difference(mine: dict[str, Any], main: dict[str, Any]) -> str | None:
    """'sees 1,204 training images in 3 classes, rank 0 sees 1,210: ...', or None when they agree."""
    a, b = mine["classes"], main["classes"]
    if a != b:
        return f"sees {count(len(a), 'class', 'classes')} ({_names(a)}), rank 0 sees {len(b)} ({_names(b)}): {SAME_DATA}"
    for split, name in SPLIT_NAMES.items():
        n, m = mine["files"].get(split, 0), main["files"].get(split, 0)
        if n != m:
            return f"sees {n:,} {name} images in {count(len(a), 'class', 'classes')}, rank 0 sees {m:,}: {SAME_DATA}"
    return None


def readable_summary(setup: Setup) -> dict[str, int]:
    """The images each split's loader could decode (a node's copy may have other broken files)."""
    out = {"train": setup.train_loader.num_samples}
    if setup.val_loader is not None:
        out["val"] = setup.val_loader.num_samples
    return out


def readable_difference(mine: dict[str, int], main: dict[str, int]) -> str | None:
    for split, name in SPLIT_NAMES.items():
        n, m = mine.get(split, 0), main.get(split, 0)
        if n != m:
            return f"can read {n:,} of its {name} images, rank 0 {m:,} (see skipped.csv): {SAME_DATA}"
    return None


def assemble(cfg: TrainConfig, facts: Facts, verbose: bool, shard: tuple[int, int] | None = None) -> Setup:
    """The model, the loaders, the normalisation and the precision of a resolved config: built once.

    ``shard`` (rank, world size): this process's share of every epoch under torchrun."""
    index, base = facts.index, facts.spec(cfg.model)
    size, channels = choose_input(cfg, base.input, index.splits["train"], (facts.median, facts.gray))
    model = build_model(base, input=(*size, channels), classes=len(index.classes), seed=cfg.seed)
    check_outputs(model, index.classes, base.source)
    stride = check_resizable(cfg, model.spec)
    if cfg.init_weights:
        init_weights(model, cfg.init_weights, verbose=verbose)
    device, precision, channels_last, precision_why = choose_device(cfg, model, sample=(*size, channels),
                                                                    device=facts.device)

    workers = cfg.workers if cfg.workers is not None else (os.cpu_count() or 1)
    common = dict(size=size, channels=channels, resize=cfg.resize, seed=cfg.seed, workers=workers,
                  cache_dir=cfg.cache_dir, progress=None if verbose else False)
    n_train = len(index.splits["train"])
    train_loader = make_loader(index.splits["train"], batch_size=cfg.batch_size, shuffle=cfg.shuffle,
                               balanced=cfg.balanced, drop_last=n_train > cfg.batch_size, report_bad=False,
                               **common)
    # "auto" resolved once, here (on the main process under torchrun): config.yaml, the other
    # processes and a resumed run all use the order chosen now, whatever their memory says
    cfg = cfg.model_copy(update={"shuffle": train_loader.shuffle_mode})
    if train_loader.num_samples == 0:
        raise CnnlabError(f"{cfg.data}: none of the {n_train} training images can be read (see skipped.csv)")
    unseen = sorted(set(range(len(index.classes))) - set(train_loader.labels.tolist()))
    if unseen:  # every file of a class is unreadable: the model could never learn it
        name = index.classes[unseen[0]]
        files = [p for p, y in index.splits["train"] if y == unseen[0]]
        raise CnnlabError(unreadable_class(name, files, dict(train_loader.bad_files).get(files[0], "unreadable")))
    if train_loader.bad_files and (shard is None or shard[0] == 0):  # after the checks above: one sentence
        print_bad_files(train_loader.bad_files, n_train)
    val_items = index.splits.get("val") or []
    val_loader = make_loader(val_items, batch_size=cfg.batch_size * 2, **common) if val_items else None
    if val_loader is not None and val_loader.num_samples == 0:
        val_loader = None
    keras_norm = keras_normalization(cfg, base, channels)
    if keras_norm is not None:
        normalization = keras_norm
    else:
        normalization = (Normalization.rescale(channels) if cfg.normalize == "rescale"
                         else compute_mean_std(train_loader, max_images=5000))
    init_from_data(model, train_loader, normalization)
    augment = parse_augment(cfg.augment)
    val_subset = None  # validated each epoch instead of the whole set (all of it at the last)
    if val_loader is not None and cfg.val_max and val_loader.num_samples > cfg.val_max:
        val_subset = val_loader.subset(cfg.val_max, seed=cfg.seed)
    shuffle_why = train_loader.shuffle_why
    if shard is not None:  # this process's share of every epoch (torchrun)
        train_loader = ShardedLoader(train_loader, *shard, train=True)
        if val_loader is not None:
            val_loader = ShardedLoader(val_loader, *shard, train=False)
        if val_subset is not None:
            val_subset = ShardedLoader(val_subset, *shard, train=False)
    return Setup(cfg, index, size, channels, model.spec, model, train_loader, val_loader, normalization,
                 None if augment.is_identity else Augmenter(augment), device, precision, channels_last,
                 resolved_defaults(cfg), val_subset, precision_why, busy_note(), (_probe_busy or [0.0])[-1],
                 shuffle_why, stride)


def check_resizable(cfg: TrainConfig, spec: ModelSpec) -> int:
    """The model's total stride when --progressive or --train-scale trains it at other sizes
    (refused, in one sentence, for a model tied to one input size); 1 otherwise."""
    if not cfg.progressive and cfg.train_scale == 1:
        return 1
    stride, why = size_free(spec)
    if not stride:
        flag = "--progressive" if cfg.progressive else "--train-scale"
        raise CnnlabError(f"{spec.source}: {flag} trains at several image sizes, but {why}")
    if cfg.progressive > cfg.train_scale:
        raise CnnlabError(f"--progressive {cfg.progressive:g} starts above --train-scale {cfg.train_scale:g}, where "
                          "it ends: the images grow during training")
    return stride
