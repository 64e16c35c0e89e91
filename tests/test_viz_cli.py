"""`cnnlab viz ...`: every command writes a valid PNG; user errors are one sentence and exit 2."""

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.run import Run
from imagegen import draw, make_image_folder


def assert_png(path, min_side=200):
    with Image.open(path) as im:
        im.load()  # decodes every byte: a truncated file fails here
        assert im.format == "PNG" and min(im.size) >= min_side


def test_viz_kernels_writes_png(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(draw("cross", (48, 64), np.random.default_rng(0))).save(photo)
    kernel_file = tmp_path / "mine.yaml"
    kernel_file.write_text("diagonal: [[1, 0], [0, -1]]\n")
    out = tmp_path / "k.png"
    assert main(["viz", "kernels", str(photo), "--kernels", f"sobel-y,{kernel_file}",
                 "--stride", "2", "--padding", "1", "--out", str(out)]) == 0
    assert_png(out)
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    sample = tmp_path / "sample.png"
    assert main(["viz", "kernels", "--kernels", "gaussian", "--size", "64", "--out", str(sample)]) == 0
    assert_png(sample)  # without IMAGE: scikit-learn's sample photo


def test_viz_kernels_list(capsys):
    assert main(["viz", "kernels", "--list"]) == 0
    text = capsys.readouterr().out
    assert "sobel-x    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]" in text and "× 1/16" in text


def test_viz_model_commands_write_png(trained_run, tmp_path):
    image = Run(trained_run).split()["test"][0][0]
    for args, name in [
        (["filters", str(trained_run)], "filters.png"),
        (["filters", str(trained_run), "--layer", "conv2d_1", "--weights", "last", "--max-filters", "4"], "f1.png"),
        (["featuremaps", str(trained_run), image, "--layers", "conv2d,max_pooling2d_1", "--max-channels", "4"],
         "maps.png"),
        (["gradcam", str(trained_run / "weights" / "best.safetensors"), image, "--class", "vbar"], "cam.png"),
    ]:
        out = tmp_path / name
        assert main(["viz", *args, "--out", str(out)]) == 0, args
        assert_png(out)


def test_viz_augment_reuses_the_data_preview(tmp_path):
    data = make_image_folder(tmp_path / "data", n=4)
    out = tmp_path / "aug.png"
    assert main(["viz", "augment", str(data), "--samples", "2", "--copies", "2", "--size", "32",
                 "--out", str(out)]) == 0
    assert_png(out)


@pytest.mark.parametrize("args, message", [
    (["kernels", "--kernels", "sobelx"], "unknown kernel 'sobelx' (did you mean 'sobel-x'?)"),
    (["kernels", "--padding", "full"], "padding must be valid, same or a number"),
    (["kernels", "missing.jpg"], "missing.jpg"),
    (["filters", "RUN", "--layer", "conv9"], "no convolution layer named 'conv9'"),
    (["featuremaps", "RUN", "IMAGE", "--layers", "dense"], "layer 'dense' (Dense) outputs (2,)"),
    (["gradcam", "RUN", "IMAGE", "--class", "cat"], "unknown class 'cat'"),
    (["filters", "RUN", "--out", "x.doc"], "cannot save a figure as .doc"),
    (["filters", "no/such/run"], "no/such/run: no such run directory"),
    (["kernels", "--dpi", "5"], "--dpi must be between 20 and 1200"),
    (["kernels", "--stride", "0"], "stride must be a positive integer"),
    (["featuremaps", "RUN", "nope.png"], "no such image file"),
])
def test_viz_errors_are_one_sentence(trained_run, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    image = Run(trained_run).split()["test"][0][0]
    args = [str(trained_run) if a == "RUN" else image if a == "IMAGE" else a for a in args]
    assert main(["viz", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_every_viz_help_has_examples(capsys):
    for what in ("kernels", "filters", "featuremaps", "gradcam", "augment"):
        with pytest.raises(SystemExit):
            main(["viz", what, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and f"cnnlab viz {what}" in text
    with pytest.raises(SystemExit):
        main(["viz", "kernels", "--help"])
    assert "cross-correlation" in capsys.readouterr().out
