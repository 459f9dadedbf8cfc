"""Rate accounting of one encoded clip: payload vs wire bits, keyframe bits on their own.

Payload is what the codec emits. Wire adds the per-message transport overhead from codec.rate:
data-channel (SCTP/DTLS/UDP/IPv4) per fvcall message, RTP/SRTP/UDP/IPv4 per conventional video frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from codec.rate import data_channel_wire_bytes, rtp_wire_bytes

BITS_PER_BYTE = 8
BITS_PER_KBIT = 1000


@dataclass(frozen=True)
class Message:
    """One unit the transport carries: a data-channel message (fvcall) or a video frame (RTP)."""

    payload_bytes: int
    keyframe: bool = False
    startup: bool = False
    """Sent once at call start (session header, first keyframe / IDR with its parameter sets)."""


@dataclass(frozen=True)
class RateReport:
    """Rates of one clip, kbit/s over the clip's duration (frames / fps)."""

    duration_s: float
    payload_kbps: float
    """All payload bits, keyframes included (amortized over the clip)."""
    wire_kbps: float
    """payload_kbps plus per-message transport overhead."""
    keyframe_bytes: int
    """Payload bytes of keyframes (also counted in payload_kbps)."""
    keyframe_kbps_amortized: float
    """keyframe_bytes spread over the clip."""
    stream_payload_kbps: float
    """Payload without keyframes: the steady-state rate of a long call."""
    stream_wire_kbps: float
    """Wire bits of the non-keyframe messages."""
    messages: int
    startup_bytes: int = 0
    """Payload bytes sent once at call start (also in payload_kbps)."""
    startup_wire_bytes: int = 0
    """Their wire bytes."""

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def kbps(n_bytes: float, duration_s: float) -> float:
    return n_bytes * BITS_PER_BYTE / BITS_PER_KBIT / duration_s


def account(messages: Sequence[Message], n_frames: int, fps: float, wire_bytes: Callable[[int], int]) -> RateReport:
    """Exact totals of a message list; duration = n_frames / fps (the clip, not the send times)."""
    if n_frames <= 0 or fps <= 0:
        raise ValueError("need at least one frame and a positive frame rate")
    duration = n_frames / fps
    payload = sum(m.payload_bytes for m in messages)
    wire = sum(wire_bytes(m.payload_bytes) for m in messages)
    kf = sum(m.payload_bytes for m in messages if m.keyframe)
    kf_wire = sum(wire_bytes(m.payload_bytes) for m in messages if m.keyframe)
    start = sum(m.payload_bytes for m in messages if m.startup)
    start_wire = sum(wire_bytes(m.payload_bytes) for m in messages if m.startup)
    return RateReport(
        duration,
        kbps(payload, duration),
        kbps(wire, duration),
        kf,
        kbps(kf, duration),
        kbps(payload - kf, duration),
        kbps(wire - kf_wire, duration),
        len(messages),
        start,
        start_wire,
    )


CALL_SECONDS = (10.0, 60.0, 600.0)  # call lengths the ratios are reported for; 60 s leads


def call_kbps(rate: dict[str, float], call_s: float, wire: bool = False) -> float:
    """kbit/s of a call lasting call_s seconds: the start-up bytes once, plus everything else at the rate
    measured over the clip (later keyframes, references and re-centring included):

        R(T) = (B - B0) * 8 / 1000 / D + B0 * 8 / 1000 / T

    B: bytes over the clip (payload or wire), B0: start-up bytes, D: clip duration (s), T: call length (s)."""
    total = rate["wire_kbps" if wire else "payload_kbps"] * rate["duration_s"] * BITS_PER_KBIT / BITS_PER_BYTE
    start = float(rate.get("startup_wire_bytes" if wire else "startup_bytes", 0))
    return kbps(total - start, rate["duration_s"]) + kbps(start, call_s)


def data_channel_rate(messages: Sequence[Message], n_frames: int, fps: float) -> RateReport:
    """fvcall: every message is one data-channel message."""
    return account(messages, n_frames, fps, data_channel_wire_bytes)


def rtp_rate(frames: Sequence[Message], n_frames: int, fps: float) -> RateReport:
    """Conventional video: every coded frame goes out as RTP packets (FU-A fragmented)."""
    return account(frames, n_frames, fps, rtp_wire_bytes)
