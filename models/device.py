"""The one place that decides where torch work runs: a CUDA GPU when there is one, else the CPU."""

from __future__ import annotations

import torch


def default_device(index: int | None = None) -> torch.device:
    """cuda (device `index`, default the current one) when CUDA is available, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    return torch.device("cpu")
