"""Keyframe refresh driven by the rendering error the sender measures (closed loop).

The sender runs the receiver's renderer on the decoded keyframe and on the quantized parameters
it sends, so it sees exactly what the receiver shows. Every CHECK_EVERY-th sent frame it compares
that picture with the camera crop (PSNR of luma, at half resolution: cheap, and blind to sensor
noise). The checks of the first REFERENCE_S after a keyframe set what this keyframe achieves for
this caller; when the error then stays DROP_DB worse than that for HOLD_S (a light switched on, a
hand over the face, a new pose held, the background behind a moving camera), a new keyframe is
due. It is relative, so a grainy camera or a hard face is not refreshed forever, and rate-limited
by MIN_INTERVAL_S: a refresh costs one keyframe (~2.5 KB at 256x256).

The fixed limits of the encoder (turned too far, drifted, out of the wire range) still apply:
those frames cannot be drawn at all; this catches the frames that can be drawn, but badly.

Where the profile draws regions from reference pictures (codec.bank), each check also measures every
region (eyes, mouth) on its own against what the keyframe achieved there, and `bad_regions` says
which have stayed `threshold_db` worse for `hold_s`: those call for a reference, not a keyframe.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from codec.api import Renderer
from codec.bank import BankPolicy
from codec.metrics import luma, psnr, psnr_y
from models.types import FrameParams, ReferenceRenderer

CHECK_EVERY = 5  # frames between two checks: one extra render per 200 ms at 25 fps
REFERENCE_S = 1.0  # checks in this long after a keyframe set its reference level
DROP_DB = 3.0  # a refresh is due when the error stays this much above the reference ...
HOLD_S = 1.0  # ... for this long
MIN_INTERVAL_S = 2.0  # at most one error-driven keyframe per this long
CHECK_SCALE = 2  # compare at 1/CHECK_SCALE resolution
REGION_LEVEL_PERCENTILE = 75  # of a region's checks in the first REFERENCE_S: what the keyframe achieves there


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

    def __init__(self, renderer: Renderer, policy: RefreshPolicy | None = None, bank: BankPolicy | None = None) -> None:
        """`bank`: measure the regions too, for the reference bank (the renderer must then be a
        models.types.ReferenceRenderer)."""
        self.renderer = renderer
        self.policy = policy or RefreshPolicy()
        self.bank = bank
        n = len(renderer.region_names) if bank is not None else 0  # type: ignore[attr-defined]
        self.n_regions = n
        self.region_db: list[float] = [float("nan")] * n
        """The latest check's PSNR of every region (dB, luma, full resolution)."""
        self.region_level: list[float | None] = [None] * n
        """What the keyframe achieves in every region (median of its first checks)."""
        self.bad_regions = 0
        """Bit mask of the regions whose error has stayed high long enough to call for a reference."""
        self._region_first: list[list[float]] = [[] for _ in range(n)]
        self._region_bad_since: list[float | None] = [None] * n
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
        self.region_level = [None] * self.n_regions
        self._region_first = [[] for _ in range(self.n_regions)]
        self._region_bad_since = [None] * self.n_regions
        self.bad_regions = 0

    @property
    def ready(self) -> bool:
        """The renderer took the current keyframe (False: it refused it; nothing is measured)."""
        return self._ready

    def reference_sent(self, regions: int) -> None:
        """A reference for these regions is on its way: their error must build up again."""
        for r in range(self.n_regions):
            if regions >> r & 1:
                self._region_bad_since[r] = None
        self.bad_regions &= ~regions

    def _check_regions(self, shown: np.ndarray, crop: np.ndarray, params: FrameParams, now: float) -> None:
        assert self.bank is not None
        renderer: ReferenceRenderer = self.renderer  # type: ignore[assignment]
        masks = renderer.region_masks(params)
        y_shown, y_crop = luma(shown), luma(crop)
        first = now - self._kf_time <= self.policy.reference_s
        for r, mask in enumerate(masks):
            if not mask.any():
                continue
            db = psnr(y_shown[mask], y_crop[mask])
            self.region_db[r] = db
            level = self.region_level[r]
            if first or level is None:
                self._region_first[r].append(db)
                # the upper quartile: a caller who talks in the first second must not lower the bar
                self.region_level[r] = float(np.percentile(self._region_first[r], REGION_LEVEL_PERCENTILE))
                continue
            if db > level - self.bank.threshold_db:
                self._region_bad_since[r] = None
                self.bad_regions &= ~(1 << r)
                continue
            since = self._region_bad_since[r]
            if since is None:
                self._region_bad_since[r] = since = now
            if now - since >= self.bank.hold_s:
                self.bad_regions |= 1 << r

    def check(self, crop: np.ndarray, params: FrameParams, now: float) -> str | None:
        """Called for every sent frame with the parameters as the receiver decodes them; returns why
        a keyframe is due, or None."""
        self._frames += 1
        if not self._ready or self._frames % self.policy.check_every:
            return None
        t0 = time.perf_counter()
        shown = self.renderer.render(params)
        db = psnr_y(_small(shown), _small(crop))
        if self.n_regions:
            self._check_regions(shown, crop, params, now)
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
