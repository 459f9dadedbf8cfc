"""The contracts: what every caller of the codec uses, and what every profile implements.

Encoder/Decoder move frames to packets and back; the peer (over WebRTC), the in-memory driver
(codec.driver: benchmarks and tests) and nothing else drive them, through these members only.
Estimator/Renderer (models.types) are what a profile plugs in; re-exported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from codec import wire
from codec.stats import DecoderStats, EncoderStats
from models.face import CropBox
from models.types import Estimator, NoFaceError, Renderer

__all__ = ["Decoder", "Encoder", "Estimator", "NoFaceError", "Packet", "Renderer"]


@dataclass(frozen=True)
class Packet:
    """Bytes for the peer, tagged with the channel they need."""

    data: bytes
    """One wire message (codec.wire)."""
    reliable: bool
    """True: reliable ordered channel (header, keyframe, control). False: unordered, lossy."""
    frames: int = 0
    """Captured frames this message stands for (PARAMS: the frames it carries, or 1 without a face)."""


class Encoder(ABC):
    """Sender side: RGB frames (H, W, 3) uint8 in, packets out."""

    stats: EncoderStats
    """What the encoder did so far (frames, keyframes, bytes, estimator time)."""
    events: list[str]
    """Human-readable events (face lost, keyframe sent...) since the caller last cleared the list."""
    last_crop: np.ndarray | None
    """The face crop of the last encoded frame (what the receiver should show), None before one."""
    box: CropBox | None
    """Where the crop is taken in the input frame; None until a face is found."""

    @abstractmethod
    def encode(self, frame: np.ndarray, capture_ms: int) -> list[Packet]:
        """Packets for one captured frame (header and keyframe first when they are due)."""

    @abstractmethod
    def receive(self, data: bytes) -> list[Packet]:
        """Handle a control message from the receiver; returns packets to send back."""

    @abstractmethod
    def flush(self) -> list[Packet]:
        """Packets for frames still waiting to share a message with the next one (frames per message
        above 1); call when the source ends or pauses."""

    @abstractmethod
    def restart(self) -> None:
        """A new receiver (or a new connection): send the header and a keyframe again."""

    @abstractmethod
    def set_epoch(self, epoch_ms: int) -> None:
        """Sender wall clock (Unix ms) at capture_ms = 0, announced in the header: the receiver's
        latency figure. Set it when capture_ms starts counting (the call connects)."""

    @property
    @abstractmethod
    def face_lost(self) -> bool:
        """True while the encoder sees no usable face (what Control.FACE_LOST announces)."""

    @abstractmethod
    def close(self) -> None:
        """Release the face tracker and the estimator; the encoder is not used after."""


class Decoder(ABC):
    """Receiver side: packets in, RGB frames (size, size, 3) uint8 out.

    receive() and poll() are cheap and run on the network loop; render() is the heavy part and may
    run on another thread. Render when pending() or fading() says something changed."""

    stats: DecoderStats
    """What the decoder saw (packets, rejects, renders, bytes, latency)."""
    header: wire.Header | None
    """The caller's session header; None before one arrived."""
    kf_id: int | None
    """Keyframe in use by the renderer; None before the first one."""
    bye: bool
    """The sender ended the call."""
    error: str | None
    """Why this call cannot be rendered here (e.g. the header's profile does not run); None while fine."""

    @abstractmethod
    def receive(self, data: bytes) -> list[Packet]:
        """Parse one packet and update state; returns control packets for the sender."""

    @abstractmethod
    def poll(self) -> list[Packet]:
        """Call now and then (every frame period or so): control packets due without any packet
        arriving, e.g. asking again for a keyframe while none is usable."""

    @abstractmethod
    def pending(self) -> bool:
        """True when render() would show something new (keyframe, parameters, view, face lost)."""

    @abstractmethod
    def fading(self) -> bool:
        """True while the no-face fade is under way: render() now and then to animate it."""

    @abstractmethod
    def render(self) -> np.ndarray | None:
        """The frame for the newest parameters due now, or None before the first keyframe."""

    @abstractmethod
    def next_due(self) -> float | None:
        """Seconds until a frame that arrived early (the later frames of a message are shown one
        frame period apart) becomes due; None when none waits. Wake render() then."""

    @abstractmethod
    def set_view(self, yaw: float, pitch: float, roll: float) -> None:
        """Free view: degrees added to the sender's head rotation; the next render() uses it."""

    @property
    @abstractmethod
    def latest_capture_ms(self) -> int | None:
        """Sender capture time of the newest parameters held (which frame render() shows); None before any."""

    @abstractmethod
    def fail(self, reason: str) -> list[Packet]:
        """This call cannot go on here (the caller's code raised): record `reason` in `error` and
        return the BYE for the sender."""
