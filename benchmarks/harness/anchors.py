"""Conventional codecs through PyAV with real-time conferencing settings.

Every anchor sees the same face crops as fvcall. Low delay everywhere: no B-frames / no
look-ahead, one keyframe at the start and none after (a call's long GOP), constant-quality
rate control swept over its whole range. Reduced resolution (downscaled with INTER_AREA,
upscaled back with Lanczos for scoring) and reduced frame rate (frames held at the receiver)
let the anchors reach the ~1 kbit/s region where fvcall lives.

SEI NAL units are stripped before counting: x264/x265 put a ~600-byte text banner with their
settings into the first access unit, which a WebRTC stack never sends and no decoder needs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from .rate import Message

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (it prints its whole config otherwise)

DOWNSCALE_INTERP = cv2.INTER_AREA  # anti-aliased decimation before encoding
UPSCALE_INTERP = cv2.INTER_LANCZOS4  # back to the codec size for scoring ("a good filter")
H264_SEI = {6}
HEVC_SEI = {39, 40}  # prefix / suffix SEI
X264_BANNER = re.compile(rb"x264 - core \d+(?: r\d+ [0-9a-f]+)?")
START_CODE = re.compile(rb"\x00\x00\x00\x01|\x00\x00\x01")
X265_BANNER = re.compile(rb"x265 \(build \d+\) - [\w.+:-]+")


@dataclass(frozen=True)
class CodecSpec:
    """How one conventional codec is driven."""

    family: str
    """Name in reports, e.g. 'x264-medium'."""
    encoder: str
    """FFmpeg encoder name."""
    decoder: str
    """FFmpeg decoder name."""
    quality_option: str
    """Constant-quality knob ('crf'): higher is fewer bits."""
    max_quality_value: int
    """Its coarsest value (51 for x264/x265, 63 for VP9/AV1)."""
    options: dict[str, str] = field(default_factory=dict)
    """Fixed real-time options."""
    sei: frozenset[int] = frozenset()
    """NAL unit types stripped before counting (Annex B streams only)."""


# threads=1: deterministic streams and no slice split (sliced threads cost bits at 256x256).
X264_RT = "keyint=infinite:min-keyint=infinite:scenecut=0:bframes=0:threads=1"
# What a user tuning x264 for a call would do: one good IDR (ipratio: the IDR's quantizer is
# 6 * log2(ipratio) QP below the P frames'; x264's default is 1.4, i.e. 3 QP), then coarse P frames.
X264_IPRATIO = 4.0  # IDR 12 QP finer than the P frames
X264_HQ_IDR = f"{X264_RT}:ipratio={X264_IPRATIO:g}"
CODECS: dict[str, CodecSpec] = {
    "x264-medium": CodecSpec(
        "x264-medium",
        "libx264",
        "h264",
        "crf",
        51,
        {"preset": "medium", "tune": "zerolatency", "x264-params": X264_RT},
        frozenset(H264_SEI),
    ),
    "x264-veryfast": CodecSpec(
        "x264-veryfast",
        "libx264",
        "h264",
        "crf",
        51,
        {"preset": "veryfast", "tune": "zerolatency", "x264-params": X264_RT},
        frozenset(H264_SEI),
    ),
    "x264-hqidr": CodecSpec(
        "x264-hqidr",
        "libx264",
        "h264",
        "crf",
        51,
        {"preset": "medium", "tune": "zerolatency", "x264-params": X264_HQ_IDR},
        frozenset(H264_SEI),
    ),
    "x265": CodecSpec(
        "x265",
        "libx265",
        "hevc",
        "crf",
        51,
        {
            "preset": "fast",
            "tune": "zerolatency",
            "x265-params": "keyint=-1:scenecut=0:bframes=0:frame-threads=1:log-level=error",
        },
        frozenset(HEVC_SEI),
    ),
    "vp9": CodecSpec(
        "vp9",
        "libvpx-vp9",
        "vp9",
        "crf",
        63,
        {"b": "0", "deadline": "realtime", "cpu-used": "7", "lag-in-frames": "0", "row-mt": "0", "threads": "1"},
    ),
    "av1": CodecSpec(
        "av1", "libsvtav1", "libdav1d", "crf", 63, {"preset": "10", "svtav1-params": "pred-struct=1:lp=1"}
    ),
}
GOP_FRAMES = 1 << 20  # "no keyframe after the first" for encoders that read gop_size


@dataclass(frozen=True)
class AnchorConfig:
    """One rate-distortion curve of a conventional codec: fixed resolution and frame rate, quality swept."""

    codec: str
    """Key of CODECS."""
    scale: int = 1
    """Resolution divisor (1, 2, 4) relative to the codec size."""
    fps: float | None = None
    """Sent frame rate; None: the clip's own."""
    values: tuple[int, ...] = ()
    """Quality-knob values (CRF), one point each."""

    @property
    def name(self) -> str:
        s = self.codec
        if self.scale != 1:
            s += f"~r{self.scale}"
        if self.fps is not None:
            s += f"~{self.fps:g}fps"
        return s

    def applies(self, clip_fps: float) -> bool:
        """A reduced frame rate must be below the clip's."""
        return self.fps is None or self.fps < clip_fps - 0.5


