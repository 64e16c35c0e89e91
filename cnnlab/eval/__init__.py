"""Evaluation, prediction and the run report.

* :func:`evaluate_run` -- metrics, confusion matrices and top losses of a run's model on a
  labelled split, written to ``RUN/eval/<split>/``;
* :func:`predict` -- labels and top-k probabilities for new image files;
* :func:`write_report` -- ``RUN/report.html``, one self-contained page about the run;
* :func:`compute_metrics` -- the metrics of any (labels, probabilities) pair.
"""

from cnnlab.eval.evaluate import evaluate_run
from cnnlab.eval.metrics import compute_metrics
from cnnlab.eval.predict import predict
from cnnlab.eval.report import write_report

__all__ = ["evaluate_run", "predict", "write_report", "compute_metrics"]
