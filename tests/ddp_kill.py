"""`cnnlab` under torchrun, with one worker killed mid-run: for tests/test_train_multinode.py.

    python ddp_kill.py RANK STEP CHECKPOINT train DATA ...

On torchrun's first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0), the process of global
rank RANK stops after its training step STEP, waits until rank 0's checkpoint CHECKPOINT
(``RUN/resume.safetensors``) holds a step-checkpoint of an earlier step of the same epoch
(saved on rank 0's background thread), then kills itself with SIGKILL, as the OOM killer or a
lost machine would: no Python code runs after it. Later attempts run the command unchanged.
The hook lives here, not in cnnlab: nothing of it reaches a user's run.
"""
import os
import signal
import sys
import time

from cnnlab.cli import main
from cnnlab.io.checkpoint import read_state_header
from cnnlab.train.loop import Trainer

RANK, STEP, CHECKPOINT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
FIRST_ATTEMPT = os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"
_call = Trainer._call


def saved_step() -> int:
    """The step of the mid-epoch checkpoint on disk (-1: none yet, or an epoch's own)."""
    try:
        partial = read_state_header(CHECKPOINT).get("partial")
    except Exception:  # not written yet
        return -1
    return partial["step"] if partial else -1


def call(self, hook):
    _call(self, hook)
    if hook == "on_batch_end" and FIRST_ATTEMPT and self.rank == RANK and self.step == STEP:
        every = self.checkpoint_every
        wanted = STEP - STEP % every if STEP % every else STEP - every
        deadline = time.monotonic() + 60
        while saved_step() != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._call = call
sys.exit(main(sys.argv[4:]))
