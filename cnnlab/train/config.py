"""The training configuration: one set of keys for the YAML file, the flags and Python.

    cnnlab train DATA --epochs 20 --lr 0.001          # flags
    cnnlab train DATA --config run.yaml --epochs 5    # a file; flags override it
    cnnlab.train("DATA", epochs=20, lr=1e-3)          # Python keyword arguments

Every key has a default that works, so ``cnnlab train DATA`` alone trains a good model.
``None`` means "decided when the data is known" (image size, channels, learning rate,
weight decay, warm-up, precision...); the *resolved* config, with every value filled in,
is saved as ``RUN/config.yaml``, and ``--config RUN/config.yaml`` repeats the run.

A wrong value is reported with the field and the file it came from, e.g.
``run.yaml: lr: must be greater than 0 (got -1)``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from cnnlab.errors import CnnlabError
from cnnlab.io.history import LOG_ALIASES  # noqa: F401  (also read by the callbacks: --monitor val_acc)
from cnnlab.sizes import parse_size
from cnnlab.train.losses import LOSSES
from cnnlab.train.optimizers import OPTIMIZERS
from cnnlab.train.recipes import get_recipe, recipe_options
from cnnlab.train.schedules import SCHEDULES

DEFAULT_MODEL = "vgg_bn"  # per minute of CPU the better preset (benchmarks/RESULTS.md, Training)

# What a run logs, in Keras' names; the metrics --monitor may name. Earlier versions called the
# logs train_loss/train_acc/val_acc; those names are still accepted (and old history.csv read).
MONITORS = ("val_accuracy", "val_loss", "val_macro_f1", "accuracy", "loss")


def registry(name: str):
    """The registry of optimisers, schedules or losses (their modules import no torch)."""
    return {"optimizer": OPTIMIZERS, "scheduler": SCHEDULES}.get(name, LOSSES)


class TrainConfig(BaseModel):
    """Every option of ``cnnlab train``; the field names are the YAML keys.

    Each ``description`` is also the flag's ``--help`` (see :mod:`cnnlab.cli.train`), so it
    is written for a user: what it does and what ``None`` ("auto") decides.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # The keys a recipe filled in (not the user): the auto chooser may still change those.
    _from_recipe: frozenset[str] = PrivateAttr(default_factory=frozenset)

    # data
    data: str | None = Field(None, description="folder of class sub-folders, DATA/{train,val,test}/..., or a CSV file")
    val_split: float = Field(0.2, ge=0, lt=1, description="fraction of each class held out for validation "
                             "when there is no val/ folder")
    label_regex: str | None = Field(None, description="take class names from file names with this pattern")
    img_size: int | tuple[int, int] | None = Field(None, description="resize images to this (64 or 64x48); "
                                                   "auto: the model's, or the images' own when smaller")
    channels: Literal[1, 3] | None = Field(None, description="1 grayscale, 3 RGB; auto: from the images")
    resize: Literal["stretch", "crop", "letterbox"] = Field("stretch", description="how images are resized")
    augment: str | dict[str, Any] = Field("standard", description="none, light, standard, strong, or options "
                                          "like 'flip,rotation=15,zoom=0.1'")
    normalize: Literal["auto", "measured", "rescale"] = Field(
        "auto", description="measured: the training images' mean/std; rescale: x/255 as in Keras; auto: "
        "measured, but for a Keras --model what Keras fed it (raw pixels when it has its own Rescaling "
        "layer, else x/255)")
    balanced: bool | None = Field(None, description="sample every class equally often; auto: when a class "
                                  "has under half the images of the largest")
    class_weights: bool = Field(False, description="weigh the loss by inverse class frequency")
    workers: int | None = Field(None, ge=0, description="processes decoding the images (once); auto: all cores")
    cache_dir: str | None = Field(None, description="decoded-image cache; auto: $CNNLAB_CACHE or ~/.cache/cnnlab")
    shuffle: Literal["auto", "full", "block"] = Field(
        "auto", description="the training batches' order: full, a new random order each epoch; block, random "
        "within windows of a few 16 MiB blocks of the decode cache, so that reads stay local; auto: block when "
        "the cache is larger than half the memory available, else full")

    # model and optimisation
    model: str | dict[str, Any] = Field(DEFAULT_MODEL, description="a preset (see `cnnlab models`), a model "
                                        "YAML file, a Keras .keras/.h5 model (its architecture) or (from "
                                        "Python or a config file) the spec itself; 5,000+ images of at most "
                                        "40 px with no --model or --recipe get the airbench recipe's model")
    init_weights: str | None = Field(None, description="start from the weights of this file: a Keras .keras/"
                                     ".h5 model or a cnnlab .safetensors; tensors of another shape (a new "
                                     "head for other classes) keep their fresh start")
    epochs: int | None = Field(None, ge=1, description="maximum number of epochs; auto: 30, or under "
                               "--time-limit only a cap (the budget decides)")
    batch_size: int | None = Field(None, ge=1, description="images per step; auto: 32 for under 2,000 "
                                   "images, else 64 (more on a GPU)")
    optimizer: str = Field("adamw", description="the optimiser")
    lr: float | None = Field(None, gt=0, description="peak learning rate (see `cnnlab lr-find`); auto: per optimiser")
    weight_decay: float | None = Field(None, ge=0, description="weight decay (not on biases and batch norm); "
                                       "auto: per optimiser")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov)")
    loss: str = Field("cross_entropy", description="the loss")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the loss")
    scheduler: str = Field("onecycle", description="learning-rate schedule")
    warmup: float | None = Field(None, ge=0, lt=1, description="fraction of training warming up the learning "
                                 "rate; auto: per schedule")
    step_size: int | None = Field(None, ge=1, description="epochs between learning-rate drops (scheduler "
                                  "step); auto: a third of the epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="learning-rate factor of each drop (step, plateau)")
    patience: int | None = Field(None, ge=0, description="stop after N epochs without improvement of "
                                 "--monitor (0: never); the best weights are restored; auto: 0 under an "
                                 "annealing schedule or a time limit, else 10")
    monitor: str | None = Field(None, description="the metric that picks the best weights and early "
                                "stopping: val_accuracy, val_loss, val_macro_f1, accuracy, loss (without "
                                "validation data, val_X means X); auto: val_macro_f1 when a class is "
                                "small, else val_accuracy")
    val_max: int | None = Field(None, ge=0, description="validate on a fixed random subset of this many "
                                "images each epoch (all of them at the last; 0: always all); auto: 2,000 "
                                "when the validation set is larger")
    time_limit: float | None = Field(None, gt=0, description="train for this many minutes; the schedule is "
                                     "fitted to the time")
    recipe: str | None = Field(None, description="a named bundle of options (yours win): airbench -- the fast "
                               "CIFAR recipe (`cnnlab recipes` shows its options and sources); auto: airbench "
                               "for 5,000+ images of at most 40 px when no --model is given, else none")
    bias_lr_scale: float = Field(1.0, gt=0, description="batch-norm shifts (and scales) train at this x the "
                                 "lr and are decayed at weight_decay / it; 1: plain rule, no decay on them")
    weight_averaging: Literal["none", "lookahead", "ema"] = Field(
        "none", description="lookahead: an EMA of the weights synced into the model every 5 steps; ema: "
        "the EMA only at the end (see cnnlab/train/averaging.py)")
    progressive: float = Field(0.0, ge=0, le=1, description="progressive resizing: the first quarter of the "
                               "steps trains on images this fraction of --img-size, growing to --train-scale "
                               "by the last quarter (decoded once at --img-size, resized per batch); 0: off. "
                               "Needs a model ending in global pooling")
    train_scale: float = Field(1.0, gt=0, le=1, description="the last training size as a fraction of --img-size; "
                               "validation and test run at --img-size (FixRes: a model trained on random crops "
                               "tests better a little larger); 1: the same size")
    tta: Literal["none", "flip", "flip+translate"] = Field(
        "none", description="test-time augmentation of the final test evaluation")
    sync_bn: bool = Field(False, description="under torchrun on GPUs, batch norm computes its statistics "
                          "over the batches of every process (torch's SyncBatchNorm), for small batches per "
                          "process; one process: nothing to synchronise, said and ignored; refused on the CPU, "
                          "where torch's SyncBatchNorm does not run")

    # where and how
    seed: int = Field(0, description="random seed (same seed, same run on the CPU)")
    device: str = Field("auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the hardware has it (CUDA GPUs; CPUs with "
        "AVX512-BF16 or AMX, when a few timed steps show it faster) for models big enough to gain "
        "from it, fp16 on older GPUs, else fp32; "
        "fp32 is exact and bit-reproducible")
    channels_last: bool | None = Field(None, description="NHWC memory layout; auto: with bf16/fp16 and on "
                                       "CUDA (the fast convolution path there)")
    compile: bool = Field(False, description="compile the training step with torch.compile: fewer, fused "
                          "kernels, for CUDA GPUs and long runs (the first steps wait tens of seconds "
                          "for the compiler; on CPUs measured not to pay); not bit-equal to a run without it")
    checkpoint_every: int | None = Field(None, ge=1, description="also save the resumable checkpoint every N "
                                         "training steps, inside the epoch, so a crash or a lost torchrun "
                                         "worker costs at most N steps (resuming continues at the next batch, "
                                         "exactly); none: after every epoch only")
    out: str = Field("runs", description="folder of runs")
    name: str | None = Field(None, description="run name; auto: <data>-<model>, -2, -3... if taken")
    tensorboard: bool = Field(False, description="also log to RUN/tensorboard (needs the tensorboard package)")
    evaluate: bool = Field(True, description="evaluate on the test split (if any) and write the report")
    auto: dict[str, Any] | None = Field(None, description="what the automatic choices were and why "
                                        "(written by cnnlab into RUN/config.yaml)")

    @field_validator("optimizer", "scheduler", "loss")
    @classmethod
    def _registered(cls, v: str, info) -> str:
        return registry(info.field_name).check(v)

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        """Checked here, so that a mistake names its config file and comes before any work."""
        from cnnlab.data.augment import parse_augment  # torch: this module is read by `cnnlab --help`

        try:
            parse_augment(v)
        except CnnlabError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, v: str) -> str:
        """Keras' names; the old train_acc/val_acc/train_loss are read as their new names."""
        return LOG_ALIASES.get(v, v)

    @field_validator("img_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        """64, "64", "64x48" or [64, 48] -> 64 or (64, 48)."""
        if isinstance(v, str):
            try:
                nums = parse_size(v)
            except ValueError:
                raise ValueError(f"must look like 64 or 64x48 (height x width), got {v!r}") from None
            v = nums[0] if len(nums) == 1 else nums
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError(f"must be one size or [height, width], got {v!r}")
            v = tuple(v)
        sizes = v if isinstance(v, tuple) else (v,) if v is not None else ()
        if any(not isinstance(s, int) or s < 8 for s in sizes):
            raise ValueError(f"sizes must be whole numbers of pixels, at least 8, got {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        """One folder inside --out: `--name ../x` wrote outside it, `--name .` named --out itself."""
        if v is not None and (v in ("", ".", "..") or "/" in v or "\\" in v):
            raise ValueError(f"must be a folder name without '/' (the run goes in --out), got {v!r}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v

    @property
    def size(self) -> tuple[int, int] | None:
        """img_size as (height, width)."""
        if self.img_size is None:
            return None
        return self.img_size if isinstance(self.img_size, tuple) else (self.img_size, self.img_size)

    def to_yaml(self) -> str:
        data = self.model_dump()
        if isinstance(data["img_size"], tuple):
            data["img_size"] = list(data["img_size"])
        return yaml.safe_dump(data, sort_keys=False)


FIELDS = tuple(TrainConfig.model_fields)


def _explain(e: ValidationError, source: str) -> CnnlabError:
    """pydantic's error -> one sentence naming the field: 'run.yaml: lr: must be > 0 (got -1)'."""
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "config"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        return CnnlabError(f"{source}: unknown option {field!r}{hint} (see `cnnlab train --help`)")
    msg = err["msg"].replace("Value error, ", "")
    msg = msg[0].lower() + msg[1:] if msg else msg
    value = err.get("input")
    got = "" if isinstance(value, dict) or "got" in msg else f" (got {value!r})"
    return CnnlabError(f"{source}: {field}: {msg}{got}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CnnlabError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise CnnlabError(f"{path}: a config file must be a mapping of option: value")
    return data


def make_config(file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The config from ``file`` (YAML, optional) with ``overrides`` on top (None = not given)."""
    values: dict[str, Any] = read_config_file(file) if file else {}
    file_values = set(values)
    source = str(file) if file else "config"
    try:
        cfg = TrainConfig(**values)
    except ValidationError as e:
        raise _explain(e, source) from None
    given = {k: v for k, v in overrides.items() if v is not None}
    recipe = given.get("recipe") or values.get("recipe")
    if recipe:  # the recipe's options, under the file's and the flags'
        values = recipe_options(recipe, {**values, **given})
        try:
            cfg = TrainConfig(**values)
        except ValidationError as e:
            raise _explain(e, f"recipe {recipe}") from None
    unknown = [k for k in given if k not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        raise CnnlabError(f"unknown training option {unknown[0]!r}{hint}")
    try:  # built from what was given only, so that model_fields_set says what the user set
        cfg = TrainConfig(**{**values, **given})
        if recipe:
            cfg._from_recipe = frozenset(get_recipe(recipe).options) - set(given) - set(file_values)
        return cfg
    except ValidationError as e:
        raise _explain(e, "option" if not file else f"{file} (with the options given)") from None


def resolved_defaults(cfg: TrainConfig) -> dict[str, Any]:
    """lr, weight decay, warm-up and step size for the options left at None (from the registries)."""
    opt, sched = registry("optimizer")[cfg.optimizer], registry("scheduler")[cfg.scheduler]
    return {
        "lr": cfg.lr if cfg.lr is not None else opt.defaults["lr"],
        "weight_decay": cfg.weight_decay if cfg.weight_decay is not None else opt.defaults["weight_decay"],
        "warmup": cfg.warmup if cfg.warmup is not None else sched.defaults.get("warmup", 0.0),
        "step_size": cfg.step_size if cfg.step_size is not None else max(1, (cfg.epochs or 30) // 3),
    }
