"""Under CI=true a skipped browser test fails the run (tests/conftest.py); elsewhere it stays a skip.

Runs pytest in a subprocess on two small test files next to a copy of the real conftest:
one browser module that skips as a whole (no chromium) and one browser test that skips inside.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE_SKIP = '''
import pytest
pytestmark = pytest.mark.browser
pytest.skip("browser tests need chromium", allow_module_level=True)

def test_page():
    pass
'''

TEST_SKIP = '''
import pytest

@pytest.mark.browser
def test_click():
    pytest.skip("chromium did not start")

def test_plain_skip_is_allowed():
    pytest.skip("not a browser test")

def test_passes():
    pass
'''


def run_pytest(folder: Path, ci: str | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(folder)],
                       cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture
def suite(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_page_browser.py").write_text(MODULE_SKIP)
    (tmp_path / "test_clicks.py").write_text(TEST_SKIP)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    browser: needs chromium\n")
    return tmp_path


def test_outside_ci_browser_skips_are_skips_with_their_reason(suite):
    code, out = run_pytest(suite, None)
    assert code == 0, out
    assert "browser tests need chromium" in out and "chromium did not start" in out
    assert re.search(r"1 passed, 3 skipped", out), out


def test_under_ci_a_skipped_browser_test_fails_the_run(suite):
    code, out = run_pytest(suite, "true")
    assert code == 1, out  # pytest's "tests failed" (2 would be an interrupted run)
    assert ("CI=true: browser test module test_page_browser.py may not skip here "
            "(browser tests need chromium)") in out
    assert "CI=true: browser test test_clicks.py::test_click may not skip here (chromium did not start)" in out
    # the closing line CI runners read: the plain (non-browser) skip is still a skip
    last = out.strip().splitlines()[-1]
    assert re.search(r"2 failed, 1 passed, 1 skipped", last), last
