"""What a notebook shows: the HTML of summaries, metrics, predictions and history, and doctor().

The HTML is read back with the standard library's parser and compared with numbers
worked out by hand (Keras' parameter formulas) or with the dicts the functions return.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest


class Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts (header row included)."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.captions: list[str] = []
        self._cell: list[str] | None = None
        self._in_caption = False
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._in_caption = True
            self.captions.append("")
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_caption:
            self.captions[-1] += data


def test_summary_html_has_keras_parameter_counts():
    import cnnlab

    html = cnnlab.summary("seed", classes=10)._repr_html_()
    t = Tables(html)
    [rows] = t.tables
    assert rows[0][:4] == ["Layer (type)", "Output shape", "Param #", "Formula"]
    params = {r[0]: int(r[2].replace(",", "")) for r in rows[1:]}
    # Keras: Conv2D (k*k*c_in + 1)*filters, Dense (n_in + 1)*units; 64x64x3 -> 62x62x32 -> 31x31x32.
    assert list(params.values()) == [(3 * 3 * 3 + 1) * 32, 0, 0, (31 * 31 * 32 + 1) * 128, (128 + 1) * 10]
    assert "(None, 62, 62, 32)" in rows[1][1]
    assert "(3*3*3+1)*32" in rows[1][3].replace(" ", "")
    total = sum(params.values())
    assert f"Total params: {total:,}" in html
    assert t.scripts == 0


def test_metrics_predictions_history_html(trained_run, tmp_path):
    import shutil

    import cnnlab
    from cnnlab.display import History, Metrics, Predictions
    from cnnlab.run import Run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    m = cnnlab.evaluate(run, split="test", device="cpu")
    assert isinstance(m, Metrics) and isinstance(m, dict) and "accuracy" in m  # still metrics.json's dict
    t = Tables(m._repr_html_())
    overview = {r[0]: r[1] for r in t.tables[0]}
    assert float(overview["accuracy"]) == pytest.approx(m["accuracy"], abs=1e-4)
    assert int(overview["images"]) == m["n_images"]
    per_class = {r[0]: r for r in t.tables[1][1:]}
    for c, d in m["per_class"].items():
        assert float(per_class[c][3]) == pytest.approx(d["f1"], abs=1e-4)
        assert int(per_class[c][4]) == d["support"]
    cm_rows = t.tables[2][1:]
    assert [[int(v) for v in r[1:]] for r in cm_rows] == m["confusion_matrix"]
    assert m.plot_confusion_matrix().axes  # a matplotlib Figure

    images = [p for p, _ in Run(run).split()["test"]][:3]
    preds = cnnlab.predict(run, images, top_k=2, device="cpu")
    assert isinstance(preds, Predictions) and isinstance(preds, list)
    [rows] = Tables(preds._repr_html_()).tables
    assert rows[0] == ["file", "label", "confidence", "top 2", "error"]
    for row, p in zip(rows[1:], preds):
        assert row[0] == p["path"] and row[1] == p["label"]
        assert float(row[2]) == pytest.approx(p["confidence"], abs=1e-4)

    h = History(Run(run).history())
    [rows] = Tables(h._repr_html_()).tables
    assert len(rows) == 1 + len(h)
    col = rows[0].index("val_loss")
    assert float(rows[-1][col]) == pytest.approx(h[-1]["val_loss"], abs=1e-4)
    assert h.plot().axes
    # a small learning rate keeps its digits (it showed "0.0000")
    [rows] = Tables(History([{"epoch": 1, "lr": 1.52002e-05, "loss": 0.5}])._repr_html_()).tables
    assert rows[1][rows[0].index("lr")] == "1.52e-05" and rows[1][rows[0].index("loss")] == "0.5000"


def test_html_escapes_file_names():
    from cnnlab.display import Predictions

    html = Predictions([{"path": "<img src=x onerror=alert(1)>.png", "label": "a&b", "confidence": 0.5,
                         "top_k": [], "error": ""}])._repr_html_()
    assert "<img" not in html and "&lt;img" in html and "a&amp;b" in html


def test_doctor_returns_what_the_command_prints(capsys):
    import cnnlab
    from cnnlab.cli import main

    assert main(["doctor"]) == 0  # first: the command tunes malloc, and the allocator line says so
    printed = capsys.readouterr().out
    info = cnnlab.doctor()
    assert isinstance(info, dict) and info["torch_threads"] >= 1
    assert printed.strip() == str(info).strip()
    assert f"auto_device  {info['auto_device']}" in printed
    t = Tables(info._repr_html_())
    assert ["auto_device", info["auto_device"]] in t.tables[0]


def test_doctor_on_colab_without_gpu_says_how_to_switch_one_on(monkeypatch, capsys):
    import torch

    import cnnlab
    from cnnlab.cli import main

    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = cnnlab.doctor()
    assert info["colab"] is True and info["cuda_available"] is False
    assert "Runtime > Change runtime type" in str(info)
    assert "Runtime &gt; Change runtime type" in info._repr_html_()
    assert main(["doctor", "--format", "json"]) == 0
    assert "Runtime > Change runtime type" in capsys.readouterr().out
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    assert "Runtime > Change runtime type" not in str(cnnlab.doctor())


# A run whose best epoch is not its last: val_accuracy peaks at epoch 3 of 5 (val_loss too).
HISTORY = [  # epoch, loss, accuracy, val_loss, val_accuracy, lr
    (1, 0.9, 0.55, 0.8, 0.6, 0.01),
    (2, 0.7, 0.7, 0.6, 0.75, 0.01),
    (3, 0.5, 0.8, 0.45, 0.875, 0.005),
    (4, 0.4, 0.85, 0.5, 0.8, 0.0025),
    (5, 0.3, 0.9, 0.55, 0.7875, 0.00125),
]


def _run_with_known_history(root):
    """A run folder written here, as training leaves it: best weights of epoch 3, last of epoch 5."""
    import csv
    import json

    from cnnlab.io.weights import save_weights
    from cnnlab.model.build import build_model
    from tinymodels import TINY

    run = root / "known"
    (run / "weights").mkdir(parents=True)
    model = build_model(TINY, classes=2, seed=0)
    for which, epoch in (("best", 3), ("last", 5)):
        save_weights(run / "weights" / f"{which}.safetensors", model,
                     {"classes": ["hbar", "vbar"], "input": [32, 32, 3], "epoch": epoch,
                      "metric": {"val_accuracy": HISTORY[epoch - 1][4]}})
    (run / "classes.json").write_text(json.dumps(["hbar", "vbar"]))
    with (run / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"])
        w.writerows(HISTORY)
    return run


def test_run_shows_its_folder_best_epoch_and_history(tmp_path):
    from cnnlab.display import History
    from cnnlab.run import Run

    folder = _run_with_known_history(tmp_path)
    run = Run(folder)
    h = run.history()
    assert isinstance(h, History) and len(h) == 5
    assert h.best_epoch == 3 and run.best_epoch() == 3  # the best weights' epoch, not the last (5)
    assert h.column("val_loss") == [0.8, 0.6, 0.45, 0.5, 0.55]
    assert h.column("val_accuracy") == [0.6, 0.75, 0.875, 0.8, 0.7875]
    t = Tables(run._repr_html_())
    info = {r[0]: r[1] for r in t.tables[0]}
    assert info["folder"] == str(folder) and info["classes"] == "hbar, vbar"
    assert info["best weights"] == f"epoch 3: {folder / 'weights' / 'best.safetensors'}"
    header, *rows = t.tables[1]  # the history table, as written above
    assert header == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [[float(v) for v in r] for r in rows] == [list(map(float, r)) for r in HISTORY]
    fig = run.plot()
    best = [line for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith("best")]
    assert best and all(line.get_label() == "best (epoch 3)" for line in best)
    assert all(list(line.get_xdata()) == [3, 3] for line in best)


class FakeTrainer:
    """What ProgressBar reads of a Trainer, for 2 epochs of 4 batches."""

    is_main, epochs, steps_per_epoch = True, 2, 4

    def __init__(self):
        self.epoch, self.batch, self.running_images = 1, 0, 0
        self.logs: dict = {}

        class Opt:
            param_groups = [{"lr": 0.01}]

        self.optimizer = Opt()

    def running_metrics(self):
        return 0.5, 0.75


def test_progress_bar_is_a_live_html_bar_in_a_notebook(monkeypatch, capsys):
    import IPython.display

    from cnnlab.display import EpochBar
    from cnnlab.train.callbacks import ProgressBar

    shown: list = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=False: shown.append(obj) or Handle())
    bar, t = ProgressBar(notebook=True, refresh=0.0), FakeTrainer()
    for epoch in (1, 2):
        t.epoch, t.batch = epoch, 0
        bar.on_epoch_begin(t)
        for b in range(1, 5):
            t.batch, t.running_images = b, 32 * b
            bar.on_batch_end(t)
        t.logs = {"epoch": epoch, "loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7}
        bar.on_epoch_end(t)
    assert all(isinstance(o, EpochBar) for o in shown)
    assert [o.batch for o in shown if o.epoch == 1] == [0, 1, 2, 3, 4, 4]  # begin, 4 batches, the end
    last = shown[-1]
    assert last.done and repr(last).startswith("epoch 2/2  loss 0.5000  accuracy 0.7500  val_loss 0.6000")
    assert "width:100.0%" in last._repr_html_() and "width:50.0%" in shown[-4]._repr_html_()
    assert capsys.readouterr().out == ""  # nothing printed beside the bars

    # Outside a notebook, the same callback writes plain lines (a log).
    import io

    log = io.StringIO()
    plain = ProgressBar(file=log)
    assert not plain.notebook and not plain.interactive
    t.epoch, t.logs["epoch"] = 1, 1
    plain.on_epoch_begin(t)
    plain.on_batch_end(t)
    plain.on_epoch_end(t)
    assert log.getvalue().startswith("epoch 1/2  loss 0.5000  accuracy 0.7500")
