"""`cnnlab` under torchrun, with a training speed that differs between the processes.

For tests/test_train_ddp.py: the main process (RANK 0) "measures" a fast machine, the other
a slow one, so their own choice of image size under --time-limit would differ. The real
command line follows (``python ddp_rank_rates.py train DATA ...``).
"""
import os
import sys

from cnnlab.cli import main
from cnnlab.train import setup

FAST = int(os.environ.get("RANK", "0")) == 0


def rate(model, device, precision, channels_last, size, channels, batch=32):
    return 1e6 if FAST else 1.0  # images/s: every size fits on rank 0, only the smallest on rank 1


setup._step_rate = rate
sys.exit(main(sys.argv[1:]))