def available(codec: str) -> bool:
    spec = CODECS[codec]
    return spec.encoder in av.codecs_available and spec.decoder in av.codecs_available


def sent_frames(n: int, clip_fps: float, fps: float | None) -> list[bool]:
    """Which input frames a sender at `fps` captures (the rest are held by the receiver)."""
    if fps is None or fps >= clip_fps:
        return [True] * n
    r = fps / clip_fps
    return [i == 0 or int(i * r) != int((i - 1) * r) for i in range(n)]


def strip_nal_units(data: bytes, drop: frozenset[int], hevc: bool) -> bytes:
    """Annex B access unit without the NAL unit types in `drop` (each unit keeps its own start code)."""
    if not drop:
        return data
    codes = list(START_CODE.finditer(data))
    if not codes:
        return data
    out = bytearray(data[: codes[0].start()])
    for k, m in enumerate(codes):
        end = codes[k + 1].start() if k + 1 < len(codes) else len(data)
        if m.end() < end:
            header = data[m.end()]
            kind = (header >> 1) & 0x3F if hevc else header & 0x1F
            if kind in drop:
                continue
        out += data[m.start() : end]
    return bytes(out)


@dataclass
class AnchorRun:
    """One encoded point: what the receiver shows per input frame and what was sent."""

    outputs: dict[int, np.ndarray]
    """Frame index -> RGB at the codec size, for the requested frames."""
    messages: list[Message]
    """One per coded frame (RTP accounting), the first flagged as the keyframe."""
    banner: str = ""
    """Encoder version text found in the stripped SEI, if any."""
    stripped_bytes: int = 0


def encode_point(crops: list[np.ndarray], clip_fps: float, cfg: AnchorConfig, value: int, want: set[int]) -> AnchorRun:
    """Encode the crops at one quality value; decode; return the frames in `want` as shown."""
    spec = CODECS[cfg.codec]
    size = crops[0].shape[0]
    small = size // cfg.scale
    send = sent_frames(len(crops), clip_fps, cfg.fps)
    fps = Fraction(cfg.fps if cfg.fps is not None else clip_fps).limit_denominator(1001)
    ctx = av.CodecContext.create(spec.encoder, "w")
    ctx.width = ctx.height = small
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = 1 / fps
    ctx.framerate = fps
    ctx.gop_size = GOP_FRAMES
    ctx.max_b_frames = 0
    ctx.options = {**spec.options, spec.quality_option: str(value)}
    packets: list[bytes] = []
    sent_index: list[int] = []
    for i, img in enumerate(crops):
        if not send[i]:
            continue
        if cfg.scale != 1:
            img = cv2.resize(img, (small, small), interpolation=DOWNSCALE_INTERP)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = len(sent_index)
        sent_index.append(i)
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]

    hevc = spec.decoder == "hevc"
    banner, stripped = "", 0
    clean: list[bytes] = []
    for p in packets:
        c = strip_nal_units(p, spec.sei, hevc)
        if c != p and not banner:
            m = (X265_BANNER if hevc else X264_BANNER).search(p)
            banner = m.group(0).decode("ascii", "replace") if m else ""
        stripped += len(p) - len(c)
        clean.append(c)

    dec = av.CodecContext.create(spec.decoder, "r")
    decoded: list[np.ndarray] = []
    for c in clean:
        decoded += [f.to_ndarray(format="rgb24") for f in dec.decode(av.Packet(c))]
    decoded += [f.to_ndarray(format="rgb24") for f in dec.decode(None)]
    if len(decoded) != len(sent_index):
        raise RuntimeError(f"{cfg.name} {value}: {len(sent_index)} frames sent, {len(decoded)} decoded")

    outputs: dict[int, np.ndarray] = {}
    shown = -1
    for i in range(len(crops)):
        if send[i]:
            shown += 1
        if i in want:
            img = decoded[shown]
            if cfg.scale != 1:
                img = cv2.resize(img, (size, size), interpolation=UPSCALE_INTERP)
            outputs[i] = img
    messages = [Message(len(c), keyframe=(k == 0), startup=(k == 0)) for k, c in enumerate(clean)]
    return AnchorRun(outputs, messages, banner, stripped)


def versions() -> dict[str, object]:
    """Library versions behind the anchors (encoder banners are added per run)."""
    out: dict[str, object] = {
        "pyav": av.__version__,
        "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
    }
    for name, spec in CODECS.items():
        if available(name):
            out[name] = av.codec.Codec(spec.encoder, "w").long_name
    return out
