"""The choices ``cnnlab train DATA`` makes when you leave them to it: from the data and the budget.

What it looks at: how many training images there are, their median size, how many of each
class, the time budget (``--time-limit``, or a default plan of :data:`DEFAULT_MINUTES` when
there is none), and how fast the model trains on this machine (measured, a few steps).
What it decides, unless you set it yourself (a flag or a config key always wins):

* **recipe / model**: a named recipe (see :mod:`cnnlab.train.recipes`): ``airbench`` for
  thousands of small images (CIFAR's 32 px), ``photo`` for photos of :data:`PHOTO_MIN_SIDE`
  px or more, else the default preset;
* **image size**: the largest of :data:`SIZES` that the images have (never blown up) and
  that still leaves enough epochs (:func:`epochs_wanted`) in the budget. Photos at 256 px
  get 96-160 px when the time allows, not the model's 64;
* **batch**: 32 for small sets (more steps per epoch), 64 otherwise; larger on a GPU;
* **length**: with ``--time-limit`` the schedule spans the whole budget (the epochs cap is
  lifted and early stopping is off, so the run ends when the time is up, annealed); without
  one, 30 epochs (or, given a measured speed, those that fit :data:`DEFAULT_MINUTES`, 10 to
  60), a fixed number so the run repeats exactly with ``--config RUN/config.yaml``; early
  stopping off under an annealing schedule (it would cut the schedule before it anneals),
  best weights kept by the checkpoint;
* **imbalance**: when a class has less than half the images of the largest one, class-
  balanced sampling and macro-F1 as the metric that picks the best weights;
* **validation**: on a fixed subset of at most :data:`VAL_MAX` images each epoch when the
  validation set is large (the full set would cost a large share of a time-limited run).

:func:`choose` returns an :class:`AutoChoice`: the values and one line of why for each, printed
as one short block before training and saved in the run's ``config.yaml`` (key ``auto``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cnnlab.display import auto_lines

DEFAULT_MINUTES = 10.0  # the plan of a run without --time-limit
SIZES = (32, 48, 64, 96, 128, 160, 192, 224)
MAX_SIZE = {"cpu": 160, "cuda": 224, "mps": 160}  # beyond this, too slow to be worth it here
SMALL_IMAGES = 40  # median side (px) at or below which a small-image recipe fits (CIFAR: 32)
SMALL_IMAGE_RECIPE = "airbench"
PHOTO_MIN_SIDE = 96  # median shorter side (px) from which photos get the photo recipe
PHOTO_RECIPE = "photo"
RECIPE_MIN_IMAGES = 5000  # the recipe's large batches and few epochs want thousands of images
SMALL_SET = 2_000  # training images below which a CPU run takes batches of 32, not 64
IMBALANCE = 0.5  # smallest class / largest class below this: protect the small class
VAL_MAX = 2000  # images validated per epoch at most (the full set at the end)
USABLE = 0.85  # share of the budget planned for training steps (the rest: validation, saving)
TIME_LIMIT_EPOCHS = 500  # the epochs cap under --time-limit: the budget decides
# The values of the keys that neither the user nor the chooser set.
FALLBACKS = {"epochs": 30, "batch_size": 64, "patience": 10, "monitor": "val_accuracy", "balanced": False,
             "val_max": 0}


@dataclass(frozen=True)
class DataFacts:
    """What the chooser knows about the data."""

    class_counts: tuple[int, ...]  # training images per class, in class order
    image_size: tuple[int, int] | None  # median (height, width) of a sample of the images
    n_val: int = 0
    classes: tuple[str, ...] = ()

    @property
    def n_train(self) -> int:
        return sum(self.class_counts)

    @property
    def imbalance(self) -> float:
        """Smallest class / largest class (1 = balanced)."""
        counts = self.class_counts
        return min(counts) / max(max(counts), 1) if counts else 1.0

    @classmethod
    def from_labels(cls, labels: Iterable[int], n_classes: int, image_size, n_val: int = 0,
                    classes: Iterable[str] = ()) -> "DataFacts":
        counts = [0] * n_classes
        for y in labels:
            counts[int(y)] += 1
        return cls(tuple(counts), tuple(image_size) if image_size else None, n_val, tuple(classes))


@dataclass
class AutoChoice:
    """The values chosen (config keys) and why, in the order they are printed."""

    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    facts: str = ""  # one line on the data and budget

    def set(self, key: str, value: Any, why: str) -> None:
        self.values[key] = value
        self.reasons[key] = why

    def block(self) -> str:
        """The printed block: a line on the data and budget, then one line per choice (the
        lines RUN/report.html shows too: cnnlab.display.auto_lines of what config.yaml keeps)."""
        return "\n".join(auto_lines(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """What config.yaml keeps under ``auto``: the facts and each choice with its reason."""
        return {"facts": self.facts,
                "chosen": {k: {"value": list(v) if isinstance(v, tuple) else v, "why": self.reasons[k]}
                           for k, v in self.values.items()}}


def epochs_wanted(n_train: int) -> int:
    """Epochs a from-scratch CNN wants before a bigger image is worth more than more passes.

    Small sets need many passes (with augmentation each pass is new data); large ones fewer.
    """
    if n_train < 5_000:
        return 40
    if n_train < 20_000:
        return 25
    return 12


def _size_candidates(image_size: tuple[int, int] | None, base: int, device_type: str) -> list[int]:
    """Square sizes not larger than the images (never upscaled) nor than the device's cap."""
    if image_size is None:
        return [base]
    smallest_side = min(image_size)
    cap = MAX_SIZE.get(device_type, 160)
    sizes = [s for s in SIZES if s <= smallest_side and s <= cap]
    if not sizes:  # tiny images (28x28 digits): their own size, as before
        return [max(smallest_side, 16)]
    return sizes


