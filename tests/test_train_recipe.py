"""The fast recipe's training pieces: weight averaging (Lookahead/EMA), Nesterov SGD and
label smoothing, checked against hand-computed averages and torch's own implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.model.build import build_model
from cnnlab.train.averaging import Lookahead
from cnnlab.train.callbacks import Callback
from cnnlab.train.loop import TensorLoader, Trainer
from imagegen import draw
from tinymodels import TINY_BN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = np.stack([draw(c, (32, 32), rng) for c in ("hbar", "vbar") * 24])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([0, 1] * 24)


class Recorder(Callback):
    """The model's float state before every step and after it, before any averaging (placed
    before the averaging callback)."""

    def __init__(self):
        self.starts, self.states = [], []

    def on_train_begin(self, trainer):
        self.initial = self._state(trainer)

    def on_batch_begin(self, trainer):
        self.starts.append(self._state(trainer))

    def on_batch_end(self, trainer):
        self.states.append(self._state(trainer))

    @staticmethod
    def _state(trainer):
        return {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("lookahead", [True, False])
def test_lookahead_average_is_what_evaluation_uses(images, lookahead):
    x, y = images
    model = build_model(TINY_BN, classes=2, seed=0)
    rec, avg = Recorder(), Lookahead(every=2, decay=0.9, power=1.0, lookahead=lookahead)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True),
                      callbacks=[rec, avg])
    trainer.fit(TensorLoader(x, y, 8, seed=1), epochs=2)  # 12 steps
    total = len(rec.states)
    assert total == 12

    # By hand: every 2nd step, average <- d * average + (1 - d) * weights, d = 0.9 * step / total.
    hand = {k: v.double() for k, v in rec.initial.items()}
    for step, state in enumerate(rec.states, start=1):
        if step % 2 == 0:
            d = 0.9 * step / total
            hand = {k: d * hand[k] + (1 - d) * state[k].double() for k in hand}
        if step < total:  # where the next step starts: the hand average after an averaging step
            # with lookahead, else the weights this step left
            expected = hand if lookahead and step % 2 == 0 else {k: v.double() for k, v in state.items()}
            for k in hand:
                torch.testing.assert_close(rec.starts[step][k].double(), expected[k], rtol=1e-5, atol=1e-6)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), hand[k], rtol=1e-5, atol=1e-6)

    # Evaluation of the trained model equals a fresh model loaded with the hand average.
    fresh = build_model(TINY_BN, classes=2, seed=5)
    fresh.load_state_dict({**fresh.state_dict(), **{k: v.float() for k, v in hand.items()}})
    ev = TensorLoader(x, y, 16, shuffle=False)
    a = trainer.evaluate(ev)
    b = Trainer(fresh, torch.optim.SGD(fresh.parameters(), lr=0.1)).evaluate(ev)
    assert a == pytest.approx(b, rel=1e-5)


def test_lookahead_resets_the_model_to_the_average_only_when_asked():
    """By hand, on one weight w from 8 (loss w^2/2 and plain SGD at lr 0.5: each step halves w),
    averaged every 2 steps at decay 0.5 (power 0: constant), 4 steps:

    lookahead: 4; 2 -> average 0.5*8 + 0.5*2 = 5, and w is reset to 5; 2.5; 1.25 -> average
               0.5*5 + 0.5*1.25 = 3.125, where w ends;
    EMA only:  4; 2 (average 5, w stays 2); 1; 0.5 -> average 0.5*5 + 0.5*0.5 = 2.75, which w
               becomes at the last step. Every number is exact in binary.
    """
    from types import SimpleNamespace

    expected = {True: [4.0, 5.0, 2.5, 3.125], False: [4.0, 2.0, 1.0, 2.75]}
    for lookahead, trajectory in expected.items():
        model = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(8.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        trainer = SimpleNamespace(model=model, step=0, total_steps=4)
        avg = Lookahead(every=2, decay=0.5, power=0.0, lookahead=lookahead)
        avg.on_train_begin(trainer)
        seen = []
        for _ in range(4):
            opt.zero_grad()
            (model.weight.square().sum() / 2).backward()
            opt.step()
            trainer.step += 1
            avg.on_batch_end(trainer)
            seen.append(model.weight.item())
        assert seen == trajectory, (lookahead, seen)
        avg.on_train_end(trainer)
        assert model.weight.item() == trajectory[-1]


def test_bias_lr_scale_gives_biases_more_lr_and_the_same_decay_per_step():
    from cnnlab.train.config import make_config
    from cnnlab.train.optimizers import make_optimizer

    model = build_model("airbench", classes=3)
    cfg = make_config(optimizer="sgd", momentum=0.85, bias_lr_scale=64.0)
    opt = make_optimizer(model, "sgd", 1.5, 0.00133, cfg)
    weights, other, bn = opt.param_groups
    assert (weights["lr"], other["lr"], bn["lr"]) == (1.5, 1.5, 1.5 * 64)
    assert weights["lr"] * weights["weight_decay"] == pytest.approx(bn["lr"] * bn["weight_decay"])
    assert other["weight_decay"] == 0.0  # the stem's bias: the plain rule (as airbench)
    assert [p is model.layers["patch_whitening"].conv.bias for p in other["params"]] == [True]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in bn["params"]} == {id(m.bias) for m in norms}  # the BN shifts (no scales)
    assert all(p.ndim > 1 for p in weights["params"])
    assert not any(p is model.layers["patch_whitening"].conv.weight for p in weights["params"])  # frozen
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.85


def test_nesterov_step_and_label_smoothing_match_the_textbook(images):
    """One SGD step against Nesterov's update written out; the loss against the smoothed target."""
    from cnnlab.train.losses import LOSSES
    from cnnlab.train.optimizers import make_optimizer
    from cnnlab.train.config import make_config

    model = build_model(TINY_BN, classes=2, seed=0)
    x, y = images
    loss_fn = LOSSES["cross_entropy"].build(model, 0.2, None)
    logits = model(x[:8].float() / 255)
    logp = torch.log_softmax(logits, 1)
    target = torch.full_like(logp, 0.2 / 2).scatter(1, y[:8, None], 1 - 0.2 + 0.2 / 2)
    torch.testing.assert_close(loss_fn(logits, y[:8]), -(target * logp).sum(1).mean())

    opt = make_optimizer(model, "sgd", 0.1, 0.0, make_config(optimizer="sgd", momentum=0.8))
    w = model.layers["dense"].linear.weight
    before = w.detach().clone()
    buf = torch.zeros_like(w)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x[:8].float() / 255), y[:8]).backward()
        g = w.grad.detach().clone()
        buf = 0.8 * buf + g
        before = before - 0.1 * (g + 0.8 * buf)  # Nesterov: step along g + momentum * buffer
        opt.step()
        torch.testing.assert_close(w.detach(), before)


