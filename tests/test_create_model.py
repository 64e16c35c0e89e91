"""cnnlab.create_model, the one door for "a model by name": a preset or YAML comes fresh, a
model file or a run folder with its trained weights (compared with the tensors saved)."""

from __future__ import annotations

import json

import torch

import cnnlab
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model

SPEC = {"input": [12, 12, 3], "layers": [{"Conv2D": {"filters": 4, "kernel_size": 3}}, {"Flatten": {}},
                                         {"Dense": {"units": "classes", "activation": "softmax"}}]}


def saved(tmp_path):
    model = build_model(SPEC, classes=2, seed=3)
    meta = {"classes": ["a", "b"], "input": [12, 12, 3], "resize": "stretch",
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    save_weights(run / "weights" / "best.safetensors", model, meta)
    (run / "classes.json").write_text(json.dumps(["a", "b"]))
    (run / "model.yaml").write_text(model.spec.to_yaml())
    return model, run


def same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_run_folder_or_a_model_file_comes_with_its_weights(tmp_path):
    model, run = saved(tmp_path)
    assert same(cnnlab.create_model(run), model)
    assert same(cnnlab.create_model(run / "weights" / "best.safetensors"), model)
    fresh = cnnlab.create_model(run, weights=None, seed=5)
    assert not same(fresh, model) and fresh.num_outputs == 2
    assert cnnlab.create_model(run, classes=5).num_outputs == 5  # another head: built, not loaded


def test_a_preset_comes_fresh_with_its_seed():
    a, b = cnnlab.create_model("tinyvgg", classes=3, seed=1), cnnlab.create_model("tinyvgg", classes=3, seed=1)
    assert same(a, b) and a.num_outputs == 3
    assert not same(a, cnnlab.create_model("tinyvgg", classes=3, seed=2))
