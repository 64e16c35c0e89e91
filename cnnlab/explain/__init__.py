"""The explainer: see a trained cnnlab model work on an image, neuron by neuron.

``cnnlab explain RUN`` writes one self-contained HTML page (CNN Explainer for *your*
model); ``--serve`` serves it locally with uploads. The parts:

* payload.py   -- model + image -> every number the page shows (computed by torch);
* page.py      -- the HTML file: static/ with the payload inlined;
* server.py    -- the local FastAPI server (upload an image, pick an example);
* explainer.py -- :class:`Explainer`, a run's model ready to explain any image;
* static/      -- the page itself: plain HTML, CSS and JavaScript, no framework.
"""

from cnnlab.explain.explainer import Explainer

__all__ = ["Explainer"]