def default_batch(n_train: int, device_type: str, size: int) -> tuple[int, str]:
    """The batch a run gets when the user sets none, and why.

    The image-size probe times its steps at this same batch: a step's speed per image
    depends on the batch, so timing at another one misjudges what fits.
    """
    if device_type == "cuda":
        return (256 if size <= 64 else 128 if size <= 128 else 64), "a GPU: large batches keep it busy"
    if n_train < SMALL_SET:
        return 32, f"{n_train:,} images: more steps per epoch"
    return 64, "CPU default"


def fit_epochs(rate: float, n_train: int, minutes: float) -> float:
    """Epochs of ``n_train`` images that fit ``minutes`` at ``rate`` training images per second."""
    return USABLE * minutes * 60.0 * rate / max(n_train, 1)


def choose(facts: DataFacts, given: set[str] | frozenset[str], *, time_limit: float | None,
           device_type: str = "cpu", base_size: int = 64, scheduler: str = "onecycle",
           rate_at: Callable[[int], float] | None = None, recipes: Iterable[str] = (),
           default_model: str = "vgg_bn") -> AutoChoice:
    """The automatic choices for the keys not in ``given``.

    ``rate_at(size)`` is the measured training speed (images/s) of the model at ``size``
    (None: not measured; then sizes stay at the model's own). ``recipes`` are the recipe
    names registered. ``base_size`` is the model's input side.
    """
    out = AutoChoice()
    minutes = time_limit or DEFAULT_MINUTES
    n = facts.n_train
    budget = f"--time-limit {time_limit:g} min" if time_limit else f"no --time-limit: planned for {minutes:g} min"
    if not time_limit and "epochs" in given:  # the plan still sizes the images; the length is the user's
        budget += " (the epochs are yours)"
    shape = "x".join(map(str, facts.image_size)) if facts.image_size else "?"
    out.facts = (f"{n:,} training images in {len(facts.class_counts)} classes, median {shape} px; "
                 f"{budget} on {device_type}")

    # recipe / model
    small = facts.image_size is not None and max(facts.image_size) <= SMALL_IMAGES
    if ("model" not in given and "recipe" not in given and small and n + facts.n_val >= RECIPE_MIN_IMAGES
            and SMALL_IMAGE_RECIPE in set(recipes)):
        out.set("recipe", SMALL_IMAGE_RECIPE, f"{n + facts.n_val:,} images of {shape} px: the fast small-image recipe "
                                              "(its options under yours)")
    photo = facts.image_size is not None and min(facts.image_size) >= PHOTO_MIN_SIDE
    if "model" not in given and "recipe" not in given and photo and PHOTO_RECIPE in set(recipes):
        out.set("recipe", PHOTO_RECIPE, f"photos of {shape} px (median, {PHOTO_MIN_SIDE} px or more): the photo "
                                        "recipe (its options under yours)")

    # image size: the largest that leaves the epochs the data wants
    if "img_size" not in given:
        sizes = _size_candidates(facts.image_size, base_size, device_type)
        wanted = epochs_wanted(n)
        if rate_at is None or len(sizes) == 1:  # not measured: the model's size, or the images' if smaller
            size = max([s for s in sizes if s <= base_size] or sizes[:1])
            if size >= base_size:
                why = "the model's input size"
            elif facts.image_size is not None and size >= min(facts.image_size):
                why = "the images' own size"
            else:  # between two sizes of the ladder: the one below, never an upscale
                ladder = ", ".join(str(s) for s in SIZES if s <= base_size)
                why = f"the largest of {ladder} px not above the images' median {shape}"
            out.set("img_size", size, why)
        else:
            fits = {s: fit_epochs(rate_at(s), n, minutes) for s in sizes}
            ok = [s for s in sizes if fits[s] >= wanted]
            size = max(ok) if ok else min(sizes)
            rate = rate_at(size)
            why = (f"largest size with >= {wanted} epochs in {minutes:g} min "
                   f"({rate:,.0f} img/s measured: {fits[size]:.0f} epochs)")
            if not ok:
                why = f"smallest size; even so only {fits[size]:.0f} epochs fit ({rate:,.0f} img/s)"
            out.set("img_size", size, why)

    # batch
    if "batch_size" not in given:
        out.set("batch_size", *default_batch(n, device_type, out.values.get("img_size", base_size)))

    # length
    annealing = scheduler in ("onecycle", "cosine")
    if time_limit:
        if "epochs" not in given:
            out.set("epochs", TIME_LIMIT_EPOCHS, f"only a cap: the schedule spans the {time_limit:g} minutes")
        if "patience" not in given:
            out.set("patience", 0, "early stopping off: the run ends when the time is up, annealed")
    else:
        if "epochs" not in given:
            size = out.values.get("img_size", base_size)
            if rate_at is not None:
                epochs = int(min(max(fit_epochs(rate_at(size), n, minutes), 10), 60))
                why = f"what fits {minutes:g} min at {rate_at(size):,.0f} img/s (10 to 60)"
            else:
                epochs = 30
                why = "default"
            out.set("epochs", epochs, why + "; a fixed number, so --config RUN/config.yaml repeats it")
        if "patience" not in given and annealing:
            out.set("patience", 0, f"early stopping off: the {scheduler} schedule anneals at the last "
                                   "epoch; best weights are kept")

    # imbalance
    if facts.imbalance < IMBALANCE and len(facts.class_counts) > 1:
        i = min(range(len(facts.class_counts)), key=facts.class_counts.__getitem__)
        name = facts.classes[i] if i < len(facts.classes) else str(i)
        small_class = (f"class {name!r} has {facts.class_counts[i]:,} images, "
                       f"{facts.imbalance:.0%} of the largest")
        if "balanced" not in given and "class_weights" not in given:
            out.set("balanced", True, small_class + ": class-balanced sampling")
        if "monitor" not in given and facts.n_val > 0:
            out.set("monitor", "val_macro_f1", small_class + ": best weights by macro-F1, not accuracy")

    # validation
    if "val_max" not in given and facts.n_val > VAL_MAX:
        out.set("val_max", VAL_MAX, f"{facts.n_val:,} val images: a fixed subset each epoch, all of them "
                                    "at the last")
    return out


