"""`cnnlab explain --serve`: a real uvicorn server on 127.0.0.1 (a free port), real uploads.

Bad uploads (too large, not an image, a decompression bomb, a corrupt file) get a clear
4xx and the server keeps answering; parallel requests each get their own image's numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx  # fastapi, uvicorn and httpx are declared in [dev]: missing, they fail
import numpy as np
import pytest
from PIL import Image

from imagegen import draw


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


def raw_request(url: str, head: bytes, body_parts, timeout: float = 30) -> tuple[str, str]:
    """Send a request by hand (no ``Expect: 100-continue``), the whole body, then read the reply.

    Returns (status line, body). A server that closes before the body is sent resets the
    connection, which raises ConnectionResetError/BrokenPipeError here (the failure the
    413 drain prevents).
    """
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        for part in body_parts:
            s.sendall(part)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply:
                header, _, rest = reply.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    header, _, rest = reply.partition(b"\r\n\r\n")
    return header.split(b"\r\n")[0].decode("latin-1"), rest.decode("utf-8", "replace")


LIMIT = int(0.5 * 1024 * 1024)  # the module's server: max_upload_mb=0.5


# 8 MB: more than the kernel's socket buffers hold, so a server that stops reading and closes
# resets the connection before the client has sent it all. "Connection: close" is what
# urllib and HTTP/1.0 clients send: the server closes after its answer, unread bytes or not.
BIG = 8 * 1024 * 1024


def test_an_over_limit_body_sent_whole_gets_the_413_message_not_a_reset(server):
    """Content-Length 8 MB (over the 0.5 MB limit), sent in full without Expect: 100-continue."""
    body = b"\x89PNG" + b"\0" * BIG
    head = (b"POST /api/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    status, text = raw_request(server, head, [body[i:i + 65536] for i in range(0, len(body), 65536)])
    assert status.startswith("HTTP/1.1 413"), status
    assert "larger than 0.5 MB" in text


def test_an_over_limit_chunked_body_gets_the_413_message(server):
    """No Content-Length: the limit is counted while the chunks stream in."""
    chunk = b"\0" * 65536
    parts = [b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(BIG // len(chunk))] + [b"0\r\n\r\n"]
    head = (b"POST /api/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    status, text = raw_request(server, head, parts)
    assert status.startswith("HTTP/1.1 413"), status
    assert "larger than 0.5 MB" in text
    assert httpx.get(server + "/api/health", timeout=30).status_code == 200


def test_a_chunked_body_under_the_limit_is_read_whole(server, explainer):
    image = draw("vbar", (32, 32), np.random.default_rng(8))
    data = png_bytes(image)
    parts = [b"%x\r\n" % len(data[i:i + 100]) + data[i:i + 100] + b"\r\n" for i in range(0, len(data), 100)]
    head = (b"POST /api/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, text = raw_request(server, head, parts + [b"0\r\n\r\n"])
    assert status.startswith("HTTP/1.1 200"), status
    assert json.loads(text)["logits"] == explainer.payload_for_array(image, "upload")["logits"]


def test_a_file_over_the_limit_inside_a_body_under_it_is_refused_after_parsing(server):
    """The body passes the streamed check (limit + form overhead), the file itself does not."""
    data = b"\x89PNG" + b"\0" * (LIMIT + 1000)
    request = httpx.Request("POST", f"{server}/api/explain", files={"file": ("big.png", data, "image/png")})
    from cnnlab.explain.server import MULTIPART_OVERHEAD

    assert LIMIT < len(request.read()) < LIMIT + MULTIPART_OVERHEAD  # so only the post-parse check can refuse it
    r = upload(server, data, "big.png")
    assert r.status_code == 413 and "larger than 0.5 MB" in r.json()["detail"]


def test_an_absurd_declared_size_is_refused_from_its_header(server):
    """A declared 500 MB body is refused at once, without waiting for it (nor draining it)."""
    head = (b"POST /api/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 500000000\r\n\r\n")
    status, text = raw_request(server, head, [b"\0" * 1000], timeout=10)
    assert status.startswith("HTTP/1.1 413"), status
    assert "larger than 0.5 MB" in text


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


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket in LISTEN state on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                    raw = bytes.fromhex(address)
                    # the kernel writes each 32-bit word in host (little-endian) order
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                    found.add(socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, raw))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the listening sockets from Linux's /proc")
def test_binds_to_loopback_by_default(trained_run):
    """`cnnlab explain RUN --serve --port 0` (no --host) listens on 127.0.0.1 only, and says where."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "explain", str(trained_run), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"at http://([\d.]+):(\d+)/", line)
        assert match, line + proc.stdout.read() if proc.poll() is not None else line
        host, port = match[1], int(match[2])
        assert host == "127.0.0.1" and port > 0
        deadline = time.monotonic() + 30
        while True:  # uvicorn listens once the app has started
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not answer"
            time.sleep(0.1)
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
