"""The fv2v codec profile: Estimator (H, Δ at the sender) and Renderer (F, L, H, Δ per keyframe, then
M, G per frame at the receiver) on top of model.py.

Wire mapping (models.types.FrameParams): yaw, pitch, roll = H's absolute angles in degrees; tx, ty = H's
translation in crop widths (normalized [-1, 1] coordinates x 0.5); log_scale = 0; expression = the K x 3
deformations δ in crop widths, with H's depth translation t_z folded into every δ's z (exact, since
x = R x_c + t + δ). Values are clipped to what the int8 quantizer of the session's QuantSpec can carry
(a coarser --quant-scale carries larger values).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.fv2v import weights as W
from models.fv2v.model import KeyframeCache, Runtime
from models.fv2v.transform import CROP_WIDTHS_PER_UNIT
from models.fv2v.weights import MissingWeightsError
from models.types import INT8_MAX, FrameParams, ProfileError, QuantSpec

__all__ = [
    "Fv2vEstimator",
    "Fv2vRenderer",
    "MissingWeightsError",
    "make_estimator",
    "make_renderer",
    "model_id",
    "preload",
]


def model_id(weights_path: str | Path | None) -> str:
    """Id of the weights for the session header: both ends must run the same network."""
    return W.model_id(weights_path)


def basis_id(model: str = "") -> str:
    """Keypoint offsets of the network: no fitted entropy model yet (the generic one is used)."""
    return "fv2v-kp"


def preload() -> None:
    """Nothing to load before a call: the weights come with the caller's header."""


def _check_size(part: Fv2vEstimator | Fv2vRenderer, size: int) -> None:
    """The weights fix the resolution: refuse a session whose size they were not trained for."""
    trained = part.model.cfg.image_size
    if trained != size:
        raise ProfileError(f"fv2v weights are for {trained}x{trained}, the call is {size}x{size}: use --size {trained}")


def make_estimator(size: int, weights: Path | None, quant: QuantSpec) -> Fv2vEstimator:
    est = Fv2vEstimator(weights, quant=quant)
    _check_size(est, size)
    return est


def make_renderer(size: int, weights: Path | None) -> Fv2vRenderer:
    ren = Fv2vRenderer(weights)
    _check_size(ren, size)
    return ren


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected an RGB uint8 image (H, W, 3)")


class Fv2vEstimator:
    """Sender: face crop -> FrameParams with H's pose and Δ's deformations."""

    def __init__(
        self, weights: str | Path | None, runtime: Runtime | None = None, quant: QuantSpec | None = None
    ) -> None:
        self.model = W.load(weights, runtime=runtime)
        self.n_expr = 3 * self.model.cfg.num_kp
        self.quant = quant or QuantSpec()
        """The session's steps: what the int8 quantizer can carry bounds the values."""

    def set_keyframe(self, image: np.ndarray) -> bytes:
        """fv2v sends no profile data: the receiver runs F, L, H, Δ on the decoded keyframe itself."""
        _check_image(image)
        return b""

    def estimate(self, crop: np.ndarray) -> FrameParams | None:
        """Absolute pose and deformations of one crop; None when the networks give non-finite values."""
        _check_image(crop)
        angles, t, delta = (v[0].cpu().numpy().astype(np.float64) for v in self.model.estimate(crop))
        if not (np.isfinite(angles).all() and np.isfinite(t).all() and np.isfinite(delta).all()):
            return None
        delta = delta.copy()
        delta[:, 2] += t[2]  # t_z folded into the deformations: the wire has no depth translation
        q = self.quant
        max_angle, max_t, max_expr = (step * INT8_MAX for step in (q.angle_step, q.translation_step, q.expression_step))
        angles = np.clip(angles, -max_angle, max_angle)
        txy = np.clip(t[:2] * CROP_WIDTHS_PER_UNIT, -max_t, max_t)
        expr = np.clip(delta.reshape(-1) * CROP_WIDTHS_PER_UNIT, -max_expr, max_expr)
        return FrameParams(
            yaw=float(angles[0]),
            pitch=float(angles[1]),
            roll=float(angles[2]),
            tx=float(txy[0]),
            ty=float(txy[1]),
            log_scale=0.0,
            expression=expr.astype(np.float32),
        )

    def close(self) -> None:
        """Nothing native to release: the networks go with the object."""


class Fv2vRenderer:
    """Receiver: decoded keyframe -> cached f_s and x_c; FrameParams -> frame via M and G."""

    def __init__(self, weights: str | Path | None, runtime: Runtime | None = None) -> None:
        self.model = W.load(weights, runtime=runtime)
        self.n_expr = 3 * self.model.cfg.num_kp
        self._cache: KeyframeCache | None = None
        self._size = self.model.cfg.image_size

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        if aux:
            raise ValueError(f"fv2v keyframes carry no profile data, got {len(aux)} bytes")
        _check_image(image)
        self._cache = self.model.keyframe(image)
        self._size = image.shape[0]

    def render(self, params: FrameParams) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("fv2v renderer: render() before set_keyframe()")
        expr = np.asarray(params.expression, dtype=np.float32)
        if expr.size != self.n_expr:
            raise ValueError(f"fv2v expects {self.n_expr} expression values, got {expr.size}")
        unit = 1.0 / CROP_WIDTHS_PER_UNIT
        pose = np.array(
            [params.yaw, params.pitch, params.roll, params.tx * unit, params.ty * unit, 0.0], dtype=np.float32
        )
        out = self.model.render(self._cache, pose, expr.reshape(-1, 3) * unit)
        if out.shape[0] != self._size:
            out = cv2.resize(out, (self._size, self._size), interpolation=cv2.INTER_LINEAR)
        return out
