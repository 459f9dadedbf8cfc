"""Sender side of fvcall: camera frames -> header, keyframes and parameter packets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from codec import entropy, keyframe, profiles, wire
from codec.api import Encoder, Estimator, NoFaceError, Packet
from codec.bank import BankPolicy, ReferenceBank
from codec.params import FrameParams, QuantSpec, dequantize, in_range, quantize
from codec.refresh import ErrorMonitor, RefreshPolicy
from codec.stats import EncoderStats, append_capped
from models.face import CropBox, FaceDetector, crop
from models.types import ReferenceEstimator, ReferenceRenderer

DEFAULT_SIZE = 256
DEFAULT_FPS = 25.0
MAX_YAW_DEG = 35.0  # beyond this the keyframe's other cheek is missing: hold, then refresh
MAX_PITCH_DEG = 25.0
MAX_DRIFT = 0.18  # head centre moved this share of the crop: re-centre with a new keyframe
MAX_LOG_SCALE = 0.25  # head grew or shrank by ~28%: re-crop
KEYFRAME_MIN_INTERVAL_S = 0.5  # rate limit for requests and automatic refreshes
FACE_BACK_FRAMES = 3  # a face must be seen this many frames in a row before a new keyframe
# Frames per PARAMS message. Each message pays ~77 bytes of SCTP/DTLS/UDP/IPv4 on the wire, more
# than its payload: two frames per message halve that for one frame period (40 ms at 25 fps) of
# added latency (benchmarks/param_rate.py: steady stream 21.8 -> 11.5 kbit/s wire over the clips).
DEFAULT_BATCH = 2
NO_REFERENCES = (0,) * wire.REF_REGIONS  # every region from the keyframe
# A reference holds one region, seen at the keyframe's size: 3 CRF coarser costs ~25% fewer bytes
# (mouth picture 586 -> 442 B) and its detail stays finer than the keyframe warp it replaces.
REFERENCE_CRF_OFFSET = 3  # an intra reference (the fallback where a predicted one cannot be made)
# A reference is sent as the P picture after the keyframe (codec.keyframe.encode_predicted): its
# region is predicted from the same face in the keyframe and the rest is skipped. At QP 35 it takes
# 228 B where an intra picture at REFERENCE_CRF_OFFSET took 441-472 B, with 10-14% less squared error
# in its regions (43 references of PaddleGAN/fom_dv and DFRF/french).
REFERENCE_QP = 35
# A refreshed keyframe is sent as the P picture after the last intra keyframe where that is at most
# KEYFRAME_PREDICTED_SHARE of the intra picture's bytes (a new light or crop is not: it goes intra).
KEYFRAME_QP = 31
KEYFRAME_PREDICTED_SHARE = 0.75


class FaceEncoder(Encoder):
    """Tracks the face, sends a keyframe when one is due, then entropy-coded parameters, `batch`
    frames per message (a frame waits for the next at most; any event that stops the stream flushes)."""

    def __init__(
        self,
        profile: str = profiles.DEFAULT_PROFILE,
        size: int = DEFAULT_SIZE,
        fps: float = DEFAULT_FPS,
        keyframe_crf: int = keyframe.DEFAULT_CRF,
        quant: QuantSpec | None = None,
        weights: Path | None = None,
        estimator: Estimator | None = None,
        epoch_ms: int | None = None,
        batch: int = DEFAULT_BATCH,
        model: str | None = None,
        closed_loop: bool | None = None,
        refresh: RefreshPolicy | None = None,
        references: bool | BankPolicy = True,
    ) -> None:
        """`estimator` replaces the profile's own (tests, cached benchmark passes); `model` is then the
        header's model id when it is not the profile's default; `epoch_ms` is the wall clock at
        capture_ms = 0 (default: now; see set_epoch); `batch`: frames per PARAMS message
        (1..entropy.MAX_BATCH). `closed_loop` runs the receiver's renderer here to refresh the
        keyframe when its measured error calls for one (default: where the profile's renderer is
        cheap enough, codec.profiles.Profile.closed_loop), with the `refresh` knobs. `references`:
        draw regions the keyframe cannot show from reference pictures (codec.bank) where the
        profile can and the closed loop runs; a BankPolicy sets its knobs, False turns it off."""
        if not 1 <= batch <= entropy.MAX_BATCH:
            raise ValueError(f"frames per message must be 1..{entropy.MAX_BATCH}")
        self.profile, self.size, self.fps = profile, size, fps
        self.keyframe_crf = keyframe_crf
        self.quant = quant or QuantSpec()
        self.estimator = estimator or profiles.get(profile).estimator(size, weights, self.quant)
        self.model = profiles.get(profile).model_id(weights) if model is None else model
        self.batch = batch
        basis = profiles.get(profile).basis_id(self.model)
        self.entropy_model = entropy.load(profile, self.estimator.n_expr, basis)
        """The parameter stream's probability model (fitted for this estimator, else the generic one)."""
        self.coder = entropy.Coder(self.entropy_model, self.quant, fps)
        if closed_loop is None:
            closed_loop = profiles.get(profile).closed_loop
        self.monitor = (
            ErrorMonitor(profiles.make_renderer(profile, size, weights, self.model), refresh) if closed_loop else None
        )
        policy = BankPolicy() if references is True else references or None
        self.bank: ReferenceBank | None = None
        """The reference bank of the current keyframe (None where references are off)."""
        if policy is not None and self.monitor is not None and profiles.get(profile).references:
            self.bank = ReferenceBank(len(self._bank_renderer().region_names), policy)
        self.detector = FaceDetector()
        self.stats = EncoderStats()
        self.box: CropBox | None = None
        self.kf_id = -1
        self.events: list[str] = []
        """Human-readable events since the caller last cleared the list (face lost, keyframe...)."""
        self._header_sent = False
        self._keyframe_due = True
        self._recenter = True
        self._clear_bank = False  # the receiver lost its references: the next keyframe empties the bank
        self._face_lost = False
        self._face_run = 0
        self._region_frames = 0  # frames since a region was last measured
        self._next_region = 0  # the region measured next (one per measured frame, in turn)
        self._last_kf_time = -1e9
        self._last_ms = 0
        # (values, capture_ms, reference slots) of the frames waiting for their message
        self._batch: list[tuple[np.ndarray, int, tuple[int, ...]]] = []
        self.epoch_ms = int(time.time() * 1000) if epoch_ms is None else epoch_ms
        self.last_crop: np.ndarray | None = None
        # The pictures the receiver decodes the current keyframe from (its intra root, then it where it
        # is predicted) and its decoded picture: what references are predicted from.
        self._chain: list[keyframe.Coded] = []
        self._kf_decoded: np.ndarray | None = None
        self._root: tuple[int, keyframe.Coded] | None = None  # (kf_id, picture) of the last intra keyframe
        self._intra_due = True  # the next keyframe is intra (the receiver may not hold the root)

    def set_epoch(self, epoch_ms: int) -> None:
        self.epoch_ms = epoch_ms

    def header(self) -> wire.Header:
        return wire.Header(
            self.profile,
            self.size,
            self.fps,
            self.estimator.n_expr,
            self.quant.to_list(),
            self.model,
            self.epoch_ms,
            self._last_ms,
            self.entropy_model.to_bytes(),
        )

    def _emit(self, msg: wire.Message, reliable: bool, keyframe_msg: bool = False) -> Packet:
        data = wire.encode(msg, self.coder)
        self.stats.rate.add(len(data), keyframe_msg)
        frames = max(1, len(msg.frames)) if isinstance(msg, wire.Params) else 0
        return Packet(data, reliable, frames)

    @property
    def face_lost(self) -> bool:
        return self._face_lost

    def request_keyframe(self, recenter: bool = False) -> None:
        self._keyframe_due = True
        self._recenter = self._recenter or recenter

    def restart(self) -> None:
        self._header_sent = False
        self._clear_bank = True
        self._intra_due = True
        self._last_kf_time = -1e9
        self.request_keyframe()

    def flush(self) -> list[Packet]:
        """The PARAMS message of the frames waiting for a full batch (none when none wait)."""
        if not self._batch:
            return []
        t0 = self._batch[0][1]
        refs = tuple(r for _, _, r in self._batch) if any(any(r) for _, _, r in self._batch) else ()
        msg = wire.Params(
            t0,
            self.kf_id,
            wire.Flags.NONE,
            tuple(v for v, _, _ in self._batch),
            tuple(t - t0 for _, t, _ in self._batch),
            refs,
        )
        self._batch = []
        return [self._emit(msg, reliable=False)]

    def encode(self, frame: np.ndarray, capture_ms: int) -> list[Packet]:
        self.stats.frames += 1
        self._last_ms = capture_ms
        out: list[Packet] = []
        if not self._header_sent:
            out.append(self._emit(self.header(), reliable=True))
            self.stats.header_bytes += len(out[-1].data)
            self._header_sent = True
        t0 = time.perf_counter()
        if self._recenter or self.box is None:
            box = self.detector.find(frame)
            if box is None:
                return out + self._no_face(capture_ms)
            self.box, self._recenter, self._keyframe_due = box, False, True
        face = crop(frame, self.box, self.size)
        self.last_crop = face
        now = capture_ms / 1000.0  # capture time, not wall time: offline runs behave the same
        if self._keyframe_due and now - self._last_kf_time >= KEYFRAME_MIN_INTERVAL_S:
            try:
                out += self._keyframe(face, now)
            except NoFaceError:
                self._recenter = True
                return out + self._no_face(capture_ms)
            self._last_kf_time = now
        if self.kf_id < 0:
            return out
        params = self.estimator.estimate(face)
        if params is None:
            return out + self._no_face(capture_ms)
        append_capped(self.stats.estimate_ms, (time.perf_counter() - t0) * 1000)
        renderable = self._check_refresh(params)
        if self._face_lost:
            self._face_run += 1
            if self._face_run < FACE_BACK_FRAMES:
                return out + self._no_face(capture_ms, count=False)
            out.append(self._face_back())
            self.events.append("face back: refreshing the keyframe")
            self.request_keyframe(recenter=True)
        if not renderable:
            self.stats.held_frames += 1  # a clipped or overturned warp is garbage: the receiver holds
            return out + self.flush()
        values = quantize(params, self.quant)
        sent = dequantize(values, self.quant)  # what the receiver decodes
        if self.bank is not None and self.monitor is not None and self.monitor.ready:
            self._region_frames += 1
            # one region every errors_every-th frame, and never on a frame the keyframe monitor
            # renders: no frame pays for two measurements
            if self._region_frames >= self.bank.policy.errors_every and not self.monitor.checks_next:
                self._region_frames = 0
                region, self._next_region = self._next_region, (self._next_region + 1) % self.bank.n_regions
                errors = self._bank_renderer().region_errors(sent, face, 1 << region)
                sent.references = self.bank.choose(errors, now)
            else:
                sent.references = self.bank.keep(now)
        if self.monitor is not None:
            reason = self.monitor.check(face, sent, now)
            if reason is not None:
                self.stats.error_refreshes += 1
                self.events.append(reason)
                self.request_keyframe()
            elif self.bank is not None and self.bank.bad_regions and not self._keyframe_due:
                out += self._reference(face, self.bank.reference_regions, now)
        if self._batch and capture_ms - self._batch[-1][1] > entropy.MAX_TIME_DEV_MS:
            out += self.flush()  # a stalled source: the waiting frame goes now
        self._batch.append((values.astype(np.int64), capture_ms, sent.references or NO_REFERENCES))
        self.stats.params_sent += 1
        return out + (self.flush() if len(self._batch) >= self.batch else [])

    def _keyframe(self, face: np.ndarray, now: float) -> list[Packet]:
        waiting = self.flush()  # frames of the old keyframe go first
        h264 = keyframe.encode(face, self.keyframe_crf)
        chain, base = [keyframe.Coded(face, h264)], None
        if self._root is not None and not self._intra_due:
            predicted = keyframe.encode_predicted([self._root[1]], face, KEYFRAME_QP, self.keyframe_crf)
            if predicted is not None and len(predicted) <= KEYFRAME_PREDICTED_SHARE * len(h264):
                h264, base = predicted, self._root[0]
                chain = [self._root[1], keyframe.Coded(face, h264, KEYFRAME_QP)]
        decoded = keyframe.decode(h264, self.size, [c.data for c in chain[:-1]])  # both sides draw this
        aux = self.estimator.set_keyframe(decoded)
        next_id = (self.kf_id + 1) % wire.KF_MODULO
        self._chain, self._kf_decoded, self._intra_due = chain, decoded, False
        if base is None:
            self._root = (next_id, chain[0])
        if self.monitor is not None:
            self.monitor.keyframe(decoded, aux, now)
        if self.bank is not None:
            self.bank.reset(now, clear=self._clear_bank)
        self._clear_bank = False
        self.kf_id = next_id
        self._keyframe_due = False
        back = [self._face_back()] if self._face_lost else []  # the keyframe itself shows the face
        self._face_run = 0
        self.stats.keyframes += 1
        chunks = wire.split_keyframe(self.kf_id, wire.pack_keyframe(wire.Keyframe(h264, aux, base)))
        packets = [self._emit(c, reliable=True, keyframe_msg=True) for c in chunks]
        # the bytes the stats count (picture, the estimator's data, chunk headers), not the picture alone
        kind = "intra" if base is None else f"predicted from keyframe {base}"
        self.events.append(
            f"keyframe {self.kf_id}: {sum(len(p.data) for p in packets)} bytes ({len(h264)} of them H.264, {kind})"
        )
        return waiting + back + packets

    def _bank_renderer(self) -> ReferenceRenderer:
        assert self.monitor is not None
        return self.monitor.renderer  # type: ignore[return-value]  # a references profile's (codec.profiles)

    def _reference(self, face: np.ndarray, regions: int, now: float) -> list[Packet]:
        """A reference picture of this crop for `regions`, where the bank has room for one now."""
        assert self.bank is not None and self.monitor is not None
        slot = self.bank.allocate(now)
        if slot is None:
            return []
        estimator: ReferenceEstimator = self.estimator  # type: ignore[assignment]
        renderer = self._bank_renderer()
        try:
            aux = estimator.reference_aux()
            h264 = self._predicted_reference(face, aux, regions)
            if h264 is None:
                picture = renderer.reference_picture(face, aux, regions)
                h264 = keyframe.encode(picture, min(keyframe.MAX_CRF, self.keyframe_crf + REFERENCE_CRF_OFFSET))
            decoded = keyframe.decode(h264, self.size, [c.data for c in self._chain])
            renderer.add_reference(slot, decoded, aux, regions)  # what the receiver will hold
        except (NoFaceError, ValueError, keyframe.KeyframeError):
            return []
        msg = wire.Reference(self.kf_id, slot, regions, wire.pack_keyframe(wire.Keyframe(h264, aux)))
        packet = self._emit(msg, reliable=True)
        self.bank.add(slot, regions, now, self.kf_id)
        self.stats.references += 1
        self.stats.reference_bytes += len(packet.data)
        names = "+".join(n for i, n in enumerate(renderer.region_names) if regions >> i & 1)
        self.events.append(f"reference {slot} ({names}): {len(packet.data)} bytes")
        return [packet]

    def _predicted_reference(self, face: np.ndarray, aux: bytes, regions: int) -> bytes | None:
        """A reference of `face` as a P picture after the current keyframe, or None (no keyframe to
        predict from, or this x264 does not reproduce the keyframe's bytes)."""
        if not self._chain or self._kf_decoded is None:
            return None
        picture = self._bank_renderer().reference_picture(face, aux, regions, self._kf_decoded)
        return keyframe.encode_predicted(self._chain, picture, REFERENCE_QP, self.keyframe_crf)

    def _face_back(self) -> Packet:
        self._face_lost = False
        return self._emit(wire.ControlMessage(wire.Control.FACE_LOST, 0), reliable=True)

    def _check_refresh(self, p: FrameParams) -> bool:
        """Asks for a new keyframe where this one no longer fits; False when this frame cannot be warped."""
        renderable = abs(p.yaw) <= MAX_YAW_DEG and abs(p.pitch) <= MAX_PITCH_DEG and in_range(p, self.quant)
        if not renderable:
            self.request_keyframe()
        if np.hypot(p.tx, p.ty) > MAX_DRIFT or abs(p.log_scale) > MAX_LOG_SCALE:
            self.request_keyframe(recenter=True)
        return renderable

    def _no_face(self, capture_ms: int, count: bool = True) -> list[Packet]:
        if count:
            self.stats.no_face_frames += 1
            self._face_run = 0
        out: list[Packet] = self.flush()
        if not self._face_lost:
            self._face_lost = True
            self.events.append("no face in the picture: the receiver holds the last frame")
            if self._header_sent:  # reliable, unlike the NO_FACE flag of the packets that follow
                out.append(self._emit(wire.ControlMessage(wire.Control.FACE_LOST, 1), reliable=True))
        if self.kf_id < 0:
            return out
        return out + [self._emit(wire.Params(capture_ms, self.kf_id, wire.Flags.NO_FACE), reliable=False)]

    def receive(self, data: bytes) -> list[Packet]:
        msg = wire.decode(data)
        if isinstance(msg, wire.ControlMessage) and msg.code == wire.Control.KEYFRAME_REQUEST:
            # Answered at the next frame, at most one keyframe per KEYFRAME_MIN_INTERVAL_S (a
            # request cannot make us flood the link). A receiver with no keyframe at all (-1)
            # may have restarted without the session header: send that again too, and its
            # reference bank is gone.
            if msg.arg < 0:
                self._header_sent = False
                self._clear_bank = True
            self._intra_due = True  # whatever it lost, an intra keyframe decodes on its own
            self.request_keyframe()
        elif isinstance(msg, wire.ControlMessage) and msg.code == wire.Control.REFERENCE_ACK and self.bank is not None:
            kf_id, slot = wire.parse_ack(msg.arg)
            self.bank.ack(slot, kf_id)
        return []  # KEYFRAME_ACK needs no action: every PARAMS message decodes on its own

    def close(self) -> None:
        self.detector.close()
        self.estimator.close()
