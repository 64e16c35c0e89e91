"""What the browser tests share: Debian's chromium, found or the module skipped, and its flags.

    from browsertools import CHROMIUM_ARGS, browser, sync_api   # noqa: F401 (browser is a fixture)

Import it only from a browser test module: when chromium (a system package) is missing, the
importing module is skipped, saying why (.ci/run installs it; under CI=true the skip fails,
see conftest.py); playwright, a dev dependency, is imported plainly: missing, it fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)
# playwright is a dev dependency (pip install -e '.[dev]'): missing, the importing module fails.
from playwright import sync_api  # noqa: E402

# No GPU, no sandbox (root in CI), and nothing that phones home: any request is a test failure.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
