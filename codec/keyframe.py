"""The keyframe: one H.264 intra picture (PyAV libx264), Annex B with its own SPS/PPS; and
reference pictures coded as the P picture that follows a keyframe (`encode_predicted`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

# Chosen by benchmarks/keyframe_sweep.py (59 real keyframe crops, 256x256; preset x tune x CRF): the
# former medium/stillimage/CRF 18 gave 2662 B at 37.77 dB PSNR-Y; slow/psnr/CRF 21 gives 1992 B at
# 38.08 dB (-25% bytes, +0.3 dB), 10 ms an encode. tune psnr turns psy-rd and AQ off: skin texture
# is a little smoother at equal PSNR, which the warp blurs anyway.
# X264_PARAMS make a picture's bytes depend on that picture alone (no lookahead, no macroblock tree,
# one thread), so a keyframe re-encodes to the same bytes as the first picture of a two-picture
# stream, whose second picture is then a P picture predicted from what the receiver decoded. Without
# the macroblock tree the same quality sits at a higher CRF: 34 gives 1630 B at 37.99 dB where CRF 21
# with it gave 1684 B at 38.00 dB (15 keyframes of PaddleGAN/fom_dv and DFRF/french).
DEFAULT_CRF = 34
X264_PARAMS = "bframes=0:rc-lookahead=0:mbtree=0:threads=1"
MAX_CRF = 51  # x264's coarsest
NAL_SEI = 6
NAL_SPS = 7
X264_PRESET = "slow"  # a keyframe is encoded rarely; slower presets gained nothing more on stills
X264_TUNE = "psnr"


class KeyframeError(ValueError):
    """Bytes that do not decode to one picture of the expected size."""


def _encode(images: list[np.ndarray], crf: int, preset: str, tune: str, extra: str = "") -> list[bytes]:
    """One H.264 stream of `images`: the bytes of each picture, SEI stripped."""
    h, w = images[0].shape[:2]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    params = X264_PARAMS + (f":{extra}" if extra else "")
    ctx.options = {"crf": str(int(crf)), "preset": preset, "x264-params": params} | ({"tune": tune} if tune else {})
    packets = []
    for image in images:
        packets += ctx.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
    packets += ctx.encode(None)
    return [strip_sei(bytes(p)) for p in packets]


def encode(image: np.ndarray, crf: int = DEFAULT_CRF, preset: str = X264_PRESET, tune: str = X264_TUNE) -> bytes:
    """RGB uint8 (H, W, 3), H and W even -> H.264 bytes of one IDR picture."""
    return b"".join(_encode([image], crf, preset, tune))


@dataclass(frozen=True)
class Coded:
    """A picture as the sender encoded it: what a later picture is predicted from."""

    image: np.ndarray
    """The RGB picture that was encoded (the camera crop)."""
    data: bytes
    """Its H.264 bytes, as sent."""
    qp: int | None = None
    """Its quantizer where it is a P picture; None: the intra picture at the stream's CRF."""


def encode_predicted(chain: Sequence[Coded], image: np.ndarray, qp: int, crf: int = DEFAULT_CRF) -> bytes | None:
    """H.264 bytes of `image` as a P picture after `chain` (an intra keyframe encode()d at `crf`, then
    the P pictures that followed it); `qp` is its quantizer. None when the chain does not re-encode to
    its own bytes (another x264 build or settings): the caller sends an intra picture instead."""
    qps = [c.qp for c in chain[1:]] + [qp]
    zones = "/".join(f"{i},{i},q={int(q)}" for i, q in enumerate(qps, 1) if q is not None)
    out = _encode([c.image for c in chain] + [image], crf, X264_PRESET, X264_TUNE, f"zones={zones}")
    if len(out) != len(chain) + 1 or any(o != c.data for o, c in zip(out, chain, strict=False)):
        return None
    return out[-1]


def strip_sei(annexb: bytes) -> bytes:
    """Drop SEI NAL units: x264 writes ~700 bytes of version and settings text into one,
    which no decoder needs (a third of a 256x256 keyframe)."""
    starts, i = [], annexb.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i)
        i = annexb.find(b"\x00\x00\x01", i + 3)
    out = bytearray()
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(annexb)
        if end < len(annexb) and annexb[end - 1] == 0:
            end -= 1  # a 4-byte start code's leading zero belongs to the next unit
        if start + 3 < len(annexb) and annexb[start + 3] & 0x1F != NAL_SEI:
            out += b"\x00\x00\x01" + annexb[start + 3 : end]
    return bytes(out)


def is_intra(data: bytes) -> bool:
    """Does `data` start with its own SPS (an intra picture that decodes alone)?"""
    return data[:3] == b"\x00\x00\x01" and len(data) > 3 and data[3] & 0x1F == NAL_SPS


def decode(data: bytes, size: int, base: Sequence[bytes] = ()) -> np.ndarray:
    """H.264 bytes -> RGB uint8 (size, size, 3); raises KeyframeError on anything else. A P picture
    (encode_predicted) needs the bytes of the chain it was predicted from as `base`."""
    ctx = av.CodecContext.create("h264", "r")
    units = [bytes(data)] if not base or is_intra(data) else [*map(bytes, base), bytes(data)]
    try:
        # One access unit per packet: handed over whole instead of through the parser, which holds
        # the last unit back until the next one starts.
        frames = [f for u in units for f in ctx.decode(av.Packet(u))] + list(ctx.decode(None))
    except (av.error.FFmpegError, ValueError) as exc:
        raise KeyframeError(f"keyframe does not decode: {exc}") from None
    if len(frames) != len(units):
        raise KeyframeError("keyframe does not decode: no picture")
    f = frames[-1]
    if (f.width, f.height) != (size, size):
        raise KeyframeError(f"keyframe is {f.width}x{f.height}, expected {size}x{size}")
    return f.to_ndarray(format="rgb24")
