"""Receiver side of fvcall: packets -> frames, newest packet wins.

`receive` is cheap (parse, validate, keep the newest parameters) and runs on the network
loop; `render` is the heavy part and may run on another thread: it applies a pending
keyframe and renders the newest parameters, never a queue of stale ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from codec import keyframe, profiles, wire
from codec.api import Decoder, Packet, Renderer
from codec.params import POSE_SIZE, QuantSpec, dequantize
from codec.stats import DecoderStats, append_capped

KEYFRAME_REQUEST_INTERVAL_S = 0.5  # ask again this often while no usable keyframe arrives
NO_FACE_DIM = 0.6  # brightness of the held frame while the sender sees no face
NO_FACE_FADE_S = 1.0  # seconds to fade to NO_FACE_DIM


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number a comes after b (modulo 2**16)."""
    return 0 < (a - b) % wire.SEQ_MODULO < wire.SEQ_MODULO // 2


def kf_older(a: int, b: int) -> bool:
    """True when keyframe id a was sent before b (modulo 256)."""
    return 0 < (b - a) % wire.KF_MODULO < wire.KF_MODULO // 2


class FaceDecoder(Decoder):
    """Renders the newest parameters against the newest complete keyframe, with the renderer
    the caller's header asks for."""

    def __init__(
        self,
        weights: Path | None = None,
        renderer_factory: Callable[[wire.Header], Renderer] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`renderer_factory` replaces the profile registry (tests); `clock` gives seconds for rate
        limits and fades (a fake one makes in-memory runs reproducible)."""
        self._factory = renderer_factory or (lambda h: profiles.make_renderer(h.profile, h.size, weights, h.model))
        self._clock = clock
        self.stats = DecoderStats()
        self.header: wire.Header | None = None
        self.renderer: Renderer | None = None
        self.kf_id: int | None = None
        """Keyframe in use by the renderer."""
        self._quant = QuantSpec()
        self._assembler = wire.KeyframeAssembler()
        self._pending_kf: tuple[int, np.ndarray, bytes] | None = None
        self._latest: wire.Params | None = None
        self._latest_rendered = True
        self._seq_first: int | None = None
        self._seq_high: int | None = None
        self._last_request = -1e9
        self._no_face_since: float | None = None
        self._frame: np.ndarray | None = None
        self._lock = threading.Lock()
        self.bye = False
        """The sender ended the call."""
        self.error: str | None = None
        """Why this call cannot be rendered here (the header's profile does not run); None while fine."""
        self.face_lost = False
        """The sender says it sees no usable face (Control.FACE_LOST): hold and fade."""
        self.view = (0.0, 0.0, 0.0)
        """Free view: (yaw, pitch, roll) degrees added to the sender's head rotation."""

    # -- network side -------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Packet]:
        self.stats.packets += 1
        if len(data) > wire.MAX_MESSAGE_BYTES:
            self.stats.oversize += 1
            self.stats.bad_packets += 1
            self.stats.last_error = f"packet too large: {len(data)} bytes (limit {wire.MAX_MESSAGE_BYTES})"
            return []
        try:
            msg = wire.decode(data)
        except wire.WireError as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = str(exc)
            return []
        self.stats.rate.add(len(data), isinstance(msg, wire.KeyframeChunk))
        if isinstance(msg, wire.Header):
            return self._on_header(msg)
        if isinstance(msg, wire.ControlMessage) and msg.code == wire.Control.BYE:
            self.bye = True  # also before any header: a caller may hang up before its first frame
            return []
        if self.header is None:
            # Nothing renders before the session header. Parameters without one mean this side
            # started (or restarted) mid-call: ask for everything again.
            return self._request_keyframe() if isinstance(msg, wire.Params) and self.error is None else []
        if isinstance(msg, wire.KeyframeChunk):
            return self._on_chunk(msg)
        if isinstance(msg, wire.Params):
            return self._on_params(msg)
        if msg.code == wire.Control.FACE_LOST:
            with self._lock:
                self.face_lost = msg.arg != 0
                if self._frame is not None:
                    self._latest_rendered = False  # show the hold (or the face) now
        return []

    def _on_header(self, h: wire.Header) -> list[Packet]:
        if h == self.header:
            self._last_request = self._clock()  # a repeated header (answering our request): the keyframe follows
            return []
        try:
            renderer = self._factory(h)
        except Exception as exc:  # profile code: whatever stops it from building means this call cannot render
            reason = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            self.stats.bad_packets += 1
            self.stats.last_error = reason
            return self.fail(reason)
        self.error = None
        with self._lock:
            self.header, self.renderer, self._quant = h, renderer, QuantSpec.from_list(h.steps)
            self.kf_id, self._pending_kf, self._latest, self._frame = None, None, None, None
            self._seq_first, self._seq_high, self.stats.expected = None, None, 0
            self._last_request = self._clock()  # the keyframe is on its way: give it time
        return []

    def _on_chunk(self, chunk: wire.KeyframeChunk) -> list[Packet]:
        assert self.header is not None
        payload = self._assembler.add(chunk)
        if payload is None:
            return []
        try:
            kf = wire.unpack_keyframe(payload)
            image = keyframe.decode(kf.h264, self.header.size)
        except (wire.WireError, keyframe.KeyframeError) as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = str(exc)
            return self._request_keyframe(force=True)
        with self._lock:
            self._pending_kf = (chunk.kf_id, image, kf.aux)
        return [Packet(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_ACK, chunk.kf_id)), True)]

    def _on_params(self, p: wire.Params) -> list[Packet]:
        assert self.header is not None
        if p.flags == wire.Flags.NONE and len(p.values) != POSE_SIZE + self.header.n_expr:
            self.stats.bad_packets += 1
            self.stats.last_error = f"params: {len(p.values)} values, header says {POSE_SIZE + self.header.n_expr}"
            return []
        self.stats.params += 1
        self._count_sent(p.seq)
        with self._lock:
            newest = self._pending_kf[0] if self._pending_kf is not None else self.kf_id
            known = p.kf_id == self.kf_id or p.kf_id == newest
            if not known and newest is not None and kf_older(p.kf_id, newest):
                self.stats.stale += 1  # sent before the keyframe we have: late, not a reason to ask again
                return []
            if not known:
                self.stats.no_keyframe += 1
                if p.kf_id == self._assembler.in_progress:
                    return []  # its keyframe is still arriving on the reliable channel
                return self._request_keyframe()
            if self._latest is not None and not seq_newer(p.seq, self._latest.seq):
                self.stats.stale += 1
                return []
            if not self._latest_rendered:
                self.stats.superseded += 1
            self._latest, self._latest_rendered = p, False
        return []

    def _count_sent(self, seq: int) -> None:
        if self._seq_first is None or self._seq_high is None:
            self._seq_first = self._seq_high = seq
        elif seq_newer(seq, self._seq_high):
            self._seq_high = seq
        elif seq_newer(self._seq_first, seq):
            self._seq_first = seq  # a reordered packet sent before the first one seen
        self.stats.expected = (self._seq_high - self._seq_first) % wire.SEQ_MODULO + 1

    def _request_keyframe(self, force: bool = False) -> list[Packet]:
        now = self._clock()
        if not force and now - self._last_request < KEYFRAME_REQUEST_INTERVAL_S:
            return []
        self._last_request = now
        self.stats.keyframe_requests += 1
        have = -1 if self.kf_id is None else self.kf_id
        return [Packet(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, have)), True)]

    def poll(self) -> list[Packet]:
        if self.header is not None and self.kf_id is None and self._pending_kf is None:
            return self._request_keyframe()
        return []

    # -- render side --------------------------------------------------------------------
    def set_view(self, yaw: float, pitch: float, roll: float) -> None:
        with self._lock:
            self.view = (yaw, pitch, roll)
            if self._latest is not None:
                self._latest_rendered = False

    def pending(self) -> bool:
        return self._pending_kf is not None or not self._latest_rendered

    def fading(self) -> bool:
        p, since = self._latest, self._no_face_since
        no_face = self.face_lost or (p is not None and bool(p.flags & wire.Flags.NO_FACE))
        return no_face and since is not None and self._clock() - since < NO_FACE_FADE_S

    @property
    def latest_capture_ms(self) -> int | None:
        return None if self._latest is None else self._latest.capture_ms

    def fail(self, reason: str) -> list[Packet]:
        self.error = reason
        return [Packet(wire.encode(wire.ControlMessage(wire.Control.BYE, 0)), True)]

    def render(self) -> np.ndarray | None:
        with self._lock:
            pending_kf, p = self._pending_kf, self._latest
            self._pending_kf, self._latest_rendered = None, True
            renderer, header, quant = self.renderer, self.header, self._quant
        if renderer is None or header is None:
            return self._frame
        if pending_kf is not None:
            kf_id, image, aux = pending_kf
            try:
                renderer.set_keyframe(image, aux)
            except ValueError as exc:
                self.stats.bad_packets += 1
                self.stats.last_error = f"keyframe: {exc}"
                return self._frame
            self.kf_id, self._frame = kf_id, image
            self.stats.keyframes += 1
        if p is None or p.kf_id != self.kf_id:
            return self._frame
        t0 = time.perf_counter()
        if p.flags & wire.Flags.NO_FACE or self.face_lost:
            self._no_face_since = self._no_face_since or self._clock()
            if self._frame is not None:
                fade = min(1.0, (self._clock() - self._no_face_since) / NO_FACE_FADE_S)
                return (self._frame * (1 - fade * (1 - NO_FACE_DIM))).astype(np.uint8)
            return None
        self._no_face_since = None
        params = dequantize(p.values, quant)
        params.yaw, params.pitch, params.roll = (
            a + b for a, b in zip((params.yaw, params.pitch, params.roll), self.view, strict=True)
        )
        self._frame = renderer.render(params)
        append_capped(self.stats.render_ms, (time.perf_counter() - t0) * 1000)
        self.stats.rendered += 1
        if header.epoch_ms:
            append_capped(self.stats.latency_ms, time.time() * 1000 - (header.epoch_ms + p.capture_ms))
        return self._frame
