"""Training data for fv2v: face-crop clips with teacher head-pose labels, sampled as (source, driving) pairs.

Layout of a prepared dataset folder:

    index.json           {"format", "size", "clips": [{"name", "source", "frames", "fps", "box", "labelled"}]}
    NAME.frames.npy      uint8 (N, size, size, 3) RGB face crops (memory-mapped when training)
    NAME.pose.npy        float32 (N, 3) yaw, pitch, roll degrees from MediaPipe; NaN where no face
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from models.types import NoFaceError

DATASET_FORMAT = "fvcall-fv2v-data/1"
INDEX = "index.json"
LANDMARK_SIZE = 256  # px: crops for MediaPipe are at least this big (its landmarks fail on tiny faces)
MIN_CLIP_FRAMES = 2  # a pair needs two frames
FLIP_PROB = 0.5  # horizontal flips double the few identities we have (yaw and roll change sign)


def _clip_name(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{path.parent.name}_{path.stem}").strip("_") or "clip"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _frames(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video (PyAV), at most max_frames."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if max_frames is not None and i >= max_frames:
                break
            yield frame.to_ndarray(format="rgb24")


def prepare_clip(path: Path, size: int, max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(frames uint8 (N, size, size, 3), pose float32 (N, 3), info) of one video.

    One fixed crop box per clip, from FaceDetector on the first frame with a face (the frames before
    it use the same box); pose labels from absolute_pose on FaceMesh landmarks of each crop."""
    from models.face import FaceDetector, FaceMesh, crop
    from models.mesh.pose import absolute_pose

    if not path.is_file():
        raise FileNotFoundError(f"no such video: {path}")
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate or 0) if container.streams.video else 0.0
    detector, mesh = FaceDetector(), FaceMesh(video=True)
    try:
        box = None
        pending: list[np.ndarray] = []
        crops: list[np.ndarray] = []
        poses: list[tuple[float, float, float]] = []

        def label(frame: np.ndarray) -> None:
            assert box is not None
            big = crop(frame, box, max(size, LANDMARK_SIZE))
            lm = mesh.landmarks(big)
            poses.append(absolute_pose(lm) if lm is not None else (np.nan, np.nan, np.nan))
            crops.append(cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA) if big.shape[0] != size else big)

        for frame in _frames(path, max_frames):
            if box is None:
                box = detector.find(frame)
                if box is None:
                    pending.append(frame)
                    continue
                for f in pending:
                    label(f)
                pending.clear()
            label(frame)
    finally:
        detector.close()
        mesh.close()
    if box is None:
        raise NoFaceError(f"no face found in {path}")
    if len(crops) < MIN_CLIP_FRAMES:
        raise ValueError(f"{path} has fewer than {MIN_CLIP_FRAMES} frames")
    pose = np.asarray(poses, dtype=np.float32)
    info = {
        "source": str(path),
        "frames": len(crops),
        "fps": fps,
        "box": box.to_list(),
        "labelled": int(np.isfinite(pose).all(1).sum()),
    }
    return np.stack(crops), pose, info


def prepare(
    videos: Iterable[str | Path],
    out_dir: str | Path,
    size: int,
    max_frames: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Crop, label and store videos into out_dir (added to an existing dataset of the same size)."""
    out = Path(out_dir)
    paths = [Path(v) for v in videos]
    if not paths:
        raise ValueError("no videos given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no such video: {p}")
    if size < 16 or size % 16:
        raise ValueError(f"size must be a positive multiple of 16, not {size}")
    out.mkdir(parents=True, exist_ok=True)
    index = read_index(out) if (out / INDEX).is_file() else {"format": DATASET_FORMAT, "size": size, "clips": []}
    if index["size"] != size:
        raise ValueError(f"{out} holds {index['size']}x{index['size']} crops, not {size}x{size}")
    taken = {c["name"] for c in index["clips"]}
    for p in paths:
        frames, pose, info = prepare_clip(p, size, max_frames)
        name = _clip_name(p, taken)
        taken.add(name)
        np.save(out / f"{name}.frames.npy", frames)
        np.save(out / f"{name}.pose.npy", pose)
        index["clips"].append({"name": name, **info})
        (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")  # after every clip: partial runs count
        if progress:
            progress(f"{p}: {info['frames']} frames, {info['labelled']} with a pose label -> {name}")
    return index


def read_index(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{data_dir} is not a prepared fv2v dataset (no {INDEX}); run `prepare` first")
    index = json.loads(path.read_text())
    if index.get("format") != DATASET_FORMAT or not index.get("clips"):
        raise ValueError(f"{path} is not a {DATASET_FORMAT} index with clips")
    return index


class PairDataset(Dataset[dict[str, torch.Tensor]]):
    """(source, driving) frame pairs from the same clip, with teacher angles (NaN when unknown).

    Item i uses frame i (over all clips) as source and a random other frame of its clip as driving."""

    def __init__(self, data_dir: str | Path, size: int | None = None, flip: bool = True) -> None:
        self.dir = Path(data_dir)
        self.index = read_index(self.dir)
        if size is not None and self.index["size"] != size:
            raise ValueError(f"dataset {self.dir} holds {self.index['size']}px crops, the config needs {size}px")
        self.flip = flip
        self.clips = [c for c in self.index["clips"] if c["frames"] >= MIN_CLIP_FRAMES]
        self.offsets = np.cumsum([0] + [c["frames"] for c in self.clips])
        self._frames: dict[str, np.ndarray] = {}  # opened lazily: memory maps must open in each worker
        self._poses = {c["name"]: np.load(self.dir / f"{c['name']}.pose.npy") for c in self.clips}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def sources(self) -> list[str]:
        return [c["source"] for c in self.clips]

    def frames(self, name: str) -> np.ndarray:
        if name not in self._frames:
            self._frames[name] = np.load(self.dir / f"{name}.frames.npy", mmap_mode="r")
        return self._frames[name]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c = int(np.searchsorted(self.offsets, i, side="right") - 1)
        clip = self.clips[c]
        src = i - int(self.offsets[c])
        drv = int(torch.randint(clip["frames"] - 1, ()).item())
        drv += drv >= src  # any frame but the source
        frames, pose = self.frames(clip["name"]), self._poses[clip["name"]]
        s = torch.from_numpy(np.array(frames[src])).permute(2, 0, 1).float() / 255.0
        d = torch.from_numpy(np.array(frames[drv])).permute(2, 0, 1).float() / 255.0
        ps, pd = torch.from_numpy(pose[src].copy()), torch.from_numpy(pose[drv].copy())
        if self.flip and torch.rand(()) < FLIP_PROB:
            s, d = s.flip(-1), d.flip(-1)
            sign = torch.tensor([-1.0, 1.0, -1.0])  # mirror: yaw and roll change sign, pitch does not
            ps, pd = ps * sign, pd * sign
        return {"source": s, "driving": d, "pose_source": ps, "pose_driving": pd}
