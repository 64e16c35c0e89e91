"""How long examples/*.ipynb take to run top to bottom in a fresh kernel (what CI does).

    flock /tmp/cnnlab-bench.lock .venv/bin/python benchmarks/bench_notebook.py

Prints, per notebook, the wall-clock seconds of the whole run (kernel start included) and
of its slowest cells, with the machine's load average before and after. Each notebook runs
in a fresh temporary folder, as tests/test_notebook.py does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbclient
import nbformat

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def seconds(cell) -> float:
    t = cell.metadata.get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def main() -> None:
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cores: {os.cpu_count()}")
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "examples"
            work.mkdir()
            shutil.copy(path, work / path.name)
            nb = nbformat.read(work / path.name, as_version=4)
            t0 = time.perf_counter()
            nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": str(work)}}).execute()
            total = time.perf_counter() - t0
        cells = sorted(((seconds(c), c.source.splitlines()[-1][:60]) for c in nb.cells if c.cell_type == "code"),
                       reverse=True)
        print(f"{path.name}: {total:.1f} s in all, {len(cells)} code cells")
        for s, line in cells[:5]:
            print(f"  {s:6.1f} s  {line}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
