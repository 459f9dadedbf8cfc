"""Keyframe landmarks on the wire: the mesh profile's keyframe data.

The sender finds the landmarks on the DECODED keyframe and sends them, quantized, with it;
both sides then use the same quantized copy, so their bases and poses agree bit for bit
without the receiver needing a face tracker. Two forms: shape-coded (models.mesh.shape, ~100
bytes, used whenever the packaged face-shape model fits the landmark count) and the older
zlib-packed coordinates on a 0.25 px grid (~2 KB), which every receiver still reads.
"""

from __future__ import annotations

import zlib

import numpy as np

from models.face import N_LANDMARKS
from models.mesh import shape

LANDMARK_STEP_PX = 0.25  # quantization step; int16 covers +-8192 px
_DTYPE = np.dtype("<i2")
_RAW_BYTES = N_LANDMARKS * 3 * _DTYPE.itemsize
ZLIB_LEVEL = 9  # ~2.8 KB -> ~2.0 KB, once per keyframe


def encode(landmarks: np.ndarray, size: int | None = None) -> bytes:
    """Shape-coded when size is given and the packaged shape model fits, else zlib-packed."""
    model = shape.shipped()
    if size is not None and model is not None and model.mean.shape == np.shape(landmarks):
        return shape.encode(landmarks, size, model)
    return encode_zlib(landmarks)


def quantize(landmarks: np.ndarray) -> np.ndarray:
    """(478, 3) float32: the landmarks on the zlib form's 0.25 px grid."""
    q = np.clip(np.rint(np.asarray(landmarks, np.float64) / LANDMARK_STEP_PX), -32767, 32767)
    return q.astype(np.float32) * LANDMARK_STEP_PX


def encode_zlib(landmarks: np.ndarray) -> bytes:
    q = np.clip(np.rint(np.asarray(landmarks, np.float64) / LANDMARK_STEP_PX), -32767, 32767)
    # Planar (all x, all y, all z): neighbouring values are alike, which zlib likes.
    return zlib.compress(q.astype(_DTYPE).T.tobytes(), ZLIB_LEVEL)


def decode(data: bytes, size: int) -> np.ndarray:
    """(478, 3) float32; raises ValueError when data cannot be keyframe landmarks of a crop."""
    if data[:1] == bytes([shape.FORMAT]):
        lm = shape.decode(data, size, shape.shipped())
        if lm.shape != (N_LANDMARKS, 3) or not np.all(np.isfinite(lm)):
            raise ValueError("keyframe landmarks: wrong count")
        if np.any(lm[:, :2] < -size) or np.any(lm[:, :2] > 2 * size):
            raise ValueError("keyframe landmarks: outside the crop")
        return lm
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(data, _RAW_BYTES)  # bounded: no zip bomb
    except zlib.error:
        raise ValueError("keyframe landmarks: not zlib data") from None
    if len(raw) != _RAW_BYTES or inflate.unconsumed_tail or not inflate.eof:
        raise ValueError(f"keyframe landmarks: expected {_RAW_BYTES} bytes")
    lm = np.frombuffer(raw, dtype=_DTYPE).reshape(3, N_LANDMARKS).T.astype(np.float32) * LANDMARK_STEP_PX
    if np.any(lm[:, :2] < -size) or np.any(lm[:, :2] > 2 * size):
        raise ValueError("keyframe landmarks: outside the crop")
    return lm
