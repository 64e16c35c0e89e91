"""Size strings ("64", "64x48", "64x64x3") mean the same wherever a user types one."""

from __future__ import annotations

import pytest

from cnnlab.cli.data import parse_size as preview_size
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.model.spec import parse_input
from cnnlab.sizes import parse_size
from cnnlab.train.config import make_config


@pytest.mark.parametrize("text, numbers", [
    ("64", (64,)), ("64x48", (64, 48)), ("64X48", (64, 48)), (" 64 x 48 ", (64, 48)), ("64×48", (64, 48)),
    ("64,48", (64, 48)), ("64*48", (64, 48)), ("32x32x1", (32, 32, 1)),
])
def test_the_forms_a_size_takes(text, numbers):
    assert parse_size(text) == numbers


@pytest.mark.parametrize("text", ["", "x", "64x", "x64", "64xx48", "6.4x48", "-1x3", "64 48", "sixty-four"])
def test_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_every_place_reads_them_alike():
    """Training's img_size, the data preview's --size and a spec's input, one parser behind them."""
    assert make_config(data="x", img_size="48 x 64").size == (48, 64)
    assert make_config(data="x", img_size="40").size == (40, 40)
    assert preview_size("160×120") == (160, 120) and preview_size("96") == (96, 96)
    assert parse_input("32 x 32") == (32, 32, 3) and parse_input("32x32x1") == (32, 32, 1)
    with pytest.raises(CnnlabError, match="must look like 64 or 64x48"):
        make_config(data="x", img_size="64x")
    with pytest.raises(CnnlabError, match="--size must be N or HxW"):
        preview_size("64x")
    with pytest.raises(SpecError, match="must look like 64x64x3"):
        parse_input("64x")
