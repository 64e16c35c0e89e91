"""Shared fixtures. Image helpers live in tests/imagegen.py (importable from any test)."""

from __future__ import annotations

import os

import pytest

# Keep the suite predictable on a 2-core machine and free of display needs.
os.environ.setdefault("MPLBACKEND", "Agg")
# Runs compared bit for bit keep their threads even if the machine gets busy during the suite
# (cnnlab.train.cpu_share; tests/test_train_cpu_share.py turns it on where it is tested).
os.environ.setdefault("CNNLAB_SHARE_CPU", "0")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models train fastest that way, and reproducibly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_folder(tmp_path):
    """A DATA/<class>/*.png folder with two learnable classes, 12 images each, 32x32."""
    from imagegen import make_image_folder

    return make_image_folder(tmp_path / "data")


@pytest.fixture
def split_folder(tmp_path):
    """A DATA/{train,val,test}/<class>/*.png folder with two learnable classes."""
    from imagegen import make_split_folder

    return make_split_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real run directory (runs/small) with a model trained on hbar/vbar images.

    Session-scoped: treat it as read-only; copy it (shutil.copytree) before writing into it.
    """
    from runfactory import make_trained_run

    return make_trained_run(tmp_path_factory.mktemp("trained"))


# ---------------------------------------------------------------- CI: browser tests may not skip
# Under CI=true (what .ci/run and most CI services set), a browser test that skips -- chromium
# missing, or a skip inside the test -- is reported as a failure, so that a broken explainer
# cannot land green. Outside CI a skip stays a skip and says why. Python packages of the dev
# extra (playwright, nbclient, ipywidgets...) are imported plainly, never importorskip: a
# missing one fails everywhere.

def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _skip_reason(report) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def _ci_failure(report, what: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"CI=true: {what} may not skip here ({_skip_reason(report)})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped and item.get_closest_marker("browser") is not None:
        _ci_failure(report, f"browser test {item.nodeid}")


class _SkippedInCI(pytest.Item):
    """Stands in for a browser test module that skipped as a whole: it fails, saying why.

    (Failing the module's collection instead would stop pytest before any test ran.)"""

    def __init__(self, *, reason: str, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self):
        pytest.fail(self.reason, pytrace=False)

    def reportinfo(self):
        return self.path, 0, self.name


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    # A browser test module that skips as a whole (pytest.skip(allow_module_level=True)).
    if _in_ci() and report.skipped and isinstance(collector, pytest.Module) and "browser" in collector.path.name:
        reason = _skip_reason(report)
        report.outcome, report.longrepr = "passed", None
        report.result = [_SkippedInCI.from_parent(
            collector, name="skipped_in_ci",
            reason=f"CI=true: browser test module {collector.path.name} may not skip here ({reason})")]
