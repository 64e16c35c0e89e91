"""Keras model files (.keras, legacy .h5) read by cnnlab without Keras, checked against Keras.

The oracle is Keras 3 itself (torch backend): it builds and saves real models of every
layer type cnnlab reads; cnnlab's probabilities must equal Keras' model.predict to 1e-4
and its summary totals Keras' count_params(). Keras is fed what its user fed it (the scale
known by hand for each test model, never cnnlab's reading of the file). The figures and the
explainer show Keras' numbers: feature maps are keras.Model(inputs, layer.output), kernels
Keras' own, Grad-CAM computed through Keras on torch, the served probabilities
model.predict. Hostile files must be refused with one sentence and exit code 2, without
running anything in them.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import kerasmodels as km
from cnnlab.cli import main
from cnnlab.formats.open import open_model
from cnnlab.model.summary import summary


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{name: (keras model, {".keras": path, ".h5": path})} for the test models."""
    root = tmp_path_factory.mktemp("keras")
    seq = km.every_layer_sequential()
    res, _ = km.residual_functional()
    lecture = km.lecture_model()
    out = {}
    for name, m in (("every", seq), ("residual", res), ("lecture", lecture)):
        paths = {}
        for suffix in (".keras", ".h5"):
            p = root / f"{name}{suffix}"
            m.save(p)
            paths[suffix] = p
        out[name] = (m, paths)
    return out


def cnnlab_probs(f, images: np.ndarray) -> np.ndarray:
    """cnnlab's own pipeline: uint8 image -> Preprocessor -> model -> probabilities."""
    pre = f.preprocessor()
    x = torch.stack([pre.to_tensor(a) for a in images])
    return f.model.predict_proba(x).numpy()


# What the Keras user fed each test model (tests/kerasmodels.py), known by hand: "every" starts
# with Rescaling(1/127.5, offset=-1) and "residual" with a Normalization adapted on 0-255
# pixels, so both take raw pixels; the lecture model has neither: its ImageDataGenerator
# (rescale=1./255) fed it pixels / 255.
KERAS_INPUT_SCALE = {"every": 1.0, "residual": 1.0, "lecture": 1 / 255}


def keras_input(model, name: str, images: np.ndarray) -> np.ndarray:
    """``images`` as the Keras user fed ``model``: the hand-known scale, checked against the
    model's own first layers (a Rescaling/Normalization there, as its config says, or none)."""
    first = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"][0]
    if name == "every":
        assert type(first).__name__ == "Rescaling"
        cfg = first.get_config()
        assert (cfg["scale"], cfg["offset"]) == pytest.approx((1 / 127.5, -1.0))  # 0-255 -> [-1, 1]
    elif name == "residual":
        assert type(first).__name__ == "Normalization"
        assert float(np.mean(first.get_weights()[0])) > 50  # its mean: adapted on 0-255 pixels
    else:
        assert not {type(layer).__name__ for layer in model.layers} & {"Rescaling", "Normalization"}
    return images.astype("float32") * KERAS_INPUT_SCALE[name]


