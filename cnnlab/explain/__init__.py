"""The explainer: see a trained cnnlab model work on an image, neuron by neuron.

``cnnlab explain RUN`` writes one self-contained HTML page (CNN Explainer for *your*
model); ``--serve`` serves it locally with uploads. The parts:

* payload.py   -- model + image -> every number the page shows (computed by torch);
* page.py      -- the HTML file: static/ with the payload inlined;
* server.py    -- the local FastAPI server (upload an image, pick an example);
* explainer.py -- :class:`Explainer`, a run's model ready to explain any image;
* kernellab.py -- the kernel lab: its page (:func:`write_lab`, :func:`show_lab`) and the
  ipywidgets lab for notebooks (:func:`kernel_lab`); its arithmetic is cnnlab.viz.kernellab_math;
* static/      -- the page itself: plain HTML, CSS and JavaScript, no framework.
"""

from cnnlab.explain.explainer import Explainer
from cnnlab.explain.kernellab import KernelLab, kernel_lab, show_lab, write_lab

__all__ = ["Explainer", "KernelLab", "kernel_lab", "show_lab", "write_lab"]
