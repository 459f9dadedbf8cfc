"""The inside of a mouth the keyframe does not show.

A warp moves the keyframe's pixels: where the frame's lips part wider than the keyframe's, the
triangles between them stretch the keyframe's lips over the opening, a brown smear where a viewer
sees a dark mouth. Until a reference of an open mouth is drawn there (models.mesh.reference), the
renderer darkens the inner-lip polygon, in proportion to how much wider it is open than the
source's, so a mouth that opens reads as open; a source whose own mouth is open (teeth showing)
is stretched instead, which looks more like the caller than a dark hole.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from models.mesh import raster, reference

REGION = reference.REGION_NAMES.index("mouth")  # the reference region the mouth is drawn in
# Inner lip contour, MediaPipe indices: lower lip from the left corner to the right, upper lip back.
INNER_CONTOUR = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191])
START_GAIN = 0.03  # face units wider than the source's opening before any darkening ...
FULL_GAIN = 0.10  # ... and where it is full (the same span as reference.MAX_OPENING_GAIN's mouth)
SHUT = 0.04  # a source opened this little (face units) shows no inside: darken fully ...
SHOWN = 0.12  # ... one opened this wide shows its own (teeth): stretching it beats a dark hole
COLOUR = (52.0, 22.0, 24.0)  # RGB of a mouth's shadowed inside (dark red-brown)
DEPTH = 0.85  # at full darkening, the share of the colour (some of the warped lips' texture stays)
FEATHER = 0.04  # soft edge, face units (the lips' own edge is soft)
COLOUR_Y = float(np.asarray(COLOUR, np.float32) @ reference.LUMA)  # its luma


def darkness(frame_lm: np.ndarray, source_lm: np.ndarray) -> float:
    """0..1: how much the inside of the frame's mouth must be darkened when drawn from a source whose
    landmarks are source_lm (both (478, >=2) px in their own pictures)."""
    source = reference.opening(source_lm, REGION)
    gain = reference.opening(frame_lm, REGION) - source
    wider = np.clip((gain - START_GAIN) / (FULL_GAIN - START_GAIN), 0.0, 1.0)
    return float(wider * np.clip((SHOWN - source) / (SHOWN - SHUT), 0.0, 1.0))


def darken(frame: np.ndarray, lm: np.ndarray, amount: float) -> None:
    """Darken, in place, the inner-lip polygon of frame (S, S, 3) uint8 with landmarks lm (px of
    this frame) by amount (0..1; 0 leaves it as it is)."""
    found = _inside(lm, frame.shape[0]) if amount > 0.0 else None
    if found is None:
        return
    alpha, (x0, y0, x1, y1) = found
    a = (alpha * (amount * DEPTH))[..., None]
    box = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(box + a * (np.asarray(COLOUR, np.float32) - box) + 0.5, 0, 255).astype(np.uint8)


def darken_luma(y: np.ndarray, box: tuple[int, int, int, int], lm: np.ndarray, amount: float, size: int) -> np.ndarray:
    """The luma y (h, w) float32 of a (size, size) frame's box (x0, y0, x1, y1) as darken() leaves
    it: for the sender's measurement of the mouth the receiver draws. A new array, or y itself where
    nothing is darkened."""
    return _darken_box(y, box, _inside(lm, size) if amount > 0.0 else None, amount)


def darkened(
    box: tuple[int, int, int, int], lm: np.ndarray, amounts: list[float], size: int
) -> Callable[[int, np.ndarray], np.ndarray]:
    """For models.mesh.reference.RegionWarp.errors: the luma of box drawn from source k, darkened by
    amounts[k] (darkness() of that source) as the renderer darkens it. The polygon is drawn once
    for every source."""
    found = _inside(lm, size) if max(amounts, default=0.0) > 0.0 else None

    def finish(k: int, y: np.ndarray) -> np.ndarray:
        return _darken_box(y, box, found, amounts[k])

    return finish


def _darken_box(
    y: np.ndarray,
    box: tuple[int, int, int, int],
    found: tuple[np.ndarray, tuple[int, int, int, int]] | None,
    amount: float,
) -> np.ndarray:
    """darken_luma() given the polygon's weight and box (_inside(); None: off the frame)."""
    if found is None or amount <= 0.0:
        return y
    alpha, (ax0, ay0, ax1, ay1) = found
    x0, y0, x1, y1 = box
    ix0, iy0, ix1, iy1 = max(x0, ax0), max(y0, ay0), min(x1, ax1), min(y1, ay1)
    if ix1 <= ix0 or iy1 <= iy0:
        return y
    out = y.copy()
    part = out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    part += alpha[iy0 - ay0 : iy1 - ay0, ix0 - ax0 : ix1 - ax0] * (amount * DEPTH) * (COLOUR_Y - part)
    return out


def _inside(lm: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The inner-lip polygon of landmarks lm (px) with its soft edge: (alpha, box), the float32 [0,
    1] weight inside box (x0, y0, x1, y1) of a (size, size) frame; None where it is off the frame."""
    pts = lm[INNER_CONTOUR, :2]
    k = max(1, round(FEATHER * reference.face_unit(lm)))
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - k - 1, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + k + 2, size)
    if x1 <= x0 or y1 <= y0:
        return None
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    poly = np.rint((pts - (x0, y0) - 0.5) * (1 << raster.SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(alpha, [poly], 1.0, cv2.LINE_8, raster.SUBPIXEL_BITS)
    alpha = cv2.GaussianBlur(alpha, (2 * k + 1, 2 * k + 1), 0, borderType=cv2.BORDER_CONSTANT)
    return alpha, (int(x0), int(y0), int(x1), int(y1))
