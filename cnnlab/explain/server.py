"""`cnnlab explain --serve`: the explainer page on a local server, with uploads.

    GET  /                  the page (the same file `cnnlab explain` writes, in serve mode)
    POST /api/explain       an image (multipart field "file", or the raw bytes) -> payload JSON
    GET  /api/example/{id}  one of the run's own test images -> payload JSON
    GET  /api/health        {"status": "ok"}

Safety, because a browser tab (or anything else on the machine) can send anything:
the server binds to 127.0.0.1 unless told otherwise; a body larger than the upload limit
is refused with 413 and never kept: up to ``DRAIN_BYTES`` more are read and thrown away
first, so that a client which sends its whole body before reading the answer (no
``Expect: 100-continue``: curl with a small file, urllib, HTTP/1.0) gets the 413 message
instead of a connection reset, while a body declared larger than that is refused at once
from its header; a file that is not an image gets 415, a
decompression bomb 413 and a corrupt image 400, each with one sentence saying why (the
same checks as training, cnnlab.data.decode); nothing a request sends is kept. The model
computes one image at a time (a lock), requests wait their turn in uvicorn's thread
pool, and uvicorn refuses connections beyond ``MAX_CONNECTIONS`` with 503.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from cnnlab.data.decode import BadImage
from cnnlab.errors import CnnlabError
from cnnlab.explain.examples import default_image

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10
MAX_CONNECTIONS = 64
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around the file
# An over-limit body is read and discarded up to this much beyond the limit before the 413
# goes out: closing a socket with unread bytes in it makes the kernel send a reset, which
# the client sees instead of the answer. (Like nginx's lingering close, but bounded in bytes.)
DRAIN_BYTES = 32 * 1024 * 1024


def status_for(error: BadImage) -> int:
    """HTTP status for an image that cannot be used: 413 bomb, 415 not an image, 400 corrupt."""
    reason = error.reason
    if reason.startswith("decompression bomb") or reason.startswith("too large"):
        return 413
    if reason.startswith("not an image") or reason.startswith("empty file"):
        return 415
    return 400


def _safe_name(name: str | None) -> str:
    """The file name the page shows: no folders, no control characters, not too long."""
    base = Path(str(name or "upload")).name
    base = "".join(ch for ch in base if ch.isprintable()) or "upload"
    return base[:120]


def create_app(explainer, *, image: str | Path | None = None,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, examples_per_class: int | None = None) -> FastAPI:
    """The FastAPI application for one run's Explainer (see explainer.py)."""
    limit = int(max_upload_mb * 1024 * 1024)
    if examples_per_class is None:  # about 20 thumbnails in all: 3 per class, fewer with many classes
        examples_per_class = max(1, min(3, 20 // max(1, len(explainer.run.classes))))
    examples = explainer.examples(examples_per_class)
    first = Path(image) if image is not None else default_image(explainer.run)
    page = explainer.page(explainer.payload_for_file(first), mode="serve", examples=examples,
                          max_upload_mb=max_upload_mb)

    app = FastAPI(title="cnnlab explain", docs_url=None, redoc_url=None, openapi_url=None)

    def too_large(close: bool = False) -> HTTPException:
        # close: the rest of the body is not read, so the connection cannot carry another request
        return HTTPException(413, f"the upload is larger than {max_upload_mb:g} MB; send a smaller image",
                             headers={"Connection": "close"} if close else None)

    async def read_body(request: Request) -> bytes:
        """The request body; past the limit, the rest is read and thrown away (up to DRAIN_BYTES), then 413."""
        most = limit + MULTIPART_OVERHEAD
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > most + DRAIN_BYTES:
            raise too_large(close=True)
        body, seen = bytearray(), 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > most + DRAIN_BYTES:
                raise too_large(close=True)
            if seen <= most:
                body += chunk
            elif body:
                body = bytearray()  # over the limit: nothing more is kept
        if seen > most:
            raise too_large()
        return bytes(body)

    async def uploaded_file(request: Request) -> tuple[bytes, str]:
        """(bytes, file name) from a multipart form field "file" or from a raw body."""
        body = await read_body(request)
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            if not body:
                raise HTTPException(400, "the request has no image: send one as the form field 'file'")
            return body, "upload"

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=10,
                                                              max_part_size=limit)
        except Exception as e:  # malformed multipart: the parser says why
            raise HTTPException(400, f"the upload is not a valid multipart form ({e})") from None
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(400, "the request has no image: send one as the form field 'file'")
            data = await upload.read()
            if len(data) > limit:
                raise too_large()
            return data, upload.filename or "upload"
        finally:
            await form.close()

    def explain_bytes(data: bytes, name: str) -> dict[str, Any]:
        fd, tmp = tempfile.mkstemp(prefix="cnnlab-explain-", suffix=Path(name).suffix[:10])
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return explainer.payload_for_file(tmp, name=name)
        finally:
            os.unlink(tmp)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/explain")
    async def explain_upload(request: Request):
        data, name = await uploaded_file(request)
        name = _safe_name(name)
        try:
            return await run_in_threadpool(explain_bytes, data, name)
        except BadImage as e:
            raise HTTPException(status_for(e), f"{name}: {e.reason}") from None

    @app.get("/api/example/{example_id}")
    async def explain_example(example_id: int):
        if not 0 <= example_id < len(examples):
            raise HTTPException(404, f"no example {example_id} (this run offers {len(examples)})")
        ex = examples[example_id]
        try:
            return await run_in_threadpool(explainer.payload_for_file, ex["path"])
        except BadImage as e:
            raise HTTPException(status_for(e), f"{Path(ex['path']).name}: {e.reason}") from None

    return app


def listening_socket(host: str, port: int):
    """A socket bound to host:port (port 0: a free one), for uvicorn to listen on.

    Binding here, before the model is loaded into a server, turns a taken port or an
    unknown host into one sentence (CnnlabError), and tells the real port for --port 0.
    """
    if not 0 <= port <= 65535:
        raise CnnlabError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise CnnlabError(f"cannot serve on {host} port {port}: {e.strerror or e}; "
                          "pick another --host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise CnnlabError(f"cannot serve on {host} port {port}: {e.strerror or e}; "
                          "pick another --port (or --host)") from None
    return sock


def serve(explainer, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          image: str | Path | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
    """Run the server until Ctrl+C (``port=0``: a free port, printed with the address)."""
    import uvicorn

    sock = listening_socket(host, port)
    try:
        app = create_app(explainer, image=image, max_upload_mb=max_upload_mb)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(f"cnnlab explain: serving {explainer.run.name} at http://{shown}:{bound_port}/  (Ctrl+C to stop)",
              flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"cnnlab explain: warning: bound to {host}, so other machines on the network can "
                  "reach this page and upload images", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=MAX_CONNECTIONS))
        server.run(sockets=[sock])
    finally:
        sock.close()
