"""Where the sender's frames come from: a camera, a video file, or the embedded sample."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from codec.profiles import quiet_native_stderr

DEFAULT_CAMERA_FPS = 25.0
MAX_SOURCE_SIDE = 4096  # larger frames are refused: nobody's webcam, likely a hostile file


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message is one line."""


class FrameSource:
    """Blocking reader of RGB frames; read() returns None at the end."""

    fps: float = DEFAULT_CAMERA_FPS

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CameraSource(FrameSource):
    def __init__(self, index: int) -> None:
        with quiet_native_stderr():  # OpenCV's videoio prints its own warnings on failure
            self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            raise SourceError(f"cannot open camera {index}: no such device, or it is in use")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 120 else DEFAULT_CAMERA_FPS

    def read(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None

    def close(self) -> None:
        self._cap.release()


class FileSource(FrameSource):
    """A video file played at its own frame rate; optionally looped."""

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path, self.loop = path, loop
        self._read = 0
        self._open()

    def _open(self) -> None:
        if self.path.stat().st_size == 0:
            raise SourceError(f"cannot read video {self.path}: empty file")
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise SourceError(f"cannot read video {self.path}: {_reason(exc)}") from None
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate and 1 <= float(rate) <= 240 else DEFAULT_CAMERA_FPS
        self._frames = self._container.decode(stream)

    def read(self) -> np.ndarray | None:
        for _ in range(2):
            try:
                frame = next(self._frames)
            except StopIteration:
                if not self.loop:
                    return None
                self._container.close()
                self._open()
                continue
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(f"cannot read video {self.path} past frame {self._read}: {_reason(exc)}") from None
            if max(frame.width, frame.height) > MAX_SOURCE_SIDE:
                raise SourceError(f"video {self.path} is {frame.width}x{frame.height}, above {MAX_SOURCE_SIDE}")
            self._read += 1
            return frame.to_ndarray(format="rgb24")
        return None

    def close(self) -> None:
        self._container.close()


def _reason(exc: BaseException) -> str:
    """One line for a failed open or read: 'not a video' rather than FFmpeg's errno text."""
    if isinstance(exc, IndexError):
        return "no video stream"
    if isinstance(exc, av.error.InvalidDataError):
        return "not a video, or a damaged one (invalid data)"
    if isinstance(exc, av.error.FFmpegError | OSError) and getattr(exc, "strerror", None):
        return str(exc.strerror)
    return str(exc).split(":")[0]


class PeekedSource(FrameSource):
    """A source whose first frame has been read already (to check it before the call connects)."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner, self.fps = inner, inner.fps
        self.first = inner.read()
        """The first frame (None: the source is empty)."""
        self._given = False

    def read(self) -> np.ndarray | None:
        if not self._given:
            self._given = True
            return self.first
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


class ArraySource(FrameSource):
    """Frames already in memory (the embedded sample, tests)."""

    def __init__(self, frames: list[np.ndarray], fps: float, loop: bool = False) -> None:
        self._frames, self.fps, self.loop, self._i = frames, fps, loop, 0

    def read(self) -> np.ndarray | None:
        if self._i >= len(self._frames):
            if not self.loop or not self._frames:
                return None
            self._i = 0
        self._i += 1
        return self._frames[self._i - 1]


def open_source(spec: str, loop: bool = False) -> FrameSource:
    """`--camera` value: an integer is a camera index, anything else a video file."""
    if spec.isdigit():
        return CameraSource(int(spec))
    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"no camera or video file named {spec!r}")
    return FileSource(path, loop)
