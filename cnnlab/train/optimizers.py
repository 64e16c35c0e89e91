"""The optimisers ``--optimizer`` can name: one registry entry each.

To add one, write a builder and register it with its help line and its defaults (the
learning rate and weight decay used when the user gives none)::

    @OPTIMIZERS.register("lion", "Lion (Chen et al. 2023), sign of momentum", lr=1e-4, weight_decay=0.1)
    def _lion(groups, lr, cfg, device):
        return Lion(groups, lr=lr)

``groups`` are the parameter groups of :func:`param_groups` (decay on weights only), ``cfg``
the :class:`~cnnlab.train.config.TrainConfig` (``cfg.momentum``...), ``device`` where it
trains. ``cnnlab train --optimizer lion`` then works, and ``--help`` lists it.
"""

from __future__ import annotations

from typing import Any

from cnnlab.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


def _fused(device) -> dict[str, Any]:
    """torch's fused kernels (one pass over all parameters) on CUDA and the CPU, else foreach.

    On the CPU the fused Adam step is faster than the per-tensor one on the seed model's 3.9M
    weights (benchmarks/bench_precision.py: "torch auto" against "torch fp32" where auto is
    fp32); its results are deterministic too.
    """
    from cnnlab.device import fast_optimizer_kwargs  # torch: `cnnlab --help` reads this registry

    return fast_optimizer_kwargs(device)


@OPTIMIZERS.register("adam", "Adam (Kingma & Ba)", lr=1e-3, weight_decay=0.0)
def _adam(groups, lr, cfg, device):
    import torch  # torch: `cnnlab --help` reads this registry

    return torch.optim.Adam(groups, lr=lr, **_fused(device))


@OPTIMIZERS.register("adamw", "AdamW, decoupled weight decay (Loshchilov & Hutter)", lr=2e-3, weight_decay=0.05)
def _adamw(groups, lr, cfg, device):
    import torch  # torch: `cnnlab --help` reads this registry

    return torch.optim.AdamW(groups, lr=lr, **_fused(device))


@OPTIMIZERS.register("sgd", "SGD with Nesterov momentum (--momentum)", lr=0.05, weight_decay=5e-4)
def _sgd(groups, lr, cfg, device):
    import torch  # torch: `cnnlab --help` reads this registry

    momentum = cfg.momentum if cfg is not None else 0.9
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, **_fused(device))


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only, not on biases and batch-norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model, name: str, lr: float, weight_decay: float, cfg=None, device=None):
    """The registered optimiser ``name`` over ``model``'s parameters.

    With ``cfg.bias_lr_scale`` s != 1, the batch-norm parameters (its shift, and its scale
    when it has one) train at s x the learning rate and are decayed too, at weight_decay / s,
    so that they lose the same fraction per step (lr x weight_decay) as the kernels:
    airbench's rule (Jordan 2024, s = 64). Other biases keep the plain rule.
    """
    groups = param_groups(model, weight_decay)
    scale = getattr(cfg, "bias_lr_scale", 1.0) if cfg is not None else 1.0
    if scale != 1.0:
        from torch import nn  # torch: `cnnlab --help` reads this registry

        norm = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters() if p.requires_grad}
        split = []
        for g in groups:
            bn = [p for p in g["params"] if id(p) in norm]
            if g["weight_decay"] != 0.0 or not bn:
                split.append(g)
                continue
            rest = [p for p in g["params"] if id(p) not in norm]  # the no-decay group, split
            if rest:
                split.append({"params": rest, "weight_decay": 0.0})
            split.append({"params": bn, "lr": lr * scale, "weight_decay": weight_decay / scale})
        groups = split
    return OPTIMIZERS[name].build(groups, lr, cfg, device)
