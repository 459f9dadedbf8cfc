"""Quantization of the per-frame motion parameters.

Every profile describes a frame relative to the current keyframe with the same layout
(models.types.FrameParams): a head pose (rotation, translation, scale) and a profile-specific
expression vector. The types and step sizes are defined next to the profiles that produce
them and re-exported here, so codec callers need one import.
"""

from __future__ import annotations

import numpy as np

from models.types import (
    ANGLE_STEP_DEG,
    EXPRESSION_STEP,
    INT8_MAX,
    LOG_SCALE_STEP,
    POSE_SIZE,
    TRANSLATION_STEP,
    FrameParams,
    QuantSpec,
)

__all__ = [
    "ANGLE_STEP_DEG",
    "EXPRESSION_STEP",
    "INT8_MAX",
    "LOG_SCALE_STEP",
    "POSE_SIZE",
    "TRANSLATION_STEP",
    "FrameParams",
    "QuantSpec",
    "dequantize",
    "in_range",
    "quantize",
]


def quantize(params: FrameParams, spec: QuantSpec) -> np.ndarray:
    """Round to the nearest step, clipped to int8. Returns int8 values, pose first."""
    v = params.vector()
    q = np.rint(v / spec.steps(len(v) - POSE_SIZE))
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)


def dequantize(q: np.ndarray, spec: QuantSpec) -> FrameParams:
    q = np.asarray(q, dtype=np.int8)
    return FrameParams.from_vector(q.astype(np.float64) * spec.steps(len(q) - POSE_SIZE))


def in_range(params: FrameParams, spec: QuantSpec) -> bool:
    """False when some value would be clipped: the keyframe no longer fits this frame."""
    v = params.vector()
    return bool(np.all(np.abs(v / spec.steps(len(v) - POSE_SIZE)) <= INT8_MAX + 0.5))
