"""The live status line and the end-of-call summary (--stats FILE.json)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from codec.rate import RateMeter
from codec.stats import DecoderStats, EncoderStats

STATUS_INTERVAL_S = 1.0


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class StatusLine:
    """Prints 'fps | payload kbit/s | wire kbit/s | ...' about once a second."""

    def __init__(self, role: str, enabled: bool = True) -> None:
        self.role, self.enabled = role, enabled
        self._t = time.monotonic()
        self._frames = 0
        self._payload = 0
        self._wire = 0
        self._shown = False

    def update(self, frames: int, rate: RateMeter, extra: str = "") -> None:
        now = time.monotonic()
        dt = now - self._t
        if dt < STATUS_INTERVAL_S:
            return
        if frames < self._frames or rate.payload_bytes < self._payload:  # a new call: new counters
            self._frames = self._payload = self._wire = 0
        fps = (frames - self._frames) / dt
        payload = (rate.payload_bytes - self._payload) * 8 / dt / 1000
        wire = (rate.wire_bytes - self._wire) * 8 / dt / 1000
        self._t, self._frames, self._payload, self._wire = now, frames, rate.payload_bytes, rate.wire_bytes
        if self.enabled:
            line = f"[{self.role}] {fps:5.1f} fps | payload {payload:6.2f} kbit/s | wire {wire:6.2f} kbit/s{extra}"
            sys.stdout.write("\r" + line.ljust(100) if sys.stdout.isatty() else line + "\n")
            sys.stdout.flush()
            self._shown = True

    def message(self, text: str) -> None:
        """A one-line event (face lost, keyframe...), printed on its own line."""
        if self.enabled:
            sys.stdout.write(("\n" if self._shown and sys.stdout.isatty() else "") + f"[{self.role}] {text}\n")
            sys.stdout.flush()
            self._shown = False


def sender_summary(s: EncoderStats, duration_s: float, frames_sent: int) -> dict:
    return {
        "role": "send",
        "frames": s.frames,
        "frames_sent": frames_sent,
        "keyframes": s.keyframes,
        "no_face_frames": s.no_face_frames,
        "payload_bytes": s.rate.payload_bytes,
        "wire_bytes": s.rate.wire_bytes,
        "keyframe_bytes": s.rate.keyframe_bytes,
        "duration_s": duration_s,
        "payload_bytes_per_frame": _per_frame(s.rate.payload_bytes - s.rate.keyframe_bytes, s.params_sent),
        "estimate_ms_p50": percentile(s.estimate_ms, 50),
        "estimate_ms_p95": percentile(s.estimate_ms, 95),
        **_kbps(s.rate, duration_s),
    }


def receiver_summary(s: DecoderStats, duration_s: float) -> dict:
    frames_expected = s.expected
    return {
        "role": "recv",
        "frames": s.params,
        "frames_expected": frames_expected,
        "frames_rendered": s.rendered,
        "frames_dropped": max(0, frames_expected - s.rendered),
        "frames_superseded": s.superseded,
        "frames_stale": s.stale,
        "bad_packets": s.bad_packets,
        "keyframes": s.keyframes,
        "keyframe_requests": s.keyframe_requests,
        "payload_bytes": s.rate.payload_bytes,
        "wire_bytes": s.rate.wire_bytes,
        "keyframe_bytes": s.rate.keyframe_bytes,
        "duration_s": duration_s,
        "latency_ms_p50": percentile(s.latency_ms, 50),
        "latency_ms_p95": percentile(s.latency_ms, 95),
        "render_ms_p50": percentile(s.render_ms, 50),
        "render_ms_p95": percentile(s.render_ms, 95),
        **_kbps(s.rate, duration_s),
    }


def _per_frame(total: int, n: int) -> float | None:
    return total / n if n else None


def _kbps(rate: RateMeter, duration_s: float) -> dict:
    if duration_s <= 0:
        return {"payload_kbps": None, "wire_kbps": None, "params_payload_kbps": None}
    return {
        "payload_kbps": rate.payload_bytes * 8 / duration_s / 1000,
        "wire_kbps": rate.wire_bytes * 8 / duration_s / 1000,
        "params_payload_kbps": (rate.payload_bytes - rate.keyframe_bytes) * 8 / duration_s / 1000,
    }


def write_json(path: Path | None, summary: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(summary, indent=2) + "\n")
