"""`cnnlab` under torchrun, with one process that stops answering: for tests/test_train_multinode.py.

    python ddp_slow_rank.py RANK SECONDS train DATA ...

The process of global rank RANK sleeps SECONDS before it reads its data, as a process stuck
on a hung filesystem would; the others wait for it in their next collective, and must give up
after CNNLAB_DIST_TIMEOUT seconds with one sentence instead of hanging.
"""
import os
import sys
import time

from cnnlab.cli import main
from cnnlab.train import setup

RANK, SECONDS = int(sys.argv[1]), float(sys.argv[2])
_gather_facts = setup.gather_facts


def gather_facts(cfg, index=None):
    if int(os.environ.get("RANK", "0")) == RANK:
        time.sleep(SECONDS)
    return _gather_facts(cfg, index)


setup.gather_facts = gather_facts
sys.exit(main(sys.argv[3:]))
