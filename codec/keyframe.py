"""The keyframe: one H.264 intra picture (PyAV libx264), Annex B with its own SPS/PPS."""

from __future__ import annotations

import av
import numpy as np

# Chosen by benchmarks/keyframe_sweep.py (59 real keyframe crops, 256x256; preset x tune x CRF): the
# former medium/stillimage/CRF 18 gave 2662 B at 37.77 dB PSNR-Y; slow/psnr/CRF 21 gives 1992 B at
# 38.08 dB (-25% bytes, +0.3 dB), 10 ms an encode. tune psnr turns psy-rd and AQ off: skin texture
# is a little smoother at equal PSNR, which the warp blurs anyway.
DEFAULT_CRF = 21
MAX_CRF = 51  # x264's coarsest
NAL_SEI = 6
X264_PRESET = "slow"  # a keyframe is encoded rarely; slower presets gained nothing more on stills
X264_TUNE = "psnr"


class KeyframeError(ValueError):
    """Bytes that do not decode to one picture of the expected size."""


def encode(image: np.ndarray, crf: int = DEFAULT_CRF, preset: str = X264_PRESET, tune: str = X264_TUNE) -> bytes:
    """RGB uint8 (H, W, 3), H and W even -> H.264 bytes of one IDR picture."""
    h, w = image.shape[:2]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.options = {"crf": str(int(crf)), "preset": preset} | ({"tune": tune} if tune else {})
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return strip_sei(b"".join(bytes(p) for p in packets))


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


def decode(data: bytes, size: int) -> np.ndarray:
    """H.264 bytes -> RGB uint8 (size, size, 3); raises KeyframeError on anything else."""
    ctx = av.CodecContext.create("h264", "r")
    try:
        # One access unit: hand it over whole instead of through the parser, which holds
        # the last unit back until the next one starts.
        frames = list(ctx.decode(av.Packet(bytes(data)))) + list(ctx.decode(None))
    except (av.error.FFmpegError, ValueError) as exc:
        raise KeyframeError(f"keyframe does not decode: {exc}") from None
    if not frames:
        raise KeyframeError("keyframe does not decode: no picture")
    f = frames[0]
    if (f.width, f.height) != (size, size):
        raise KeyframeError(f"keyframe is {f.width}x{f.height}, expected {size}x{size}")
    return f.to_ndarray(format="rgb24")
