"""Mesh renderer: a dense piecewise-affine warp of the keyframe driven by the moved mesh.

The face landmarks alone cover too little of the frame (hair, neck, shoulders and
background are most of it), so the mesh is extended: rings of points around the face
oval move with the head (fading to partial motion further out, and less below the chin,
where the neck is), and points on the frame border stay fixed. A ring point's motion is
split into the head's rotation/scale and its translation, each with its own share (they
measure best equal today; a body that sways with the head would want more translation).
The whole frame is triangulated once per keyframe (Delaunay); each frame, triangles are
rasterised far-to-near into a triangle-index map, every pixel gets the source position
through its triangle's affine map (one gather and two multiply-adds, vectorised), and torch
grid_sample (CUDA when available) fetches the pixels.

The background must not be dragged along by the head: the keyframe is split once, with
MediaPipe selfie segmentation, into the person (a hard matte, warped with the colours) and
a still background (the keyframe with the person filled in from around it), and each frame
is the warped person over that background. Where the head leaves, the background shows.

Regions the keyframe cannot show (an open mouth's teeth, closed eyes) may be drawn from reference
pictures of the keyframe's bank instead (models.mesh.reference), as each frame's parameters say.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
import torch
from scipy.spatial import Delaunay

from models.device import default_device
from models.face import N_LANDMARKS, N_MESH_LANDMARKS, _mediapipe
from models.mesh import expression, eyes, mouth, raster, reference
from models.mesh import landmarks as wire_landmarks
from models.mesh.pose import face_down
from models.mesh.rig import Rig
from models.native import quiet_native_stderr
from models.types import FrameParams

FACE_OVAL = np.array(
    [
        10,
        338,
        297,
        332,
        284,
        251,
        389,
        356,
        454,
        323,
        361,
        288,
        397,
        365,
        379,
        378,
        400,
        377,
        152,
        148,
        176,
        149,
        150,
        136,
        172,
        58,
        132,
        93,
        234,
        127,
        162,
        21,
        54,
        103,
        67,
        109,
    ]
)
# Each ring beyond the oval: (radius factor from the head centre, share of the head's
# rotation/scale motion, share of its translation).
RINGS = ((1.2, 1.0, 1.0), (1.45, 0.85, 0.85), (1.75, 0.6, 0.6), (2.4, 0.25, 0.25))
NECK_FOLLOW_ROT = 0.7  # below the chin, rings follow the head's rotation this much less (the neck stays)
NECK_FOLLOW_TRANS = 0.5  # ... and its translation this much less
RING_DEPTH = 1.0  # ring points sit behind the face by this share of their distance out
BORDER_POINTS = 8  # fixed points per frame edge
BORDER_MARGIN = 0.04  # ring points closer than this share of the frame to a border are dropped
# torch intra-op threads for the CPU render: a 256x256 frame is too small to gain from more,
# and OpenMP workers spinning against the face tracker (or any other busy core) made the
# render 5-8x slower (16 ms -> 110-130 ms median with 2 threads on a 2-core machine).
CPU_RENDER_THREADS = 1
SEGMENT_BACKGROUND = True  # keep the keyframe's background still, behind the warped person
SEGMENT_THRESHOLD = 0.5  # selfie-segmentation confidence above which a pixel is the person
SEGMENT_DILATE_PX = 2  # grow the person matte so the hair fringe moves with the head
SEGMENT_MODEL = 0  # MediaPipe selfie segmentation: 0 = general (256x256 input), 1 = landscape


_segmenter_lock = threading.Lock()
_segmenter = None


def preload() -> None:
    """Load the background segmenter now. MediaPipe's import takes seconds and holds the GIL:
    the receiver calls this before it listens, so no call ever waits on it (or starves)."""
    _shared_segmenter()


def _shared_segmenter() -> Any:  # a MediaPipe solution object
    global _segmenter
    with _segmenter_lock:
        if _segmenter is None:
            mp = _mediapipe()
            with quiet_native_stderr():
                _segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=SEGMENT_MODEL)
                _segmenter.process(np.zeros((64, 64, 3), np.uint8))
        return _segmenter


def fill_holes(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """image (H, W, C) float32 with the pixels where known == 0 filled smoothly from the known ones.

    Push-pull: average the known pixels down a pyramid, fill each level's holes from the
    coarser level. Cheap (a few ms at 256x256), once per keyframe."""
    h, w = known.shape
    if known.all() or not known.any() or min(h, w) <= 2:
        return image if known.any() else np.zeros_like(image)
    half = (max(1, w // 2), max(1, h // 2))
    weight = known.astype(np.float32)
    small_w = cv2.resize(weight, half, interpolation=cv2.INTER_AREA)
    small = cv2.resize(image * weight[..., None], half, interpolation=cv2.INTER_AREA)
    small = small.reshape(half[1], half[0], -1) / np.maximum(small_w, 1e-6)[..., None]
    coarse = fill_holes(small, small_w > 0).reshape(half[1], half[0], -1)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    return np.where(known[..., None], image, up)


class MeshRenderer:
    """Renderer of the `mesh` profile (models.types.ReferenceRenderer)."""

    region_names = reference.REGION_NAMES
    n_regions = len(reference.REGION_NAMES)

    def __init__(
        self,
        size: int,
        device: torch.device | None = None,
        segment_background: bool | None = None,
        model: expression.ExpressionModel | None = None,
    ) -> None:
        self.size = size
        self.device = device or default_device()
        self.model = model or expression.get()
        """Expression model of the caller's coefficients (named by the session header)."""
        self.segment_background = SEGMENT_BACKGROUND if segment_background is None else segment_background
        """Keep the keyframe's background still (selfie segmentation of each keyframe)."""
        self.rig: Rig | None = None
        self._bank: dict[int, reference.Source] = {}  # slot -> reference (kept through keyframes)
        self._key_source: reference.Source | None = None  # the keyframe itself, as a region source
        self._face_tri = np.zeros((0, 3), np.int64)  # the keyframe's face triangles, shared by its bank
        self._key_lm = np.zeros((0, 3))  # the keyframe's landmarks as it is drawn from (models.mesh.eyes)
        self._key: torch.Tensor | None = None  # (1, 4, S, S) float32: RGB and the person matte
        self._background: torch.Tensor | None = None  # (1, 3, S, S) keyframe with the person filled in
        self._segmenter = _shared_segmenter() if self.segment_background else None
        self._grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # grid size -> pixel centres
        self._backgrounds: dict[int, torch.Tensor] = {}  # scale -> the still background at that scale

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        if image.shape != (self.size, self.size, 3):
            raise ValueError(f"keyframe is {image.shape}, expected ({self.size}, {self.size}, 3)")
        self.set_rig(Rig(wire_landmarks.decode(aux, self.size), self.size, self.model), image)

    def set_rig(self, rig: Rig, image: np.ndarray) -> None:
        self.rig = rig
        self._set_layers(image, segment=self.segment_background)
        self._build_mesh(rig)
        all_regions = (1 << self.n_regions) - 1
        self._key_source = reference.make_source(self._key_rgb, self._key_lm, all_regions, self._face_tri)
        # the bank outlives the keyframe: a reference is placed by its own landmarks, on the new
        # keyframe's triangles (codec.bank)
        self._bank = {n: reference.retriangulate(src, self._face_tri) for n, src in self._bank.items()}

    @property
    def segments_background(self) -> bool:
        """True when the background segmenter is in use (loaded in the constructor, so nothing to wait for)."""
        return self._segmenter is not None

    def _set_layers(self, image: np.ndarray, segment: bool) -> None:
        """Warped layer (RGB + person matte) and still background of a keyframe."""
        rgb = np.ascontiguousarray(image).astype(np.float32)
        matte = self._person_matte(image) if segment else np.ones(image.shape[:2], np.float32)
        # Hard 0/1 matte and a background equal to the keyframe wherever the matte is 0: with
        # zero motion the composite is exactly the keyframe, whatever the segmentation says.
        background = fill_holes(rgb, matte == 0) if matte.any() else rgb
        stack = np.concatenate([rgb, matte[..., None]], 2)
        self._key = torch.from_numpy(stack).to(self.device).permute(2, 0, 1)[None].contiguous()
        self._key_rgb = rgb
        self._background = torch.from_numpy(background).to(self.device).permute(2, 0, 1).contiguous()
        self._backgrounds = {1: self._background}

    def _person_matte(self, image: np.ndarray) -> np.ndarray:
        """(S, S) float32 1 on the person (dilated), 0 on the background; all 1 when disabled."""
        if not self.segment_background or self._segmenter is None:
            return np.ones(image.shape[:2], np.float32)
        with _segmenter_lock:  # one MediaPipe graph, shared by every renderer of the process
            conf = self._segmenter.process(np.ascontiguousarray(image)).segmentation_mask
        matte = (conf > SEGMENT_THRESHOLD).astype(np.uint8)
        if SEGMENT_DILATE_PX > 0:
            k = 2 * SEGMENT_DILATE_PX + 1
            matte = cv2.dilate(matte, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        return matte.astype(np.float32)

    def _build_mesh(self, rig: Rig) -> None:
        s = self.size
        c = rig.center
        oval = rig.landmarks[FACE_OVAL]
        down = face_down(rig.landmarks)
        pts, f_rot, f_trans = [], [], []
        for factor, follow_rot, follow_trans in RINGS:
            d = oval - c
            p = c + d * factor
            p[:, 2] = oval[:, 2] + RING_DEPTH * (factor - 1) * np.linalg.norm(d[:, :2], axis=1)
            below = np.clip((d[:, :2] @ down) / (np.linalg.norm(d[:, :2], axis=1) + 1e-9), 0, 1)
            pts.append(p)
            f_rot.append(follow_rot * (1 - NECK_FOLLOW_ROT * below))
            f_trans.append(follow_trans * (1 - NECK_FOLLOW_TRANS * below))
        ring, ring_rot, ring_trans = np.concatenate(pts), np.concatenate(f_rot), np.concatenate(f_trans)
        m = BORDER_MARGIN * s
        keep = np.all((ring[:, :2] > m) & (ring[:, :2] < s - m), axis=1)
        edge = np.linspace(0, s, BORDER_POINTS + 1)
        border = np.unique(
            np.concatenate(
                [
                    np.stack([edge, np.zeros_like(edge)], 1),
                    np.stack([edge, np.full_like(edge, s)], 1),
                    np.stack([np.zeros_like(edge), edge], 1),
                    np.stack([np.full_like(edge, s), edge], 1),
                ]
            ),
            axis=0,
        )
        border3 = np.concatenate([border, np.full((len(border), 1), c[2] + s)], 1)  # farthest of all
        self._ring, self._border = ring[keep], border3
        self._ring_rot, self._ring_trans = ring_rot[keep, None], ring_trans[keep, None]
        # The irises are meshed only where the model moves them: a still iris point inside a
        # closing lid would fold the triangles around it.
        self._n_face = N_LANDMARKS if rig.model.moves_irises else N_MESH_LANDMARKS
        self._key_lm = eyes.settle(rig.landmarks)  # irises inside the lids, as every frame's
        verts = np.concatenate([self._key_lm[: self._n_face], self._ring, border3])
        src = verts[:, :2]
        self._tri = Delaunay(src).simplices.astype(np.int64)
        self._face_tri = reference.face_triangles(self._key_lm, self._n_face)
        # Source side of every triangle's affine map: (T, 2, 3) vertex columns.
        self._src_tri = np.transpose(src[self._tri], (0, 2, 1))

    # -- references ---------------------------------------------------------------------
    def add_reference(self, slot: int, image: np.ndarray, aux: bytes, regions: int) -> None:
        if self.rig is None:
            raise ValueError("reference before the keyframe")
        if not 1 <= slot <= reference.MAX_SLOTS or not 0 < regions < 1 << self.n_regions:
            raise ValueError(f"reference slot {slot} or regions {regions} out of range")
        if image.shape != (self.size, self.size, 3):
            raise ValueError(f"reference is {image.shape}, expected ({self.size}, {self.size}, 3)")
        lm = eyes.settle(wire_landmarks.decode(aux, self.size))
        self._bank[slot] = reference.make_source(image, lm, regions, self._face_tri)

    @property
    def references(self) -> dict[int, int]:
        """Slot -> regions bit mask of the references held for the current keyframe."""
        return {slot: ref.covered for slot, ref in self._bank.items()}

    def reference_picture(
        self, crop: np.ndarray, aux: bytes, regions: int, background: np.ndarray | None = None
    ) -> np.ndarray:
        return reference.sent_picture(crop, wire_landmarks.decode(aux, self.size), regions, background)

    def region_errors(self, params: FrameParams, crop: np.ndarray, regions: int = -1) -> list[dict[int, float]]:
        """Per region in the bit mask `regions`, the mean squared luma error against `crop` of that
        region drawn from the keyframe (slot 0) and from every held reference that covers it; {}
        for the regions not asked for."""
        assert self.rig is not None and self._key_source is not None
        moved = self.moved(params)
        crop_y = np.asarray(crop, np.float32) @ reference.LUMA
        out: list[dict[int, float]] = []
        for r in range(self.n_regions):
            if not regions >> r & 1:
                out.append({})
                continue
            # the keyframe always (what shows when nothing better is named), references that hold the
            # region and can show it as wide open as it is in this frame
            slots = [0] + [
                n
                for n, src in sorted(self._bank.items())
                if src.covered >> r & 1 and reference.can_show(src.landmarks, moved, r)
            ]
            sources = [self._key_source] + [self._bank[n] for n in slots[1:]]
            warp = reference.RegionWarp(self._face_tri, moved, self.size, r)
            finish = None
            if r == mouth.REGION and warp.box is not None:  # measured as drawn: with its inside darkened
                dark = [mouth.darkness(moved, s.landmarks) for s in sources]  # the keyframe's: self._key_lm
                finish = mouth.darkened(warp.box, moved, dark, self.size)
            errs = warp.errors(sources, crop_y, finish)
            out.append(dict(zip(slots, errs, strict=True)))
        return out

    # -- warp -----------------------------------------------------------------------------
    def moved(self, params: FrameParams) -> np.ndarray:
        """(478, 3) px: the keyframe's landmarks moved by the parameters, as the frame is drawn onto
        (irises inside the lids, lids uncrossed, as its sources: models.mesh.eyes)."""
        assert self.rig is not None
        return eyes.settle(self.rig.move(params))

    def vertices(self, params: FrameParams, moved: np.ndarray | None = None) -> np.ndarray:
        """Destination positions (V, 3) of all mesh vertices for the parameters (moved: moved(params),
        when already at hand)."""
        assert self.rig is not None
        face = (self.moved(params) if moved is None else moved)[: self._n_face]
        s, rot, t = self.rig.pose(params)
        c = self.rig.center
        turn = s * (self._ring - c) @ rot.T + c - self._ring  # rotation/scale part of the rigid motion
        ring = self._ring + self._ring_rot * turn + self._ring_trans * t
        return np.concatenate([face, ring, self._border])

    def _triangle_ids(self, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, n) index of every pixel's triangle into the returned (K+1, 6) affine maps dst -> src
        (the last one, identity, where no triangle covers the pixel); dst in the (n, n) grid's pixels."""
        sel, inv, ids = raster.rasterize(dst[self._tri], (0, 0, n, n))
        affine = np.empty((len(sel) + 1, 6), np.float32)
        affine[:-1] = (self._src_tri[sel] @ inv).reshape(-1, 6)
        # pixels no triangle covers stay where they are (the same place of the keyframe)
        affine[-1] = (self.size / n, 0, 0, 0, self.size / n, 0)
        return ids, affine

    def _grid(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres (x, y) of an (n, n) grid, continuous coords."""
        if n not in self._grids:
            ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
            self._grids[n] = (xs, ys)
        return self._grids[n]

    def _source_map(self, dst: np.ndarray, n: int) -> np.ndarray:
        """(n, n, 2) keyframe position (its pixels) of every pixel of an (n, n) grid, for mesh
        vertices dst given in that grid's pixels."""
        ids, affine = self._triangle_ids(dst, n)
        xs, ys = self._grid(n)
        a = affine[ids]  # (n, n, 6)
        out = np.empty((n, n, 2), np.float32)
        out[..., 0] = a[..., 0] * xs + a[..., 1] * ys + a[..., 2]
        out[..., 1] = a[..., 3] * xs + a[..., 4] * ys + a[..., 5]
        return out

    def source_map(self, params: FrameParams, moved: np.ndarray | None = None) -> np.ndarray:
        """(S, S, 2) source position of every output pixel, continuous pixel coordinates."""
        return self._source_map(self.vertices(params, moved), self.size)

    def render(self, params: FrameParams) -> np.ndarray:
        return self._draw(params, 1)

    def preview(self, params: FrameParams, scale: int) -> np.ndarray:
        """(S // scale, S // scale, 3) uint8: the frame render() draws, sampled once per scale x
        scale block at its centre (where bilinear sampling of a still picture is the block's mean),
        for the sender's keyframe check: at scale 2 about half the cost of a full render."""
        return self._draw(params, scale)

    def _draw(self, params: FrameParams, scale: int) -> np.ndarray:
        if self.rig is None or self._key is None or self._background is None:
            raise RuntimeError("render before the first keyframe")
        n = self.size // scale
        moved = self.moved(params)
        dst = self.vertices(params, moved)
        if n != self.size:
            moved, dst = moved.copy(), dst.copy()
            moved[:, :2] *= n / self.size
            dst[:, :2] *= n / self.size
        src = self._source_map(dst, n)
        if self.device.type != "cpu":
            out = self._sample(src, scale)
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(CPU_RENDER_THREADS)
            try:
                out = self._sample(src, scale)
            finally:
                torch.set_num_threads(threads)
        mouth_source = self._key_lm
        for region, slot in enumerate(params.references[: self.n_regions]):
            ref = self._bank.get(slot) if slot else None
            if ref is not None and ref.covered >> region & 1:  # else (lost, late, never sent): the keyframe's warp
                reference.RegionWarp(self._face_tri, moved, n, region).composite(out, ref)
                if region == mouth.REGION:  # its source decides how dark the mouth's inside is
                    mouth_source = ref.landmarks
        mouth.darken(out, moved, mouth.darkness(moved, mouth_source))
        return out

    def _sample(self, src: np.ndarray, scale: int) -> np.ndarray:
        assert self._key is not None and self._background is not None
        grid = (torch.from_numpy(src).to(self.device) * (2.0 / self.size) - 1.0)[None]
        warped = torch.nn.functional.grid_sample(
            self._key, grid, mode="bilinear", padding_mode="border", align_corners=False
        )[0]
        # The warped person over the still background (where the matte is all 1, just the warp).
        out = torch.lerp(self._small_background(scale), warped[:3], warped[3:])
        # +0.5 then truncation rounds; uint8 before the permute keeps the copy small.
        return out.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()

    def _small_background(self, scale: int) -> torch.Tensor:
        """(3, S // scale, S // scale) the still background, block means (scale 1: itself)."""
        assert self._background is not None
        if scale not in self._backgrounds:
            pooled = torch.nn.functional.avg_pool2d(self._background[None], scale)[0]
            self._backgrounds[scale] = pooled.contiguous()
        return self._backgrounds[scale]
