"""Rate accounting: payload bytes (what the codec emits) and wire bytes (what the network carries).

Per-message overheads, IPv4, no IP options, one message per packet (aiortc sends each
data-channel message in its own SCTP packet unless they queue up; this is the upper bound):
"""

from __future__ import annotations

from dataclasses import dataclass

IPV4_UDP_BYTES = 20 + 8
DTLS_RECORD_BYTES = 13 + 8 + 16  # record header + AES-GCM explicit nonce + tag
SCTP_COMMON_HEADER_BYTES = 12  # one per SCTP packet
SCTP_DATA_CHUNK_HEADER_BYTES = 16  # one per message (DATA chunk: type, flags, length, TSN, stream, PPID)
SRTP_RTP_BYTES = 12 + 10  # RTP header + SRTP auth tag (HMAC-SHA1-80)
RTP_OVERHEAD_BYTES = IPV4_UDP_BYTES + SRTP_RTP_BYTES
RTP_MAX_PAYLOAD_BYTES = 1200  # typical WebRTC MTU budget for one RTP payload
SCTP_PAD = 4  # DATA chunks are padded to a multiple of 4 bytes


def data_channel_wire_bytes(payload: int) -> int:
    """Bytes on the wire for one data-channel message of `payload` bytes."""
    chunk = SCTP_DATA_CHUNK_HEADER_BYTES + payload
    padded = -(-chunk // SCTP_PAD) * SCTP_PAD  # the chunk is padded, not the common header
    return IPV4_UDP_BYTES + DTLS_RECORD_BYTES + SCTP_COMMON_HEADER_BYTES + padded


def rtp_wire_bytes(frame_payload: int) -> int:
    """Bytes on the wire for one video frame of `frame_payload` bytes (FU-A fragments)."""
    n = max(1, -(-frame_payload // RTP_MAX_PAYLOAD_BYTES))
    fu_headers = 2 * n if n > 1 else 0
    return frame_payload + fu_headers + n * RTP_OVERHEAD_BYTES


@dataclass
class RateMeter:
    """Running totals of what a codec emitted."""

    payload_bytes: int = 0
    """Codec bytes of every message."""
    wire_bytes: int = 0
    """payload_bytes plus the data-channel overhead of each message."""
    keyframe_bytes: int = 0
    """Payload bytes of keyframe messages (also counted in payload_bytes)."""
    messages: int = 0
    """Number of messages."""

    def add(self, payload: int, keyframe: bool = False) -> None:
        self.payload_bytes += payload
        self.wire_bytes += data_channel_wire_bytes(payload)
        self.keyframe_bytes += payload if keyframe else 0
        self.messages += 1
