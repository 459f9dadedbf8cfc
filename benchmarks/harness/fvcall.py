"""fvcall profiles driven through the codec's public Encoder/Decoder, one rate knob at a time.

Knobs: quantization step (QuantSpec().scaled(f)), keyframe quality (keyframe_crf), parameter rate
(only every k-th frame is encoded and sent; the receiver holds its frame in between), and the
reference bank's threshold (codec.bank: lower sends more region pictures; None: no references).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from codec import bank, driver, keyframe, profiles, wire
from codec.api import Estimator, NoFaceError
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.params import FrameParams, QuantSpec
from models.face import CropBox, crop

from .rate import Message

NO_OUTPUT_GREY = 128  # what a receiver "shows" before its first keyframe (never happens from frame 0 on)


@dataclass(frozen=True)
class FvSetting:
    """One operating point of a profile."""

    quant: float = 1.0
    """QuantSpec().scaled(quant): coarser parameter steps above 1."""
    keyframe_crf: int = keyframe.DEFAULT_CRF
    """x264 CRF of the keyframe picture."""
    every: int = 1
    """Send the parameters of every k-th frame only (hold in between)."""
    references: float | None = bank.THRESHOLD_DB
    """Reference bank threshold in dB (codec.bank.BankPolicy.threshold_db); None: no references.
    Profiles without references ignore it."""

    def label(self) -> str:
        base = f"q{self.quant:g}-kf{self.keyframe_crf}-e{self.every}"
        if self.references == bank.THRESHOLD_DB:
            return base  # the default: labels of results from before the knob stay valid
        return base + ("-roff" if self.references is None else f"-r{self.references:g}")

    def bank_policy(self) -> bank.BankPolicy | bool:
        """What FaceEncoder(references=...) takes for this setting."""
        return False if self.references is None else bank.BankPolicy(threshold_db=self.references)


DEFAULT_SETTING = FvSetting()


@dataclass(frozen=True)
class FvConfig:
    """A curve: one knob of one profile swept, the others at their defaults."""

    profile: str
    knob: str
    settings: tuple[FvSetting, ...]

    @property
    def name(self) -> str:
        return f"{self.profile}~{self.knob}"


def sweep(
    profile: str,
    quant: tuple[float, ...],
    kf_crf: tuple[int, ...],
    every: tuple[int, ...],
    combo: tuple[FvSetting, ...],
    refs: tuple[float | None, ...] = (),
) -> list[FvConfig]:
    """One curve per knob (each includes the default point), plus combined low-rate settings. The
    reference threshold is swept only for profiles that draw regions from references."""
    out = [
        FvConfig(profile, "quant", tuple(FvSetting(quant=f) for f in quant)),
        FvConfig(profile, "kfcrf", tuple(FvSetting(keyframe_crf=c) for c in kf_crf)),
        FvConfig(profile, "every", tuple(FvSetting(every=k) for k in every)),
    ]
    if profiles.get(profile).references:
        out.append(FvConfig(profile, "refs", tuple(FvSetting(references=r) for r in refs)))
    if combo:
        out.append(FvConfig(profile, "combo", combo))
    return [c for c in out if c.settings]


def available_profiles(size: int, weights: Path | None) -> tuple[list[str], dict[str, str]]:
    """Profiles that can run here; the others with the reason (missing weights, not built yet...)."""
    ok, skipped = [], {}
    for name in profiles.PROFILES:
        try:
            profiles.make_renderer(name, size, weights)
        except (RuntimeError, ImportError, OSError, TypeError, ValueError) as exc:
            # TypeError/ValueError too: a profile still being built must not take the benchmark down
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        ok.append(name)
    return ok, skipped


def digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


class CachingEstimator:
    """A profile's estimator that remembers its answers per (keyframe picture, crop).

    The quantization and parameter-rate knobs change nothing upstream of quantization, so every
    setting of a clip that shares a keyframe reuses one estimation pass (MediaPipe is the slow part).
    A cache miss re-arms the real estimator with the right keyframe first, so the answers are the
    ones a fresh encoder would get."""

    def __init__(self, inner: Estimator) -> None:
        self.inner = inner
        self.n_expr = inner.n_expr
        self._kf: bytes | None = None
        self._inner_kf: bytes | None = None
        self._kf_images: dict[bytes, np.ndarray] = {}
        self._aux: dict[bytes, bytes | NoFaceError] = {}
        self._params: dict[tuple[bytes, bytes], FrameParams | None] = {}
        self._last: tuple[bytes, np.ndarray] | None = None  # key of the last estimate, and its crop
        self._inner_last: tuple[bytes, bytes] | None = None  # what the inner estimator last saw

    def set_keyframe(self, image: np.ndarray) -> bytes:
        key = digest(image)
        if key not in self._aux:
            try:
                self._aux[key] = self.inner.set_keyframe(image)
            except NoFaceError as exc:
                self._aux[key] = exc
            self._inner_kf = key
            self._kf_images[key] = image.copy()
        aux = self._aux[key]
        if isinstance(aux, NoFaceError):
            raise aux
        self._kf = key
        return aux

    def estimate(self, crop_: np.ndarray) -> FrameParams | None:
        if self._kf is None:
            raise RuntimeError("estimate before set_keyframe")
        key = (self._kf, digest(crop_))
        self._last = (key[1], crop_)
        if key not in self._params:
            self._params[key] = self._inner_estimate(crop_)
            self._inner_last = key
        return self._params[key]

    def _inner_estimate(self, crop_: np.ndarray) -> FrameParams | None:
        assert self._kf is not None
        if self._inner_kf != self._kf:
            self.inner.set_keyframe(self._kf_images[self._kf])
            self._inner_kf = self._kf
        return self.inner.estimate(crop_)

    def reference_aux(self) -> bytes:
        """The last crop's reference data (models.types.ReferenceEstimator): from the inner estimator,
        which estimates that crop again where a cached answer skipped it."""
        if self._last is None or self._kf is None:
            raise NoFaceError("no crop estimated yet")
        key = (self._kf, self._last[0])
        if self._inner_last != key:
            self._inner_estimate(self._last[1])
            self._inner_last = key
        return self.inner.reference_aux()  # type: ignore[attr-defined]  # references profiles only

    def close(self) -> None:
        """FaceEncoder.close() calls this; the shared inner estimator is closed by its owner."""

    def close_inner(self) -> None:
        self.inner.close()


@dataclass
class FvRun:
    """One setting on one clip."""

    outputs: dict[int, np.ndarray]
    """Frame index -> what the receiver shows, for the requested frames."""
    references: dict[int, np.ndarray]
    """Frame index -> the encoder's crop of that frame (its box at that time)."""
    boxes: list[CropBox]
    """The encoder's box after each input frame."""
    messages: list[Message]
    stats: dict[str, int] = field(default_factory=dict)


