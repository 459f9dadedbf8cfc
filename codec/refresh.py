"""Keyframe refresh driven by the rendering error the sender measures (closed loop).

The sender runs the receiver's renderer on the decoded keyframe and on the quantized parameters
it sends, so it sees exactly what the receiver shows. Every CHECK_EVERY-th sent frame it compares
that picture with the camera crop (PSNR of luma, at half resolution: cheap, and blind to sensor
noise; a renderer with a preview draws it at that resolution, models.types.PreviewRenderer).
The checks of the first REFERENCE_S after a keyframe set what this keyframe achieves for
this caller; when the error then stays DROP_DB worse than that for HOLD_S (a light switched on, a
hand over the face, a new pose held, the background behind a moving camera), a new keyframe is
due. It is relative, so a grainy camera or a hard face is not refreshed forever, and rate-limited
by MIN_INTERVAL_S: a refresh costs one keyframe (1.1-1.9 KB at 256x256).

The fixed limits of the encoder (turned too far, drifted, out of the wire range) still apply:
those frames cannot be drawn at all; this catches the frames that can be drawn, but badly.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from codec.api import Renderer
from codec.metrics import psnr_y
from models.types import FrameParams, PreviewRenderer

CHECK_EVERY = 5  # frames between two checks: one extra render per 200 ms at 25 fps
REFERENCE_S = 1.0  # checks in this long after a keyframe set its reference level
# A refresh is due when the error stays DROP_DB above the reference for HOLD_S. A refresh is mostly a
# P picture after the last intra keyframe now (codec.keyframe, ~1.2 KB instead of ~1.8), but 2 dB
# did not pay: on PaddleGAN/fom_dv + DFRF/french (1800 frames, references at 4 dB) AKD68 1.248 ->
# 1.225 px, yet on the 9 short held-out clips of benchmarks/expression_eval 1.496 -> 1.568 px
# (references at 3 dB): an earlier refresh replaces a keyframe that served well with a frame caught
# mid-expression.
DROP_DB = 3.0
HOLD_S = 1.0
MIN_INTERVAL_S = 2.0  # at most one error-driven keyframe per this long
CHECK_SCALE = 2  # compare at 1/CHECK_SCALE resolution


@dataclass(frozen=True)
class RefreshPolicy:
    """The knobs of the error-driven refresh."""

    check_every: int = CHECK_EVERY
    """Frames between two checks."""
    reference_s: float = REFERENCE_S
    """Seconds after a keyframe whose checks set the reference PSNR."""
    drop_db: float = DROP_DB
    """dB below the reference that counts as 'the warp no longer serves'."""
    hold_s: float = HOLD_S
    """Seconds the drop must last."""
    min_interval_s: float = MIN_INTERVAL_S
    """Seconds between two error-driven keyframes (and after any keyframe)."""


def _small(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w // CHECK_SCALE, h // CHECK_SCALE), interpolation=cv2.INTER_AREA)


class ErrorMonitor:
    """Runs the receiver's renderer at the sender and says when the error calls for a keyframe."""

    def __init__(self, renderer: Renderer, policy: RefreshPolicy | None = None) -> None:
        self.renderer = renderer
        self.policy = policy or RefreshPolicy()
        # a renderer that can draw at the check's resolution does (the check's cost is one render)
        self._shown = (
            (lambda p: renderer.preview(p, CHECK_SCALE))
            if isinstance(renderer, PreviewRenderer)
            else (lambda p: _small(renderer.render(p)))
        )
        self.last_psnr_db: float | None = None
        """The latest check's PSNR (dB, luma, half resolution)."""
        self.reference_db: float | None = None
        """What the current keyframe achieves (median of its first checks)."""
        self.check_ms: list[float] = []
        """Time of each check (render + compare), ms."""
        self._kf_time = 0.0
        self._first: list[float] = []
        self._bad_since: float | None = None
        self._frames = 0
        self._ready = False
        self._recent: deque[float] = deque(maxlen=3)

    @property
    def ready(self) -> bool:
        """The renderer took the current keyframe (False: it refused it; nothing is measured)."""
        return self._ready

    @property
    def checks_next(self) -> bool:
        """The next check() renders and measures (the costly frames: other work may skip them)."""
        return self._ready and (self._frames + 1) % self.policy.check_every == 0

    def keyframe(self, image: np.ndarray, aux: bytes, now: float) -> None:
        """The keyframe the receiver will get (decoded picture and profile data), sent at `now` s."""
        try:
            self.renderer.set_keyframe(image, aux)
            self._ready = True
        except ValueError:
            self._ready = False  # the receiver refuses it too and asks again: nothing to measure
        self._kf_time, self._first, self._bad_since, self.reference_db = now, [], None, None
        self._frames = 0
        self._recent.clear()

    def check(self, crop: np.ndarray, params: FrameParams, now: float) -> str | None:
        """Called for every sent frame with the parameters as the receiver decodes them; returns why
        a keyframe is due, or None."""
        self._frames += 1
        if not self._ready or self._frames % self.policy.check_every:
            return None
        t0 = time.perf_counter()
        db = psnr_y(self._shown(params), _small(crop))
        self.check_ms.append((time.perf_counter() - t0) * 1000)
        self.last_psnr_db = db
        age = now - self._kf_time
        if age <= self.policy.reference_s or self.reference_db is None:
            self._first.append(db)
            self.reference_db = float(np.median(self._first))
            return None
        self._recent.append(db)
        level = float(np.median(self._recent))  # one odd frame (a blink, motion blur) is not a trend
        if level > self.reference_db - self.policy.drop_db:
            self._bad_since = None
            return None
        if self._bad_since is None:
            self._bad_since = now
        if now - self._bad_since >= self.policy.hold_s and age >= self.policy.min_interval_s:
            return (
                f"rendering error: {level:.1f} dB against {self.reference_db:.1f} dB after the keyframe "
                f"for {now - self._bad_since:.1f} s"
            )
        return None
