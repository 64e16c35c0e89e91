"""Files from strangers run no code; the explainer server stays local and serves no files.

- A "model" that is really a pickle (``torch.save`` renamed ``.safetensors``, or a raw
  pickle) whose loading would create a marker file is given to every command that loads
  weights -- as ``--weights FILE``, as a run's own ``weights/best.safetensors``, and as a
  run's ``resume.safetensors``. Each refuses it in one sentence (exit 2) and the marker
  never appears.
- YAML from strangers (``--model``, ``--config``, kernel files, a run's ``config.yaml``)
  is read with a safe loader: a ``!!python/object/apply`` tag is an error, never a call.
- A poisoned decode-cache entry (an object array that unpickles to code) is ignored.
- ``cnnlab explain --serve`` binds to 127.0.0.1 unless told otherwise, and no URL, however
  encoded, reads a file from the disk: traversal attempts get a 4xx and no file contents;
  an upload's file name cannot place a file anywhere.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main


class Payload:
    """Unpickling this creates ``target``: proof that code ran."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def pickle_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The two shapes a malicious model file takes, both named .safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    zipped, raw = folder / "torch_save.safetensors", folder / "raw_pickle.safetensors"
    torch.save({"state_dict": Payload(marker)}, zipped)
    raw.write_bytes(pickle.dumps(Payload(marker)))
    return {"torch.save": zipped, "pickle": raw}


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def one_sentence(err: str) -> bool:
    return err.startswith("cnnlab: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def evil(tmp_path, trained_run):
    """Marker path, pickle files, an image, a copied run, and runs whose own files are pickles."""
    marker = tmp_path / "code-ran"
    files = pickle_files(tmp_path / "downloads", marker)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    poisoned = tmp_path / "poisoned-run"
    shutil.copytree(trained_run, poisoned)
    shutil.copy(files["torch.save"], poisoned / "weights" / "best.safetensors")
    image = next((trained_run.parent.parent / "data" / "test" / "hbar").glob("*.png"))
    return {"marker": marker, "files": files, "run": run, "poisoned": poisoned, "image": image,
            "out": tmp_path / "out"}


COMMANDS = {
    "summary": lambda e, w: ["summary", w],
    "evaluate": lambda e, w: ["evaluate", e["run"], "--weights", w, "--no-report", "--device", "cpu"],
    "predict": lambda e, w: ["predict", e["run"], e["image"], "--weights", w, "--device", "cpu"],
    "explain": lambda e, w: ["explain", e["run"], "--weights", w, "--out", e["out"] / "x.html"],
    "viz filters": lambda e, w: ["viz", "filters", w, "--out", e["out"] / "f.png"],
    "viz featuremaps": lambda e, w: ["viz", "featuremaps", e["run"], e["image"], "--weights", w,
                                     "--out", e["out"] / "m.png"],
    "viz gradcam": lambda e, w: ["viz", "gradcam", e["run"], e["image"], "--weights", w,
                                 "--out", e["out"] / "g.png"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_pickle_weights_are_refused_by_every_command(evil, capsys, command):
    for kind, path in evil["files"].items():
        code, err = run_cli(capsys, *COMMANDS[command](evil, path))
        assert code == 2 and one_sentence(err), (kind, err)
        assert str(path) in err and "refused" in err and "can run code" in err
    assert not evil["marker"].exists()
    assert not evil["out"].exists()  # nothing was written either


def test_pickle_weights_are_refused_by_the_api(tmp_path):
    import cnnlab
    from cnnlab.errors import WeightsError

    marker = tmp_path / "code-ran"
    files = pickle_files(tmp_path, marker)
    with pytest.raises(WeightsError, match="never loads"):
        cnnlab.load_weights(files["torch.save"])
    with pytest.raises(WeightsError, match="pickle"):
        cnnlab.load_weights(files["pickle"])
    assert not marker.exists()


def test_a_run_whose_own_weights_are_a_pickle(evil, capsys):
    for argv in (["evaluate", evil["poisoned"], "--no-report", "--device", "cpu"],
                 ["predict", evil["poisoned"], evil["image"], "--device", "cpu"],
                 ["explain", evil["poisoned"], "--out", evil["out"] / "x.html"],
                 ["viz", "filters", evil["poisoned"], "--out", evil["out"] / "f.png"]):
        code, err = run_cli(capsys, *argv)
        assert code == 2 and one_sentence(err) and "best.safetensors: refused" in err, err
    assert not evil["marker"].exists()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A run folder written by `cnnlab train` (1 epoch), with its resume.safetensors."""
    from imagegen import make_image_folder

    tmp = tmp_path_factory.mktemp("cli_run")
    data = make_image_folder(tmp / "data", n=8)
    assert main(["train", str(data), "--model", "tinyvgg", "--img-size", "32", "--epochs", "1",
                 "--workers", "0", "--cache-dir", str(tmp / "cache"), "--out", str(tmp / "runs"),
                 "--name", "r", "--no-evaluate", "-q"]) == 0
    return tmp / "runs" / "r"


def test_a_resume_checkpoint_that_is_a_pickle(tmp_path, capsys, cli_run):
    marker = tmp_path / "code-ran"
    run = tmp_path / "r"
    shutil.copytree(cli_run, run)
    torch.save({"model": Payload(marker)}, run / "resume.safetensors")
    history = (run / "history.csv").read_bytes()
    code, err = run_cli(capsys, "train", "--resume", run)
    assert code == 2 and one_sentence(err) and "resume.safetensors" in err, err
    assert not marker.exists()
    assert (run / "history.csv").read_bytes() == history  # the run is left as it was


PYTHON_TAG = "!!python/object/apply:pathlib.Path.touch [{marker}]"


def test_yaml_from_strangers_is_parsed_safely(tmp_path, capsys, image_folder, cli_run):
    marker = tmp_path / "code-ran"
    tag = PYTHON_TAG.format(marker=json.dumps(str(marker)))
    model = tmp_path / "model.yaml"
    model.write_text(f"input: [32, 32, 3]\nlayers:\n  - {tag}\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"epochs: {tag}\n")
    kernels = tmp_path / "kernels.yaml"
    kernels.write_text(f"edge: {tag}\n")
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    (run / "config.yaml").write_text(f"data: {tag}\n")
    cases = [
        ["summary", model],
        ["train", image_folder, "--model", model, "--out", tmp_path / "runs"],
        ["train", image_folder, "--config", config, "--out", tmp_path / "runs"],
        ["viz", "kernels", "--kernels", kernels, "--out", tmp_path / "k.png"],
        ["train", "--resume", run],
    ]
    for argv in cases:
        code, err = run_cli(capsys, *argv)
        assert code == 2 and one_sentence(err) and "YAML" in err, (argv, err)
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_a_poisoned_decode_cache_entry_is_not_unpickled(tmp_path, image_folder, monkeypatch):
    """Someone replaces a real cache entry with an object array that unpickles to code."""
    from cnnlab.data import cache
    from cnnlab.data.decode import load_image
    from cnnlab.data.loader import make_loader

    marker = tmp_path / "code-ran"
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    items = [(p, 0) for p in paths]
    make_loader(items, size=16, cache_dir=tmp_path / "cache", progress=False)  # the real entry
    (entry,) = (tmp_path / "cache").glob("*/*.npy")  # where the loader keeps these files
    evil = np.empty(len(paths), dtype=object)
    evil[:] = [Payload(marker)] * len(paths)
    np.save(entry, evil, allow_pickle=True)  # same name, beside its (untouched) .json

    opened = []
    real_load = np.load

    def spy(file, *args, **kwargs):
        opened.append(Path(file))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(cache.np, "load", spy)
    loader = make_loader(items, size=16, cache_dir=tmp_path / "cache", progress=False)
    assert entry in opened  # the loader did look at the planted file...
    assert not marker.exists()  # ...and did not unpickle it
    rebuilt = real_load(entry, mmap_mode="r")  # it was decoded again in its place
    assert rebuilt.dtype == np.uint8 and rebuilt.shape == (len(paths), 3, 16, 16)
    x, _ = loader.batch(np.arange(2))
    assert torch.equal(x[0], torch.from_numpy(load_image(paths[0], (16, 16))).permute(2, 0, 1))


# ---------------------------------------------------------------------------- the server


def test_serve_binds_to_loopback_unless_told(trained_run, monkeypatch, capsys):
    """The socket handed to uvicorn: 127.0.0.1 by default; 0.0.0.0 only when asked, with a warning.

    (tests/test_explain_server.py starts the real server and reads its listening address.)"""
    import uvicorn

    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: bound.append(sockets[0].getsockname()))
    assert main(["explain", str(trained_run), "--serve", "--port", "0"]) == 0
    assert bound[0][0] == "127.0.0.1" and bound[0][1] > 0
    assert "warning" not in capsys.readouterr().out
    assert main(["explain", str(trained_run), "--serve", "--port", "0", "--host", "0.0.0.0"]) == 0
    assert bound[1][0] == "0.0.0.0"
    assert "other machines on the network can reach this page" in capsys.readouterr().out


@contextlib.contextmanager
def served(app):
    """A real uvicorn server on 127.0.0.1 and a free port; yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side clean-up of '..')."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_no_url_reads_a_file_from_disk(trained_run, tmp_path):
    from cnnlab.explain import Explainer
    from cnnlab.explain.server import create_app

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-0451")
    static = Path(__import__("cnnlab.explain", fromlist=["x"]).__file__).parent / "static"
    up = "../" * len(static.resolve().parts)
    rel = up + str(secret.resolve()).lstrip("/")
    targets = [
        f"/static/{rel}", f"/{rel}", "/static/../../../../../../etc/passwd",
        "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/%2e%2e%2f%2e%2e%2f" + rel.replace("/", "%2f"), "/static/..%5c..%5c..%5cetc%5cpasswd",
        "/api/example/..%2f..%2f..%2fetc%2fpasswd", f"/api/example/{rel}", "//etc/passwd",
        "/static/%252e%252e/%252e%252e/etc/passwd", "/static/app.js/../../../" + rel,
        f"/api/explain/../../{rel}", "/static/....//....//etc/passwd",
    ]
    with served(create_app(Explainer(trained_run))) as port:
        for target in targets:
            status, body = raw_get(port, target)
            assert 400 <= status < 500, (target, status)
            assert b"TOP-SECRET" not in body and b"root:" not in body, target
        assert raw_get(port, "/api/health")[0] == 200  # still serving


def test_an_upload_name_cannot_place_a_file(trained_run, tmp_path):
    import httpx
    from cnnlab.explain import Explainer
    from cnnlab.explain.server import create_app

    image = next((trained_run.parent.parent / "data" / "test" / "vbar").glob("*.png")).read_bytes()
    target = tmp_path / "placed.png"
    name = "../" * 12 + str(target).lstrip("/")
    with served(create_app(Explainer(trained_run))) as port:
        r = httpx.post(f"http://127.0.0.1:{port}/api/explain", files={"file": (name, image, "image/png")},
                       timeout=60)
    assert r.status_code == 200 and r.json()["image"]["name"] == "placed.png"  # no folders kept
    assert not target.exists()