def run_setting(
    frames: list[np.ndarray],
    clip_fps: float,
    fallback_box: CropBox,
    profile: str,
    size: int,
    setting: FvSetting,
    estimator: Estimator,
    want: set[int],
    weights: Path | None = None,
) -> FvRun:
    """Encoder -> decoder through codec.driver (lossless link), rendering only the frames in `want`.

    The decoder renders newest-packet-wins and every parameter packet is absolute, so rendering
    frame i after all packets up to i gives exactly what a receiver rendering every frame shows at i,
    while skipping the renders nobody scores. The receiver does not poll: rates count one direction."""
    clock = driver.TickClock()  # capture-time clock: no-face fades are reproducible
    enc = FaceEncoder(
        profile,
        size,
        clip_fps / setting.every,
        keyframe_crf=setting.keyframe_crf,
        quant=QuantSpec().scaled(setting.quant),
        weights=weights,
        estimator=estimator,
        references=setting.bank_policy(),
    )
    dec = FaceDecoder(weights, clock=clock)
    outputs: dict[int, np.ndarray] = {}
    refs: dict[int, np.ndarray] = {}
    boxes: list[CropBox] = []
    messages: list[Message] = []
    started = False  # start-up = the header and first keyframe, everything before the first parameters
    try:
        # A message of k frames plays its frames out one period apart from its arrival: what the
        # receiver shows for frame i is on screen lag = k - 1 ticks later (the latency, reported
        # apart); score it against frame i, as for the video anchors.
        lag = (enc.batch - 1) * setting.every
        call = driver.run(
            frames,
            enc,
            dec,
            clip_fps,
            clock=clock,
            every=setting.every,
            render_at=lambda t: t - lag in want,
            poll=False,
            drain=lag,
        )
        for tick in call:
            for p in tick.packets:
                msg = wire.decode(p.data)
                started = started or isinstance(msg, wire.Params)
                messages.append(Message(len(p.data), isinstance(msg, wire.KeyframeChunk), startup=not started))
            if tick.index - lag in want:
                outputs[tick.index - lag] = (
                    tick.output if tick.output is not None else np.full((size, size, 3), NO_OUTPUT_GREY, np.uint8)
                )
            if tick.index >= len(frames):
                continue
            f = tick
            box = enc.box or fallback_box
            boxes.append(box)
            if f.index in want:
                # == enc.last_crop for every frame the encoder cropped; held frames use the box in force
                refs[f.index] = crop(frames[f.index], box, size)
        stats = {
            "keyframes": enc.stats.keyframes,
            "params_sent": enc.stats.params_sent,
            "no_face_frames": enc.stats.no_face_frames,
            "frames_encoded": enc.stats.frames,
            "rendered": dec.stats.rendered,
            "bad_packets": dec.stats.bad_packets,
        }
    finally:
        enc.close()
    return FvRun(outputs, refs, boxes, messages, stats)


def make_caching_estimator(profile: str, size: int, weights: Path | None) -> CachingEstimator:
    return CachingEstimator(profiles.get(profile).estimator(size, weights))


def setting_dict(s: FvSetting) -> dict[str, float | int]:
    return asdict(s)
