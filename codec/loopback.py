"""Encoder -> decoder in memory, with an optional loss pattern: the call without a network.

Used by the benchmark (every codec sees the same frames), the tests, and anything that
needs to know what the receiver would show for each sent frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from codec.api import Decoder, Encoder

LossPattern = Callable[[int, bool], bool]  # (message index, reliable) -> delivered?


def no_loss(index: int, reliable: bool) -> bool:
    return True


@dataclass
class LoopbackFrame:
    """One sent frame and what the receiver showed for it."""

    index: int
    """Frame number in the input."""
    capture_ms: int
    """Capture time given to the encoder."""
    output: np.ndarray | None
    """What the receiver shows after this frame's packets (the last frame if nothing new)."""
    payload_bytes: int
    """Bytes the encoder emitted for this frame (keyframe included)."""


def run(
    frames: Iterable[np.ndarray], encoder: Encoder, decoder: Decoder, fps: float, deliver: LossPattern = no_loss
) -> Iterator[LoopbackFrame]:
    """Encode each frame, deliver its packets (and the decoder's replies), render."""
    n_msg = 0
    shown: np.ndarray | None = None
    for i, frame in enumerate(frames):
        ms = int(round(i * 1000 / fps))
        packets = encoder.encode(frame, ms)
        for p in packets:
            n_msg += 1
            if deliver(n_msg, p.reliable):
                for reply in decoder.receive(p.data):
                    encoder.receive(reply.data)
        out = decoder.render()
        shown = out if out is not None else shown
        yield LoopbackFrame(i, ms, shown, sum(len(p.data) for p in packets))
