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
    """The model's float state after every optimiser step, before any averaging."""

    def __init__(self):
        self.states = []

    def on_train_begin(self, trainer):
        self.initial = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}

    def on_batch_end(self, trainer):
        self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()})


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
            if lookahead:  # the model continued from the average
                nxt = rec.states[step] if step < total else None
                if nxt is not None:
                    assert not all(torch.equal(nxt[k], state[k]) for k in hand)
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


def test_lookahead_resets_the_model_to_the_average_only_when_asked(images):
    x, y = images
    outcomes = {}
    for lookahead in (True, False):
        model = build_model(TINY_BN, classes=2, seed=0)
        rec = Recorder()
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                callbacks=[rec, Lookahead(every=3, decay=0.5, power=0.0, lookahead=lookahead)]).fit(
            TensorLoader(x, y, 8, seed=1), epochs=1)
        outcomes[lookahead] = rec.states[-1]
    # Without lookahead the raw trajectory is plain SGD; with it, the weights differ.
    assert any(not torch.equal(outcomes[True][k], outcomes[False][k]) for k in outcomes[True])


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
    (airbench,) = json.loads(capsys.readouterr().out)
    assert airbench["name"] == "airbench" and airbench["smaller_models"] == ["airbench_medium", "airbench_small"]
    assert all(airbench["options"][k] == getattr(cfg, k) for k in airbench["options"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "recipes   list the training recipes (--recipe)" in capsys.readouterr().out


def test_train_with_the_recipe_end_to_end(split_folder, tmp_path):
    """cnnlab.train(recipe=airbench) on drawn images: whitened stem, averaging, TTA evaluation."""
    import json

    import cnnlab
    from safetensors.torch import load_file

    run = cnnlab.train(split_folder, recipe="airbench", epochs=2, batch_size=8, out=str(tmp_path / "runs"),
                       verbose=False)
    cfg = (run.path / "config.yaml").read_text()
    assert "recipe: airbench" in cfg and "weight_averaging: lookahead" in cfg
    metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
    assert metrics["tta_mode"] == "flip+translate" and metrics["weights"] == "last"  # the averaged ones
    stem = load_file(run.path / "weights" / "last.safetensors")["layers.patch_whitening.conv.weight"]
    assert stem.abs().sum() > 0 and not torch.allclose(stem, torch.zeros_like(stem))


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
