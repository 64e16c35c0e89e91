"""The automatic choices of `cnnlab train` from the data and the budget (cnnlab.train.auto).

Oracle: speeds given by hand (a fake ``rate_at``) and the arithmetic done here by hand:
epochs that fit = 0.85 x minutes x 60 x rate / images.
"""

from __future__ import annotations

from cnnlab.train.auto import DataFacts, choose, epochs_wanted, measured_rate


def cpu_rate(size: int) -> float:
    """A CPU that trains 400 images/s at 64 px, cost growing with the pixels."""
    return 400.0 * (64 / size) ** 2


DOGS = DataFacts((800, 800), (256, 256), n_val=400, classes=("cat", "dog"))


def test_photos_get_more_than_64_px_when_the_budget_allows():
    # 1,600 images want 40 epochs. At 128 px: 100 img/s -> 0.85*15*60*100/1600 = 47.8 epochs (ok);
    # at 160 px: 64 img/s -> 30.6 epochs (< 40). So 128.
    c = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate)
    assert epochs_wanted(1600) == 40
    assert c.values["img_size"] == 128
    assert "48 epochs" in c.reasons["img_size"]
    # 5 minutes: 96 px -> 0.85*300*177.8/1600 = 28 epochs (< 40); 64 px -> 63.8: so 64
    assert choose(DOGS, set(), time_limit=5, rate_at=cpu_rate).values["img_size"] == 64
    # an hour: 160 px gives 122 epochs; the CPU cap is 160
    assert choose(DOGS, set(), time_limit=60, rate_at=cpu_rate).values["img_size"] == 160
    # never larger than the images: 100 px photos stay at most 96
    small_photos = DataFacts((800, 800), (100, 120))
    assert choose(small_photos, set(), time_limit=60, rate_at=cpu_rate).values["img_size"] == 96


def test_the_time_limit_is_used_to_the_end():
    c = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate)
    assert c.values["epochs"] >= 500  # only a cap: TimeLimit plans the steps from the budget
    assert c.values["patience"] == 0  # early stopping would end it early
    # what the user sets is never changed
    c = choose(DOGS, {"epochs", "patience", "img_size"}, time_limit=15, rate_at=cpu_rate)
    assert not {"epochs", "patience", "img_size"} & set(c.values)


def test_without_a_time_limit_a_fixed_plan_of_the_default_minutes():
    c = choose(DOGS, set(), time_limit=None, rate_at=cpu_rate)
    # 10 minutes: 96 px -> 0.85*600*177.8/1600 = 56.7 epochs (>= 40); 128 px -> 31.9 (< 40)
    assert c.values["img_size"] == 96
    assert c.values["epochs"] == 56
    assert c.values["patience"] == 0  # one-cycle anneals at the last epoch; best weights kept
    big = DataFacts((5000,) * 10, (32, 32), n_val=10_000)
    # 50,000 images at 32 px: 1,600 img/s -> 0.85*600*1600/50000 = 16.3 epochs
    c = choose(big, set(), time_limit=None, rate_at=cpu_rate)
    assert (c.values["img_size"], c.values["epochs"]) == (32, 16)
    # an epoch count is never below 10 nor above 60
    tiny = DataFacts((20, 20), (32, 32))
    assert choose(tiny, set(), time_limit=None, rate_at=cpu_rate).values["epochs"] == 60
    # an --epochs of the user's: the block says the plan's minutes do not set the length
    assert "planned for 10 min (the epochs are yours) on cpu" in choose(DOGS, {"epochs"}, time_limit=None).block()
    assert "planned for 10 min on cpu" in choose(DOGS, set(), time_limit=None).block()
    # step schedule: early stopping stays
    assert "patience" not in choose(DOGS, set(), time_limit=None, rate_at=cpu_rate, scheduler="step").values


