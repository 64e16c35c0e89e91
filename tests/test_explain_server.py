"""`cnnlab explain --serve`: a real uvicorn server on 127.0.0.1 (a free port), real uploads.

Bad uploads (too large, not an image, a decompression bomb, a corrupt file) get a clear
4xx and the server keeps answering; parallel requests each get their own image's numbers.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from imagegen import draw  # noqa: E402


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims a huge image (900 megapixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@contextlib.contextmanager
def running_server(app):
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=64))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explain server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def explainer(trained_run):
    from cnnlab.explain import Explainer

    return Explainer(trained_run)


@pytest.fixture(scope="module")
def server(explainer):
    from cnnlab.explain.server import create_app

    with running_server(create_app(explainer, max_upload_mb=0.5)) as url:
        yield url


def upload(url: str, data: bytes, name: str = "x.png", timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/api/explain", files={"file": (name, data, "image/png")}, timeout=timeout)


def test_page_health_and_examples(server, explainer):
    page = httpx.get(server + "/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '"mode":"serve"' in page.text and "cnnlab-payload" in page.text
    assert httpx.get(server + "/api/health").json() == {"status": "ok"}
    examples = explainer.examples()
    assert {e["label"] for e in examples} == {"hbar", "vbar"}
    r = httpx.get(f"{server}/api/example/{len(examples) - 1}", timeout=30)
    assert r.status_code == 200 and r.json()["image"]["name"].endswith(".png")
    assert httpx.get(f"{server}/api/example/999").status_code == 404


def test_upload_gives_the_models_numbers(server, explainer):
    image = draw("vbar", (32, 32), np.random.default_rng(5))
    r = upload(server, png_bytes(image), "../../secret/vbar.png")
    assert r.status_code == 200
    body = r.json()
    assert body["image"]["name"] == "vbar.png"  # no folders echoed back
    expected = explainer.payload_for_array(image, "vbar.png")
    assert body["logits"] == expected["logits"] and body["blob"] == expected["blob"]
    raw = httpx.post(f"{server}/api/explain", content=png_bytes(image), headers={"content-type": "image/png"},
                     timeout=30)
    assert raw.status_code == 200 and raw.json()["logits"] == expected["logits"]


@pytest.mark.parametrize("data, status, words", [
    (b"hello, this is text", 415, "not an image"),
    (b"", 415, "empty"),
    (bomb_png(), 413, "decompression bomb"),
    (png_bytes(draw("hbar"))[:120], 400, "truncated"),
    (b"\x89PNG" + b"\0" * 600_000, 413, "larger than 0.5 MB"),
])
def test_bad_uploads_get_a_clear_4xx_and_the_server_stays_up(server, data, status, words):
    r = upload(server, data, "bad.png")
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert upload(server, png_bytes(draw("hbar"))).status_code == 200


def test_oversized_body_is_refused_from_its_header(server):
    """A declared 50 MB body is refused before it is sent in full."""
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(b"POST /api/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 50000000\r\n\r\n" + b"\0" * 1000)
        reply = s.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413")


def test_missing_form_field(server):
    r = httpx.post(f"{server}/api/explain", files={"picture": ("a.png", png_bytes(draw("hbar")), "image/png")})
    assert r.status_code == 400 and "form field 'file'" in r.json()["detail"]


def test_concurrent_uploads_each_get_their_own_answer(server, explainer):
    rng = np.random.default_rng(11)
    images = [draw(shape, (32, 32), rng) for shape in ("hbar", "vbar") * 4]
    expected = [explainer.payload_for_array(im)["logits"] for im in images]

    def one(i: int) -> list[float]:
        r = upload(server, png_bytes(images[i]), f"{i}.png", timeout=60)
        assert r.status_code == 200
        return r.json()["logits"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(one, range(len(images))))
    assert got == expected
    assert httpx.get(server + "/api/health").status_code == 200


def test_binds_to_loopback_by_default():
    import inspect

    from cnnlab.explain import server as srv

    assert inspect.signature(srv.serve).parameters["host"].default == "127.0.0.1"
    from cnnlab.cli import build_parser

    args = build_parser().parse_args(["explain", "runs/x", "--serve"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_upload_mb == 10
