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
# Fragmented MP4: an empty moov up front, then a self-contained fragment at every keyframe and at
# least every FRAGMENT_S, each flushed to disk as it is written. A killed process leaves a file
# that plays up to its last complete fragment; a plain MP4 is unreadable until closed.
FRAGMENT_S = 0.5
FRAGMENT_FLAGS = "frag_keyframe+empty_moov+default_base_moof"
CAPTURE_START_KEY = "fvcall_capture_start_ms"
KEYFRAME_INTERVAL_FRAMES = 50  # an IDR every 2 s at 25 fps: seekable without bloating the file


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


def check_writable(path: Path) -> None:
    """SinkError (one line) unless a file can be created at path; checked before a call starts."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SinkError(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        raise SinkError(f"cannot write {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SinkError(f"cannot write {path}: permission denied")


class VideoFileSink:
    """H.264 in a fragmented MP4 with millisecond timestamps, so held or dropped frames keep real
    timing; the frame size is the first frame's. Readable after a kill, up to the last second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._out = av.open(
                str(path),
                "w",
                format="mp4",
                options={"movflags": FRAGMENT_FLAGS, "frag_duration": str(int(FRAGMENT_S * 1e6)), "flush_packets": "1"},
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot write {path}: {exc}") from None
        self._stream = None
        self._last_ms: int | None = None
        self._t0: int | None = None
        self.frames = 0
        """Frames written."""
        self.repeats = 0
        """Frames not written: a capture time not later than the last one (a re-render of the same frame)."""

    def write(self, frame: np.ndarray, ms: int) -> None:
        if self._stream is None:
            self._stream = self._out.add_stream("libx264", rate=1000)
            self._stream.width, self._stream.height = frame.shape[1], frame.shape[0]
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = Fraction(1, 1000)
            # zerolatency: no lookahead, so each frame is in the file right away, not ~40 frames later
            self._stream.options = {
                "crf": str(OUTPUT_CRF),
                "preset": "veryfast",
                "tune": "zerolatency",
                "g": str(KEYFRAME_INTERVAL_FRAMES),
            }
            self._t0 = ms
            # Where pts 0 sits on the sender's capture clock (written in the header, so also in a killed file).
            self._out.metadata["comment"] = f"{CAPTURE_START_KEY}={ms}"
        assert self._t0 is not None
        pts = ms - self._t0
        if self._last_ms is not None and pts <= self._last_ms:
            self.repeats += 1
            return  # timestamps must increase; a repeated capture time adds nothing
        self._last_ms = pts
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts, vf.time_base = pts, Fraction(1, 1000)
        for packet in self._stream.encode(vf):
            self._out.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
        self._out.close()
