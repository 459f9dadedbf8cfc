"""Rasterising a moved triangle mesh: which triangle covers each pixel of a box, far to near.

Shared by the keyframe warp (models.mesh.renderer, the whole frame) and the reference regions
(models.mesh.reference, a region's box): both then map each pixel through its triangle's affine
map, src = S_tri @ inv([dst_tri; 1]) @ [x, y, 1], with the source vertices of their own picture.

A pixel belongs to a triangle when its centre lies in it (on a shared edge: in both, the later
drawn wins), so every pixel's map is its triangle's own, never extrapolated outside it. Spans per
row and triangle, filled in one vectorised assignment: a loop drawing ~1150 triangles one call
each cost 3-4 ms per frame at 256x256, this ~1-2 ms.
"""

from __future__ import annotations

import numpy as np

SUBPIXEL_BITS = 4  # cv2 fill precision of the masks drawn with the same pixel convention (reference, mouth)
MIN_DET = 1e-6  # degenerate (collapsed) triangles are never drawn
SPAN_EPS = 1e-9  # px: a pixel centre on an edge two triangles share is in both, never in neither


def rasterize(tri_dst: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tri_dst (T, 3, 3): destination vertices (x, y, depth) px of every triangle. Returns (sel, inv,
    ids): the triangles that overlap box (x0, y0, x1, y1) and are not degenerate (K,), the inverse
    of each one's [x; y; 1] vertex matrix in box coordinates (K, 3, 3), and the (y1 - y0, x1 - x0)
    index into sel of the triangle covering each box pixel's centre (K where none); nearer
    triangles win."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    x, y = tri_dst[:, :, 0] - x0, tri_dst[:, :, 1] - y0  # (T, 3) each
    inside = (_max3(x) >= 0) & (_max3(y) >= 0) & (_min3(x) <= w) & (_min3(y) <= h)
    sel = np.nonzero(inside)[0]
    x, y = x[sel], y[sel]
    cof, det = _cofactors(x, y)
    ok = np.abs(det) > MIN_DET
    sel, x, y = sel[ok], x[ok], y[ok]
    inv = cof[ok] / det[ok, None, None]
    order = np.argsort(-tri_dst[sel, :, 2].mean(1), kind="stable")  # far first, near last: near wins
    return sel, inv, _paint(x[order], y[order], order.astype(np.int32), h, w, len(sel))


def _min3(v: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(v[:, 0], v[:, 1]), v[:, 2])  # a reduction over an axis of 3 is slower


def _max3(v: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(v[:, 0], v[:, 1]), v[:, 2])


def _cofactors(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the vertex matrices [x; y; 1] (K, 3, 3) of triangles x, y (K, 3): their adjugates (K, 3,
    3) and determinants (K,), in closed form (np.linalg.inv is several times slower on 3 x 3)."""
    a, b, c = x.T
    d, e, f = y.T
    adj = np.empty((len(a), 3, 3))
    adj[:, 0] = np.stack([e - f, c - b, b * f - c * e], 1)
    adj[:, 1] = np.stack([f - d, a - c, c * d - a * f], 1)
    adj[:, 2] = np.stack([d - e, b - a, a * e - b * d], 1)
    return adj, a * (e - f) + b * (f - d) + c * (d - e)


def _spans(x: np.ndarray, y: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel row each triangle x, y (K, 3) crosses within rows 0..h-1: (triangle, row, x_left,
    x_right), the triangle's extent along that row's pixel centres (y = row + 0.5)."""
    first = np.maximum(np.ceil(_min3(y) - 0.5), 0).astype(np.int64)
    last = np.minimum(np.floor(_max3(y) - 0.5), h - 1).astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    tri = np.repeat(np.arange(len(x)), count)
    row = first[tri] + np.arange(len(tri)) - np.repeat(np.cumsum(count) - count, count)
    centre = row + 0.5
    left = np.full(len(tri), np.inf)
    right = np.full(len(tri), -np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):  # the three edges
        px, py, qx, qy = x[tri, i], y[tri, i], x[tri, j], y[tri, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (centre - py) / (qy - py)  # where along the edge the row's centre line cuts it
        cut = (t >= 0) & (t <= 1)  # a horizontal edge gives inf or nan: never cut
        at = px + t * (qx - px)
        np.minimum(left, np.where(cut, at, np.inf), out=left)
        np.maximum(right, np.where(cut, at, -np.inf), out=right)
    return tri, row, left - SPAN_EPS, right + SPAN_EPS


def _paint(x: np.ndarray, y: np.ndarray, values: np.ndarray, h: int, w: int, fill: int) -> np.ndarray:
    """(h, w) int32: values[k] on every pixel whose centre lies in triangle x[k], y[k] (K, 3),
    later triangles over earlier ones, fill where none."""
    ids = np.full(h * w, fill, np.int32)
    tri, row, left, right = _spans(x, y, h)
    first = np.maximum(np.ceil(left - 0.5), 0)
    last = np.minimum(np.floor(right - 0.5), w - 1)
    ok = last >= first  # also drops the rows no edge cut (left inf)
    tri, row, first = tri[ok], row[ok], first[ok].astype(np.int64)
    count = last[ok].astype(np.int64) - first + 1
    # every pixel of every span, in triangle order: a repeated index keeps the last value assigned
    # (NumPy assigns a 1-D fancy index in order), so nearer triangles win
    start = np.repeat(row * w + first - (np.cumsum(count) - count), count)
    ids[start + np.arange(len(start))] = np.repeat(values[tri], count)
    return ids.reshape(h, w)