@pytest.mark.parametrize("name", ["every", "residual", "lecture"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_predictions_and_counts_equal_keras(saved, name, suffix):
    model, paths = saved[name]
    f = open_model(paths[suffix], quiet=True)
    images = km.pixels(model.input_shape[1:], n=6, seed=1)
    expected = model.predict(keras_input(model, name, images), verbose=0)
    got = cnnlab_probs(f, images)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected, axis=0).max() > 0.05  # the images give different answers: a real check

    s = summary(f.model)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert s.total_params == model.count_params()
    assert s.trainable_params == trainable
    assert s.non_trainable_params == model.count_params() - trainable


def test_preprocessing_and_class_names(saved, tmp_path, capsys):
    model, paths = saved["lecture"]
    f = open_model(paths[".h5"])
    err = capsys.readouterr().err
    assert "1/255" in err and "class_0, class_1" in err  # says what it used
    assert f.meta["classes"] == ["class_0", "class_1"]
    # The model has no Rescaling layer: --rescale is what the user's generator did.
    images = km.pixels((32, 32, 3), n=4, seed=3)
    g = open_model(paths[".h5"], rescale=1 / 128, classes="cat,dog", quiet=True)
    assert g.meta["classes"] == ["cat", "dog"]
    np.testing.assert_allclose(cnnlab_probs(g, images),
                               model.predict(images.astype("float32") / 128, verbose=0), atol=1e-4)
    # classes.json beside the file (a list, or Keras' class_indices mapping).
    copy = tmp_path / "model.h5"
    copy.write_bytes(paths[".h5"].read_bytes())
    (tmp_path / "classes.json").write_text(json.dumps({"dog": 1, "cat": 0}))
    assert open_model(copy, quiet=True).meta["classes"] == ["cat", "dog"]
    # A Rescaling layer inside the model: raw pixels go in and --rescale is ignored, with a note.
    every = open_model(saved["every"][1][".keras"], rescale=0.5)
    assert "--rescale is ignored" in capsys.readouterr().err
    assert every.meta["rescale"] == 1.0


def test_keras_file_in_every_command(saved, tmp_path, split_folder, capsys):
    """The lecture's model.h5 opens in summary, predict, evaluate --data, viz and explain."""
    model, paths = saved["lecture"]
    h5 = tmp_path / "model.h5"
    h5.write_bytes(paths[".h5"].read_bytes())
    test_dir = split_folder / "test"

    assert main(["summary", str(h5), "--format", "json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["total_params"] == model.count_params()

    out = tmp_path / "preds.json"
    assert main(["predict", str(h5), str(test_dir), "--classes", "hbar,vbar", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    files = sorted(test_dir.rglob("*.png"))
    assert len(rows) == len(files)
    from PIL import Image

    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])  # 32x32 already
    expected = model.predict(arrays.astype("float32") / 255, verbose=0)
    by_path = {r["path"]: r for r in rows}
    for p, e in zip(files, expected):
        r = by_path[str(p)]
        assert r["label"] == ["hbar", "vbar"][int(e.argmax())]
        assert abs(r["confidence"] - float(e.max())) < 1e-4

    assert main(["evaluate", str(h5), "--data", str(test_dir), "--format", "json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["classes"] == ["hbar", "vbar"]  # the data folder's names, Keras' order
    labels = np.array([0 if p.parent.name == "hbar" else 1 for p in files])
    assert m["accuracy"] == pytest.approx(float((expected.argmax(1) == labels).mean()))
    assert (tmp_path / "model-eval" / "data-test" / "metrics.json").is_file()
    assert m["report"] is None  # a model file has no run folder, so no report.html
    assert main(["evaluate", str(h5), "--data", str(test_dir)]) == 0  # the table names no report
    assert "report:" not in capsys.readouterr().out

    for cmd in (["viz", "gradcam", str(h5), str(files[0])], ["viz", "featuremaps", str(h5), str(files[0])],
                ["viz", "filters", str(h5)]):
        png = tmp_path / f"{cmd[1]}.png"
        assert main([*cmd, "--out", str(png)]) == 0, cmd
        assert png.stat().st_size > 1000
    # What the figures draw is Keras' own numbers for the same image (fed to Keras / 255).
    x = arrays[:1].astype("float32") / 255
    assert_keras_viz(model, h5, files[0], x)

    page = tmp_path / "page.html"
    assert main(["explain", str(h5), "--image", str(files[0]), "--out", str(page)]) == 0
    text = page.read_text()
    start = text.index('<script type="application/json" id="cnnlab-payload">') + len(
        '<script type="application/json" id="cnnlab-payload">')
    payload = json.loads(text[start:text.index("</script>", start)])
    assert_payload_is_keras(model, payload, x)
    assert main(["explain", str(h5)]) == 2
    assert "--image" in capsys.readouterr().err


def keras_outputs(model, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(Keras class name, output (C, H, W)) of every conv and pool layer of a Sequential model,
    each from keras.Model(inputs, layer.output).predict."""
    k = km.keras()
    return [(type(layer).__name__, k.Model(model.inputs, layer.output).predict(x, verbose=0)[0].transpose(2, 0, 1))
            for layer in model.layers if type(layer).__name__ in ("Conv2D", "MaxPooling2D")]


def keras_gradcam(model, x: np.ndarray, conv: int, index: int) -> np.ndarray:
    """Grad-CAM at Keras layer ``conv`` (its activation included) for class ``index``, by Keras on
    torch: alpha_k = mean of d logit / d A_k, cam = ReLU(sum_k alpha_k A_k); the logit is the last
    Dense's kernel and bias applied by hand (its softmax left out)."""
    k = km.keras()
    maps = k.Model(model.inputs, model.layers[conv].output)(torch.from_numpy(x)).detach().requires_grad_(True)
    y = maps
    for layer in model.layers[conv + 1:-1]:
        y = layer(y)
    last = model.layers[-1]
    logits = y @ last.kernel.value + last.bias.value
    (grads,) = torch.autograd.grad(logits[0, index], maps)
    alpha = grads.mean(dim=(1, 2), keepdim=True)  # NHWC: one weight per channel
    return torch.relu((alpha * maps).sum(-1))[0].detach().numpy()


def assert_keras_viz(model, h5: Path, image: Path, x: np.ndarray) -> None:
    from cnnlab.viz import feature_maps, filter_weights, gradcam

    maps = feature_maps(h5, image)  # every conv and pool layer, in order
    expected = keras_outputs(model, x)
    assert len(maps) == len(expected) == 4
    for (name, got), (kind, want) in zip(maps.items(), expected):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5, err_msg=f"{name} ({kind})")
    # the first conv's kernels, (out, in, kh, kw); Keras holds them as (kh, kw, in, out)
    layer, w = filter_weights(open_model(h5, quiet=True).model)
    np.testing.assert_array_equal(w, model.layers[0].get_weights()[0].transpose(3, 2, 0, 1))
    probs = model.predict(x, verbose=0)[0]
    cam = gradcam(h5, image)  # the predicted class, at the last conv (ReLU included)
    assert cam.class_index == int(probs.argmax()) and cam.layer_shape == (13, 13, 8)
    np.testing.assert_allclose(cam.probabilities, probs, atol=1e-5)
    want = keras_gradcam(model, x, 2, cam.class_index)
    assert want.max() > 0  # some positive evidence: a map to compare
    np.testing.assert_allclose(cam.coarse, want, rtol=1e-4, atol=1e-5 * want.max())


def payload_tensor(payload: dict, ref: dict) -> np.ndarray:
    """One array of the explainer's payload, decoded here: gzip + base64 of little-endian float32."""
    import base64
    import gzip

    raw = base64.b64decode(payload["blob"]["data"])
    flat = np.frombuffer(gzip.decompress(raw) if payload["blob"]["encoding"].startswith("gzip") else raw, "<f4")
    return flat[ref["o"]:ref["o"] + ref["n"]].reshape(ref["shape"])


def assert_payload_is_keras(model, payload: dict, x: np.ndarray, classes=None) -> None:
    """The explainer's numbers are Keras': probabilities, and every conv and pool layer's output."""
    probs = model.predict(x, verbose=0)[0]
    np.testing.assert_allclose(payload["probabilities"], probs, atol=1e-5)
    assert payload["prediction"]["index"] == int(probs.argmax())
    if classes:
        assert payload["prediction"]["class"] == classes[int(probs.argmax())]
    layers = [e for e in payload["layers"] if e["kind"] in ("conv", "pool")]
    expected = keras_outputs(model, x)
    assert len(layers) == len(expected) == 4
    for entry, (kind, want) in zip(layers, expected):
        np.testing.assert_allclose(payload_tensor(payload, entry["out"]), want, atol=1e-5, err_msg=entry["name"])


def test_explain_serve_app_takes_a_keras_file(saved, split_folder):
    from fastapi.testclient import TestClient

    from cnnlab.explain import Explainer
    from cnnlab.explain.server import create_app as make_app

    image = sorted((split_folder / "test").rglob("*.png"))[0]
    app = make_app(Explainer(open_model(saved["lecture"][1][".keras"], classes="hbar,vbar", quiet=True)),
                   image=str(image))
    client = TestClient(app)
    assert client.get("/").status_code == 200
    with open(image, "rb") as fh:
        r = client.post("/api/explain", files={"file": ("x.png", fh, "image/png")})
    assert r.status_code == 200, r.text
    # what it serves is what Keras computes for that image (the lecture model: pixels / 255)
    from PIL import Image

    x = np.asarray(Image.open(image).convert("RGB"))[None].astype("float32") / 255
    assert_payload_is_keras(saved["lecture"][0], r.json(), x, classes=["hbar", "vbar"])


# ---------------------------------------------------------------------------------------
# Hostile files: one sentence, exit 2, nothing executed.
# ---------------------------------------------------------------------------------------


def refused(capsys, path: Path, *fragments: str) -> str:
    code = main(["summary", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("cnnlab: error: ") and "\n" not in err and "Traceback" not in err, err
    for frag in fragments:
        assert frag in err, err
    return err


def test_lambda_layer_is_refused_and_not_run(tmp_path, capsys):
    k = km.keras()
    marker = tmp_path / "ran"

    def touch(x):
        marker.touch()
        return x * 2

    m = k.Sequential([k.Input((4, 4, 3)), k.layers.Lambda(touch, name="sneaky"), k.layers.Flatten(),
                      k.layers.Dense(2)])
    p = tmp_path / "lambda.keras"
    m.save(p)
    marker.unlink(missing_ok=True)
    refused(capsys, p, "'sneaky'", "Lambda")
    assert not marker.exists()


def test_custom_class_is_refused(saved, tmp_path, capsys):
    src = saved["lecture"][1][".keras"]
    p = tmp_path / "custom.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                cfg = json.loads(data)
                cfg["config"]["layers"][2].update(module="mylib", class_name="MyPool", registered_name="Custom>MyPool")
                data = json.dumps(cfg).encode()
            zout.writestr(info, data)
    refused(capsys, p, "Custom>MyPool")


def test_zip_bomb_is_refused_without_unpacking(tmp_path, capsys):
    p = tmp_path / "bomb.keras"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", "{}")
        with z.open("config.json", "w", force_zip64=True) as f:
            chunk = b" " * (1 << 20)
            for _ in range(80):  # 80 MiB of spaces: about 80 KB on disk
                f.write(chunk)
    assert p.stat().st_size < 1 << 20
    refused(capsys, p, "zip bomb")


def test_truncated_h5_is_refused(saved, tmp_path, capsys):
    data = saved["every"][1][".h5"].read_bytes()
    p = tmp_path / "truncated.h5"
    p.write_bytes(data[: len(data) // 2])
    refused(capsys, p, str(p))


def test_weights_that_do_not_fit_the_config(saved, tmp_path, capsys):
    p = tmp_path / "mismatch.h5"
    p.write_bytes(saved["lecture"][1][".h5"].read_bytes())
    with h5py.File(p, "r+") as f:
        conv = next(n for n in f["model_weights"] if n.startswith("conv2d"))
        g = f["model_weights"][conv]
        name = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]][0]
        del g[name]
        g.create_dataset(name, data=np.zeros((5, 5, 3, 8), "float32"))
    refused(capsys, p, f"layer {conv!r}", "(5, 5, 3, 8)", "(3, 3, 3, 8)")


def test_pickle_renamed_h5_is_refused_and_not_unpickled(tmp_path, capsys):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    p = tmp_path / "model.h5"
    p.write_bytes(pickle.dumps(Boom()))
    refused(capsys, p, "pickle")
    for cmd in (["predict", str(p), str(tmp_path)], ["evaluate", str(p), "--data", str(tmp_path)]):
        assert main(cmd) == 2
    assert not marker.exists()


def test_tf_keras2_h5_layout(saved, tmp_path):
    """The file the lecture's TF-Keras 2 ModelCheckpoint("model.h5") writes: Keras 2 config
    names (batch_input_shape, alpha), weight names 'conv2d/kernel:0', bytes attributes.
    Written here with h5py from the Keras 3 model's own weights; Keras 3 is the oracle."""
    model, _ = saved["lecture"]
    layers = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, 32, 32, 3],
                                                       "dtype": "float32", "name": "conv2d_input"}}]
    p = tmp_path / "tf2.h5"
    with h5py.File(p, "w") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        g = f.create_group("model_weights")
        names = []
        for layer in model.layers:
            cfg = {k: v for k, v in layer.get_config().items() if k not in ("dtype",)}
            cfg["dtype"] = "float32"
            layers.append({"class_name": type(layer).__name__, "config": cfg})
            lg = g.create_group(layer.name)
            wnames = []
            for v in layer.weights:
                wname = f"{layer.name}/{v.path.rsplit('/', 1)[-1]}:0"
                lg.create_dataset(wname, data=np.asarray(v.numpy()))
                wnames.append(wname.encode())
            lg.attrs["weight_names"] = wnames
            names.append(layer.name.encode())
        g.attrs["layer_names"] = names
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential",
                                              "config": {"name": "sequential", "layers": layers}}).encode()
    f = open_model(p, quiet=True)
    images = km.pixels((32, 32, 3), n=5, seed=4)
    np.testing.assert_allclose(cnnlab_probs(f, images), model.predict(images.astype("float32") / 255, verbose=0),
                               atol=1e-4)
    assert summary(f.model).total_params == model.count_params()


def test_train_from_a_keras_file(saved, tmp_path, split_folder, capsys):
    """train --model model.keras --init-weights model.keras: Keras' architecture and weights, fed
    as Keras fed them (x/255). With a learning rate of 1e-9 the run's best weights still give
    Keras' own predictions; on data with another number of classes the head starts fresh."""
    from cnnlab.run import Run

    model, paths = saved["lecture"]
    src = str(paths[".keras"])
    args = ["train", str(split_folder), "--model", src, "--init-weights", src, "--epochs", "1", "--lr", "1e-9",
            "--augment", "none", "--no-evaluate", "--out", str(tmp_path / "runs"), "--workers", "0"]
    assert main([*args, "--name", "same"]) == 0
    assert "initial weights from" in capsys.readouterr().err
    run_model, meta = Run(tmp_path / "runs" / "same").load_model("best")
    assert meta["normalization"]["std"] == [1.0, 1.0, 1.0]  # x/255, the lecture's rescale
    files = sorted((split_folder / "test").rglob("*.png"))
    from cnnlab.eval.predict import predict

    rows = {r["path"]: r for r in predict(tmp_path / "runs" / "same", [str(p) for p in files], top_k=2)}
    from PIL import Image

    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]).astype("float32") / 255
    expected = model.predict(arrays, verbose=0)
    for p, e in zip(files, expected):
        probs = {t["label"]: t["probability"] for t in rows[str(p)]["top_k"]}
        np.testing.assert_allclose([probs["hbar"], probs["vbar"]], e, atol=1e-4)

    from imagegen import make_split_folder

    three = make_split_folder(tmp_path / "three", ("hbar", "vbar", "cross"), {"train": 6, "val": 3, "test": 0})
    args[1] = str(three)
    assert main([*args, "--name", "three"]) == 0
    err = capsys.readouterr().err
    assert "kept fresh (other shape): dense" in err, err