def scale_recipe(recipe, n_train: int, minutes: float, rate_of: Callable[[str], float],
                 open_keys: Iterable[str], model: str | None = None) -> AutoChoice:
    """Under ``--time-limit``: the recipe's model and batch that suit the budget on this machine.

    ``recipe`` is a :class:`cnnlab.train.recipes.Recipe`; ``rate_of(model)`` the measured
    training images/s of one of its models; ``open_keys`` the options the user left to the
    recipe (only those are chosen); ``model`` the one the run has (the user's, when they gave
    one: then only the batch may change, from that model's speed). The model: the recipe's own when at least
    ``recipe.min_epochs`` of it fit the budget, else the first of ``recipe.smaller_models``
    that fits them (the smallest when none does). The batch: the recipe's, halved (down to
    ``recipe.min_batch``) while the planned epochs would take fewer than ``recipe.min_steps``
    steps; the lr follows it (the same lr per image, the recipe's rule).
    """
    out = AutoChoice()
    open_keys = set(open_keys)
    if not open_keys & {"model", "batch_size"}:
        return out  # all the user's: nothing to time
    models = [recipe.options["model"], *recipe.smaller_models]
    if "model" not in open_keys:
        models = [model or recipe.options["model"]]
    fits: dict[str, tuple[float, float]] = {}
    for name in models:
        rate = rate_of(name)
        fits[name] = (rate, fit_epochs(rate, n_train, minutes))
        if fits[name][1] >= recipe.min_epochs:
            break
    chosen = name
    rate, epochs = fits[chosen]
    if chosen != models[0]:
        full_rate, full_epochs = fits[models[0]]
        how = "fits them" if epochs >= recipe.min_epochs else "is the smallest"
        between = "".join(f"{name} only {fits[name][1]:.1f} ({fits[name][0]:,.0f} img/s); "
                          for name in models[1:] if name in fits and name != chosen)
        out.set("model", chosen, f"{models[0]} fits only {full_epochs:.1f} epochs in {minutes:g} min "
                                 f"({full_rate:,.0f} img/s measured), fewer than the {recipe.min_epochs:g} it "
                                 f"wants; {between}{chosen} {how} ({epochs:.1f} epochs at {rate:,.0f} img/s)")
    if "batch_size" in open_keys and recipe.min_steps:
        batch = recipe.options["batch_size"]
        while batch // 2 >= recipe.min_batch and epochs * n_train / batch < recipe.min_steps:
            batch //= 2
        if batch != recipe.options["batch_size"]:
            steps = epochs * n_train / batch
            out.set("batch_size", batch, f"{epochs:.1f} epochs of {n_train:,} images: about {steps:,.0f} steps "
                                         f"at this batch (the recipe wants >= {recipe.min_steps})")
            if "lr" in open_keys and recipe.lr_batch:
                why = f"the recipe's lr per image ({recipe.options['lr']:g} at {recipe.lr_batch})"
                out.set("lr", round(recipe.lr_at(batch), 6), why)
    return out


