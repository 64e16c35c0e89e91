"""Prototype of the airbench-class CIFAR-10 recipe with cnnlab's pieces and a plain loop.

Accuracy per epoch does not depend on the machine's load (time does), so this judges the
recipe's ideas before they are wired into ``cnnlab train``: the ``airbench`` preset
(PatchWhitening stem fitted to the training images, Dirac convs, BN without scale),
Nesterov SGD with airbench's lr/decay conventions, label smoothing 0.2, lookahead weight
averaging, ``cifar`` augmentation (2-px reflect translate + alternating flip), 6-view TTA.

    flock /tmp/cnnlab-bench.lock .venv/bin/python benchmarks/cifar_recipe_proto.py --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/root/data/cifar10")
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=11.5, help="airbench's lr per 1024 (sum-loss convention)")
    ap.add_argument("--momentum", type=float, default=0.85)
    ap.add_argument("--wd", type=float, default=0.0153)
    ap.add_argument("--bias-scaler", type=float, default=64.0)
    ap.add_argument("--smoothing", type=float, default=0.2)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--out", default="/tmp/h11b-proto.json")
    args = ap.parse_args()
    torch.manual_seed(0)

    from cnnlab.data.augment import Augmenter
    from cnnlab.data.datasets import discover
    from cnnlab.data.loader import make_loader
    from cnnlab.data.normalize import compute_mean_std
    from cnnlab.eval.tta import tta_probabilities
    from cnnlab.model.build import build_model
    from cnnlab.model.layers import data_init

    index = discover(args.data, val_split=0.0)
    t0 = time.perf_counter()
    train = make_loader(index.splits["train"], size=32, batch_size=args.batch_size, shuffle=True,
                        drop_last=True, workers=2)
    test = make_loader(index.splits["test"], size=32, batch_size=2000, workers=2)
    print(f"decode {time.perf_counter() - t0:.1f}s, train {train.num_samples} test {test.num_samples}", flush=True)
    norm = compute_mean_std(train, max_images=5000)
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
    std = torch.tensor(norm.std).view(1, -1, 1, 1)

    def prep(x):
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)

    model = build_model("airbench", classes=10, seed=0)
    first = torch.from_numpy(train.images[train.rows[:5000]])
    print("fitted", data_init(model, prep(first)))
    model = model.to(memory_format=torch.channels_last)

    kilostep = 1024 * (1 + 1 / (1 - args.momentum))
    lr = args.lr / kilostep * args.batch_size  # mean-loss lr
    wd_step = args.wd * args.batch_size / kilostep
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    biases = [m.bias for m in norms]  # BN shifts: 64x the lr (the whitening bias keeps the base lr)
    ids = {id(p) for p in biases}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    lr_b = lr * args.bias_scaler
    opt = torch.optim.SGD([dict(params=biases, lr=lr_b, weight_decay=wd_step / lr_b),
                           dict(params=others, lr=lr, weight_decay=wd_step / lr)],
                          momentum=args.momentum, nesterov=True)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    steps_per_epoch = len(train)
    total = int(args.epochs * steps_per_epoch)

    def sched(step):
        warm = int(0.23 * total)
        if step < warm:
            f = step / warm
            return 0.2 * (1 - f) + f
        f = (step - warm) / max(total - warm, 1)
        return (1 - f) + 0.07 * f

    ema = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def lookahead(decay):
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if k in ema:
                    ema[k].lerp_(v, 1 - decay)
                    v.copy_(ema[k])

    aug = Augmenter("cifar")
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def test_acc(tta=None):
        model.eval()
        correct = 0
        with torch.inference_mode(), torch.autocast(**amp):
            for x, y in test:
                x = prep(x)
                p = tta_probabilities(model, x, tta) if tta else model(x)
                correct += (p.argmax(1) == y).sum().item()
        model.train()
        return correct / test.num_samples

    log = []
    step, epoch = 0, 0
    t_train = 0.0
    while step < total:
        epoch += 1
        train.set_epoch(epoch)
        aug.set_epoch(epoch)
        g = torch.Generator().manual_seed(epoch)
        t = time.perf_counter()
        seen = 0
        loss_sum = 0.0
        for x, y in train:
            if step >= total:
                break
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * sched(step)
            xb = aug(x.float() / 255, g)
            xb = ((xb - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(**amp):
                out = model(xb)
            loss = F.cross_entropy(out.float(), y, label_smoothing=args.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            if step % 5 == 0:
                lookahead(0.95 ** 5 * (step / total) ** 3)
        dt = time.perf_counter() - t
        t_train += dt
        acc = test_acc()
        rec = dict(epoch=epoch, step=step, loss=loss_sum / max(seen, 1), test_acc=acc,
                   img_s=seen / dt, train_s=t_train)
        log.append(rec)
        print(json.dumps(rec), flush=True)
    lookahead(1.0)  # decay 1: the model takes the average as it is (airbench's last step)
    final = {"test_acc": test_acc(), "test_acc_tta_flip": test_acc("flip"),
             "test_acc_tta6": test_acc("flip+translate"), "train_s": t_train, "args": vars(args)}
    print(json.dumps(final), flush=True)
    json.dump({"epochs": log, "final": final}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
