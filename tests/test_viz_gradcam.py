"""Grad-CAM: finds the class evidence where it is, equals captum's LayerGradCam, draws a figure."""

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.model.build import build_model
from cnnlab.run import Run
from cnnlab.viz._model import gradcam_layer
from cnnlab.viz.gradcam import class_score, gradcam, plot_gradcam

SIZE, HALF, PATCH = 24, 12, 6
SPEC = {
    "input": [SIZE, SIZE, 3],
    "layers": [
        {"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Flatten": {}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}


def scene(rng, patch_quadrant: int | None, bar_quadrant: int) -> torch.Tensor:
    """Noise, a bright bar (in both classes: not evidence) and maybe a bright square patch.

    Quadrants: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
    """
    img = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.float32) / 255
    qy, qx = divmod(bar_quadrant, 2)
    y = qy * HALF + int(rng.integers(1, HALF - 2))
    img[y:y + 2, qx * HALF + 1:qx * HALF + HALF - 1] = rng.integers(150, 256, 3) / 255
    if patch_quadrant is not None:
        qy, qx = divmod(patch_quadrant, 2)
        y, x = (q * HALF + int(rng.integers(1, HALF - PATCH)) for q in (qy, qx))
        img[y:y + PATCH, x:x + PATCH] = rng.integers(150, 256, 3) / 255
    return torch.from_numpy(img).permute(2, 0, 1)


@pytest.fixture(scope="module")
def patch_model():
    """A CNN trained (a few seconds) to tell 'patch' (a square anywhere) from 'empty'."""
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and leaves the other core free
    try:
        torch.manual_seed(0)
        model = build_model(SPEC, classes=2, seed=0)
        items = []
        for i in range(96):
            q = int(rng.integers(0, 4))
            items.append((scene(rng, q if i % 2 else None, int(rng.integers(0, 4)) if i % 2 == 0 else 3 - q), i % 2))
        x = torch.stack([t for t, _ in items])
        y = torch.tensor([label for _, label in items])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(20):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 32):
                idx = perm[i:i + 32]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_gradcam_finds_the_patch_not_the_bright_distractor(patch_model):
    rng = np.random.default_rng(1)
    for q in range(4):
        x = scene(rng, q, bar_quadrant=3 - q)
        r = gradcam(patch_model, x, cls=1)
        assert r.probability > 0.9 and r.predicted == 1
        assert r.cam.shape == (SIZE, SIZE) and r.cam.max() == pytest.approx(1.0)
        qy, qx = divmod(q, 2)
        oy, ox = divmod(3 - q, 2)
        total = r.cam.sum()
        inside = r.cam[qy * HALF:(qy + 1) * HALF, qx * HALF:(qx + 1) * HALF].sum() / total
        at_bar = r.cam[oy * HALF:(oy + 1) * HALF, ox * HALF:(ox + 1) * HALF].sum() / total
        assert inside > 0.6 and inside > 3 * at_bar, (q, inside, at_bar)
        py, px = np.unravel_index(r.cam.argmax(), r.cam.shape)
        assert (py // HALF, px // HALF) == (qy, qx)


def test_gradcam_equals_captum(patch_model):
    import captum.attr as captum  # declared in [dev]: a broken install must fail, not skip
    x = scene(np.random.default_rng(2), 1, 2)
    for layer in ("conv2d_1", "max_pooling2d", "conv2d"):
        ours = gradcam(patch_model, x, cls=1, layer=layer)
        module = patch_model.layers[layer]
        ref = captum.LayerGradCam(patch_model, module).attribute(x[None], target=1, relu_attributions=True)
        assert ours.coarse.shape == tuple(ref.shape[2:])
        assert np.allclose(ours.coarse, ref[0, 0].detach().numpy(), atol=1e-5)


def test_default_layer_is_the_end_of_the_last_conv_block():
    spec = {"input": [16, 16, 1], "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3}},
        {"BatchNormalization": {}},
        {"Activation": {"activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Flatten": {}},
        {"Dense": {"units": 1, "activation": "sigmoid"}}]}
    model = build_model(spec, seed=0).eval()
    assert gradcam_layer(model).name == "activation"  # after BN and ReLU, before pooling
    assert gradcam_layer(build_model("resnet_small", classes=2)).name == "residual_block_2"
    # A single sigmoid output: class 1's score is the logit, class 0's its negative.
    logits = torch.tensor([[1.5]])
    assert class_score(logits, 1) == 1.5 and class_score(logits, 0) == -1.5
    x = torch.rand(1, 16, 16)
    p1 = float(model.predict_proba(x[None])[0, 1])
    r0, r1 = gradcam(model, x, cls=0), gradcam(model, x, cls=1)
    assert r1.probability == pytest.approx(p1) and r0.probability == pytest.approx(1 - p1)


def test_plot_gradcam_on_a_trained_run(trained_run, tmp_path):
    test = Run(trained_run).split()["test"]
    images = [test[0][0], test[-1][0]]  # one hbar, one vbar
    out = tmp_path / "cam.png"
    fig = plot_gradcam(trained_run, images, path=out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 1000
    titles = [ax.get_title() for ax in fig.axes]
    assert any("class 'hbar': p = " in t for t in titles) and any("class 'vbar': p = " in t for t in titles)
    assert "at layer conv2d_1 14×14×8, upsampled to 32×32" in fig._suptitle.get_text()
    fig = plot_gradcam(trained_run, images[0], cls="vbar")
    assert any("(predicted 'hbar'" in ax.get_title() for ax in fig.axes)


def test_gradcam_errors(trained_run):
    image = Run(trained_run).split()["test"][0][0]
    with pytest.raises(CnnlabError, match="unknown class 'cat'; the model's classes are hbar, vbar"):
        gradcam(trained_run, image, cls="cat")
    with pytest.raises(CnnlabError, match="'dense' .* no height and width"):
        gradcam(trained_run, image, layer="dense")
    with pytest.raises(CnnlabError, match="class index 5 is out of range"):
        gradcam(trained_run, image, cls=5)
    with pytest.raises(CnnlabError, match="opacity"):
        plot_gradcam(trained_run, image, alpha=2)


def test_the_image_goes_to_the_models_device():
    """A model trained on a GPU stays there (Trainer moves it): the figures feed it there.
    The meta device stands in for the GPU."""
    from cnnlab.viz._inputs import load

    model = build_model({"input": [8, 8, 3], "layers": [{"Conv2D": {"filters": 2, "kernel_size": 3}},
                                                       "Flatten", {"Dense": {"units": 2}}]}).to("meta")
    x, _ = load(model).image(torch.rand(3, 8, 8))
    assert x.device.type == "meta" and x.shape == (3, 8, 8)