def test_triangle_schedule_points():
    from cnnlab.train.schedules import schedule_factor

    assert [round(schedule_factor("triangle", p, 0.25), 4) for p in (0, 0.125, 0.25, 0.625, 1)] == [
        0.2, 0.6, 1.0, 0.535, 0.07]


def test_recipe_options_sit_under_the_users(tmp_path):
    from cnnlab.train.config import make_config

    cfg = make_config(recipe="airbench", epochs=3)
    assert (cfg.model, cfg.optimizer, cfg.epochs, cfg.augment, cfg.tta) == ("airbench", "sgd", 3, "cifar",
                                                                            "flip+translate")
    assert make_config(recipe="airbench", time_limit=8).epochs == 40
    # Another batch size keeps the lr per image: 1.5 at 1024 -> 0.375 at 256 (unless --lr is given).
    assert make_config(recipe="airbench", batch_size=256).lr == pytest.approx(0.375)
    assert make_config(recipe="airbench", batch_size=256, lr=0.1).lr == 0.1
    f = tmp_path / "run.yaml"
    f.write_text("recipe: airbench\nlabel_smoothing: 0.1\n")
    assert make_config(f, lr=0.5).label_smoothing == 0.1 and make_config(f, lr=0.5).lr == 0.5
    with pytest.raises(Exception, match="unknown recipe 'airbenh'; did you mean 'airbench'"):
        make_config(recipe="airbenh")


