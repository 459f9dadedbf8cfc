"""Shared test helpers: where the real clips are, and how to read a few frames of one."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def clip_path(relative: str) -> Path:
    """A clip of ../shared/data; skips the test where the folder (or the clip) is absent."""
    path = DATA / "raw" / relative
    if not path.is_file():
        pytest.skip(f"real-face clips not available ({path} is missing)")
    return path


def read_frames(relative: str, n: int) -> list[np.ndarray]:
    with av.open(str(clip_path(relative))) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0), strict=False)]
