"""An independent reference for ``--recipe airbench``: the same training in plain PyTorch.

Question it answers: when ``cnnlab train cifar10`` reaches less than airbench94's published
94 %, is it cnnlab's implementation of the recipe, or the data and the machine? This
script uses none of cnnlab (no spec, no loader, no callbacks): Pillow decodes the JPEGs,
an ``nn.Sequential`` is the net, one loop trains it. What it follows is the description in
Jordan's paper ("94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498, 2024)
and the hyper-parameters listed in his airbench94 README; the code is written here:

* whitened 2x2 patch stem (PCA of 5,000 training images' patches, eps 5e-4, with the
  negated filters: 24 channels), frozen; its bias trains for the first 3 epochs;
* three groups conv-pool-BN-GELU-conv-BN-GELU of 64/256/256 channels, Dirac-initialised
  convs, BN without a learned scale (momentum 0.6 in Keras' sense, eps 1e-12), 3x3 max-pool,
  a linear layer without bias, logits x 1/9;
* Nesterov SGD, momentum 0.85, lr 11.5 and weight decay 0.0153 per 1024 examples on a
  summed loss (airbench's decoupled units), BN biases at 64x the lr; label smoothing 0.2;
  the triangle schedule 0.2 -> 1 (at 23 %) -> 0.07;
* the lookahead EMA every 5 steps from epoch 3, decay 0.95^5 x progress^3;
* 2-px reflect-padded random translation, a random half of the images mirrored once and
  every image's mirror flipped in every other epoch;
* 6-view test-time augmentation (image and mirror, unshifted weighing 1/2, shifted one
  pixel up-left and down-right 1/4 each).

    flock /tmp/cnnlab-bench.lock .venv/bin/python benchmarks/airbench_reference.py --epochs 10

Prints the test accuracy (no TTA and 6-view TTA) and the training images/s; compare with
``benchmarks/bench_cifar_recipe.py --epochs 10 --precision bf16`` on the same machine.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def load_split(root: Path, cache: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images (N, 3, 32, 32) and labels of one split folder (class folders of JPEGs)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if cache.exists():
        z = np.load(cache)
        return torch.from_numpy(z["x"]), torch.from_numpy(z["y"]), classes
    from PIL import Image

    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            with Image.open(f) as im:
                xs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            ys.append(label)
    x = np.stack(xs).transpose(0, 3, 1, 2).copy()
    y = np.asarray(ys, dtype=np.int64)
    np.savez(cache, x=x, y=y)
    return torch.from_numpy(x), torch.from_numpy(y), classes


class Net(nn.Sequential):
    def __init__(self, widths=(64, 256, 256), classes=10):
        layers: list[nn.Module] = [nn.Conv2d(3, 24, 2, bias=True), nn.GELU()]
        c_in = 24
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.MaxPool2d(2), self.bn(w), nn.GELU(),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), self.bn(w), nn.GELU()]
            c_in = w
        layers += [nn.MaxPool2d(3), nn.Flatten(), nn.Linear(c_in, classes, bias=False)]
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                with torch.no_grad():  # identity for the first in_channels filters
                    nn.init.dirac_(m.weight[: m.in_channels])

    @staticmethod
    def bn(c: int) -> nn.BatchNorm2d:
        b = nn.BatchNorm2d(c, eps=1e-12, momentum=0.4)  # torch's momentum = 1 - Keras' 0.6
        b.weight.requires_grad_(False)  # stays 1
        return b

    def forward(self, x):
        return super().forward(x) / 9.0


@torch.no_grad()
def whiten_stem(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Filters = eigenvectors of the 2x2x3 patch covariance / sqrt(eigenvalue + eps), and their negatives."""
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, 31, 31, 2, 2
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    cov = patches.T @ patches / len(patches)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    filters = (vecs.T / torch.sqrt(vals + eps)[:, None]).reshape(12, 3, 2, 2).flip(0).float()
    conv.weight.copy_(torch.cat([filters, -filters]))
    conv.weight.requires_grad_(False)


