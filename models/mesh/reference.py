"""Reference pictures: what one keyframe cannot show (teeth, closed eyes), drawn from another picture.

A reference is a face crop the sender captured later in the call, for the regions it covers
(REGIONS: the eyes with the brows, the mouth). Only those regions travel: the rest of the picture
is flat grey before H.264, so a mouth reference costs a few hundred bytes. Its landmarks travel with
it (shape-coded, like the keyframe's), so both sides know where every face point is in it.

Per frame and region, the renderer may draw the region from a reference instead of the keyframe:
the reference's face mesh is warped piecewise-affinely onto the frame's landmarks (the same target
the keyframe is warped to, so the two agree in geometry), only inside the region's box, and blended
over the keyframe warp with a feathered mask of the region around the frame's landmarks.

    picture (S, S, 3) + landmarks L_r (478, 3)  --warp L_r -> target-->  patch (h, w, 3) in the box
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy.spatial import Delaunay

from models.mesh import raster, regions

REGION_NAMES = ("eyes", "mouth")
"""Regions a reference can cover, in wire order (bit i of a reference's region mask; the i-th choice
of a frame)."""
REGION_POINTS: tuple[tuple[np.ndarray, ...], ...] = (
    (
        np.concatenate([regions.RIGHT_EYE, regions.RIGHT_BROW]),
        np.concatenate([regions.LEFT_EYE, regions.LEFT_BROW]),
    ),
    (regions.LIPS,),
)
"""Per region, the landmark groups whose convex hulls (grown) make it."""
GROW = (0.12, 0.22)  # per region: hull grown by this share of the face's eye-corner distance
FEATHER = 0.05  # blend edge width, same unit: the reference fades into the keyframe warp
SENT_MARGIN = 0.05  # the sent picture keeps this much more around each region (H.264 ringing at its edge)
FILL_GREY = 128  # what an intra reference shows outside its regions (flat: nearly free for H.264)
EYE_CORNERS = (33, 263)
# Per region, the landmark pairs across its opening (eyelids; inner lips), and how much wider, in face
# units, a frame's opening may be than a source's: a source opened less than the frame would stretch
# its closed lids or lips over the opening (a smear no error threshold should buy).
OPENING_PAIRS = (
    ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373)),
    ((13, 14), (82, 87), (312, 317)),
)
MAX_OPENING_GAIN = (0.04, 0.10)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, as codec.metrics.luma
MAX_SLOTS = 15  # slots a renderer accepts (the wire's range): at most ~15 MB of references at 256x256


def face_unit(lm: np.ndarray) -> float:
    """Outer eye-corner distance in pixels: the unit region sizes scale with."""
    return float(np.linalg.norm(lm[EYE_CORNERS[1], :2] - lm[EYE_CORNERS[0], :2])) + 1e-9


def opening(lm: np.ndarray, region: int) -> float:
    """Mean gap across region's opening (eyelids, inner lips) of landmarks lm, in face units."""
    pairs = np.asarray(OPENING_PAIRS[region])
    gaps = np.linalg.norm(lm[pairs[:, 0], :2] - lm[pairs[:, 1], :2], axis=1)
    return float(gaps.mean()) / face_unit(lm)


def can_show(src_lm: np.ndarray, target: np.ndarray, region: int) -> bool:
    """Whether a source with landmarks src_lm can draw region of a frame with landmarks target
    without stretching a shut opening over an open one (MAX_OPENING_GAIN)."""
    return opening(target, region) - opening(src_lm, region) <= MAX_OPENING_GAIN[region]


