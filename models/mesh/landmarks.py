"""Keyframe landmarks: the mesh profile's keyframe data, 5 bytes on the wire.

Both sides must build the rig from the same landmarks. The sender finds them on the DECODED
keyframe; the receiver has that same decoded picture, so instead of sending 478 x 3 values
(~2.1 KB zlib-compressed) the sender sends a digest of its quantized copy and the receiver runs
the same still-image face mesh on the same picture and checks the digest. Where they differ (a
different MediaPipe build or CPU), the receiver still renders from its own landmarks, a fraction
of a pixel apart, and counts the mismatch; where it finds no face, the keyframe is refused (the
decoder asks for another).

The full form (the quantized landmarks, zlib) stays decodable: a sender may use it for a receiver
without a face tracker.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from models.face import N_LANDMARKS

LANDMARK_STEP_PX = 0.25  # quantization step; int16 covers +-8192 px
_DTYPE = np.dtype("<i2")
_RAW_BYTES = N_LANDMARKS * 3 * _DTYPE.itemsize
ZLIB_LEVEL = 9
FORM_DIGEST = 1  # b"\x01" + CRC-32 of the quantized landmarks: the receiver recomputes them
FORM_FULL = 2  # b"\x02" + zlib of the quantized landmarks (planar int16)
DIGEST_BYTES = 1 + 4


def _quantized(landmarks: np.ndarray) -> np.ndarray:
    q = np.clip(np.rint(np.asarray(landmarks, np.float64) / LANDMARK_STEP_PX), -32767, 32767)
    return q.astype(_DTYPE)


def quantize(landmarks: np.ndarray) -> np.ndarray:
    """(478, 3) float32: the landmarks on the wire grid (what both sides build the rig from)."""
    return _quantized(landmarks).astype(np.float32) * LANDMARK_STEP_PX


def _crc(landmarks: np.ndarray) -> int:
    return zlib.crc32(_quantized(landmarks).tobytes())


def encode_digest(landmarks: np.ndarray) -> bytes:
    """The short form: the receiver recomputes the landmarks and checks them against this."""
    return bytes([FORM_DIGEST]) + _crc(landmarks).to_bytes(4, "little")


def encode_full(landmarks: np.ndarray) -> bytes:
    """The long form: every quantized landmark. Planar (all x, all y, all z): zlib likes it."""
    return bytes([FORM_FULL]) + zlib.compress(_quantized(landmarks).T.tobytes(), ZLIB_LEVEL)


def decode(data: bytes, size: int, recompute: Callable[[], np.ndarray | None]) -> tuple[np.ndarray, bool]:
    """(478, 3) float32 landmarks on the wire grid and whether they match the sender's exactly.

    recompute() finds the landmarks on the decoded keyframe (called for the short form only).
    Raises ValueError when data cannot be keyframe landmarks of a crop."""
    if not data:
        raise ValueError("keyframe landmarks: missing")
    form, body = data[0], data[1:]
    if form == FORM_DIGEST:
        if len(body) != 4:
            raise ValueError(f"keyframe landmarks: digest must be {DIGEST_BYTES} bytes")
        found = recompute()
        if found is None:
            raise ValueError("keyframe landmarks: no face found in the keyframe")
        return quantize(found), _crc(found) == int.from_bytes(body, "little")
    if form != FORM_FULL:
        raise ValueError(f"keyframe landmarks: unknown form {form}")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(body, _RAW_BYTES)  # bounded: no zip bomb
    except zlib.error:
        raise ValueError("keyframe landmarks: not zlib data") from None
    if len(raw) != _RAW_BYTES or inflate.unconsumed_tail or not inflate.eof:
        raise ValueError(f"keyframe landmarks: expected {_RAW_BYTES} bytes")
    lm = np.frombuffer(raw, dtype=_DTYPE).reshape(3, N_LANDMARKS).T.astype(np.float32) * LANDMARK_STEP_PX
    if np.any(lm[:, :2] < -size) or np.any(lm[:, :2] > 2 * size):
        raise ValueError("keyframe landmarks: outside the crop")
    return lm, True