def test_cnnlab_recipes_shows_what_a_recipe_run_gets(capsys):
    """`cnnlab recipes` lists each option with the value a `--recipe airbench` config holds
    (the text as a config file writes it, the JSON exactly), the --time-limit changes and the
    sources; `cnnlab --help` names the command."""
    import json

    from cnnlab.cli import main
    from cnnlab.train.config import make_config

    cfg = make_config(recipe="airbench")
    assert main(["recipes"]) == 0
    text = capsys.readouterr().out
    for key in ("model", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "augment", "tta"):
        assert f"\n    {key}: {getattr(cfg, key)}\n" in text
    assert "\n    channels_last: true\n" in text and cfg.channels_last is True
    assert "epochs: 40 (a cap: the budget decides)" in text
    assert "the first of airbench, airbench_medium, airbench_small that fits 8 epochs" in text
    assert "Lookahead" in text and "Jordan 2024" in text
    assert main(["recipes", "--format", "json"]) == 0
    recipes = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(recipes) == ["airbench", "photo"]
    airbench = recipes["airbench"]
    assert airbench["name"] == "airbench" and airbench["smaller_models"] == ["airbench_medium", "airbench_small"]
    assert all(airbench["options"][k] == getattr(cfg, k) for k in airbench["options"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "recipes   list the training recipes (--recipe)" in capsys.readouterr().out


class StepRecorder(Callback):
    """The model's float state at the start and right after every optimiser step: before the
    callbacks (the weight averaging among them) see it, through the optimiser's own hook."""

    def on_train_begin(self, trainer):
        self.initial = self._state(trainer)
        self.starts, self.states = [], []  # before each step; right after its optimiser step
        trainer.optimizer.register_step_post_hook(lambda *_: self.states.append(self._state(trainer)))

    def on_batch_begin(self, trainer):
        self.starts.append(self._state(trainer))

    @staticmethod
    def _state(trainer):
        return {k: v.detach().double().clone() for k, v in trainer.model.state_dict().items()
                if v.is_floating_point()}


def _pixels(paths) -> np.ndarray:
    """(N, 32, 32, 3) float64 in [0, 1], decoded by Pillow (the images are 32x32 already)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255 for p in paths])


def test_train_with_the_recipe_end_to_end(tmp_path):
    """cnnlab.train(recipe=airbench) on drawn images, each piece against a computation of its own:

    * the stem: 2x2 PCA-whitening filters of the training patches, then the same filters
      negated: the first 12 filters F (12 values each) give F (Cov + eps I) F^T = I with
      orthogonal rows, Cov computed here in numpy from the PNGs, and the other 12 are -F;
    * weight averaging: every 5 steps avg <- d avg + (1 - d) w, d = 0.95^5 (step/total)^3,
      replayed here on the recorded raw weights; the saved last weights are that average;
    * TTA: the test probabilities are the weighted mean of the six views (image, mirror, and
      both shifted one pixel up-left and down-right, reflected borders) made here with torch.
    """
    import csv
    import json

    import torch.nn.functional as F

    import cnnlab
    from imagegen import make_split_folder
    from safetensors.torch import load_file

    data = make_split_folder(tmp_path / "data", n={"train": 10, "val": 2, "test": 4})
    rec = StepRecorder()
    # 20 training images at batch 4: 10 steps, averaged at steps 5 and 10 (the last). fp32: the
    # test split is then evaluated exactly (a bf16 run evaluates in bf16).
    run = cnnlab.train(data, recipe="airbench", epochs=2, batch_size=4, precision="fp32",
                       out=str(tmp_path / "runs"), verbose=False, callbacks=[rec])
    cfg = (run.path / "config.yaml").read_text()
    assert "recipe: airbench" in cfg and "weight_averaging: lookahead" in cfg
    last = {k: v.double() for k, v in load_file(run.path / "weights" / "last.safetensors").items()}
    split = run.split()
    train_files, test_items = [p for p, _ in split["train"]], split["test"]
    assert len(train_files) == 20 and len(test_items) == 8

    # -- the stem: the negated pair of whitening filters of the training patches
    from cnnlab.io.weights import read_metadata

    x = _pixels(train_files)
    mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2))  # the "measured" normalisation, by hand
    norm = read_metadata(run.path / "weights" / "last.safetensors")["normalization"]
    np.testing.assert_allclose(norm["mean"], mean, atol=2e-6)
    np.testing.assert_allclose(norm["std"], std, atol=2e-6)
    z = (x - mean) / std
    # every 2x2 patch (stride 1), its values in (channel, row, column) order: the kernel's layout
    patches = np.stack([z[:, i:i + 31, j:j + 31, c] for c in range(3) for i in (0, 1) for j in (0, 1)], -1)
    cov = np.cov(patches.reshape(-1, 12), rowvar=False)
    stem = last["layers.patch_whitening.conv.weight"].numpy().reshape(24, 12)
    np.testing.assert_array_equal(stem, rec.initial["layers.patch_whitening.conv.weight"].numpy().reshape(24, 12))
    first, second = stem[:12], stem[12:]
    np.testing.assert_array_equal(second, -first)  # the negated pair
    # whitening: the 12 outputs of the patches (eps = 5e-4 added to the variances) are
    # uncorrelated with unit variance; PCA whitening: the filters are orthogonal (eigenvectors)
    np.testing.assert_allclose(first @ (cov + 5e-4 * np.eye(12)) @ first.T, np.eye(12), atol=1e-4)
    gram = first @ first.T
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-4)

    # -- weight averaging: the EMA of the recorded steps, synced every 5 steps, is what was saved
    assert len(rec.states) == 10
    avg = dict(rec.initial)
    for step, state in enumerate(rec.states, start=1):
        if step % 5 == 0:
            d = 0.95 ** 5 * (step / 10) ** 3
            avg = {k: d * avg[k] + (1 - d) * state[k] for k in avg}
        if step < 10:  # lookahead: every 5th step the next one starts from the average, else from `state`
            start = rec.starts[step]
            for k in avg:
                torch.testing.assert_close(start[k], avg[k] if step % 5 == 0 else state[k], rtol=1e-5, atol=1e-6)
    for k, v in avg.items():
        torch.testing.assert_close(last[k], v, rtol=1e-5, atol=1e-6, msg=k)
    changed = [k for k in avg if not torch.allclose(last[k], rec.states[-1][k], rtol=1e-3, atol=1e-5)]
    assert changed, "the saved last weights are the raw weights of the last step, not their average"

    # -- TTA on the averaged (last) weights: six views made here, weighted 1/4, 1/4, 1/8 x 4
    metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
    assert metrics["tta_mode"] == "flip+translate" and metrics["weights"] == "last"
    model, _ = run.load_model("last")
    xt = torch.from_numpy((_pixels([p for p, _ in test_items]) - mean) / std).permute(0, 3, 1, 2).float()

    def shifted(t, d):  # content moved d pixels down and right, reflected borders
        return F.pad(t, (1, 1, 1, 1), mode="reflect")[..., 1 - d:33 - d, 1 - d:33 - d]

    views = [(0.25, xt), (0.25, xt.flip(3))]
    views += [(0.125, v) for d in (-1, 1) for v in (shifted(xt, d), shifted(xt, d).flip(3))]
    with torch.no_grad():
        expected = sum(w * torch.softmax(model(v).float(), 1) for w, v in views).numpy()
        plain = torch.softmax(model(xt).float(), 1).numpy()
    with (run.path / "eval" / "test" / "predictions.csv").open() as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    got = np.array([[float(rows[p]["p_hbar"]), float(rows[p]["p_vbar"])] for p, _ in test_items])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert np.abs(expected - plain).max() > 1e-4  # the views matter: TTA is not the plain forward


def test_a_time_limit_on_a_slow_machine_trains_the_smaller_model(split_folder, tmp_path, monkeypatch):
    """--recipe airbench --time-limit: the speeds measured (here: given, 2, 3 and 100 img/s for
    airbench, airbench_medium and airbench_small) pick airbench_small and a batch of 256
    (lr 0.375), printed, saved and trained as said; each timed at the run's batch, up to 256."""
    import yaml

    import cnnlab
    from cnnlab.train import setup

    batches = []

    def fake_rate(model, device, precision, channels_last, size, channels, batch=32):
        batches.append(batch)
        widths = {m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
        return 2.0 if 256 in widths else 3.0 if 192 in widths else 100.0

    monkeypatch.setattr(setup, "_step_rate", fake_rate)
    run = cnnlab.train(split_folder, recipe="airbench", time_limit=0.05, out=str(tmp_path / "runs"),
                       evaluate=False, verbose=False)
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    assert (cfg["model"], cfg["batch_size"], cfg["lr"]) == ("airbench_small", 256, 0.375)
    why = cfg["auto"]["chosen"]["model"]["why"]
    assert why.startswith("airbench fits only") and "airbench_small is the smallest" in why
    assert batches[-3:] == [256, 256, 256]  # the recipe's 1024, timed at 256
    spec = yaml.safe_load((run.path / "model.yaml").read_text())
    assert [l["Conv2D"]["filters"] for l in spec["layers"] if "Conv2D" in l] == [32, 32, 128, 128, 128, 128]
    # A --model of the user's own is theirs: no swap (and with their batch, nothing to time).
    timed = len(batches)
    run = cnnlab.train(split_folder, recipe="airbench", model="airbench", time_limit=0.05, batch_size=8,
                       out=str(tmp_path / "runs"), evaluate=False, verbose=False)
    assert yaml.safe_load((run.path / "config.yaml").read_text())["model"] == "airbench"
    assert len(batches) == timed


def test_a_resumed_average_goes_where_the_weights_are():
    """--resume reads the checkpoint onto the CPU; on a GPU the average must follow the weights
    there, or the first averaging step after the resume fails (a CPU tensor lerped with a
    CUDA one). The meta device stands in for the GPU."""
    from types import SimpleNamespace

    model = build_model(TINY_BN, classes=2, seed=0)
    saved = Lookahead()
    saved.on_train_begin(SimpleNamespace(model=model))
    resumed = Lookahead()
    resumed.load_state_dict(saved.state_dict())
    trainer = SimpleNamespace(model=model.to("meta"))
    resumed.on_train_begin(trainer)
    assert {v.device.type for v in resumed.average.values()} == {"meta"}
    assert resumed.average.keys() == saved.average.keys()
    resumed.update(trainer, 0.5, sync=True)  # the step that failed


def test_a_recipe_the_chooser_picks_redraws_val_without_discovering_again(tmp_path, monkeypatch):
    """The chooser picks the airbench recipe for small photos (threshold lowered here); its
    val_split 0 gives every image to training -- from the files found once."""
    from PIL import Image

    import cnnlab.train.auto as auto
    import cnnlab.train.setup as st
    from cnnlab.train.config import make_config

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    monkeypatch.setattr(auto, "RECIPE_MIN_IMAGES", 10)
    calls = []
    real = st.discover
    monkeypatch.setattr(st, "discover", lambda *a, **k: calls.append(k["val_split"]) or real(*a, **k))
    cfg = make_config(data=str(tmp_path / "data"), device="cpu")
    facts = st.gather_facts(cfg)
    assert [len(facts.index.splits[s]) for s in ("train", "val")] == [32, 8]  # 0.2 of each class
    decided = st.decide(cfg, facts, verbose=False)
    assert decided.recipe == "airbench" and decided.val_split == 0.0
    assert calls == [0.2]  # found once, at the default split
    assert len(facts.index.splits["train"]) == 40 and facts.index.splits["val"] == []
