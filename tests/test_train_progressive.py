"""Progressive resizing and the FixRes test size (the photo recipe's --progressive / --train-scale).

Oracles: torch's own F.interpolate and Pillow's resize for the pixels, sizes and step counts
worked out by hand here, and a model built by torch at the smaller size for "the same net at
every size".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cnnlab
from cnnlab.data.augment import Augmenter, warp
from cnnlab.data.preprocess import Preprocessor
from cnnlab.model.build import build_model
from cnnlab.model.spec import load_spec, size_free
from cnnlab.run import open_any
from cnnlab.train.auto import DataFacts, choose
from cnnlab.train.callbacks import Callback, ProgressiveResize, TimeLimit, steps_that_fit
from cnnlab.train.loop import TensorLoader, Trainer
from imagegen import draw, make_split_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def photos(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = np.stack([draw(c, (size, size), rng) for c in ("hbar", "vbar", "square", "cross")[:n]])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)


# -- the pixels ----------------------------------------------------------------------------------

def test_a_warp_to_a_smaller_size_is_bilinear_resampling_of_the_same_region():
    x = photos()
    identity = torch.eye(3, dtype=torch.float64).repeat(len(x), 1, 1)
    out = warp(x, identity, size=(32, 48))
    # torch's interpolate samples the same pixel centres (align_corners=False), without antialiasing
    expected = F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)
    assert out.shape == (4, 3, 32, 48)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_a_flipping_augmenter_at_another_size_flips_the_resized_image():
    x = photos()
    aug = Augmenter("flip")
    out = aug(x, torch.Generator().manual_seed(3), size=(40, 40))
    small = F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=False)
    flipped = [torch.allclose(o, s.flip(-1), atol=1e-5) for o, s in zip(out, small)]
    kept = [torch.allclose(o, s, atol=1e-5) for o, s in zip(out, small)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_a_non_geometric_augmenter_resizes_as_pillow_does():
    x = photos(size=96)
    out = Augmenter("brightness=1:1")(x, torch.Generator().manual_seed(0), size=(48, 48))
    for img, got in zip(x, out):
        pil = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        ref = np.asarray(pil.resize((48, 48), Image.BILINEAR), dtype=np.float32) / 255
        assert np.abs(got.permute(1, 2, 0).numpy() - ref).max() < 3 / 255


# -- the schedule ----------------------------------------------------------------------------------

def test_the_sizes_switch_at_the_planned_steps():
    # 128 px, 5/8 -> 7/8, multiples of 16, the middle half of 100 steps. By hand: the fraction is
    # 0.625 up to step 25, then 0.625 + 0.25 (p - 0.25) / 0.5; 128 f / 16 = 8 f rounds to 5 (80 px)
    # while 8 f < 5.5, i.e. p < 0.375; to 6 (96 px) while 8 f < 6.5, p < 0.625; then 7 (112 px).
    plan = ProgressiveResize((128, 128), 0.625, 0.875, multiple=16)
    assert plan.sizes(100) == [(0, (80, 80)), (38, (96, 96)), (63, (112, 112))]
    assert plan.size_at(1.0) == (112, 112)
    assert plan.cost(0.0) == pytest.approx(80 * 80 / 128 ** 2)
    # non-square images keep their shape; each side rounds to the multiple, halves up. By hand,
    # 10 steps: f = 0.5 to step 2, then 0.55, 0.65, 0.75, 0.85, 0.95, 1: 96 f / 32 = 1.5 (2), 1.65,
    # 1.95, 2.25 (2), 2.55 (3)...; 160 f / 32 = 2.5 (3), 2.75, 3.25 (3), 3.75 (4), 4.25 (4), 4.75 (5)
    assert ProgressiveResize((96, 160), 0.5, 1.0, multiple=32).sizes(10) == [
        (0, (64, 96)), (5, (64, 128)), (6, (96, 128)), (7, (96, 160))]


class Sizes(Callback):
    """The input size of every forward pass, training and validation apart."""

    def __init__(self, model):
        self.train, self.val = [], []
        model.register_forward_pre_hook(lambda m, args: (self.train if m.training else self.val).append(
            tuple(args[0].shape[-2:])))


def test_training_follows_the_schedule_and_validation_sees_the_full_size():
    x = torch.from_numpy(np.stack([draw(c, (64, 64), np.random.default_rng(i)) for i, c in
                                   enumerate(("hbar", "vbar") * 8)])).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([0, 1] * 8)
    model = build_model(load_spec("resnet_small"), input=(64, 64, 3), classes=2, seed=0)
    sizes = Sizes(model)
    plan = ProgressiveResize((64, 64), 0.5, 0.75, multiple=4)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), augment=Augmenter("flip"),
                      callbacks=[plan])
    trainer.fit(TensorLoader(x, y, 4, seed=0), TensorLoader(x, y, 8, seed=0), epochs=3)  # 12 steps
    expected = [plan.size_at(step / 12) for step in range(12)]
    assert sizes.train == expected
    assert expected[0] == (32, 32) and expected[-1] == (48, 48)  # by hand: 64 x 0.5, 64 x 0.75
    assert set(sizes.val) == {(64, 64)}


def test_the_same_network_at_every_size_that_is_a_multiple_of_its_stride():
    spec = load_spec("photonet_small")
    assert size_free(spec)[0] == 16  # stem 2, pooling 2, two strided stages 2 x 2
    big = build_model(spec, input=(128, 128, 3), classes=3, seed=0).eval()
    small = build_model(spec, input=(96, 96, 3), classes=3, seed=1).eval()
    small.load_state_dict(big.state_dict())
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x))


def test_a_model_tied_to_one_size_is_named():
    stride, why = size_free(load_spec("airbench"))
    assert stride == 0 and "Flatten" in why and "layer 24" in why


def test_a_time_limit_plans_steps_by_their_cost():
    # cost 1/4 for the first half of the progress, 1 after: a run of N steps costs 0.625 N units
    def cost(p):
        return 0.25 if p < 0.5 else 1.0

    assert steps_that_fit(cost, 0, 100.0, 1.0, 0.0) == 160
    assert steps_that_fit(lambda p: 1.0, 0, 100.0, 0.5, 0.5) == 100  # constant: seconds / (per unit + per step)
    # 100 steps done of a plan: the rest of a run of N costs (N - 100) units when 100 >= N / 2
    assert steps_that_fit(cost, 100, 50.0, 1.0, 0.0) == 50


def test_a_time_limited_run_with_cheap_early_steps_plans_more_of_them():
    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    class Tick(Callback):  # a step takes its pixels' share of 1 s
        def __init__(self, clock):
            self.clock = clock

        def on_batch_end(self, trainer):
            size = trainer.train_size or (64, 64)
            self.clock.t += size[0] * size[1] / 64 ** 2

    clock = Clock()
    x = torch.rand(8, 3, 64, 64)
    y = torch.tensor([0, 1] * 4)
    model = build_model(load_spec("resnet_small"), input=(64, 64, 3), classes=2, seed=0)
    limit = TimeLimit(1.0, clock=clock, replan_every=1, first_plan=1)  # 60 s
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01),
                      callbacks=[ProgressiveResize((64, 64), 0.5, 1.0, multiple=4), Tick(clock), limit])
    trainer.fit(TensorLoader(x, y, 4, seed=0), epochs=500)
    # 60 s of steps costing 1/4 s (32 px) to 1 s (64 px). By hand, the mean cost over the run is
    # 1/4 x 1/4 + 1/4 x 1 + 1/2 x the mean of (1/2 + t/2)^2 over t in [0, 1] (7/12): 0.604, so
    # 60 / 0.604 = 99 steps (60 at the full size all along)
    assert 90 <= trainer.step <= 110
    assert clock.t <= 61


# -- the recipe and the chooser --------------------------------------------------------------------

def test_photos_get_the_photo_recipe_and_the_block_says_why():
    dogs = DataFacts((800, 800), (375, 500), n_val=400, classes=("cat", "dog"))
    c = choose(dogs, set(), time_limit=15, recipes=("airbench", "photo"))
    assert c.values["recipe"] == "photo"
    assert "375x500" in c.reasons["recipe"] and "96 px" in c.reasons["recipe"]
    assert "recipe" not in choose(dogs, {"model"}, time_limit=15, recipes=("photo",)).values
    small = DataFacts((800, 800), (80, 120))
    assert "recipe" not in choose(small, set(), time_limit=15, recipes=("photo",)).values


def test_a_photo_run_trains_smaller_and_tests_at_its_size(tmp_path, capsys):
    data = make_split_folder(tmp_path / "photos", ("hbar", "vbar"), {"train": 12, "val": 4, "test": 4},
                             size=(112, 112))
    run = cnnlab.train(str(data), epochs=2, batch_size=8, out=str(tmp_path / "runs"), name="p")
    out = capsys.readouterr().out
    assert "recipe photo: photos of 112x112 px" in out  # chosen, and why
    # 96 px (the ladder's largest not above 112): 5/8 -> 60 -> 64, 7/8 -> 84 -> 80, multiples of 16
    assert "trains at 64x64 px, growing to 80x80" in out and "tested at 96x96 (FixRes)" in out
    cfg = run.config
    assert cfg["recipe"] == "photo" and cfg["progressive"] == 0.625 and cfg["train_scale"] == 0.875
    assert cfg["img_size"] == 96 and cfg["model"].startswith("photonet")
    metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
    assert metrics["tta_mode"] == "flip" and metrics["n_images"] == 8
    opened = open_any(run.path)
    assert opened.model.input_shape == (96, 96, 3)  # the size the test split was read at
    assert Preprocessor.from_meta(opened.meta).size == (96, 96)


def test_progressive_resizing_refuses_a_model_tied_to_one_size(tmp_path, capsys):
    from cnnlab.cli import main

    data = make_split_folder(tmp_path / "d", ("hbar", "vbar"), {"train": 8, "val": 2}, size=(32, 32))
    assert main(["train", str(data), "--model", "airbench", "--progressive", "0.5", "--epochs", "1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--progressive" in err and "Flatten" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.parametrize("named", [True, False])
def test_the_photo_recipe_keeps_its_size_whether_named_or_chosen(tmp_path, monkeypatch, named):
    """Under --time-limit the plain default's size-by-budget rule is not the recipe's: the
    photo recipe trains at its model's size (here the ladder's 96 below the 112 px photos),
    and only its own nets are timed (a fake speed: 1,000 img/s for each)."""
    from cnnlab.train import setup as setup_module
    from cnnlab.train.config import make_config

    timed = []

    def fake_rate(model, *args, **kwargs):
        timed.append(model.spec.name)
        return 1000.0

    monkeypatch.setattr(setup_module, "_step_rate", fake_rate)
    data = make_split_folder(tmp_path / "photos", ("hbar", "vbar"), {"train": 12, "val": 4}, size=(112, 112))
    options = {"recipe": "photo"} if named else {}
    cfg = make_config(data=str(data), time_limit=5, **options)
    cfg = setup_module.decide(cfg, setup_module.gather_facts(cfg), verbose=False)
    assert cfg.recipe == "photo" and cfg.img_size == 96
    assert timed and all(name.startswith("photonet") for name in timed)
