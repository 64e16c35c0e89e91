"""Named training recipes: a preset plus the training options that make it fast and accurate.

    cnnlab train DATA --recipe airbench                  # the recipe's options...
    cnnlab train DATA --recipe airbench --epochs 12      # ...under the ones you give
    cnnlab train DATA --time-limit 15                    # the auto chooser may pick one

A recipe is a bundle of :class:`cnnlab.train.config.TrainConfig` options. Options given on
the command line, in a config file or as keyword arguments always win over the recipe's;
the resolved config saved in ``RUN/config.yaml`` has every value written out, so a run
repeats without the recipe. ``cnnlab recipes`` prints them.

Each recipe is an entry of :data:`RECIPES`; to add one, ``add_recipe(Recipe(name=...))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnlab.registry import Registry

RECIPES: Registry = Registry("recipe")  # name -> a function giving the Recipe


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line
    suits: str  # the data it is made for
    options: dict[str, Any]
    sources: tuple[str, ...] = field(default=())  # where each idea comes from
    time_limit_options: dict[str, Any] = field(default_factory=dict)  # replace options when --time-limit
    # The lr is per this many images: another --batch-size (without --lr) scales it linearly,
    # the same lr per image (airbench's rule; its weight decay per image stays the same too).
    lr_batch: int | None = None
    # Under --time-limit, when fewer than ``min_epochs`` of ``options["model"]`` fit the budget
    # (measured on this machine), the first of ``smaller_models`` that fits them trains
    # instead (the last one when none does): more epochs of a narrower net beat too few
    # of the full one. The batch shrinks (to ``min_batch``) to keep ``min_steps`` updates.
    smaller_models: tuple[str, ...] = ()
    min_epochs: float = 0.0
    min_steps: int = 0
    min_batch: int = 256
    # Without --time-limit too, plan the model and the epochs for the default plan's minutes
    # (cnnlab.train.auto.DEFAULT_MINUTES) from the measured speed, as under a time limit.
    plan_without_limit: bool = False
    # When even the last of the smaller models fits fewer than ``min_epochs`` at the run's
    # image size (not set by the user), the largest of these sizes where they fit
    # (cnnlab.train.auto.size_for_budget).
    smaller_sizes: tuple[int, ...] = ()

    def lr_at(self, batch: int) -> float:
        """The recipe's lr at another batch size: the same lr per image (``lr_batch``)."""
        return self.options["lr"] * batch / self.lr_batch if self.lr_batch else self.options["lr"]

    def describe(self) -> str:
        """What ``cnnlab recipes`` prints: the options as a config file would hold them, the
        changes under --time-limit, and where each idea comes from."""
        lines = [f"{self.name}: {self.summary}", f"  for: {self.suits}", "  options:"]
        lines += [f"    {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in self.options.items()]
        if self.time_limit_options or self.smaller_models:
            lines.append("  under --time-limit" + (" (without one, the model and the epochs are planned the same way "
                                                   "for the default plan's 10 minutes):" if self.plan_without_limit
                                                   else ":"))
            lines += [f"    {k}: {v} (a cap: the budget decides)" if k == "epochs" else f"    {k}: {v}"
                      for k, v in self.time_limit_options.items()]
        if self.smaller_models:
            lines.append(f"    model: the first of {', '.join([self.options['model'], *self.smaller_models])} "
                         f"that fits {self.min_epochs:g} epochs at the speed timed on this machine")
        if self.smaller_sizes:
            lines.append(f"    img_size: when even {self.smaller_models[-1] if self.smaller_models else 'it'} fits "
                         f"fewer, the largest of {', '.join(map(str, self.smaller_sizes))} px where it fits them")
        if self.min_steps:
            lines.append(f"    batch_size: halved (down to {self.min_batch}) while fewer than {self.min_steps} "
                         f"steps would fit; the lr follows it (the same lr per image)")
        lines.append("  sources:")
        lines += [f"    - {s}" for s in self.sources]
        return "\n".join(lines)


def add_recipe(recipe: Recipe) -> Recipe:
    """Register ``recipe`` under its name: ``--recipe NAME`` and ``cnnlab recipes`` then know it."""
    RECIPES.add(recipe.name, recipe.summary, lambda: recipe)
    return recipe


# airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv
# 2404.00498, 2024) rebuilt from cnnlab's own pieces. Its summed-loss hyper-parameters,
# lr 11.5 and weight decay 0.0153 "per 1024 examples" with momentum 0.85, are here in the
# usual mean-loss units at batch 1024: lr = 11.5 / (1 + 1/(1-0.85)) = 1.5, and a decay per
# step (lr x weight_decay) of 0.0153 / 7.67 = 0.002, i.e. weight_decay = 0.00133.
AIRBENCH = add_recipe(Recipe(
    name="airbench",
    summary="airbench94-style fast CIFAR training in 10 epochs (94 % as published, on lossless "
            "CIFAR-10 and a GPU; 90.5 % on the JPEG copy in benchmarks/RESULTS.md)",
    suits="small photos (about 32x32) with a few to a hundred classes and thousands of images each",
    options={
        "model": "airbench", "img_size": 32, "batch_size": 1024, "epochs": 10,
        "optimizer": "sgd", "lr": 1.5, "momentum": 0.85, "weight_decay": 0.00133, "bias_lr_scale": 64.0,
        "label_smoothing": 0.2, "scheduler": "triangle", "warmup": 0.23,
        "augment": "cifar", "weight_averaging": "lookahead", "tta": "flip+translate",
        "val_split": 0.0, "patience": 0, "channels_last": True,
    },
    # With --time-limit the budget decides the epochs (40 only caps a fast machine). No
    # validation split: all the training images train (as airbench), the last epoch's
    # averaged weights are the best ones (the schedule anneals to its end), and the test
    # split, when there is one, is evaluated with TTA at the end.
    time_limit_options={"epochs": 40},
    lr_batch=1024,
    # airbench94 takes 10 epochs (~490 steps of 1024) to its 94 %; on a 2-core CPU fewer may
    # fit 15 minutes. Then airbench_medium (0.58 of the multiply-adds), else airbench_small
    # (0.28): the widest that still fits 8 epochs (benchmarks/bench_cifar_recipe.py measures it).
    smaller_models=("airbench_medium", "airbench_small"),
    min_epochs=8.0,
    min_steps=400,
    sources=(
        "model airbench: whitened 2x2 patch stem (PatchWhitening; Page 2018 'How to train your "
        "ResNet', tysam-code hlb-CIFAR10 2023, Jordan 2024), Dirac-initialised convs (Zagoruyko & "
        "Komodakis 2017, DiracNets), BatchNorm without scale, GELU (Hendrycks & Gimpel 2016), "
        "logits x 1/9 (Jordan 2024)",
        "optimizer sgd: Nesterov momentum 0.85 (Nesterov 1983; Sutskever et al. 2013), large lr, "
        "BN shifts at 64x the lr with the same decay per step (Jordan 2024)",
        "label_smoothing 0.2 (Szegedy et al. 2016, Inception-v3)",
        "scheduler triangle: linear warm-up from 0.2 to 1 over 23 % of the steps, linear decay to "
        "0.07 (Smith 2017's one-cycle shape, airbench's constants)",
        "augment cifar: 2-pixel reflect translation (the pad-and-crop of He et al. 2016) and "
        "derandomised alternating flip (Jordan 2024)",
        "weight_averaging lookahead: an EMA of the weights synced into the model every 5 steps, "
        "decay 0.95^5 x progress^3 (Zhang et al. 2019, Lookahead; Jordan 2024)",
        "tta flip+translate: 6 views at test time, the untranslated pair weighing half (Jordan 2024)",
        "under --time-limit on a slow machine: model airbench_medium (3/4 of the width) or "
        "airbench_small (1/2) and a smaller batch, so that the budget still holds about 8 epochs "
        "and 400 steps (cnnlab's own rule, benchmarks/RESULTS.md)",
    ),
))


# Photos at 96-224 px (Dogs vs Cats, leaves, Imagenette): cnnlab's own pieces, each measured
# on 2 CPU cores (benchmarks/RESULTS.md, Photos; the ablation in benchmarks/log/).
PHOTO = add_recipe(Recipe(
    name="photo",
    summary="a small residual net with anti-aliased pooling, random-resized-crop training, progressive "
            "resizing and a FixRes test size: photos from scratch on a CPU",
    suits="photos of 96 px and more (median side), a few to a hundred classes, hundreds to tens of thousands each",
    options={
        "model": "photonet_large", "batch_size": 64, "optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05,
        "scheduler": "onecycle", "label_smoothing": 0.1, "augment": "photo", "progressive": 0.625,
        "train_scale": 0.875, "tta": "flip", "val_split": 0.1, "channels_last": True,
    },
    time_limit_options={"epochs": 200},
    smaller_models=("photonet", "photonet_small"),
    min_epochs=20.0,
    min_steps=800,
    min_batch=32,
    plan_without_limit=True,
    smaller_sizes=(96, 64),
    sources=(
        "model photonet: a 3x3 stride-2 stem (He et al. 2016; the 3x3 stem of He et al. 2019, 'Bag of "
        "tricks'), MaxBlurPool (Zhang 2019, 'Making convolutional networks shift-invariant again'), "
        "ResNet basic blocks (He et al. 2016), global average pooling",
        "augment photo: random resized crop of 35-100 % of the area, aspect 3:4-4:3, and a random "
        "mirror (Szegedy et al. 2015; fastai and FFCV use it for Imagenette and ImageNet)",
        "progressive 0.625: the first quarter of the steps at 5/8 of the size, growing linearly to "
        "--train-scale by the last quarter (fastai's progressive resizing; FFCV's ResNet configs)",
        "train_scale 0.875: training ends at 7/8 of the size validated and tested, which suits "
        "random-resized-crop training (Touvron et al. 2019, FixRes)",
        "optimizer adamw with a one-cycle schedule (Loshchilov & Hutter 2019; Smith 2017): cnnlab's "
        "default, label smoothing 0.1 (Szegedy et al. 2016)",
        "tta flip: each test image and its mirror image averaged",
        "the model: the first of photonet_large, photonet, photonet_small that fits 20 epochs in the "
        "budget (--time-limit, else 10 minutes) at the speed measured on this machine, progressive "
        "resizing's cheaper steps counted (cnnlab's own rule, benchmarks/RESULTS.md)",
    ),
))


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (a CnnlabError naming the closest one if there is none)."""
    return RECIPES[name].build()


def recipe_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The recipe's options, with ``given`` (what the user set) on top."""
    recipe = get_recipe(name)
    options = dict(recipe.options)
    if given.get("time_limit"):
        options.update(recipe.time_limit_options)
    given = {k: v for k, v in given.items() if v is not None}
    if recipe.lr_batch and "batch_size" in given and "lr" not in given and "lr" in options:
        options["lr"] = recipe.lr_at(given["batch_size"])
    options.update(given)
    options["recipe"] = name
    return options
