"""`Explainer`: a run's model, ready to explain any image, as a page or as data.

    from cnnlab.explain import Explainer
    ex = Explainer("runs/cats_dogs")
    ex.export("explainer.html", image="my_cat.jpg")   # one self-contained HTML file
    ex.show("my_cat.jpg")                               # the same page inside a notebook cell
    data = ex.payload_for_file("my_cat.jpg")            # the numbers the page shows

The server (server.py) keeps one Explainer and calls ``payload_for_file`` per upload.
"""

from __future__ import annotations

import html
import threading
import warnings
from pathlib import Path
from typing import Any

from cnnlab.explain.examples import default_image, example_files, with_thumbnails
from cnnlab.explain.page import build_page, write_page
from cnnlab.explain.payload import explain
from cnnlab.run import open_any


class Explainer:
    """One run's model loaded once; thread-safe (one image is computed at a time)."""

    def __init__(self, run_path, weights: str = "best"):
        # a run folder or a model file (.safetensors, .keras, .h5) on its own (no images of its own)
        self.run = open_any(run_path, weights)
        self.model, self.meta, self.preprocessor = self.run.model, self.run.meta, self.run.preprocessor()
        self._lock = threading.Lock()  # the forward hooks are per model, not per call

    def payload_for_array(self, image, name: str = "image") -> dict[str, Any]:
        """Payload for an (H, W, C) uint8 array already at the model's size."""
        with self._lock:
            return explain(self.model, self.meta, image, name=name)

    def payload_for_file(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Payload for an image file, preprocessed exactly as in training; raises BadImage."""
        image = self.preprocessor.load_uint8(path)
        return self.payload_for_array(image, name or Path(path).name)

    def examples(self, per_class: int = 3) -> list[dict[str, Any]]:
        """The run's own images the served page offers (with thumbnails); paths stay here."""
        return example_files(self.run, per_class)

    def page(self, payload: dict[str, Any], mode: str = "file",
             examples: list[dict[str, Any]] | None = None, max_upload_mb: float = 10) -> str:
        thumbs = with_thumbnails(examples, self.preprocessor) if examples else []
        return build_page(payload, mode=mode, examples=thumbs, run_name=self.run.name,
                          max_upload_mb=max_upload_mb)

    def export(self, out: str | Path, image: str | Path | None = None) -> Path:
        """Write the self-contained page for ``image`` (default: the run's first test image)."""
        path = Path(image) if image is not None else default_image(self.run)
        return write_page(out, self.page(self.payload_for_file(path)))

    def show(self, image: str | Path | None = None, height: int = 820):
        """The page inside a notebook cell (Jupyter, Colab): an iframe holding the whole page.

        Returns an ``IPython.display.HTML``; as a cell's last line it shows the explainer.
        """
        return html_frame(self.page(self.payload_for_file(
            Path(image) if image is not None else default_image(self.run))), height)


def html_frame(page: str, height: int = 820):
    """A self-contained page as an IPython HTML object: an <iframe srcdoc> (no file, no server)."""
    from IPython.display import HTML

    with warnings.catch_warnings():  # IPython suggests IFrame, which needs a URL; srcdoc needs none
        warnings.simplefilter("ignore", UserWarning)
        return HTML(f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
                    'border:1px solid #ddd;border-radius:6px"></iframe>')
