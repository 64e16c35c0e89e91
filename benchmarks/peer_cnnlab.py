"""cnnlab's contender in the shared peers harness, for cnnlab's current history.csv names.

The harness's own ``../shared/peers/peer_cnnlab.py`` reads the old ``val_acc`` column; since
issue 14 cnnlab writes Keras' ``val_accuracy``. This runs that same file unchanged, with
``csv.DictReader`` rows that also answer to the old name, so the measurement is the
harness's, not a copy of it. Use it in place of the shared file:

    ../shared/peers/run_all.sh ... --add cnnlab="$PWD/.venv/bin/python $PWD/benchmarks/peer_cnnlab.py"

``PEERS_DIR`` points at the harness when it is not ``../shared/peers`` beside the checkout.
"""
import csv
import os
import runpy
import sys
from pathlib import Path

PEERS = Path(os.environ.get("PEERS_DIR", Path(__file__).resolve().parents[2] / "shared" / "peers"))


class _Rows(csv.DictReader):
    def __next__(self):
        row = super().__next__()
        if "val_accuracy" in row:
            row.setdefault("val_acc", row["val_accuracy"])
        return row


csv.DictReader = _Rows
sys.path.insert(0, str(PEERS))
sys.argv[0] = str(PEERS / "peer_cnnlab.py")
runpy.run_path(sys.argv[0], run_name="__main__")