def size_for_budget(recipe, size: int, rate: float, n_train: int, minutes: float) -> tuple[int, float]:
    """(image size, its images/s): ``size`` when ``recipe.min_epochs`` fit at ``rate``, else the
    largest of ``recipe.smaller_sizes`` below it where they fit, the speed growing as the
    pixels shrink (the smallest when none does). On Imagenette in 6 minutes on 2 cores,
    photonet trained 30 epochs at 64 px to 84.1 % and 12 at 128 px to 82.3 %
    (benchmarks/log/2026-12-07.md): below the recipe's epochs, a smaller image pays."""
    chosen, chosen_rate = size, rate
    for s in [size, *sorted((x for x in recipe.smaller_sizes if x < size), reverse=True)]:
        chosen, chosen_rate = s, rate * (size / s) ** 2
        if fit_epochs(chosen_rate, n_train, minutes) >= recipe.min_epochs:
            break
    return chosen, chosen_rate


def measured_rate(step_rate: float, measured_size: int) -> Callable[[int], float]:
    """Images/s at any size from one measurement: convolution cost grows with the pixels.

    A CNN's work per image is proportional to H x W (every layer before global pooling
    scales with it), so the rate at size s is the rate at s0 times (s0 / s)^2.
    """
    def rate(size: int) -> float:
        return step_rate * (measured_size / size) ** 2

    return rate