def test_a_small_class_gets_macro_f1_and_balanced_sampling():
    leaves = DataFacts((800, 120, 800), (256, 256), n_val=430, classes=("early_blight", "healthy", "late_blight"))
    c = choose(leaves, set(), time_limit=8, rate_at=cpu_rate)
    assert c.values["monitor"] == "val_macro_f1"
    assert c.values["balanced"] is True
    assert "'healthy' has 120 images, 15% of the largest" in c.reasons["balanced"]
    balanced = DataFacts((800, 500, 800), (256, 256))  # 62 %: no protection needed
    assert not {"monitor", "balanced"} & set(choose(balanced, set(), time_limit=8, rate_at=cpu_rate).values)
    assert "balanced" not in choose(leaves, {"class_weights"}, time_limit=8, rate_at=cpu_rate).values
    no_val = DataFacts((800, 120, 800), (256, 256))  # no validation data: nothing to monitor F1 on
    assert "monitor" not in choose(no_val, set(), time_limit=8, rate_at=cpu_rate).values


def test_small_images_take_the_small_image_recipe_when_there_is_one():
    cifar = DataFacts((4000,) * 10, (32, 32), n_val=10_000)
    assert choose(cifar, set(), time_limit=8, recipes=("airbench",)).values["recipe"] == "airbench"
    assert "recipe" not in choose(cifar, set(), time_limit=8, recipes=()).values
    assert "recipe" not in choose(cifar, {"model"}, time_limit=8, recipes=("airbench",)).values
    assert "recipe" not in choose(DOGS, set(), time_limit=8, recipes=("airbench",)).values
    few = DataFacts((100,) * 10, (32, 32))  # 1,000 images: too few for its batches of 1,024
    assert "recipe" not in choose(few, set(), time_limit=8, recipes=("airbench",)).values


def test_validation_on_a_subset_when_the_set_is_large():
    cifar = DataFacts((4000,) * 10, (32, 32), n_val=10_000)
    assert choose(cifar, set(), time_limit=8).values["val_max"] == 2000
    assert "val_max" not in choose(DOGS, set(), time_limit=8).values


def test_unmeasured_speed_keeps_the_model_size_and_the_block_says_why():
    c = choose(DOGS, set(), time_limit=None)
    assert c.values["img_size"] == 64 and c.values["epochs"] == 30
    digits = DataFacts((115,) * 10, (32, 32))
    assert choose(digits, set(), time_limit=None).values["img_size"] == 32  # the images' own
    # 40x60 images: 48 px would upscale their short side, so 32, and the reason says that
    # (it used to say "the model's input size", which is 64)
    narrow = choose(DataFacts((500,) * 4, (40, 60)), set(), time_limit=None)
    assert narrow.values["img_size"] == 32
    assert "img_size 32: the largest of 32, 48, 64 px not above the images' median 40x60" in narrow.block()
    assert "img_size 64: the model's input size" in choose(DOGS, set(), time_limit=None).block()
    block = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate).block()
    assert block.startswith("auto    1,600 training images in 2 classes, median 256x256 px; --time-limit 15 min")
    assert "img_size 128: largest size with >= 40 epochs" in block
    saved = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate).to_dict()
    assert saved["chosen"]["img_size"]["value"] == 128


def test_rate_scales_with_the_pixels():
    rate = measured_rate(1000.0, 64)
    assert rate(64) == 1000.0 and rate(128) == 250.0 and rate(32) == 4000.0


# --- the choices in a real run, and the pieces they use ------------------------------------

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from cnnlab.train.callbacks import Callback  # noqa: E402
from imagegen import make_image_folder  # noqa: E402
from tinymodels import TINY, TINY_BN, same_weights  # noqa: E402


def test_macro_f1_is_scikit_learns():
    from cnnlab.train.loop import Trainer, TensorLoader, macro_f1

    confusion = torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 0]])  # class 2 never seen nor predicted
    # class 0: 2*5/(6+7) = 0.769; class 1: 2*2/(4+3) = 0.571
    assert macro_f1(confusion) == pytest.approx((10 / 13 + 4 / 7) / 2)
    from cnnlab.model.build import build_model

    torch.manual_seed(0)
    model = build_model(TINY, classes=3, seed=0)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 3, (40,))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), 0.1))
    got = trainer.evaluate(TensorLoader(x, y, batch_size=16, shuffle=False))["macro_f1"]
    with torch.no_grad():
        pred = model(x.float() / 255).argmax(1)
    assert got == pytest.approx(f1_score(y.numpy(), pred.numpy(), average="macro"))


