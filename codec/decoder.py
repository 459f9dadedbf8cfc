"""Receiver side of fvcall: packets -> frames, newest packet wins.

`receive` is cheap (parse, validate, keep the newest parameters) and runs on the network
loop; `render` is the heavy part and may run on another thread: it applies a pending
keyframe and renders the newest parameters that are due, never a queue of stale ones. A
message carrying several frames plays them out at their capture spacing from its arrival
(the first at once); a newer message that arrives meanwhile supersedes what still waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec import entropy, keyframe, profiles, wire
from codec.api import Decoder, Packet, Renderer
from codec.params import POSE_SIZE, QuantSpec, dequantize
from codec.stats import DecoderStats, append_capped
from models.types import ModelMismatchError

KEYFRAME_REQUEST_INTERVAL_S = 0.5  # ask again this often while no usable keyframe arrives
NO_FACE_DIM = 0.6  # brightness of the held frame while the sender sees no face
NO_FACE_FADE_S = 1.0  # seconds to fade to NO_FACE_DIM
DUE_SLACK_S = 0.002  # a frame due within this is due now (clock and capture-time rounding)


def unwrap_ms(t16: int, ref: int) -> int:
    """The full capture time nearest to ref whose low 16 bits are t16."""
    d = (t16 - ref) % wire.PARAMS_TIME_MODULO
    return ref + (d - wire.PARAMS_TIME_MODULO if d >= wire.PARAMS_TIME_MODULO // 2 else d)


def kf_older(a: int, b: int) -> bool:
    """True when PARAMS keyframe id a was sent before b (modulo 16)."""
    return 0 < (b - a) % wire.PARAMS_KF_MODULO < wire.PARAMS_KF_MODULO // 2


@dataclass(frozen=True, eq=False)
class Shown:
    """One frame of a PARAMS message, waiting for its time or on screen."""

    capture_ms: int
    """Sender capture time, unwrapped."""
    kf_id: int
    """Keyframe id modulo 16."""
    values: np.ndarray | None
    """Quantized values; None: the sender saw no face."""
    due: float
    """Decoder clock time (s) from which it is shown."""
    refs: tuple[int, ...] = ()
    """Reference slot per region (codec.bank; empty or 0: the keyframe)."""


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
        self._pending_refs: list[tuple[wire.Reference, np.ndarray, bytes]] = []  # (msg, picture, aux)
        # (kf_id, H.264 of its intra root and of it) of the newest decoded keyframe, and (kf_id, H.264)
        # of the last intra one: what predicted keyframes and references decode from
        self._kf_chain: tuple[int, list[bytes]] | None = None
        self._root: tuple[int, bytes] | None = None
        self._outbox: list[Packet] = []  # replies render() produced, sent by the next poll()
        self._held_refs: set[int] = set()  # slots of the renderer's bank (render side)
        self._coder: entropy.Coder | None = None
        self._latest: Shown | None = None
        """What render() shows (or shows again when _latest_rendered is False)."""
        self._latest_rendered = True
        self._queue: list[Shown] = []  # frames accepted and not yet shown, oldest first
        self._newest_ms: int | None = None  # newest capture time accepted
        self._time_ref = 0
        self._first_ms: int | None = None
        self._last_ms: int | None = None
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
            msg = wire.decode(data, self._coder)
        except wire.WireVersionError as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = str(exc)
            if exc.kind == wire.Kind.HEADER and self.header is None:
                # A caller of another version: refuse it in one line, in words its own build reads.
                bye = wire.past_bye(exc.version)
                return self.fail(str(exc)) + ([Packet(bye, True)] if bye is not None else [])
            return []
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
        if isinstance(msg, wire.Reference):
            return self._on_reference(msg)
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
            model = entropy.Model.from_bytes(h.entropy, h.n_expr) if h.entropy else entropy.generic(h.n_expr)
            coder = entropy.Coder(model, QuantSpec.from_list(h.steps), h.fps)
        except (entropy.EntropyError, ValueError) as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = str(exc)
            return self.fail(str(exc))
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
            self._coder = coder
            self.kf_id, self._pending_kf, self._latest, self._frame = None, None, None, None
            self._kf_chain, self._root = None, None
            self._pending_refs, self._held_refs = [], set()  # a new renderer holds no references
            self._queue, self._newest_ms, self._time_ref = [], None, h.time_ms
            self._first_ms, self._last_ms, self.stats.expected = None, None, 0
            self._last_request = self._clock()  # the keyframe is on its way: give it time
        return []

    def _on_chunk(self, chunk: wire.KeyframeChunk) -> list[Packet]:
        assert self.header is not None
        payload = self._assembler.add(chunk)
        if payload is None:
            return []
        try:
            kf = wire.unpack_keyframe(payload)
            chain = [kf.h264]
            if kf.base is not None:  # predicted from the intra keyframe it names: only that one will do
                if self._root is None or self._root[0] != kf.base:
                    raise keyframe.KeyframeError(f"keyframe predicted from keyframe {kf.base}, which is not here")
                chain = [self._root[1], kf.h264]
            image = keyframe.decode(kf.h264, self.header.size, chain[:-1])
        except (wire.WireError, keyframe.KeyframeError) as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = str(exc)
            return self._request_keyframe(force=True)
        with self._lock:
            self._pending_kf = (chunk.kf_id, image, kf.aux)
            self._kf_chain = (chunk.kf_id, chain)  # references of this keyframe are predicted from it
            if kf.base is None:
                self._root = (chunk.kf_id % wire.KF_MODULO, kf.h264)
        return [Packet(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_ACK, chunk.kf_id)), True)]

    def _on_reference(self, ref: wire.Reference) -> list[Packet]:
        assert self.header is not None
        if not profiles.get(self.header.profile).references:
            self.stats.bad_packets += 1
            self.stats.last_error = f"reference pictures are not part of profile {self.header.profile}"
            return []
        with self._lock:
            newest = self._pending_kf[0] if self._pending_kf is not None else self.kf_id
            base = self._kf_chain[1] if self._kf_chain is not None and self._kf_chain[0] == newest else []
        if newest is None or ref.kf_id != newest % wire.KF_MODULO:
            self.stats.stale += 1  # for another keyframe: its bank is gone (or not here yet)
            return []
        try:
            kf = wire.unpack_keyframe(ref.data)
            image = keyframe.decode(kf.h264, self.header.size, base)
        except (wire.WireError, keyframe.KeyframeError) as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = f"reference: {exc}"
            return []  # never acknowledged: the sender never names it
        with self._lock:
            # bounded: a sender can only replace slots, and a flood of them keeps the newest
            self._pending_refs = [r for r in self._pending_refs if r[0].slot != ref.slot][-wire.REF_SLOTS :]
            self._pending_refs.append((ref, image, kf.aux))
        ack = wire.ControlMessage(wire.Control.REFERENCE_ACK, wire.ack_arg(ref.kf_id, ref.slot))
        return [Packet(wire.encode(ack), True)]

    def _on_params(self, p: wire.Params) -> list[Packet]:
        assert self.header is not None
        n = POSE_SIZE + self.header.n_expr
        if any(len(v) != n for v in p.frames):
            self.stats.bad_packets += 1
            self.stats.last_error = f"params: values of another length than the header's {n}"
            return []
        self.stats.params += 1
        self.stats.frames_received += max(1, len(p.frames))
        first = unwrap_ms(p.capture_ms, self._time_ref)
        offsets = p.offsets_ms or (0,) * max(1, len(p.frames))
        frames: list[np.ndarray | None] = list(p.frames) if p.frames else [None]
        last = first + offsets[-1]
        self._count_sent(first, last)
        with self._lock:
            newest = self._pending_kf[0] if self._pending_kf is not None else self.kf_id
            mod = wire.PARAMS_KF_MODULO
            known = self.kf_id is not None and p.kf_id == self.kf_id % mod
            known = known or (newest is not None and p.kf_id == newest % mod)
            if not known and newest is not None and kf_older(p.kf_id, newest % mod):
                self.stats.stale += 1  # sent before the keyframe we have: late, not a reason to ask again
                return []
            if not known:
                self.stats.no_keyframe += 1
                in_progress = self._assembler.in_progress
                if in_progress is not None and p.kf_id == in_progress % mod:
                    return []  # its keyframe is still arriving on the reliable channel
                return self._request_keyframe()
            if self._newest_ms is not None and first <= self._newest_ms:
                self.stats.stale += 1  # a duplicate, or overtaken by a newer message: newest wins
                return []
            self._newest_ms = self._time_ref = last
            now = self._clock()
            waiting = [e for e in self._queue if e.capture_ms < first]  # older frames still waiting: never shown
            self.stats.superseded += len(waiting)
            self._queue = [e for e in self._queue if e.capture_ms >= first] + [
                Shown(first + off, p.kf_id, v, now + off / 1000.0, p.frame_refs(i))
                for i, (v, off) in enumerate(zip(frames, offsets, strict=True))
            ]
        return []

    def _count_sent(self, first: int, last: int) -> None:
        """Frames the sender captured over the span seen, from capture times and the nominal rate."""
        assert self.header is not None
        self._first_ms = first if self._first_ms is None else min(self._first_ms, first)
        self._last_ms = last if self._last_ms is None else max(self._last_ms, last)
        self.stats.expected = round((self._last_ms - self._first_ms) * self.header.fps / 1000.0) + 1

    def _request_keyframe(self, force: bool = False) -> list[Packet]:
        if self.error is not None:
            return []  # the call is over: another keyframe cannot help
        now = self._clock()
        if not force and now - self._last_request < KEYFRAME_REQUEST_INTERVAL_S:
            return []
        self._last_request = now
        self.stats.keyframe_requests += 1
        have = -1 if self.kf_id is None else self.kf_id
        return [Packet(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, have)), True)]

    def poll(self) -> list[Packet]:
        with self._lock:
            out, self._outbox = self._outbox, []
        if out:
            return out
        if self.header is not None and self.kf_id is None and self._pending_kf is None:
            return self._request_keyframe()
        return []

    # -- render side --------------------------------------------------------------------
    def set_view(self, yaw: float, pitch: float, roll: float) -> None:
        with self._lock:
            self.view = (yaw, pitch, roll)
            if self._latest is not None:
                self._latest_rendered = False

    def _due(self) -> list[Shown]:
        now = self._clock() + DUE_SLACK_S
        return [e for e in self._queue if e.due <= now]

    def pending(self) -> bool:
        return self._pending_kf is not None or not self._latest_rendered or bool(self._due())

    def next_due(self) -> float | None:
        with self._lock:
            if not self._queue:
                return None
            return max(0.0, min(e.due for e in self._queue) - self._clock())

    def fading(self) -> bool:
        p, since = self._latest, self._no_face_since
        no_face = self.face_lost or (p is not None and p.values is None)
        return no_face and since is not None and self._clock() - since < NO_FACE_FADE_S

    @property
    def latest_capture_ms(self) -> int | None:
        due = self._due()
        p = max(due, key=lambda e: e.capture_ms) if due else self._latest
        return None if p is None else p.capture_ms

    def fail(self, reason: str) -> list[Packet]:
        self.error = reason
        return [Packet(wire.encode(wire.ControlMessage(wire.Control.BYE, 0)), True)]

    def _apply_references(self, renderer: Renderer, refs: list[tuple[wire.Reference, np.ndarray, bytes]]) -> None:
        """Give the renderer the references that arrived (once it holds a keyframe: they outlive it)."""
        for ref, image, aux in refs:
            if self.kf_id is None:
                continue
            try:
                renderer.add_reference(ref.slot, image, aux, ref.regions)  # type: ignore[attr-defined]
            except ValueError as exc:
                self.stats.bad_packets += 1
                self.stats.last_error = f"reference: {exc}"
                self._held_refs.discard(ref.slot)
                continue
            self._held_refs.add(ref.slot)
            self.stats.references += 1

    def render(self) -> np.ndarray | None:
        with self._lock:
            due = self._due()
            if due:
                shown = max(due, key=lambda e: e.capture_ms)
                keep = [e for e in self._queue if e.capture_ms > shown.capture_ms]
                self.stats.superseded += len(self._queue) - len(keep) - 1  # newest wins: older ones never show
                self._queue, self._latest = keep, shown
            pending_kf, p = self._pending_kf, self._latest
            self._pending_kf, self._latest_rendered = None, True
            pending_refs, self._pending_refs = self._pending_refs, []
            renderer, header, quant = self.renderer, self.header, self._quant
        if renderer is None or header is None:
            return self._frame
        if pending_kf is not None:
            kf_id, image, aux = pending_kf
            try:
                renderer.set_keyframe(image, aux)
            except ModelMismatchError as exc:  # every keyframe of this caller is refused alike: end the call
                self.stats.bad_packets += 1
                self.stats.last_error = f"keyframe: {exc}"
                bye = self.fail(str(exc))
                with self._lock:
                    self._outbox += bye
                return self._frame
            except ValueError as exc:
                self.stats.bad_packets += 1
                self.stats.last_error = f"keyframe: {exc}"
                return self._frame
            self.kf_id, self._frame = kf_id, image  # the renderer keeps its references (codec.bank)
            self.stats.keyframes += 1
        self._apply_references(renderer, pending_refs)
        if p is None or self.kf_id is None or p.kf_id != self.kf_id % wire.PARAMS_KF_MODULO:
            if pending_kf is not None:
                self.stats.rendered += 1  # the new keyframe's own picture is shown until its parameters are due
                self.stats.keyframe_pictures += 1
                with self._lock:
                    if self._latest is p:
                        self._latest = None  # what shows is the keyframe, not that older frame
            return self._frame
        t0 = time.perf_counter()
        if p.values is None or self.face_lost:
            self._no_face_since = self._no_face_since or self._clock()
            if self._frame is not None:
                fade = min(1.0, (self._clock() - self._no_face_since) / NO_FACE_FADE_S)
                return (self._frame * (1 - fade * (1 - NO_FACE_DIM))).astype(np.uint8)
            return None
        self._no_face_since = None
        params = dequantize(p.values, quant)
        if any(p.refs):
            self.stats.reference_misses += sum(1 for s in p.refs if s and s not in self._held_refs)
            params.references = p.refs
        params.yaw, params.pitch, params.roll = (
            a + b for a, b in zip((params.yaw, params.pitch, params.roll), self.view, strict=True)
        )
        self._frame = renderer.render(params)
        append_capped(self.stats.render_ms, (time.perf_counter() - t0) * 1000)
        self.stats.rendered += 1
        if header.epoch_ms:
            append_capped(self.stats.latency_ms, time.time() * 1000 - (header.epoch_ms + p.capture_ms))
        return self._frame
