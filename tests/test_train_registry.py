"""A registered optimiser, schedule or loss is a choice everywhere: config, --help, the run."""

import io
import contextlib

import pytest
import torch

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.train.config import make_config, resolved_defaults
from cnnlab.train.optimizers import OPTIMIZERS, make_optimizer
from cnnlab.train.schedules import SCHEDULES, schedule_factor


@pytest.fixture
def rmsprop(monkeypatch):
    monkeypatch.setattr(OPTIMIZERS, "_entries", dict(OPTIMIZERS._entries))  # undone after the test
    OPTIMIZERS.add("rmsprop", "RMSprop (Hinton's lecture 6e)",
                   lambda groups, lr, cfg, device: torch.optim.RMSprop(groups, lr=lr), lr=3e-4, weight_decay=0.0)


def help_text(*cmd):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*cmd, "--help"])
    return out.getvalue()


def test_a_registered_optimizer_is_accepted_listed_and_built(rmsprop):
    cfg = make_config(None, optimizer="rmsprop")
    assert resolved_defaults(cfg)["lr"] == 3e-4
    text = " ".join(help_text("train").split())
    assert "--optimizer {adam,adamw,sgd,rmsprop}" in text and "rmsprop: RMSprop (Hinton's lecture 6e)" in text
    assert "auto: 0.001 adam, 0.002 adamw, 0.05 sgd, 0.0003 rmsprop" in text  # --lr's default per optimiser
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = make_optimizer(model, "rmsprop", 1e-2, 0.1, cfg)
    assert isinstance(opt, torch.optim.RMSprop)
    # decay on the weight matrix only, not on the bias
    assert [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [(1, 0.1), (1, 0.0)]


def test_unknown_names_are_refused_with_the_registered_ones():
    with pytest.raises(CnnlabError, match="optimizer: must be one of adam, adamw, sgd, got 'lion'"):
        make_config(None, optimizer="lion")
    with pytest.raises(CnnlabError, match="loss: must be one of cross_entropy"):
        make_config(None, loss="focal")
    with pytest.raises(ValueError, match="registered twice"):
        SCHEDULES.add("cosine", "again", lambda *a: [])


def test_schedule_factors_by_hand():
    # one-cycle at 62.5 % of training with warm-up 25 %: half-way down the cosine from 1 to 1/25e4
    assert schedule_factor("onecycle", 0.625, warmup=0.25) == pytest.approx((1 + 1 / 25e4) / 2)
    assert schedule_factor("step", 0.9, epoch=7, step_size=3, gamma=0.5) == 0.25
    with pytest.raises(CnnlabError, match="not a function of progress"):
        schedule_factor("plateau", 0.5)
