"""examples/train_minimal.py keeps working: it trains on real (tiny) images and saves usable weights."""

import importlib.util
from pathlib import Path

import torch

from imagegen import make_image_folder

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_minimal.py"


def test_train_minimal_learns_and_its_weights_predict(tmp_path, one_thread, capsys):
    spec = importlib.util.spec_from_file_location("train_minimal", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = make_image_folder(tmp_path / "data", n=32)
    out = tmp_path / "minimal.safetensors"
    accuracy = example.main([str(data), "--epochs", "8", "--lr", "3e-3", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[-1].startswith("epoch 8/8") and f"val_accuracy {accuracy:.4f}" in lines[-1]
    assert accuracy >= 0.9  # horizontal vs vertical bars: a chance model gets 0.5

    # The saved file on its own (cnnlab.load_weights, the run's preprocessing) gives the same
    # predictions: an independent path from files to labels.
    import cnnlab
    from cnnlab.data.datasets import discover
    from cnnlab.data.preprocess import Preprocessor

    model, meta = cnnlab.load_weights(out)
    assert meta["classes"] == ["hbar", "vbar"]
    val = discover(data, val_split=0.25, seed=0).splits["val"]
    x, ok, errors = Preprocessor.from_meta(meta).load_batch([p for p, _ in val])
    assert not errors
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert (pred == torch.tensor([y for _, y in val])).float().mean().item() == accuracy
