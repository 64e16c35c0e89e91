"""What one step checkpoint (``--checkpoint-every N``) costs: on the training thread, and on the saver's.

    .venv/bin/python benchmarks/bench_step_checkpoint.py --model vgg_bn --img-size 64 --batch-size 64
    .venv/bin/python benchmarks/bench_step_checkpoint.py --model airbench --img-size 32 --batch-size 256

Builds the preset, trains a few steps on random pixels with AdamW (so the optimiser has its
state), then, alternating with training steps, times ``--repeat`` step checkpoints: the
training thread's part (``state_dict(partial=True)``: copies of the weights and the optimiser
state, the JSON header) and the saver thread's write (safetensors, fsync, rename), which in a
run overlaps the next steps. Prints the medians in ms, a training step's for scale, and the
file's size. CPU only, no data needed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

import cnnlab
from cnnlab.train.loop import Trainer
from cnnlab.train.resume import save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg_bn")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    s, b = args.img_size, args.batch_size
    model = cnnlab.create_model(args.model, classes=10, input=(s, s, 3))
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3), device="cpu")
    trainer.epoch, trainer.epochs, trainer.steps_per_epoch = 1, 1, 10 ** 6
    trainer.begin_epoch(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (b,), generator=g)

    def step() -> float:
        t = time.perf_counter()
        trainer.train_step(x, y)
        trainer.step += 1
        trainer.batch += 1
        return time.perf_counter() - t

    for _ in range(2):  # warm-up, and the optimiser's state exists
        step()
    path = os.path.join(tempfile.mkdtemp(prefix="step-ckpt-"), "resume.safetensors")
    steps, sync, write = [], [], []
    for _ in range(args.repeat):
        steps.append(step())
        t0 = time.perf_counter()
        save(trainer, path, partial=True, wait=False)
        t1 = time.perf_counter()
        trainer.saver.wait()
        sync.append(t1 - t0)
        write.append(time.perf_counter() - t1)
    ms = lambda v: f"{1000 * statistics.median(v):.0f} ms"  # noqa: E731
    print(f"{args.model} {s}px batch {b}: a step {ms(steps)}; a step checkpoint {ms(sync)} on the training thread "
          f"+ {ms(write)} written on the saver's ({os.path.getsize(path) / 2 ** 20:.1f} MiB, "
          f"torch {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
