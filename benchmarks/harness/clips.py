"""Input clips: find them, decode them, crop the face the way the call does."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from models.face import CropBox, FaceDetector, crop

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_FPS = 25.0  # when a container does not say
SAMPLE_ID = "sample-synthetic"


@dataclass
class Clip:
    """Frames of one video from its first frame with a face on, and the call's crop box."""

    clip_id: str
    source: str
    fps: float
    frames: list[np.ndarray]
    """Full RGB frames (not cropped), starting with the first frame with a face."""
    box: CropBox
    """The box FaceDetector gives on frames[0]: what FaceEncoder uses until it re-centres."""
    skipped_frames: int = 0
    """Frames before the first face."""
    notes: list[str] = field(default_factory=list)


def find_clips(root: Path) -> list[Path]:
    """Videos under root (recursive), sorted by path so runs are reproducible."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def clip_id(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", rel)


def _decode(path: Path) -> tuple[Iterator[np.ndarray], float]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else DEFAULT_FPS

    def gen() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    return gen(), fps


def _start_at_face(
    clip_id_: str, source: str, frames: Iterator[np.ndarray], fps: float, max_frames: int | None, detector: FaceDetector
) -> Clip | None:
    skipped = 0
    box: CropBox | None = None
    out: list[np.ndarray] = []
    for f in frames:
        if box is None:
            box = detector.find(f)
            if box is None:
                skipped += 1
                continue
        out.append(f)
        if max_frames is not None and len(out) >= max_frames:
            break
    if box is None:
        return None
    return Clip(clip_id_, source, fps, out, box, skipped)


def load_clip(path: Path, root: Path, max_frames: int | None, detector: FaceDetector) -> Clip | None:
    """The clip from its first face on (None: no face anywhere)."""
    frames, fps = _decode(path)
    return _start_at_face(clip_id(path, root), str(path.relative_to(root)), frames, fps, max_frames, detector)


def load_sample(max_frames: int | None, detector: FaceDetector) -> Clip | None:
    """The embedded synthetic demo clip (models.sample), for machines without ../shared/data."""
    from models import sample

    warnings.warn(
        "no real clips: using the embedded SYNTHETIC sample (rendered by the mesh renderer itself, "
        "so it flatters the mesh profile); pass --clips DIR for real faces",
        stacklevel=2,
    )
    return _start_at_face(SAMPLE_ID, "models.sample.frames()", sample.frames(), sample.SAMPLE_FPS, max_frames, detector)


def crops(frames: list[np.ndarray], boxes: list[CropBox], size: int) -> list[np.ndarray]:
    """Each frame cut with its box and resized exactly like FaceEncoder does (models.face.crop)."""
    return [crop(f, b, size) for f, b in zip(frames, boxes, strict=True)]
