"""Eyes that close: the iris held inside the lids, the lids never crossed.

MediaPipe places the whole iris circle even where the lids hide part of it (its rim points stand
out above the upper lid and below the lower one), and a closing eye's lids, moved by quantized
coefficients, pass the iris points (and may cross each other by a pixel) while the irises stay
where the open eye had them. A warp whose vertices change order folds its triangles: the keyframe's
open eye was drawn above and below the shut lid line, so a closed eye read as half open
(video-retalking/4 frame 38: lids 0.5 px apart, the iris rim 4 px out beyond them).

Both the picture a region is drawn from and the frame it is drawn onto are settled the same way, so
a frame that equals its source still draws exactly the source; an open eye's iris then spans the
opening between its lids (the part the lids hide was never seen anyway), a shut one's is a line.
"""

from __future__ import annotations

import numpy as np

from models.mesh import regions

# Per eye: its corner on the person's right, then on the person's left (so "across", at a right angle
# to that line, points down the face whichever way the head is turned), upper lid, lower lid (in
# MediaPipe's order), iris (centre, rim).
EYES = (
    (33, 133, regions.RIGHT_UPPER_LID, regions.RIGHT_LOWER_LID, regions.RIGHT_IRIS),
    (362, 263, regions.LEFT_UPPER_LID, regions.LEFT_LOWER_LID, regions.LEFT_IRIS),
)


def _lid_at(along: np.ndarray, lid_along: np.ndarray, lid_across: np.ndarray) -> np.ndarray:
    """The lid's across-eye offset at positions `along` (linear between its points, sorted first:
    a moved lid may reorder them)."""
    order = np.argsort(lid_along)
    return np.interp(along, lid_along[order], lid_across[order])


def settle(lm: np.ndarray) -> np.ndarray:
    """A copy of landmarks lm (478, >=2) px with, per eye, crossed lid pairs met halfway and the
    iris points moved across the eye into the opening between the lids (along it, left alone)."""
    out = np.array(lm, dtype=np.float64, copy=True)
    if len(out) <= regions.LEFT_IRIS[-1]:
        return out  # no irises (the 468-point mesh): nothing to hold
    for right, left, upper, lower, iris in EYES:
        a, b = out[right, :2], out[left, :2]
        width = float(np.linalg.norm(b - a))
        if width < 1e-6:
            continue
        ux = (b - a) / width
        uy = np.array([-ux[1], ux[0]])  # across the eye, down the face: the upper lid has the smaller offset
        rel_up, rel_lo = out[upper, :2] - a, out[lower, :2] - a
        up_y, lo_y = rel_up @ uy, rel_lo @ uy
        crossed = lo_y < up_y
        if crossed.any():
            mid = (up_y[crossed] + lo_y[crossed]) / 2
            out[upper[crossed], :2] += np.outer(mid - up_y[crossed], uy)
            out[lower[crossed], :2] += np.outer(mid - lo_y[crossed], uy)
            up_y[crossed] = lo_y[crossed] = mid
        # the opening between the lids, closed at the corners (on the eye line: across 0)
        rel = out[iris, :2] - a
        x, y = rel @ ux, rel @ uy
        top = _lid_at(x, np.r_[0.0, rel_up @ ux, width], np.r_[0.0, up_y, 0.0])
        bottom = np.maximum(_lid_at(x, np.r_[0.0, rel_lo @ ux, width], np.r_[0.0, lo_y, 0.0]), top)
        out[iris, :2] += np.outer(np.clip(y, top, bottom) - y, uy)
    return out
