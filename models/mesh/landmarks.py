"""Keyframe landmarks on the wire: the mesh profile's keyframe data.

The sender finds the landmarks on the DECODED keyframe and sends them, quantized, with it;
both sides then use the same quantized copy, so their bases and poses agree bit for bit
without the receiver needing a face tracker.
"""

from __future__ import annotations

import numpy as np

from models.face import N_LANDMARKS

LANDMARK_STEP_PX = 0.25  # quantization step; int16 covers +-8192 px
_DTYPE = np.dtype("<i2")


def encode(landmarks: np.ndarray) -> bytes:
    q = np.clip(np.rint(np.asarray(landmarks, np.float64) / LANDMARK_STEP_PX), -32767, 32767)
    return q.astype(_DTYPE).tobytes()


def decode(data: bytes, size: int) -> np.ndarray:
    """(468, 3) float32; raises ValueError when data cannot be keyframe landmarks of a crop."""
    if len(data) != N_LANDMARKS * 3 * _DTYPE.itemsize:
        raise ValueError(f"keyframe landmarks: expected {N_LANDMARKS * 3 * 2} bytes, got {len(data)}")
    lm = np.frombuffer(data, dtype=_DTYPE).reshape(N_LANDMARKS, 3).astype(np.float32) * LANDMARK_STEP_PX
    if np.any(lm[:, :2] < -size) or np.any(lm[:, :2] > 2 * size):
        raise ValueError("keyframe landmarks: outside the crop")
    return lm


def roundtrip(landmarks: np.ndarray) -> np.ndarray:
    """What the receiver will see: the sender uses this copy too."""
    return decode(encode(landmarks), 1 << 13)
