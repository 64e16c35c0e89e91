"""Spec errors name the layer and shapes; the CLI turns them into one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import SpecError, WeightsError


def write_spec(tmp_path: Path, layers, input=(8, 8, 3), name="bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"input": list(input), "layers": layers}))
    return p


@pytest.mark.parametrize(
    "layers, input, fragments",
    [
        ([{"Conv2d": {"filters": 2, "kernel_size": 3}}], (8, 8, 3),
         ["layer 1", "unknown layer type 'Conv2d'", "did you mean 'Conv2D'"]),
        ([{"Conv2D": {"filter": 2, "kernel_size": 3}}], (8, 8, 3),
         ["layer 1 (Conv2D)", "unknown argument 'filter'", "did you mean 'filters'"]),
        ([{"Conv2D": {"kernel_size": 3}}], (8, 8, 3), ["layer 1 (Conv2D)", "missing required argument 'filters'"]),
        ([{"Conv2D": {"filters": -1, "kernel_size": 3}}], (8, 8, 3), ["layer 1 (Conv2D)", "'filters'", "-1"]),
        ([{"Conv2D": {"filters": 2, "kernel_size": 3, "padding": "full"}}], (8, 8, 3),
         ["layer 1 (Conv2D)", "'padding'", "valid, same"]),
        ([{"Dense": {"units": 2, "activation": "relu6x"}}], (8, 8, 3), ["layer 1 (Dense)", "unknown activation"]),
        # kernel larger than its input, with the shapes
        ([{"Conv2D": {"filters": 2, "kernel_size": 3}}, {"Conv2D": {"filters": 2, "kernel_size": 7}}, "Flatten",
          {"Dense": {"units": 2}}], (8, 8, 3),
         ["layer 2 (Conv2D 'conv2d_1')", "7x7 kernel", "6x6 input", "(None, 6, 6, 2)"]),
        # pool larger than its input
        ([{"MaxPooling2D": {"pool_size": 4}}, {"MaxPooling2D": {"pool_size": 4}}, "Flatten", {"Dense": {"units": 2}}],
         (8, 8, 3), ["layer 2 (MaxPooling2D 'max_pooling2d_1')", "4x4 pool window", "2x2 input"]),
        # strides that shrink the image until nothing is left for the next kernel
        ([{"Conv2D": {"filters": 2, "kernel_size": 1, "strides": 8}}, {"Conv2D": {"filters": 2, "kernel_size": 2}},
          "Flatten", {"Dense": {"units": 2}}], (8, 8, 3),
         ["layer 2 (Conv2D 'conv2d_1')", "2x2 kernel", "1x1 input"]),
        # Dense on a 4-D tensor without Flatten
        ([{"Conv2D": {"filters": 2, "kernel_size": 3}}, {"Dense": {"units": 2}}], (8, 8, 3),
         ["layer 2 (Dense 'dense')", "needs a flat input", "(None, 6, 6, 2)", "Flatten"]),
        # Conv after Flatten
        (["Flatten", {"Conv2D": {"filters": 2, "kernel_size": 1}}], (8, 8, 3),
         ["layer 2 (Conv2D", "image-shaped input", "(None, 192)"]),
        # never flattened
        ([{"Conv2D": {"filters": 2, "kernel_size": 3}}], (8, 8, 3), ["ends with shape (None, 6, 6, 2)"]),
    ],
)
def test_spec_errors_name_layer_and_shapes(tmp_path, capsys, layers, input, fragments):
    path = write_spec(tmp_path, layers, input)
    with pytest.raises(SpecError) as e:
        cnnlab.summary(str(path))
    for f in fragments:
        assert f in str(e.value)
    assert str(path) in str(e.value)
    # The command line: one sentence on stderr, exit code 2, no traceback.
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("input: [8, 8, 3]\nlayers: [ {Conv2D: {filters: 3", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a mapping"),
        ("layers: [Flatten]\n", "missing 'input'"),
        ("input: [8, 8]\nlayers: [Flatten]\n", "input must be [height, width, channels]"),
        ("input: [8, 8, 3]\nlayers: []\n", "'layers' must be a non-empty list"),
        ("input: [8, 8, 3]\nlayer: [Flatten]\n", "unknown top-level key 'layer'"),
        ("input: [8, 8, 3]\nlayers: [{Dense: {units: 2}, Flatten: {}}]\n", "layer 1 must be written as"),
        ("input: [8, 8, 3]\nlayers: [!!python/object/apply:os.system [echo hacked]]\n", "not valid YAML"),
    ],
)
def test_bad_yaml_files(tmp_path, capsys, text, fragment):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(path) in err and "Traceback" not in err


def test_missing_model_file_lists_presets(capsys):
    assert main(["summary", "no_such_model.yaml"]) == 2
    err = capsys.readouterr().err
    assert "no such model file or preset" in err and "tinyvgg" in err


def test_summary_json_has_the_documented_keys(capsys):
    assert main(["summary", "seed", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"layers", "total_params", "trainable_params", "non_trainable_params", "total_macs"} <= set(data)
    assert data["total_params"] == 3_938_570
    layer = data["layers"][0]
    assert {"name", "type", "output_shape", "params", "trainable", "non_trainable", "formula", "macs"} <= set(layer)
    assert layer["output_shape"] == [62, 62, 32] and layer["formula"] == "(3*3*3+1)*32 = 896"
    assert data == cnnlab.summary("seed").to_dict()  # the same data from Python


def test_summary_overrides_and_yaml_file(tmp_path, capsys):
    path = write_spec(tmp_path, [{"Conv2D": {"filters": 4, "kernel_size": 3}}, "GlobalAveragePooling2D",
                                 {"Dense": {"units": "classes", "activation": "softmax"}}], name="m.yaml")
    assert main(["summary", str(path), "--input", "32x48x1", "--classes", "3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [32, 48, 1]
    assert data["layers"][0]["params"] == (3 * 3 * 1 + 1) * 4
    assert data["layers"][-1]["output_shape"] == [3]
    assert main(["summary", str(path), "--input", "32by48"]) == 2
    assert "--input must look like 64x64x3" in capsys.readouterr().err


def test_summary_table_shows_formulas(capsys):
    assert main(["summary", "tinyvgg"]) == 0
    out = capsys.readouterr().out
    assert "(3*3*10+1)*10 = 910" in out and "Total params: 19,920" in out
    assert "(None, 13, 13, 10)" in out


def test_models_layers_doctor(capsys):
    assert main(["models", "--format", "json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"seed", "tinyvgg", "vgg_bn", "resnet_small"} <= set(models)
    assert models["tinyvgg"]["params"] == 19_920
    assert main(["layers", "Conv2D"]) == 0
    out = capsys.readouterr().out
    assert "kernel_size" in out and "dilation_rate" in out
    assert main(["layers", "maxpooling2d"]) == 0  # any case, as the names are written in Keras tutorials
    assert capsys.readouterr().out.startswith("MaxPooling2D")
    assert main(["doctor", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and info["auto_device"] in ("cpu", "cuda", "mps")


def test_console_script_end_to_end(tmp_path):
    """The installed `cnnlab` command, as a user runs it."""
    exe = Path(sys.executable).with_name("cnnlab")
    run = lambda *a: subprocess.run([str(exe), *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cnnlab {cnnlab.__version__}"
    r = run("--help")
    assert r.returncode == 0 and "summary" in r.stdout and "doctor" in r.stdout
    r = run("summary", "seed")
    assert r.returncode == 0 and "3,938,570" in r.stdout
    bad = write_spec(tmp_path, [{"Conv2D": {"filters": 2, "kernel_size": 3}}, {"Dense": {"units": 2}}])
    r = run("summary", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "needs a flat input" in r.stderr
    # argparse's own errors through the executable: tests/test_robust_cli.py::test_the_console_command


# -- weights files: safetensors + metadata, never pickle -------------------------------------

def test_weights_round_trip(tmp_path):
    model = cnnlab.build_model("tinyvgg", classes=3)
    path = tmp_path / "w.safetensors"
    cnnlab.save_weights(path, model, {"classes": ["a", "b", "c"]})
    loaded, meta = cnnlab.load_weights(path)
    assert meta["classes"] == ["a", "b", "c"] and meta["spec"]["classes"] == 3
    assert len(model.state_dict()) == len(loaded.state_dict())
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_weights_that_do_not_match_their_spec(tmp_path):
    from safetensors.torch import save_file

    model = cnnlab.build_model("tinyvgg", classes=3)
    path = tmp_path / "w.safetensors"
    cnnlab.save_weights(path, model)
    from cnnlab.io.weights import read_metadata

    meta = read_metadata(path)
    meta["spec"]["layers"][0]["Conv2D"]["filters"] = 12  # the header now describes another model
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "cnnlab-weights/1", "cnnlab": json.dumps(meta)})
    with pytest.raises(WeightsError, match=r"tensor layers\.conv2d\.conv\.\w+ has shape \(10"):
        cnnlab.load_weights(path)