def translate(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``pad`` px per image (x is already reflect-padded by ``pad``)."""
    n, _, hp, wp = x.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, x.shape[1], h, wp)
    x = x.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return x.gather(3, cols)


def tta_logits(net: nn.Module, x: torch.Tensor, dtype) -> torch.Tensor:
    def both(v):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return 0.5 * (net(v).float() + net(v.flip(-1)).float())

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (both(padded[:, :, :32, :32]) + both(padded[:, :, 2:, 2:]))
    return 0.5 * both(x) + 0.5 * shifted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/root/data/cifar10")
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/airbench-reference", help="decoded images are kept here")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    xtr, ytr, classes = load_split(Path(args.data) / "train", Path(args.cache) / "train.npz")
    xte, yte, _ = load_split(Path(args.data) / "test", Path(args.cache) / "test.npz")
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)  # CIFAR-10's (airbench's constants)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    norm = lambda u8: ((u8.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
    train, test = norm(xtr), norm(xte)
    stem_data = train[:5000].contiguous()  # the whitening sees the images as they are
    flipped = torch.rand(len(train), generator=g) < 0.5  # the half mirrored in even epochs
    train = torch.where(flipped.view(-1, 1, 1, 1), train.flip(-1), train)
    padded = F.pad(train, (2, 2, 2, 2), mode="reflect")

    dtype = torch.bfloat16 if args.precision == "bf16" else None
    net = Net(classes=len(classes)).to(memory_format=torch.channels_last)
    whiten_stem(net[0], stem_data)
    batch, momentum = 1024, 0.85
    kilo = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilo, 0.0153 * batch / kilo
    bn_biases = [m.bias for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    ids = {id(p) for p in bn_biases}
    others = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    opt = torch.optim.SGD([dict(params=bn_biases, lr=lr * 64, weight_decay=wd / (lr * 64)),
                           dict(params=others, lr=lr, weight_decay=wd / lr)], momentum=momentum, nesterov=True)
    base = [group["lr"] for group in opt.param_groups]
    steps_per_epoch = len(train) // batch
    total = math.ceil(steps_per_epoch * args.epochs)

    def factor(step):  # triangle: 0.2 -> 1 at 23 %, -> 0.07 at the end
        peak = int(0.23 * total)
        return 0.2 + 0.8 * step / peak if step < peak else 1.0 - 0.93 * (step - peak) / (total - peak)

    ema, step, seconds = None, 0, 0.0
    for epoch in range(math.ceil(args.epochs)):
        net[0].bias.requires_grad_(epoch < 3)
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(train), generator=g)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * batch:(i + 1) * batch]
            x = translate(padded[idx], 2, g)
            if epoch % 2 == 1:
                x = x.flip(-1)
            x = x.contiguous(memory_format=torch.channels_last)
            for group, b in zip(opt.param_groups, base):
                group["lr"] = b * factor(step)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                out = net(x)
            loss = F.cross_entropy(out.float(), ytr[idx], label_smoothing=0.2, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if epoch >= 3 and step % 5 == 0:
                with torch.no_grad():
                    state = [v for v in net.state_dict().values() if v.is_floating_point()]
                    if ema is None:
                        ema = [v.clone() for v in state]
                    else:
                        rho = 0.95 ** 5 * (step / total) ** 3
                        for e, v in zip(ema, state):
                            e.lerp_(v, 1 - rho)
                            v.copy_(e)
        if ema is not None:
            with torch.no_grad():
                for e, v in zip(ema, [v for v in net.state_dict().values() if v.is_floating_point()]):
                    v.copy_(e)
        seconds += time.perf_counter() - t0
        print(f"epoch {epoch + 1}  loss {loss.item() / batch:.4f}  {steps_per_epoch * batch / (time.perf_counter() - t0):,.0f} img/s",
              flush=True)
    net.eval()
    with torch.no_grad():
        plain, tta = [], []
        for x in test.split(2000):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                plain.append(net(x).float())
            tta.append(tta_logits(net, x, dtype))
    acc = (torch.cat(plain).argmax(1) == yte).float().mean().item()
    acc_tta = (torch.cat(tta).argmax(1) == yte).float().mean().item()
    print(f"reference airbench, {args.epochs:g} epochs, {args.precision}: test accuracy {acc:.4f}, "
          f"6-view TTA {acc_tta:.4f}; {seconds / 60:.1f} min of training ({step * batch / seconds:,.0f} img/s)")


if __name__ == "__main__":
    main()
