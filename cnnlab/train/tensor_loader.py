"""Batches from tensors already in memory, shuffled by (seed, epoch): Keras' ``fit(x, y)``.

    train = TensorLoader(x_train, y_train, batch_size=32, seed=0)
    Trainer(model, optimizer).fit(train, TensorLoader(x_val, y_val, shuffle=False), epochs=5)

The shuffle uses :func:`cnnlab.data.loader.epoch_generator`, as the image loader does.
"""

from __future__ import annotations

import math

import torch

from cnnlab.data.loader import epoch_generator
from cnnlab.errors import CnnlabError


class TensorLoader:
    """``images`` uint8 (N, C, H, W) (or float in [0, 1]); ``labels`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if len(images) != len(labels):
            raise CnnlabError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.images)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle \
            else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]
