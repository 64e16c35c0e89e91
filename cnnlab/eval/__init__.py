"""Evaluation, prediction and the run report.

* :func:`evaluate_run` -- metrics, confusion matrices and top losses of a run's model on a
  labelled split, written to ``RUN/eval/<split>/``;
* :func:`predict` -- labels and top-k probabilities for new image files;
* :func:`write_report` -- ``RUN/report.html``, one self-contained page about the run;
* :func:`compute_metrics` -- the metrics of any (labels, probabilities) pair.

evaluate_run, write_report and compute_metrics are imported when first used, so that
`cnnlab predict` never loads matplotlib or scikit-learn. (predict is imported at once:
its name is also its module's, and the function must win.)
"""

import importlib

from cnnlab.eval.predict import predict

_LAZY = {
    "evaluate_run": "cnnlab.eval.evaluate",
    "write_report": "cnnlab.eval.report",
    "compute_metrics": "cnnlab.eval.metrics",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnlab.eval' has no attribute {name!r}")


__all__ = ["predict", *_LAZY]
