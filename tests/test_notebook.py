"""examples/*.ipynb run top to bottom in a fresh kernel (nbclient), as a student would run them.

Each notebook runs in a fresh folder, a clone in miniature (the repository's .gitignore, the
notebook tracked in examples/): any cell that raises fails the test, and so does a file it
leaves that git would list as untracked (its data and runs go under the ignored runs/). The
lecture notebook's outputs are then read: the rich displays are there (HTML tables, inline
figures, the widget), and the number its kernel lab prints is torch's conv2d of the sample
photo (tests/kernelref.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

# Declared in pyproject's dev extra: missing, the test fails (pip install -e '.[dev]'), never skips.
import ipykernel  # noqa: E402, F401  (the kernel nbclient starts)
import nbclient  # noqa: E402
import nbformat  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))

pytestmark = pytest.mark.slow


def execute(path: Path, cwd: Path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs(cell) -> list[dict]:
    return cell.get("outputs", [])


def text_of(cell) -> str:
    parts = []
    for o in outputs(cell):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def has(cell, mime: str) -> bool:
    return any(mime in o.get("data", {}) for o in outputs(cell))


def cell_with(nb, code: str):
    found = [c for c in nb.cells if c.cell_type == "code" and code in c.source]
    assert found, f"no cell with {code!r}"
    return found[0]


def test_there_is_a_notebook():
    assert any(p.name == "cnn_lecture.ipynb" for p in NOTEBOOKS)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    # A clone in miniature: the repository's .gitignore and examples/ with the notebook, tracked.
    work = tmp_path / "examples"
    work.mkdir()
    shutil.copy(path, work / path.name)
    shutil.copy(EXAMPLES.parent / ".gitignore", tmp_path / ".gitignore")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".gitignore", f"examples/{path.name}")
    nb = execute(work / path.name, work)
    errors = [o for c in nb.cells for o in outputs(c) if o.get("output_type") == "error"]
    assert not errors, errors
    # What it wrote (data, runs) is ignored by git: running it leaves the clone's status clean.
    untracked = [line for line in git(tmp_path, "status", "--porcelain", "--untracked-files=all").splitlines()
                 if not line.startswith("A ")]
    assert untracked == [], untracked
    if path.name != "cnn_lecture.ipynb":
        return

    assert "cnnlab 0." in text_of(nb.cells[2])  # the install cell: already installed, nothing done
    assert has(cell_with(nb, "cnnlab.doctor()"), "text/html")
    assert has(cell_with(nb, "viz.plot_kernels("), "image/png")
    assert has(cell_with(nb, "lab = viz.kernel_lab("), "application/vnd.jupyter.widget-view+json")
    summary = cell_with(nb, "cnnlab.summary(model)")
    assert has(summary, "text/html")
    html = "".join(o["data"]["text/html"] for o in outputs(summary) if "text/html" in o.get("data", {}))
    # Keras' counts, by hand: conv 3*3*1*16 (no bias), BN 4*16, conv 3*3*16*32, BN 4*32, Dense (4*4*32+1)*10
    expected = [144, 64, 4608, 128, 5130]
    assert f"Total params: {sum(expected):,}" in html
    training = text_of(cell_with(nb, "run = cnnlab.train("))
    assert "epoch 1/4" in training and "best" in training
    assert has(cell_with(nb, "run = cnnlab.train("), "text/html")  # the live bar, one per epoch
    assert has(cell_with(nb, "best val_accuracy"), "text/html")  # the run: folder, best epoch, history table
    assert "best val_accuracy: 0." in text_of(cell_with(nb, "best val_accuracy"))
    assert has(cell_with(nb, "run.plot()"), "image/png")
    assert has(cell_with(nb, "metrics = cnnlab.evaluate("), "text/html")
    assert has(cell_with(nb, "metrics.plot_confusion_matrix()"), "image/png")
    assert has(cell_with(nb, "cnnlab.predict(run"), "text/html")
    assert has(cell_with(nb, "viz.plot_gradcam("), "image/png")
    assert has(cell_with(nb, "explainer.show("), "text/html")
    assert list(work.glob("runs/*/explainer.html"))

    # The kernel lab's printed pixel is torch's conv2d of the sample photo.
    from kernelref import SOBEL_X, reference

    from cnnlab.viz.kernellab_math import lab_image

    printed = text_of(cell_with(nb, "lab.explain(0, 40, 60)"))
    value, total = (float(v) for v in re.findall(r"-?\d+\.\d+", printed))  # "pixel (40, 60) = v", "summed: t"
    ref = float(reference(lab_image(), SOBEL_X, 1, "valid", "grey")[0, 40, 60])
    assert value == pytest.approx(ref, abs=1e-4) and total == pytest.approx(ref, abs=1e-4)
