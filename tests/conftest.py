"""Shared fixtures. Image helpers live in tests/imagegen.py (importable from any test)."""

from __future__ import annotations

import os

import pytest

# Keep the suite predictable on a 2-core machine and free of display needs.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models train fastest that way, and reproducibly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_folder(tmp_path):
    """A DATA/<class>/*.png folder with two learnable classes, 12 images each, 32x32."""
    from imagegen import make_image_folder

    return make_image_folder(tmp_path / "data")


@pytest.fixture
def split_folder(tmp_path):
    """A DATA/{train,val,test}/<class>/*.png folder with two learnable classes."""
    from imagegen import make_split_folder

    return make_split_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real run directory (runs/small) with a model trained on hbar/vbar images.

    Session-scoped: treat it as read-only; copy it (shutil.copytree) before writing into it.
    """
    from runfactory import make_trained_run

    return make_trained_run(tmp_path_factory.mktemp("trained"))
