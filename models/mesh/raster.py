"""Rasterising a moved triangle mesh: which triangle covers each pixel of a box, far to near.

Shared by the keyframe warp (models.mesh.renderer, the whole frame) and the reference regions
(models.mesh.reference, a region's box): both then map each pixel through its triangle's affine
map, src = S_tri @ inv([dst_tri; 1]) @ [x, y, 1], with the source vertices of their own picture.
"""

from __future__ import annotations

import cv2
import numpy as np

SUBPIXEL_BITS = 4  # cv2 fillConvexPoly precision
MIN_DET = 1e-6  # degenerate (collapsed) triangles are never drawn


def rasterize(tri_dst: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tri_dst (T, 3, 3): destination vertices (x, y, depth) px of every triangle. Returns (sel, inv,
    ids): the triangles that overlap box (x0, y0, x1, y1) and are not degenerate (K,), the inverse
    of each one's [x; y; 1] vertex matrix in box coordinates (K, 3, 3), and the (y1 - y0, x1 - x0)
    index into sel of the triangle covering each box pixel (K where none); nearer triangles win."""
    x0, y0, x1, y1 = box
    xy = tri_dst[:, :, :2] - (x0, y0)
    lo, hi = xy.min(1), xy.max(1)
    inside = (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] <= x1 - x0) & (lo[:, 1] <= y1 - y0)
    sel = np.nonzero(inside)[0]
    homog = np.concatenate([np.transpose(xy[sel], (0, 2, 1)), np.ones((len(sel), 1, 3))], 1)
    ok = np.abs(np.linalg.det(homog)) > MIN_DET
    sel, homog = sel[ok], homog[ok]
    inv = np.linalg.inv(homog) if len(sel) else np.zeros((0, 3, 3))
    ids = np.full((y1 - y0, x1 - x0), len(sel), np.int32)
    order = np.argsort(-tri_dst[sel, :, 2].mean(1))  # far first, near last: near wins
    corners = np.rint((xy[sel] - 0.5) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    for i in order.tolist():
        cv2.fillConvexPoly(ids, corners[i], i, cv2.LINE_8, SUBPIXEL_BITS)
    return sel, inv, ids
