"""lr-find, the demo (its dataset and one quick end-to-end run), the Python API's config."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.run import Run
from cnnlab.train.config import make_config
from cnnlab.train.lr_finder import analyse
from imagegen import make_image_folder
from tinymodels import TINY


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models train fastest on one thread


def test_lr_find_analysis_on_a_known_curve():
    """Flat, then falling fastest at 1e-3, lowest at 1e-1, then exploding."""
    lrs = list(np.logspace(-7, 1, 120))
    x = np.log10(lrs)
    losses = list(2.0 - 1.5 / (1 + np.exp(-3 * (x + 3))) + np.where(x > -1, 10 * (x + 1) ** 2, 0))
    result = analyse(lrs, losses)
    assert 1e-2 < result.minimum < 1.0  # the smoothed minimum lags a little behind the true one
    assert 1e-4 < result.steep < 1e-2
    assert result.suggested == pytest.approx(result.minimum / 10)


def test_lr_find_suggests_nothing_when_the_loss_never_fell():
    """A flat, noisy curve (tinyvgg on the digits in 100 steps: 2.303 -> 2.299 at best) has a
    lowest point, but it is noise: a tenth of its rate (3e-8) was printed as the suggestion."""
    rng = np.random.default_rng(0)
    lrs = list(np.logspace(-7, 1, 100))
    result = analyse(lrs, list(2.30 + rng.normal(0, 0.01, 100)))
    assert result.suggested is None and result.minimum is None
    assert result.lowest_loss == pytest.approx(2.30, abs=0.02) and result.start_loss == pytest.approx(2.30, abs=0.02)
    falling = analyse(lrs, list(np.linspace(2.30, 2.0, 100) + rng.normal(0, 0.01, 100)))  # 13 % lower
    assert falling.suggested is not None


def test_lr_find_cli_writes_plot_csv_and_suggests(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", n=16)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    code = main(["lr-find", str(data), "--model", str(tmp_path / "tiny.yaml"), "--steps", "40", "-b", "4",
                 "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "runs")])
    assert code == 0
    out = capsys.readouterr().out
    assert "suggested learning rate" in out and "next: cnnlab train" in out
    assert "over 40 batches of 4 (" in out
    folder = tmp_path / "runs" / "lr-find-data-tiny"
    assert Image.open(folder / "lr_find.png").size[0] > 400
    rows = (folder / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed_loss" and 10 < len(rows) <= 41
    lrs = [float(r.split(",")[0]) for r in rows[1:]]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    # Without -b the line names the batch the sweep chose (it printed "batches of None"). A
    # sweep that never reaches a rate that teaches anything suggests nothing, and says why.
    assert main(["lr-find", str(data), "--model", str(tmp_path / "tiny.yaml"), "--steps", "12", "--workers", "0",
                 "--end-lr", "1e-5", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "runs2")]) == 2
    out, err = capsys.readouterr()
    fell = re.search(r"the loss (never fell|fell only (\d+\.\d)%) in 12 steps", err)
    assert fell and (fell.group(2) is None or float(fell.group(2)) < 5), err  # under MIN_FALL, said as it is
    assert "no rate to suggest" in err and "Traceback" not in err
    assert "try a larger --end-lr or --steps 300" in err  # --end-lr 1e-5: a wider sweep can help
    assert "suggested learning rate" not in out
    chosen = re.search(r"over 12 batches of (\S+) \(", out)
    assert chosen and chosen.group(1) == "32", chosen  # README: batch 32 under 2,000 images


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """The demo's --out folder, shared: the digits are written once for both tests."""
    return tmp_path_factory.mktemp("demo")


def test_digits_are_written_as_an_image_folder(demo_out):
    from sklearn.datasets import load_digits

    from cnnlab.train.demo import write_digits

    root = write_digits(demo_out / "datasets" / "digits")
    train, test = list(root.glob("train/*/*.png")), list(root.glob("test/*/*.png"))
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert sorted(p.name for p in (root / "train").iterdir()) == [str(d) for d in range(10)]
    digits = load_digits()
    sample = sorted(root.glob("test/3/*.png"))[0]
    index = int(sample.stem.split("_")[1])
    assert digits.target[index] == 3
    im = Image.open(sample)
    assert im.mode == "L" and im.size == (32, 32)
    small = np.asarray(im.resize((8, 8), Image.Resampling.BOX), dtype=float)
    assert np.corrcoef(small.ravel(), digits.images[index].ravel())[0, 1] > 0.9
    before = sample.stat().st_mtime_ns
    write_digits(root)  # already there: nothing rewritten
    assert sample.stat().st_mtime_ns == before


def test_demo_runs_end_to_end(demo_out, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--out", str(demo_out), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    run = demo_out / "demo"
    assert f"Everything is in {run}" in out and "cnnlab evaluate" in out
    assert yaml.safe_load((run / "config.yaml").read_text())["channels"] == 1  # grayscale found
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.3  # 10 classes; two epochs are far better than chance
    assert (run / "report.html").is_file() and (run / "curves.png").is_file()
    assert len(Run(run).history()) == 2


def test_python_api_config_errors_name_the_option(tmp_path):
    with pytest.raises(CnnlabError, match="unknown training option 'learning_rate'"):
        make_config(data="x", learning_rate=0.1)
    with pytest.raises(CnnlabError, match="option: batch_size: input should be greater than or equal to 1"):
        make_config(data="x", batch_size=0)
    with pytest.raises(CnnlabError, match="img_size: .*at least 8"):
        make_config(data="x", img_size="4x4")
    cfg = make_config(data="x", img_size="48x64", optimizer="sgd")
    assert cfg.size == (48, 64) and cfg.lr is None
    with pytest.raises(CnnlabError, match="no such file or folder"):  # cnnlab.train("DATA", ...) is the API
        cnnlab.train(tmp_path / "missing", verbose=False)
    assert math.isclose(make_config(lr=0.5).lr, 0.5)