def test_weights_found_by_keras_object_paths(saved, tmp_path):
    """Without the layer names in model.weights.h5 (older Keras 3 files), Keras' own numbering of
    the groups (conv2d, conv2d_1, ... over the model's layers) finds each layer's variables."""
    import io

    model, paths = saved["residual"]
    p = tmp_path / "unnamed.keras"
    with zipfile.ZipFile(paths[".keras"]) as zin, zipfile.ZipFile(p, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model.weights.h5":
                buf = io.BytesIO(data)
                with h5py.File(buf, "r+") as h5:
                    for key in h5["layers"]:
                        h5["layers"][key]["vars"].attrs.pop("name", None)
                data = buf.getvalue()
            zout.writestr(info, data)
    f = open_model(p, quiet=True)
    images = km.pixels((10, 10, 3), n=4, seed=6)
    np.testing.assert_allclose(cnnlab_probs(f, images), model.predict(images.astype("float32"), verbose=0),
                               atol=1e-4)


def test_augmentation_model_inside_is_dropped(tmp_path):
    """The tutorials' data_augmentation = Sequential([RandomFlip, ...]) as a first layer: it does
    nothing at inference, so cnnlab leaves it out and predicts what Keras predicts."""
    k = km.keras()
    L = k.layers
    augment = k.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.1)], name="data_augmentation")
    m = km.randomize(k.Sequential([k.Input((12, 12, 3)), augment, L.Rescaling(1 / 255), L.Conv2D(4, 3),
                                   L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")]), 7)
    p = tmp_path / "aug.keras"
    m.save(p)
    f = open_model(p, quiet=True)
    assert [type(layer).__name__ for _, layer in f.model.spec.layers][0] == "Rescaling"
    images = km.pixels((12, 12, 3), n=4, seed=8)
    np.testing.assert_allclose(cnnlab_probs(f, images), m.predict(images.astype("float32"), verbose=0), atol=1e-4)


def test_gradcam_of_a_keras_resnet_looks_at_its_last_block(saved):
    """The default Grad-CAM layer of a functional Keras model is its last residual block (the
    last Add, before the global pooling), as for cnnlab's own ResidualBlock."""
    from cnnlab.viz import _inputs
    from cnnlab.viz._model import gradcam_layer

    f = open_model(saved["residual"][1][".keras"], quiet=True)
    t = gradcam_layer(_inputs.load(f).model)
    assert t.type == "Residual" and t.output_shape == (5, 5, 6)


def test_weights_only_h5_is_refused(saved, tmp_path, capsys):
    model, _ = saved["lecture"]
    p = tmp_path / "lecture.weights.h5"
    model.save_weights(p)
    refused(capsys, p, "without a model config")