def test_validation_on_the_subset_except_the_last_epoch():
    from cnnlab.model.build import build_model
    from cnnlab.train.loop import Trainer, TensorLoader

    class Counting(TensorLoader):
        passes = 0

        def __iter__(self):
            type(self).passes += 1
            return super().__iter__()

    class Full(Counting):
        passes = 0

    class Part(Counting):
        passes = 0

    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(32) % 2
    model = build_model(TINY, classes=2, seed=0)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), 0.1))
    trainer.val_subset = Part(x[:8], y[:8], shuffle=False)
    history = trainer.fit(TensorLoader(x, y, 8), Full(x, y, 16, shuffle=False), epochs=3)
    assert (Part.passes, Full.passes) == (2, 1)
    assert len(history) == 3 and all("val_macro_f1" in h for h in history)


def test_loader_subset_is_fixed_and_shares_the_pixels(tmp_path):
    from cnnlab.data.loader import make_loader

    root = make_image_folder(tmp_path / "d", n=10)
    items = [(str(p), i) for i, c in enumerate(("hbar", "vbar")) for p in sorted((root / c).iterdir())]
    loader = make_loader(items, size=16, batch_size=4, cache_dir=False)
    a, b = loader.subset(6, seed=1), loader.subset(6, seed=1)
    assert a.num_samples == 6 and a.items == b.items and a.images is loader.images
    assert a.items != loader.items[:6]  # drawn at random, not the first ones (one class)
    xs = torch.cat([x for x, _ in a])
    rows = [loader.items.index(it) for it in a.items]
    assert torch.equal(xs, torch.cat([loader.batch(np.array([r]))[0] for r in rows]))
    assert loader.subset(50) is loader


@pytest.fixture
def imbalanced(tmp_path):
    root = tmp_path / "leaves"
    make_image_folder(root, ("hbar",), n=30, seed=1)
    make_image_folder(root, ("vbar",), n=8, seed=2)
    return root


# Why --precision auto keeps fp32 for TINY on either CPU: its MACs per image, by hand, are
# 30*30*4 outputs x 3*3*3 (conv) + 196*2 (dense) = 97,592, far below the 5M where bf16 pays.
FP32_BECAUSE = {True: "a small model (0.1M MACs per image): bf16 would gain nothing",
                False: "no native bf16 on this CPU"}


@pytest.mark.parametrize("cpu_bf16", [True, False], ids=["bf16-cpu", "older-cpu"])
def test_a_run_prints_and_saves_its_choices(imbalanced, tmp_path, capsys, monkeypatch, one_thread, cpu_bf16):
    import cnnlab
    import cnnlab.device as dev

    # Both CPUs on every machine: the flags the precision rule reads are faked.
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"} if cpu_bf16 else {"avx2"}))
    run = cnnlab.train(imbalanced, model=TINY, out=str(tmp_path / "runs"), evaluate=False, augment="none",
                       device="cpu")
    printed = capsys.readouterr().out
    assert f"\n        precision: {FP32_BECAUSE[cpu_bf16]}\n" in printed
    assert "auto    30 training images in 2 classes" in printed  # 38 images, 20 % held out
    assert "class 'vbar' has" in printed and "balanced True" in printed
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert cfg["monitor"] == "val_macro_f1" and cfg["balanced"] is True and cfg["patience"] == 0
    assert cfg["batch_size"] == 32 and cfg["epochs"] == 30 and cfg["val_max"] == 0
    assert cfg["auto"]["chosen"]["balanced"]["why"].startswith("class 'vbar'")
    assert cfg["precision"] == "fp32" and cfg["channels_last"] is False
    rows = (run.path / "history.csv").read_text().splitlines()
    assert "val_macro_f1" in rows[0] and len(rows) == 31
    assert json.loads((run.path / "classes.json").read_text()) == ["hbar", "vbar"]


class ActivationDtypes(Callback):
    """The dtypes of the first convolution's outputs in training steps, and whether its input was NHWC."""

    def __init__(self):
        self.dtypes, self.channels_last = set(), set()

    def on_train_begin(self, trainer):
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))

        def seen(module, inputs, output):
            if module.training:
                self.dtypes.add(output.dtype)
                self.channels_last.add(inputs[0].is_contiguous(memory_format=torch.channels_last))

        conv.register_forward_hook(seen)


