"""Where the receiver's frames go: a window, a video file, or memory."""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

WINDOW_TITLE = "fvcall"
OUTPUT_CRF = 18  # the output file should not add visible loss of its own


class SinkError(RuntimeError):
    """A sink that cannot be opened; one line."""


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink:
    """An OpenCV window; key() returns the last key pressed (or -1)."""

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        if not display_available():
            raise SinkError("no display to open a window on: use --no-window (and --out FILE.mp4)")
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)

    def write(self, frame: np.ndarray, ms: int) -> None:
        cv2.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def key(self) -> int:
        return cv2.waitKey(1)

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class VideoFileSink:
    """H.264 MP4 with millisecond timestamps, so held or dropped frames keep real timing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._out = av.open(str(path), "w")
        except (av.error.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot write {path}: {exc}") from None
        self._stream = None
        self._last_ms: int | None = None
        self._t0: int | None = None

    def write(self, frame: np.ndarray, ms: int) -> None:
        if self._stream is None:
            self._stream = self._out.add_stream("libx264", rate=1000)
            self._stream.width, self._stream.height = frame.shape[1], frame.shape[0]
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = Fraction(1, 1000)
            self._stream.options = {"crf": str(OUTPUT_CRF), "preset": "veryfast"}
            self._t0 = ms
        assert self._t0 is not None
        pts = ms - self._t0
        if self._last_ms is not None and pts <= self._last_ms:
            return  # timestamps must increase; a repeated capture time adds nothing
        self._last_ms = pts
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts, vf.time_base = pts, Fraction(1, 1000)
        for packet in self._stream.encode(vf):
            self._out.mux(packet)

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
        self._out.close()
