"""The live status line and the end-of-call summary (--stats FILE.json)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from codec.rate import RateMeter
from codec.stats import DecoderStats, EncoderStats
from peer.wirecount import WireCount

STATUS_INTERVAL_S = 1.0


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class StatusLine:
    """Prints 'fps | payload kbit/s | wire up/down kbit/s | ...' about once a second.

    Payload is what the codec emitted (this side: sent; receiver: received); wire is what this
    side's sockets sent (up) and received (down), IP and UDP headers included."""

    def __init__(self, role: str, enabled: bool = True) -> None:
        self.role, self.enabled = role, enabled
        self._t = time.monotonic()
        self._frames = 0
        self._payload = 0
        self._tx = self._rx = 0
        self._shown = False

    def update(self, frames: int, rate: RateMeter, wire: WireCount, extra: str = "") -> str | None:
        """Returns the line when it was due (printed or not), None otherwise."""
        now = time.monotonic()
        dt = now - self._t
        if dt < STATUS_INTERVAL_S:
            return None
        tx, rx = wire.ip_bytes("tx"), wire.ip_bytes("rx")
        if frames < self._frames or rate.payload_bytes < self._payload or tx < self._tx or rx < self._rx:
            self._frames = self._payload = self._tx = self._rx = 0  # a new call: new counters
        fps = (frames - self._frames) / dt
        payload = (rate.payload_bytes - self._payload) * 8 / dt / 1000
        up, down = (tx - self._tx) * 8 / dt / 1000, (rx - self._rx) * 8 / dt / 1000
        self._t, self._frames, self._payload, self._tx, self._rx = now, frames, rate.payload_bytes, tx, rx
        line = (
            f"[{self.role}] {fps:5.1f} fps | payload {payload:6.2f} kbit/s | "
            f"wire up {up:6.2f} down {down:6.2f} kbit/s{extra}"
        )
        if self.enabled:
            sys.stdout.write("\r" + line.ljust(100) if sys.stdout.isatty() else line + "\n")
            sys.stdout.flush()
            self._shown = True
        return line

    def message(self, text: str) -> None:
        """A one-line event (face lost, keyframe...), printed on its own line."""
        if self.enabled:
            sys.stdout.write(("\n" if self._shown and sys.stdout.isatty() else "") + f"[{self.role}] {text}\n")
            sys.stdout.flush()
            self._shown = False


def wire_summary(w: WireCount, duration_s: float) -> dict:
    """Measured socket figures of one call, both directions; kbit/s include IP and UDP headers."""
    per_s = 1 / duration_s if duration_s > 0 else 0.0
    tx, rx = w.ip_bytes("tx"), w.ip_bytes("rx")
    return {
        "wire_bytes": tx + rx,
        "wire_tx_bytes": tx,
        "wire_rx_bytes": rx,
        "wire_tx_packets": w.tx_packets,
        "wire_rx_packets": w.rx_packets,
        "wire_kbps": (tx + rx) * 8 * per_s / 1000 if per_s else None,
        "wire_tx_kbps": tx * 8 * per_s / 1000 if per_s else None,
        "wire_rx_kbps": rx * 8 * per_s / 1000 if per_s else None,
        "wire_tx_packets_per_s": w.tx_packets * per_s if per_s else None,
        "wire_rx_packets_per_s": w.rx_packets * per_s if per_s else None,
    }


def sender_summary(s: EncoderStats, duration_s: float, frames_sent: int, wire: WireCount | None = None) -> dict:
    return {
        "role": "send",
        "frames": s.frames,
        "frames_sent": frames_sent,
        "keyframes": s.keyframes,
        "no_face_frames": s.no_face_frames,
        "payload_bytes": s.rate.payload_bytes,
        "keyframe_bytes": s.rate.keyframe_bytes,
        "references": s.references,
        "reference_bytes": s.reference_bytes,
        "duration_s": duration_s,
        # the parameter stream alone: keyframes, reference pictures and session headers left out
        "payload_bytes_per_frame": _per_frame(
            s.rate.payload_bytes - s.rate.keyframe_bytes - s.reference_bytes - s.header_bytes, s.params_sent
        ),
        "estimate_ms_p50": percentile(s.estimate_ms, 50),
        "estimate_ms_p95": percentile(s.estimate_ms, 95),
        **_kbps(s.rate, duration_s),
        **wire_summary(wire or WireCount(), duration_s),
    }


def receiver_summary(s: DecoderStats, duration_s: float, wire: WireCount | None = None) -> dict:
    frames_expected = s.expected
    return {
        "role": "recv",
        "frames": s.frames_received,
        "params_messages": s.params,
        "frames_expected": frames_expected,
        "frames_rendered": s.rendered,
        "frames_dropped": max(0, frames_expected - s.rendered),
        "frames_superseded": s.superseded,
        "frames_stale": s.stale,
        "bad_packets": s.bad_packets,
        "keyframes": s.keyframes,
        "keyframe_requests": s.keyframe_requests,
        "references": s.references,
        "reference_misses": s.reference_misses,
        "payload_bytes": s.rate.payload_bytes,
        "keyframe_bytes": s.rate.keyframe_bytes,
        "duration_s": duration_s,
        "latency_ms_p50": percentile(s.latency_ms, 50),
        "latency_ms_p95": percentile(s.latency_ms, 95),
        "render_ms_p50": percentile(s.render_ms, 50),
        "render_ms_p95": percentile(s.render_ms, 95),
        **_kbps(s.rate, duration_s),
        **wire_summary(wire or WireCount(), duration_s),
    }


def _per_frame(total: int, n: int) -> float | None:
    return total / n if n else None


def _kbps(rate: RateMeter, duration_s: float) -> dict:
    """Payload rates, and the codec's own estimate of one direction's wire rate (payload + framing)."""
    if duration_s <= 0:
        return {"payload_kbps": None, "wire_estimate_kbps": None, "params_payload_kbps": None}
    return {
        "payload_kbps": rate.payload_bytes * 8 / duration_s / 1000,
        "wire_estimate_kbps": rate.wire_bytes * 8 / duration_s / 1000,
        "params_payload_kbps": (rate.payload_bytes - rate.keyframe_bytes) * 8 / duration_s / 1000,
    }


def write_json(path: Path | None, summary: dict) -> None:
    """Write atomically (a temporary file renamed over the target): a kill never leaves half a file."""
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(path)


def session_summary(calls: list[dict]) -> dict:
    """The receiver's --stats: the last call's figures at the top level, and every call under "calls"."""
    return {**(calls[-1] if calls else {}), "calls": calls}
