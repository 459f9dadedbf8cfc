"""PARAMS messages of wire format v2: three fixed bytes, then the entropy-coded frames.

    byte 0     0b01KKKKN0   01: a v2 PARAMS message; KKKK: keyframe id mod 16; N: no face (no values)
    bytes 1-2  capture time of the first frame, ms modulo 2**16, big-endian
    bytes 3-   range-coded (codec.entropy.Coder): frame count, time offsets of later frames, values

The other messages (header, keyframe, control) stay msgpack arrays, which start with 0x90-0x9F, so
the first byte tells them apart. No sequence number: the capture time orders packets and the
receiver unwraps it against the newest one it accepted; the keyframe id is only compared with the
keyframes the receiver holds, which are never 16 keyframes (8 s at the refresh rate limit) apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codec.entropy import Coder, EntropyError

TAG_MASK, TAG = 0xC0, 0x40
NO_FACE_BIT = 0x02
RESERVED_BIT = 0x01
KF_MODULO = 16
TIME_MODULO = 1 << 16
FIXED_BYTES = 3
MAX_BYTES = 512  # MAX_BATCH frames of up to 192 values at a few bits each, with room


class PacketError(ValueError):
    """Bytes that are not a v2 PARAMS message; the message is one line for the user."""


@dataclass(frozen=True)
class ParamsMessage:
    """Quantized motion of 1..entropy.MAX_BATCH consecutive frames (none when no_face)."""

    capture_ms: int
    """Sender capture time of the first frame, ms (modulo 2**16 on the wire)."""
    kf_id: int
    """Keyframe the values are relative to (modulo 16 on the wire)."""
    no_face: bool = False
    """The sender sees no usable face: no values, the receiver holds and fades."""
    frames: tuple[np.ndarray, ...] = ()
    """Per frame, the int quantized values, pose first."""
    offsets_ms: tuple[int, ...] = ()
    """Per frame, its capture time minus the first frame's (0 for the first)."""
    body: bytes = field(default=b"", compare=False)
    """The coded part as received (decoded into frames only with the session's coder)."""


def is_params(data: bytes) -> bool:
    return len(data) > 0 and data[0] & TAG_MASK == TAG


def encode(msg: ParamsMessage, coder: Coder | None) -> bytes:
    b0 = TAG | (msg.kf_id % KF_MODULO) << 2 | (NO_FACE_BIT if msg.no_face else 0)
    head = bytes([b0]) + (msg.capture_ms % TIME_MODULO).to_bytes(2, "big")
    if msg.no_face:
        return head
    if coder is None:
        raise ValueError("params with values need the session's coder")
    offsets = list(msg.offsets_ms) if msg.offsets_ms else [0] * len(msg.frames)
    return head + coder.encode(list(msg.frames), offsets)


def decode(data: bytes, coder: Coder | None) -> ParamsMessage:
    """Parse one v2 PARAMS message; with coder None the frames stay undecoded (body)."""
    if not is_params(data):
        raise PacketError("malformed packet: not a params message")
    if len(data) > MAX_BYTES:
        raise PacketError(f"packet too large: {len(data)} bytes (limit {MAX_BYTES})")
    if len(data) < FIXED_BYTES:
        raise PacketError("malformed packet: params truncated")
    b0 = data[0]
    if b0 & RESERVED_BIT:
        raise PacketError("malformed packet: params reserved bit set")
    kf, no_face = (b0 >> 2) & 0xF, bool(b0 & NO_FACE_BIT)
    t = int.from_bytes(data[1:3], "big")
    body = bytes(data[FIXED_BYTES:])
    if no_face:
        if body:
            raise PacketError("malformed packet: no-face params carry values")
        return ParamsMessage(t, kf, True)
    if not body:
        raise PacketError("malformed packet: params without values")
    if coder is None:
        return ParamsMessage(t, kf, False, body=body)
    try:
        frames, offsets = coder.decode(body)
    except EntropyError as exc:
        raise PacketError(str(exc)) from None
    return ParamsMessage(t, kf, False, tuple(frames), tuple(offsets), body)
