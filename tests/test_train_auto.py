"""The automatic choices of `cnnlab train` from the data and the budget (cnnlab.train.auto).

Oracle: speeds given by hand (a fake ``rate_at``) and the arithmetic done here by hand:
epochs that fit = 0.85 x minutes x 60 x rate / images.
"""

from __future__ import annotations

from cnnlab.train.auto import DataFacts, choose, epochs_wanted, measured_rate


def cpu_rate(size: int) -> float:
    """A CPU that trains 400 images/s at 64 px, cost growing with the pixels."""
    return 400.0 * (64 / size) ** 2


DOGS = DataFacts((800, 800), (256, 256), n_val=400, classes=("cat", "dog"))


def test_photos_get_more_than_64_px_when_the_budget_allows():
    # 1,600 images want 40 epochs. At 128 px: 100 img/s -> 0.85*15*60*100/1600 = 47.8 epochs (ok);
    # at 160 px: 64 img/s -> 30.6 epochs (< 40). So 128.
    c = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate)
    assert epochs_wanted(1600) == 40
    assert c.values["img_size"] == 128
    assert "48 epochs" in c.reasons["img_size"]
    # 5 minutes: 96 px -> 0.85*300*177.8/1600 = 28 epochs (< 40); 64 px -> 63.8: so 64
    assert choose(DOGS, set(), time_limit=5, rate_at=cpu_rate).values["img_size"] == 64
    # an hour: 160 px gives 122 epochs; the CPU cap is 160
    assert choose(DOGS, set(), time_limit=60, rate_at=cpu_rate).values["img_size"] == 160
    # never larger than the images: 100 px photos stay at most 96
    small_photos = DataFacts((800, 800), (100, 120))
    assert choose(small_photos, set(), time_limit=60, rate_at=cpu_rate).values["img_size"] == 96


def test_the_time_limit_is_used_to_the_end():
    c = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate)
    assert c.values["epochs"] >= 500  # only a cap: TimeLimit plans the steps from the budget
    assert c.values["patience"] == 0  # early stopping would end it early
    # what the user sets is never changed
    c = choose(DOGS, {"epochs", "patience", "img_size"}, time_limit=15, rate_at=cpu_rate)
    assert not {"epochs", "patience", "img_size"} & set(c.values)


def test_without_a_time_limit_a_fixed_plan_of_the_default_minutes():
    c = choose(DOGS, set(), time_limit=None, rate_at=cpu_rate)
    # 10 minutes: 96 px -> 0.85*600*177.8/1600 = 56.7 epochs (>= 40); 128 px -> 31.9 (< 40)
    assert c.values["img_size"] == 96
    assert c.values["epochs"] == 56
    assert c.values["patience"] == 0  # one-cycle anneals at the last epoch; best weights kept
    big = DataFacts((5000,) * 10, (32, 32), n_val=10_000)
    # 50,000 images at 32 px: 1,600 img/s -> 0.85*600*1600/50000 = 16.3 epochs
    c = choose(big, set(), time_limit=None, rate_at=cpu_rate)
    assert (c.values["img_size"], c.values["epochs"]) == (32, 16)
    # an epoch count is never below 10 nor above 60
    tiny = DataFacts((20, 20), (32, 32))
    assert choose(tiny, set(), time_limit=None, rate_at=cpu_rate).values["epochs"] == 60
    # step schedule: early stopping stays
    assert "patience" not in choose(DOGS, set(), time_limit=None, rate_at=cpu_rate, scheduler="step").values


def test_a_small_class_gets_macro_f1_and_balanced_sampling():
    leaves = DataFacts((800, 120, 800), (256, 256), classes=("early_blight", "healthy", "late_blight"))
    c = choose(leaves, set(), time_limit=8, rate_at=cpu_rate)
    assert c.values["monitor"] == "val_macro_f1"
    assert c.values["balanced"] is True
    assert "'healthy' has 120 images, 15% of the largest" in c.reasons["balanced"]
    balanced = DataFacts((800, 500, 800), (256, 256))  # 62 %: no protection needed
    assert not {"monitor", "balanced"} & set(choose(balanced, set(), time_limit=8, rate_at=cpu_rate).values)
    assert "balanced" not in choose(leaves, {"class_weights"}, time_limit=8, rate_at=cpu_rate).values


def test_small_images_take_the_small_image_recipe_when_there_is_one():
    cifar = DataFacts((4000,) * 10, (32, 32), n_val=10_000)
    assert choose(cifar, set(), time_limit=8, recipes=("airbench",)).values["recipe"] == "airbench"
    assert "recipe" not in choose(cifar, set(), time_limit=8, recipes=()).values
    assert "recipe" not in choose(cifar, {"model"}, time_limit=8, recipes=("airbench",)).values
    assert "recipe" not in choose(DOGS, set(), time_limit=8, recipes=("airbench",)).values


def test_validation_on_a_subset_when_the_set_is_large():
    cifar = DataFacts((4000,) * 10, (32, 32), n_val=10_000)
    assert choose(cifar, set(), time_limit=8).values["val_max"] == 2000
    assert "val_max" not in choose(DOGS, set(), time_limit=8).values


def test_unmeasured_speed_keeps_the_model_size_and_the_block_says_why():
    c = choose(DOGS, set(), time_limit=None)
    assert c.values["img_size"] == 64 and c.values["epochs"] == 30
    digits = DataFacts((115,) * 10, (32, 32))
    assert choose(digits, set(), time_limit=None).values["img_size"] == 32  # the images' own
    block = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate).block()
    assert block.startswith("auto    1,600 training images in 2 classes, median 256x256 px; --time-limit 15 min")
    assert "img_size 128: largest size with >= 40 epochs" in block
    saved = choose(DOGS, set(), time_limit=15, rate_at=cpu_rate).to_dict()
    assert saved["chosen"]["img_size"]["value"] == 128


def test_rate_scales_with_the_pixels():
    rate = measured_rate(1000.0, 64)
    assert rate(64) == 1000.0 and rate(128) == 250.0 and rate(32) == 4000.0
