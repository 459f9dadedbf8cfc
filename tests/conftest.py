"""Shared test helpers: where the real clips are, and how to read a few frames of one."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TEST_THREADS = 1  # small nets gain nothing from threads; OpenMP spin-waits collapse on a shared CPU


@pytest.fixture(scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(before)


def clip_path(relative: str) -> Path:
    """A clip of ../shared/data; skips the test where the folder (or the clip) is absent."""
    path = DATA / "raw" / relative
    if not path.is_file():
        pytest.skip(f"real-face clips not available ({path} is missing)")
    return path


def read_frames(relative: str, n: int) -> list[np.ndarray]:
    with av.open(str(clip_path(relative))) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0), strict=False)]