def test_fp32_is_bit_reproducible_and_bf16_stays_finite(image_folder, tmp_path, one_thread):
    import cnnlab

    opts = dict(model=TINY_BN, epochs=2, evaluate=False, device="cpu", out=str(tmp_path / "runs"))
    fp32 = ActivationDtypes()
    a = cnnlab.train(image_folder, precision="fp32", name="a", verbose=False, callbacks=[fp32], **opts)
    b = cnnlab.train(image_folder, precision="fp32", name="b", verbose=False, **opts)
    assert same_weights(a.path / "weights" / "last.safetensors", b.path / "weights" / "last.safetensors")
    assert fp32.dtypes == {torch.float32} and fp32.channels_last == {False}
    bf16 = ActivationDtypes()
    c = cnnlab.train(image_folder, precision="bf16", name="c", verbose=False, callbacks=[bf16], **opts)
    cfg = yaml.safe_load((c.path / "config.yaml").read_text())
    assert cfg["precision"] == "bf16" and cfg["channels_last"] is True  # bf16 on the CPU goes with NHWC
    # and the steps really ran so: the convolution computed in bfloat16, on NHWC input
    assert bf16.dtypes == {torch.bfloat16} and bf16.channels_last == {True}
    for row in c.history():
        assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"]))


def test_auto_precision_on_the_cpu_is_timed_on_the_model(image_folder, tmp_path, monkeypatch, one_thread):
    """Where the rule would take bf16, the model's own step decides (a fake timer here)."""
    import cnnlab
    import cnnlab.device as dev
    import cnnlab.train.setup as st

    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(dev, "MIN_BF16_MACS", 0)  # even the tiny model is a bf16 candidate
    asked = []

    def fake(model, x, y, variants, **kw):
        asked.extend(variants)
        return {f"{p}{'+cl' if cl else ''}": {"fp32": 100, "fp32+cl": 90, "bf16": 80, "bf16+cl": 105}[
            f"{p}{'+cl' if cl else ''}"] for p, cl in variants}

    monkeypatch.setattr(st, "time_steps", fake)  # the name the training setup calls
    run = cnnlab.train(image_folder, model=TINY, epochs=1, evaluate=False, device="cpu", verbose=False,
                       out=str(tmp_path / "runs"))
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert len(asked) == 4  # fp32 and bf16, each NCHW and channels_last, on the model itself
    assert (cfg["precision"], cfg["channels_last"]) == ("fp32", False)  # bf16 only 1.05x: not enough


@pytest.mark.parametrize("gpu, capability, expected", [
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),  # Ampere: bf16 tensor cores
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
    ("Tesla T4", (7, 5), "fp16"),  # Turing (Colab's free GPU): fp16 tensor cores, bf16 only emulated
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
])
def test_auto_precision_on_a_gpu_is_bf16_from_ampere_on_and_fp16_before(monkeypatch, gpu, capability, expected):
    """No GPU needed: torch's CUDA probes are faked as a machine with that GPU answers them.

    torch.cuda.is_bf16_supported() asks the device's compute capability (bf16 from 8.0, Ampere),
    and, below it, whether a bfloat16 tensor can be made there: on a T4 or V100 it can
    (emulated), so the fake says yes too. Both run the run's own choice (setup.choose_device).
    """
    from types import SimpleNamespace

    from cnnlab.model.build import build_model
    from cnnlab.train import setup
    from cnnlab.train.config import make_config

    props = SimpleNamespace(name=gpu, major=capability[0], minor=capability[1], total_memory=16 * 2**30,
                            multi_processor_count=40)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)

    model = build_model(TINY, classes=2, seed=0)
    device, precision, channels_last, why = setup.choose_device(make_config(data="x"), model, sample=(32, 32, 3))
    assert (device.type, precision, channels_last) == ("cuda", expected, True)
    assert why == "the GPU's native half precision"
    # asked for by name, bf16 still runs where torch can (emulated on the older ones)
    assert setup.choose_device(make_config(data="x", precision="bf16"), model)[1] == "bf16"


