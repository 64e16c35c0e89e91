"""--time-limit is the whole command's time: what came before training and what follows it
(the test split's evaluation with its TTA views, the report) are kept out of the steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cnnlab.train.callbacks import AfterTraining, TimeLimit


def planned_steps(limit: TimeLimit) -> int:
    """One training step of exactly 1 s on a fake clock, then the plan TimeLimit makes."""
    now = [0.0]
    limit.clock = lambda: now[0]
    trainer = SimpleNamespace(steps_per_epoch=10, batch=8, running_images=8, val_samples=0, val_subset=None,
                              step=1, epoch=0, epochs=1000, max_steps=None, broadcast=lambda x: x)
    limit.on_train_begin(trainer)
    limit.on_batch_begin(trainer)
    now[0] = 1.0
    limit.on_batch_end(trainer)  # first_plan=1: plans here
    return trainer.max_steps


def test_the_plan_keeps_time_for_what_comes_before_and_after_training():
    # 60 s, 1 s a step (an image 1 s / 8 * 8 = 1 s; its forward pass guessed at a third), the
    # last validation guessed at a tenth of an epoch (1 s), so a step with its share of it 1.1 s:
    alone = planned_steps(TimeLimit(1.0, first_plan=1))
    assert alone == 1 + int((60 - 1 - 1) / 1.1)  # 53
    # 10 s before training; after it 30 test images, decoded in 0.1 s each, 2 TTA views of a
    # forward pass of 1/3 s, and 2 s for the report: 30 * (0.1 + 2/3) + 2 = 25 s kept.
    after = AfterTraining(images=30, views=2, decode=0.1, fixed=2.0)
    assert after.seconds(1 / 3) == pytest.approx(25.0)
    whole = planned_steps(TimeLimit(1.0, first_plan=1, spent_before=10.0, after=after))
    assert whole == 1 + int((60 - 10 - 1 - 1 - 25) / 1.1)  # 21


def test_a_resumed_command_adds_its_own_start_up_to_the_earlier_time():
    first = TimeLimit(1.0, spent_before=7.0)
    state = first.state_dict()  # before training: only the start-up
    assert state["elapsed"] == 7.0
    second = TimeLimit(1.0, spent_before=3.0)
    second.load_state_dict(state)
    assert second.elapsed() == 10.0


def test_after_training_counts_the_test_split_and_its_views(tmp_path):
    """api.after_training: the test images, the TTA mode's views, a measured decode time."""
    from PIL import Image

    from cnnlab.data.normalize import Normalization
    from cnnlab.train.api import after_training

    files = []
    for i in range(5):
        Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
        files.append((str(tmp_path / f"{i}.png"), 0))

    def setup(evaluate, tta, test):
        cfg = SimpleNamespace(evaluate=evaluate, tta=tta)
        meta = {"input": [16, 16, 3], "normalization": Normalization.rescale(3).to_dict()}
        return SimpleNamespace(cfg=cfg, index=SimpleNamespace(splits={"train": files, "test": test}),
                               meta=lambda: meta)

    a = after_training(setup(True, "flip+translate", files))
    assert (a.images, a.views) == (5, 6) and a.decode > 0
    assert (after_training(setup(True, "none", files)).views) == 1
    assert after_training(setup(False, "flip", files)).images == 0  # no evaluation: nothing to keep
    assert after_training(setup(True, "flip", [])).images == 0


def test_a_validation_subset_times_the_forward_pass_and_the_whole_last_validation():
    """--val-max: epochs validate 20 of the 100 val images, the last one all 100. The forward
    pass per image is the subset's measured time / 20, not a guess, and the plan keeps the
    whole last validation's time (100 images), not the subset's."""
    now = [0.0]
    limit = TimeLimit(2.0, first_plan=1000, replan_every=1000, clock=lambda: now[0],
                      after=AfterTraining(images=50, views=2, decode=0.0, fixed=0.0))
    trainer = SimpleNamespace(steps_per_epoch=10, batch=8, running_images=8, val_samples=100,
                              val_subset=SimpleNamespace(num_samples=20), step=0, epoch=0, epochs=1000,
                              max_steps=None, broadcast=lambda x: x, logs={}, train_seconds=10.0)
    limit.on_train_begin(trainer)
    for _ in range(10):  # an epoch of 1-s steps
        limit.on_batch_begin(trainer)
        now[0] += 1.0
        trainer.step += 1
        limit.on_batch_end(trainer)
    now[0] += 4.0  # the subset's validation: 4 s for 20 images, 0.2 s each
    trainer.epoch, trainer.logs = 1, {"seconds": 14.0}
    limit.on_epoch_end(trainer)
    # By hand: 120 s - 14 spent - 0.2 x 100 (the last, whole validation) - 0.2 x 50 x 2 (the
    # test, flip) = 66 s; a step and its share of an epoch's validation 1 + 4 / 10 = 1.4 s:
    # 47 more steps.
    assert trainer.max_steps == 10 + 47