def region_patch(
    lm: np.ndarray, region: int, size: int, extra: float = 0.0, feather: float = 0.0
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The region around landmarks lm (478, >=2) px, grown by GROW[region] + extra face units, with
    a soft edge `feather` face units wide: (mask, box), the float32 [0, 1] mask inside box (x0, y0,
    x1, y1) of the (size, size) frame and 0 outside it; None where the region is off the frame.
    Drawn on the box alone: a frame-sized canvas made this the slowest part of a region's warp."""
    unit = face_unit(lm)
    grow = max(1, round((GROW[region] + extra) * unit))
    k = 2 * max(1, round(feather * unit)) + 1 if feather > 0 else 0
    pts = np.concatenate([lm[idx, :2] for idx in REGION_POINTS[region]])
    lo = np.floor(pts.min(0)).astype(int) - grow - 1
    hi = np.ceil(pts.max(0)).astype(int) + grow + 2
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(size, int(hi[0])), min(size, int(hi[1]))
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for idx in REGION_POINTS[region]:
        local = (lm[idx, :2] - (x0, y0)) * (1 << raster.SUBPIXEL_BITS)
        hull = cv2.convexHull(np.rint(local).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_8, raster.SUBPIXEL_BITS)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    out = mask.astype(np.float32) / 255.0
    if k:
        # the feather stays inside the grown hull: never outside what the reference holds
        out = cv2.GaussianBlur(out, (k, k), 0, borderType=cv2.BORDER_CONSTANT) * (mask > 0)
    return out, (x0, y0, x1, y1)


def region_mask(lm: np.ndarray, region: int, size: int, extra: float = 0.0, feather: float = 0.0) -> np.ndarray:
    """(size, size) float32 in [0, 1]: region_patch on the whole frame."""
    out = np.zeros((size, size), np.float32)
    found = region_patch(lm, region, size, extra, feather)
    if found is not None:
        mask, (x0, y0, x1, y1) = found
        out[y0:y1, x0:x1] = mask
    return out


def regions_mask(lm: np.ndarray, covered: int, size: int, extra: float = 0.0) -> np.ndarray:
    """(size, size) float32: the union of the regions in the bit mask `covered`."""
    out = np.zeros((size, size), np.float32)
    for r in range(len(REGION_NAMES)):
        if covered >> r & 1:
            out = np.maximum(out, region_mask(lm, r, size, extra))
    return out


def sent_picture(image: np.ndarray, lm: np.ndarray, covered: int, background: np.ndarray | None = None) -> np.ndarray:
    """The picture a reference sends: `image` inside its regions (with a margin), `background`
    elsewhere (flat grey where None)."""
    keep = regions_mask(lm, covered, image.shape[0], SENT_MARGIN) > 0
    out = np.full_like(image, FILL_GREY) if background is None else np.array(background, image.dtype)
    out[keep] = image[keep]
    return out


@dataclass
class Source:
    """A picture a region can be drawn from: the keyframe (slot 0) or a reference of its bank."""

    image: np.ndarray
    """(S, S, 4) float32: the decoded picture and, in channel 3, where it is valid (its regions)."""
    landmarks: np.ndarray
    """(478, 3) px: its face points (as both sides decode them)."""
    covered: int
    """Bit mask of the regions it holds (bit i: REGION_NAMES[i])."""
    src_tri: np.ndarray
    """(T, 2, 3) its vertices of the keyframe's face triangles (every source shares that topology)."""


def make_source(picture: np.ndarray, lm: np.ndarray, covered: int, triangles: np.ndarray) -> Source:
    """A bank entry from a decoded picture and its landmarks; triangles: the keyframe's face mesh."""
    size = picture.shape[0]
    n_all = (1 << len(REGION_NAMES)) - 1
    valid = np.ones((size, size), np.float32) if covered == n_all else regions_mask(lm, covered, size)
    image = np.concatenate([picture.astype(np.float32), valid[..., None]], 2)
    return Source(image, np.asarray(lm, np.float64), covered, _triangle_vertices(lm, triangles))


def retriangulate(src: Source, triangles: np.ndarray) -> Source:
    """The same picture on another keyframe's face triangles (the bank outlives its keyframe)."""
    return replace(src, src_tri=_triangle_vertices(src.landmarks, triangles))


def _triangle_vertices(lm: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 2, 3) vertex columns of the triangles (T, 3) on landmarks lm (N, >=2) px."""
    return np.transpose(np.asarray(lm[:, :2], np.float64)[triangles], (0, 2, 1))


def face_triangles(lm: np.ndarray, n_face: int) -> np.ndarray:
    """(T, 3) Delaunay triangles of the first n_face landmarks (the keyframe's)."""
    return Delaunay(np.asarray(lm[:n_face, :2], np.float64)).simplices.astype(np.int64)


class RegionWarp:
    """One region of one frame, ready to be drawn from any source of the keyframe's bank: the region's
    feathered mask around the frame's landmarks, its box, and which face triangle covers each of its
    pixels (the same for every source, since they share the triangles; only the affine maps differ)."""

    def __init__(self, triangles: np.ndarray, target: np.ndarray, size: int, region: int) -> None:
        found = region_patch(target, region, size, feather=FEATHER)
        self.box: tuple[int, int, int, int] | None = None
        """(x0, y0, x1, y1) around the region in the frame; None when it is off the frame."""
        self.mask = np.zeros((0, 0), np.float32)
        """(y1 - y0, x1 - x0) float32 blend weight of the region inside the box."""
        if found is None:
            return
        self.mask, self.box = found
        x0, y0, x1, y1 = self.box
        h, w = y1 - y0, x1 - x0
        # the triangles drawn here, the map from box pixels into each, and which covers each pixel
        self._sel, self._inv, ids = raster.rasterize(target[triangles], self.box)
        self._ids = ids
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        self._xs, self._ys = xs, ys

    def patch(self, src: Source) -> np.ndarray:
        """(h, w, 4) float32: the source warped onto the frame inside the box; channel 3 is where it
        is valid (0 where no face triangle covers the pixel)."""
        assert self.box is not None
        affine = np.empty((len(self._sel) + 1, 6), np.float32)
        affine[:-1] = (src.src_tri[self._sel] @ self._inv).reshape(-1, 6)
        affine[-1] = (0, 0, -1e4, 0, 0, -1e4)  # no triangle here: sample far outside, i.e. invalid
        a = affine[self._ids]
        map_x = a[..., 0] * self._xs + a[..., 1] * self._ys + a[..., 2] - 0.5
        map_y = a[..., 3] * self._xs + a[..., 4] * self._ys + a[..., 5] - 0.5
        return cv2.remap(src.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def weight(self, patch: np.ndarray) -> np.ndarray:
        """(h, w) blend weight of a patch: the region's mask where the source is valid."""
        return self.mask * patch[..., 3]

    def composite(self, frame: np.ndarray, src: Source) -> None:
        """Draw the region of frame (S, S, 3) uint8, in place, from the source."""
        if self.box is None:
            return
        x0, y0, x1, y1 = self.box
        patch = self.patch(src)
        weight = self.weight(patch)[..., None]
        base = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(base + weight * (patch[..., :3] - base) + 0.5, 0, 255).astype(np.uint8)

    def errors(
        self,
        sources: list[Source],
        crop_y: np.ndarray,
        finish: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ) -> list[float]:
        """Mean squared luma error, over the region, of the frame with the region drawn from each
        source against the crop's luma (S, S). sources[0] is the keyframe: what shows where a
        reference is not valid, as in composite(). finish(k, y): what the renderer does after
        drawing from sources[k] to the box's luma y (h, w), as the receiver does it."""
        if self.box is None:
            return [0.0] * len(sources)
        x0, y0, x1, y1 = self.box
        want = crop_y[y0:y1, x0:x1]
        key = self.patch(sources[0])
        base = key[..., :3] @ LUMA
        # Where no face triangle covers the box (beyond the face's outline), the frame shows the
        # whole-frame warp whatever the source: those pixels are no source's error.
        m = self.mask * key[..., 3]
        norm = max(float(m.sum()), 1e-6)
        out = []
        for k, src in enumerate(sources):
            if k == 0:
                y = base
            else:
                patch = self.patch(src)
                y = base + patch[..., 3] * (patch[..., :3] @ LUMA - base)
            if finish is not None:
                y = finish(k, y)
            out.append(float(np.sum(m * (y - want) ** 2) / norm))
        return out
