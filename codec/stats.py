"""What the encoder and the decoder count: the statistics of the Encoder/Decoder contract."""

from __future__ import annotations

from dataclasses import dataclass, field

from codec.rate import RateMeter

MAX_TIMING_SAMPLES = 10_000  # per-frame timings kept (~7 min at 25 fps); then the older half goes


def append_capped(samples: list[float], value: float, cap: int = MAX_TIMING_SAMPLES) -> None:
    """Append, keeping at most `cap` recent samples: a call may last hours."""
    samples.append(value)
    if len(samples) > cap:
        del samples[: len(samples) - cap // 2]


@dataclass
class EncoderStats:
    """What the encoder did so far."""

    frames: int = 0
    """Frames given to encode()."""
    params_sent: int = 0
    """Frames with a face sent in PARAMS messages (several may share one message)."""
    no_face_frames: int = 0
    """Frames without a usable face."""
    keyframes: int = 0
    """Keyframes sent."""
    held_frames: int = 0
    """Frames not sent because the warp could not show them (turned too far, values out of range):
    the receiver holds its last frame until the refreshed keyframe arrives."""
    error_refreshes: int = 0
    """Keyframes sent because the rendering error the sender measured stayed high (codec.refresh)."""
    references: int = 0
    """Reference pictures sent (codec.bank)."""
    reference_bytes: int = 0
    """Their payload bytes (in rate.payload_bytes, not in rate.keyframe_bytes)."""
    header_bytes: int = 0
    """Payload bytes of session headers (in rate.payload_bytes; ~1 KB each with the entropy model)."""
    rate: RateMeter = field(default_factory=RateMeter)
    """Bytes emitted."""
    estimate_ms: list[float] = field(default_factory=list)
    """Per-frame estimator time (crop + landmarks + fit; recent samples only)."""


@dataclass
class DecoderStats:
    """What the decoder saw."""

    packets: int = 0
    """Messages received, valid or not."""
    bad_packets: int = 0
    """Messages rejected by the wire format (oversize ones included)."""
    oversize: int = 0
    """Messages above wire.MAX_MESSAGE_BYTES, dropped unread."""
    params: int = 0
    """Valid PARAMS messages (each carries one or more frames)."""
    keyframe_pictures: int = 0
    """Renders that showed a new keyframe's own picture, before its first parameters were due (in rendered)."""
    frames_received: int = 0
    """Frames in valid PARAMS messages (a no-face message counts as one)."""
    stale: int = 0
    """PARAMS messages older than (or as old as) one already accepted: reordered or duplicated."""
    superseded: int = 0
    """Frames replaced by a newer one before they were rendered (newest wins)."""
    no_keyframe: int = 0
    """PARAMS for a keyframe the receiver does not have."""
    expected: int = 0
    """Frames the sender captured over the span of PARAMS seen (capture times at the header's frame
    rate): what a lossless link would have shown."""
    rendered: int = 0
    """Frames rendered."""
    keyframes: int = 0
    """Keyframes applied."""
    references: int = 0
    """Reference pictures applied (codec.bank)."""
    reference_misses: int = 0
    """Frame regions that named a reference this receiver does not hold (drawn from the keyframe)."""
    keyframe_requests: int = 0
    """Keyframe requests sent."""
    rate: RateMeter = field(default_factory=RateMeter)
    """Bytes received."""
    render_ms: list[float] = field(default_factory=list)
    """Per-frame render time (recent samples only, see append_capped)."""
    latency_ms: list[float] = field(default_factory=list)
    """Capture-to-render time (valid where sender and receiver clocks agree; recent samples only)."""
    last_error: str = ""
    """The last rejected packet's reason."""
