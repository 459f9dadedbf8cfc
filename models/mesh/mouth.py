"""The inside of a mouth the keyframe does not show.

A warp moves the keyframe's pixels: where the frame's lips part wider than the keyframe's, the
triangles between them stretch the keyframe's lips over the opening, a brown smear where a viewer
sees a dark mouth. Until a reference of an open mouth is drawn there (models.mesh.reference), the
renderer darkens the inner-lip polygon, in proportion to how much wider it is open than the
source's, so a mouth that opens reads as open; a source whose own mouth is open (teeth showing)
is stretched instead, which looks more like the caller than a dark hole.
"""

from __future__ import annotations

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
    if amount <= 0.0:
        return
    size = frame.shape[0]
    pts = lm[INNER_CONTOUR, :2]
    k = max(1, round(FEATHER * reference.face_unit(lm)))
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - k - 1, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + k + 2, size)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    poly = np.rint((pts - (x0, y0) - 0.5) * (1 << raster.SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(alpha, [poly], 1.0, cv2.LINE_8, raster.SUBPIXEL_BITS)
    alpha = cv2.GaussianBlur(alpha, (2 * k + 1, 2 * k + 1), 0, borderType=cv2.BORDER_CONSTANT)
    a = (alpha * (amount * DEPTH))[..., None]
    box = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(box + a * (np.asarray(COLOUR, np.float32) - box) + 0.5, 0, 255).astype(np.uint8)
