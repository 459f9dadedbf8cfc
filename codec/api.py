"""The contracts every codec and every profile implements.

Encoder/Decoder move frames to packets and back; the peer (over WebRTC) and the benchmark
(in memory) drive the same pair. Estimator/Renderer are what a profile plugs in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from codec.params import FrameParams


@dataclass(frozen=True)
class Packet:
    """Bytes for the peer, tagged with the channel they need."""

    data: bytes
    """One wire message (codec.wire)."""
    reliable: bool
    """True: reliable ordered channel (header, keyframe, control). False: unordered, lossy."""


class Encoder(ABC):
    """Sender side: RGB frames (H, W, 3) uint8 in, packets out."""

    @abstractmethod
    def encode(self, frame: np.ndarray, capture_ms: int) -> list[Packet]:
        """Packets for one captured frame (a keyframe first when one is due)."""

    @abstractmethod
    def receive(self, data: bytes) -> list[Packet]:
        """Handle a control message from the receiver; returns packets to send back."""


class Decoder(ABC):
    """Receiver side: packets in, RGB frames (size, size, 3) uint8 out."""

    @abstractmethod
    def receive(self, data: bytes) -> list[Packet]:
        """Parse one packet and update state; returns control packets for the sender."""

    @abstractmethod
    def render(self) -> np.ndarray | None:
        """The frame for the newest parameters received, or None before the first keyframe."""


class NoFaceError(RuntimeError):
    """The image has no usable face."""


class Estimator(Protocol):
    """Profile part on the sender: face crop -> motion parameters."""

    n_expr: int
    """Length of the expression vector."""

    def set_keyframe(self, image: np.ndarray) -> bytes:
        """Analyse the DECODED keyframe crop; returns profile data sent with it (may be b'').

        Raises NoFaceError when the keyframe has no usable face."""

    def estimate(self, crop: np.ndarray) -> FrameParams | None:
        """Parameters of one crop relative to the keyframe; None when no face is found."""


class Renderer(Protocol):
    """Profile part on the receiver: keyframe + parameters -> frame."""

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        """Cache what the keyframe gives (decoded crop, and the sender's profile data).

        Raises ValueError when aux is malformed."""

    def render(self, params: FrameParams) -> np.ndarray:
        """RGB uint8 (size, size, 3) for the given parameters."""