def test_a_slow_machine_trains_the_recipes_smaller_model_with_a_smaller_batch():
    """airbench under --time-limit 15 on 50,000 images: by hand, epochs = 0.85 x 900 s x rate / 50,000.

    At 159 img/s (measured: the full net on a 2-core EPYC) 2.4 epochs fit, fewer than the 8 it
    wants; airbench_medium at 270 img/s fits 4.1, also too few; airbench_small at 464 img/s
    fits 7.1 (the smallest, so it trains anyway). 7.1 epochs of 50,000 are 347 steps at 1024
    (< 400) and 693 at 512: batch 512, lr 1.5 x 512/1024 = 0.75.
    """
    from cnnlab.train.auto import scale_recipe
    from cnnlab.train.recipes import get_recipe

    airbench = get_recipe("airbench")
    rates = {"airbench": 159.0, "airbench_medium": 270.0, "airbench_small": 464.0}
    out = scale_recipe(airbench, 50_000, 15, rates.__getitem__, {"model", "batch_size", "lr"})
    assert out.values == {"model": "airbench_small", "batch_size": 512, "lr": 0.75}
    assert "airbench fits only 2.4 epochs in 15 min (159 img/s measured)" in out.reasons["model"]
    assert "wants; airbench_medium only 4.1 (270 img/s); airbench_small is the smallest (7.1 epochs at 464 img/s)" \
        in out.reasons["model"]
    assert "about 693 steps" in out.reasons["batch_size"]

    # A GPU: 20,000 img/s, 306 epochs fit: the recipe as it is, nothing changed.
    assert scale_recipe(airbench, 50_000, 15, lambda name: 20_000.0, {"model", "batch_size", "lr"}).values == {}
    # Options the user set stay theirs: only the batch (and its lr) may change, or nothing.
    out = scale_recipe(airbench, 50_000, 15, rates.__getitem__, {"batch_size", "lr"})
    assert out.values == {"batch_size": 256, "lr": 0.375}  # 2.4 epochs: 117 steps at 1024, 469 at 256
    assert scale_recipe(airbench, 50_000, 15, rates.__getitem__, set()).values == {}
    # 8 min: airbench_small fits 3.8 epochs -> 185 steps at 1024, 370 at 512, 740 at 256.
    out = scale_recipe(airbench, 50_000, 8, rates.__getitem__, {"model", "batch_size", "lr"})
    assert out.values == {"model": "airbench_small", "batch_size": 256, "lr": 0.375}


def test_a_middling_machine_trains_the_widest_model_that_fits_the_epochs():
    """The rates measured on a 2-core Zen 4 with AVX512-BF16 (batch 256): airbench 730,
    airbench_medium 1,067, airbench_small 2,080 img/s. By hand, epochs = 0.85 x 60 x minutes x
    rate / 50,000: in 8 min airbench fits 5.96 (< 8) and airbench_medium 8.71 (>= 8, and 425
    steps of 1024, >= 400: the batch stays); in 15 min airbench fits 11.2: nothing changes."""
    from cnnlab.train.auto import scale_recipe
    from cnnlab.train.recipes import get_recipe

    airbench = get_recipe("airbench")
    timed: list[str] = []
    rates = {"airbench": 730.0, "airbench_medium": 1067.0, "airbench_small": 2080.0}

    def rate_of(name):
        timed.append(name)
        return rates[name]

    out = scale_recipe(airbench, 50_000, 8, rate_of, {"model", "batch_size", "lr"})
    assert out.values == {"model": "airbench_medium"}
    assert "airbench fits only 6.0 epochs in 8 min (730 img/s measured)" in out.reasons["model"]
    assert "airbench_medium fits them (8.7 epochs at 1,067 img/s)" in out.reasons["model"]
    assert timed == ["airbench", "airbench_medium"]  # the small one is not timed: not needed
    timed.clear()
    assert scale_recipe(airbench, 50_000, 15, rate_of, {"model", "batch_size", "lr"}).values == {}
    assert timed == ["airbench"]


def test_the_users_own_model_is_the_one_timed_for_the_batch():
    """--recipe airbench --model mine.yaml --time-limit 8: the batch follows mine's speed (here
    100 img/s: 0.816 epochs, 40 steps at 1024, 80 at 512, 159 at 256: the recipe's smallest
    batch, lr 0.375), not airbench's (a fast 10,000 img/s would leave the batch alone)."""
    from cnnlab.train.auto import scale_recipe
    from cnnlab.train.recipes import get_recipe

    rates = {"airbench": 10_000.0, "mine.yaml": 100.0}
    out = scale_recipe(get_recipe("airbench"), 50_000, 8, rates.__getitem__, {"batch_size", "lr"},
                       model="mine.yaml")
    assert out.values == {"batch_size": 256, "lr": 0.375}
    assert "0.8 epochs of 50,000 images: about 159 steps" in out.reasons["batch_size"]


