"""The explainer page: static/explainer.html with its CSS, its scripts and the data inlined.

One self-contained HTML file: no network, no CDN, nothing to install. The same page is
what ``cnnlab explain --serve`` sends, with ``mode: "serve"`` in its config so that it
offers uploads and the run's example images (fetched from the local server).

The kernel lab's page (static/kernellab.html, also the explainer's "Kernel lab" tab) is
filled here too, with :func:`lab_config`; the lab's Python is kernellab.py, which imports
this module (never the other way round).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.io.fs import atomic_write_text
from cnnlab.viz.kernellab_math import LAB_SIDE, lab_image, presets

STATIC = Path(__file__).parent / "static"
SCRIPTS = ("util.js", "overview.js", "details.js", "playground.js", "kernellab.js", "app.js")  # in load order
STYLES = ("explainer.css", "kernellab.css")
LAB_SCRIPTS = ("util.js", "kernellab.js")  # the standalone kernel lab page


def _json_for_script(data: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no '</' can close the tag."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def build_page(payload: dict[str, Any], *, mode: str = "file",
               examples: list[dict[str, Any]] | None = None, run_name: str = "",
               max_upload_mb: float = 10) -> str:
    """The complete HTML text of the page for ``payload`` (see payload.explain)."""
    if mode not in ("file", "serve"):
        raise ValueError(f"mode must be 'file' or 'serve', got {mode!r}")
    config = {"mode": mode, "run": run_name, "examples": examples or [],
              "maxUploadMB": max_upload_mb, "kernelLab": lab_config()}
    title = f"cnnlab explain: {payload['model']['name']}" + (f" ({run_name})" if run_name else "")
    return _fill("explainer.html", STYLES, SCRIPTS, {
        "{{TITLE}}": _escape(title),
        "{{PAYLOAD}}": _json_for_script(payload),
        "{{CONFIG}}": _json_for_script(config),
    })


def lab_config(image=None, size: int = LAB_SIDE) -> dict[str, Any]:
    """What the kernel lab's script needs: the presets and the photo (gzip'd RGB bytes, base64)."""
    rgb = lab_image(image, size)
    h, w = rgb.shape[:2]
    name = "sample photo" if image is None else (Path(image).name if isinstance(image, (str, Path)) else "image")
    data = base64.b64encode(gzip.compress(np.ascontiguousarray(rgb).tobytes(), 9, mtime=0)).decode("ascii")
    return {"presets": presets(), "sample": {"w": w, "h": h, "data": data, "name": name}, "maxSide": size}


def build_kernel_lab_page(config: dict[str, Any]) -> str:
    """The standalone kernel lab (``cnnlab viz kernels --interactive``); config: :func:`lab_config`."""
    return _fill("kernellab.html", STYLES, LAB_SCRIPTS, {
        "{{TITLE}}": "cnnlab kernel lab",
        "{{CONFIG}}": _json_for_script(config),
    })


def _fill(template: str, styles: tuple[str, ...], scripts: tuple[str, ...], values: dict[str, str]) -> str:
    """A template of static/ with its CSS, its scripts and ``values`` put in place."""
    html = (STATIC / template).read_text(encoding="utf-8")
    css = "\n".join((STATIC / name).read_text(encoding="utf-8") for name in styles)
    js = "\n".join(f"// ---- {name} ----\n" + (STATIC / name).read_text(encoding="utf-8")
                   for name in scripts)
    replacements = {**values, "/*{{CSS}}*/": css, "//{{JS}}": js.replace("</script", "<\\/script")}
    for key in replacements:
        if html.count(key) != 1:
            raise RuntimeError(f"{template} must hold the placeholder {key} exactly once")
    # One pass, so that text inserted (a file name, say) is never taken for a placeholder.
    pattern = "|".join(re.escape(k) for k in replacements)
    return re.sub(pattern, lambda m: replacements[m.group(0)], html)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_page(path: str | Path, html: str) -> Path:
    """Write the page atomically (a half-written page is never left behind)."""
    atomic_write_text(path, html)
    return Path(path)
