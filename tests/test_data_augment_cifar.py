"""The fast small-image augmentations: whole-pixel reflect translation and alternating flip.

Oracle: numpy's reflect padding and slicing, and counting which images are mirrored.
"""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.augment import Augmenter, parse_augment


def batch(n: int = 40, size: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).float() / 255


def test_translate_is_a_crop_of_the_reflect_padded_image():
    x = batch()
    out = Augmenter("translate=2")(x, torch.Generator().manual_seed(1)).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    offsets = []
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(padded[i, :, dy:dy + 10, dx:dx + 10], out[i])]
        assert hits, f"image {i} is not a 10x10 window of its reflect-padded self"
        offsets.append(hits[0])
    assert len(set(offsets)) > 8  # the shifts vary from image to image
    assert {dy for dy, _ in offsets} >= {0, 4} or len(x) < 25  # reaches +-2 pixels


def test_alternate_flip_mirrors_each_image_every_other_epoch():
    x = batch(200)
    aug = Augmenter(parse_augment("alt_flip"))
    g = torch.Generator().manual_seed(0)
    flipped = []
    for epoch in (1, 2, 3):
        aug.set_epoch(epoch)
        out = aug(x, g)
        mirrored = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
        same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
        assert bool((mirrored | same).all())
        flipped.append(mirrored)
    assert bool((flipped[0] ^ flipped[1]).all())  # each image mirrored in exactly one of two epochs
    assert torch.equal(flipped[0], flipped[2])
    assert 70 < int(flipped[0].sum()) < 130  # about half of them


def test_cifar_preset_and_names():
    cfg = parse_augment("cifar")
    assert (cfg.translate, cfg.alternate_flip, cfg.is_identity) == (2, True, False)
    assert parse_augment("translate=3,alternate_flip").translate == 3
    assert parse_augment({"translate": 1}).describe() == "translate=1"