def test_a_run_timed_on_a_busy_machine_says_so(image_folder, tmp_path, monkeypatch, capsys, one_thread):
    """The machine's CPU counters (faked: every second of the probe busy elsewhere, or none)
    decide whether the run warns that its timed choices may be low."""
    import cnnlab
    import cnnlab.device as dev
    import cnnlab.train.setup as st

    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(dev, "MIN_BF16_MACS", 0)
    monkeypatch.setattr(st, "time_steps", lambda model, x, y, variants, **kw: {
        f"{p}{'+cl' if cl else ''}": 100.0 for p, cl in variants})
    for busy, name in ((True, "busy"), (False, "quiet")):
        clock = {"t": 1000.0}

        def machine(busy=busy):  # (busy, all) CPU seconds since boot: 2 cores, 1 s per reading
            clock["t"] += 2.0
            return (clock["t"] if busy else 0.0, clock["t"])

        monkeypatch.setattr(dev, "_proc_stat_busy", machine)
        monkeypatch.setattr(dev, "_own_cpu_seconds", lambda: 0.0)  # no real CPU time either: all of it by hand
        cnnlab.train(image_folder, model=TINY, epochs=1, evaluate=False, device="cpu", name=name,
                     out=str(tmp_path / "runs"))
        printed = capsys.readouterr().out
        line = [ln for ln in printed.splitlines() if "busy:" in ln]
        if busy:  # 2 s of the machine's per 2 s, none of it this process's
            assert len(line) == 1 and "other programs used 100% of the CPU while cnnlab timed" in line[0], printed
            assert "--img-size" in line[0]
        else:
            assert line == [], printed


def test_the_image_size_probe_is_timed_at_the_runs_batch(image_folder, tmp_path, monkeypatch, one_thread):
    """Under --time-limit the model's speed decides the image size; a step's speed per image
    depends on the batch, so the probe times the batch the run then trains at (it used to be
    32 whatever the run's: the CPU default is 64, and a user's --batch-size is theirs)."""
    import cnnlab
    from cnnlab.train import auto, setup

    timed = []

    def fake_rate(model, device, precision, channels_last, size, channels, batch=32):
        timed.append(batch)
        return 500.0

    monkeypatch.setattr(setup, "_step_rate", fake_rate)
    monkeypatch.setattr(auto, "SMALL_SET", 10)  # these 19 training images count as a large set: batch 64
    for name, given in (("default", {}), ("theirs", {"batch_size": 8})):
        run = cnnlab.train(image_folder, model=TINY, time_limit=0.01, evaluate=False, device="cpu",
                           precision="fp32", name=name, verbose=False, out=str(tmp_path / "runs"), **given)
        trained_at = yaml.safe_load((run.path / "config.yaml").read_text())["batch_size"]
        assert trained_at == given.get("batch_size", 64)
        assert timed[-1] == trained_at, (name, timed)


def test_a_short_budget_trains_the_photo_recipe_on_smaller_images():
    """photonet_small at 128 px, 300 img/s, 8,522 images. By hand, epochs = 0.85 x 60 x minutes x
    rate / 8,522: in 6 min 10.8 (< 20); at 96 px the rate is 300 x (128/96)^2 = 533: 19.1 (< 20);
    at 64 px 1,200 img/s: 43.1. In 15 min 26.9 epochs fit at 128 px: it stays."""
    from cnnlab.train.auto import size_for_budget
    from cnnlab.train.recipes import get_recipe

    photo = get_recipe("photo")
    size, rate = size_for_budget(photo, 128, 300.0, 8522, 6)
    assert (size, round(rate)) == (64, 1200)
    assert size_for_budget(photo, 128, 300.0, 8522, 15) == (128, 300.0)
    assert size_for_budget(photo, 128, 300.0, 8522, 9)[0] == 96  # 16.2 at 128, 28.7 at 96
    assert size_for_budget(photo, 96, 10.0, 8522, 6)[0] == 64  # the smallest when none fits
