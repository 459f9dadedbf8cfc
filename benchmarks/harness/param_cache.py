"""The parameter sequences of real clips through the real sender, cached: what the entropy models are
fitted on (benchmarks/fit_entropy.py) and what the rate benchmark codes (benchmarks/param_rate.py).

Every clip goes through codec.encoder.FaceEncoder at its defaults; per frame the cache keeps the
unquantized parameters the estimator produced, whether the encoder sent them, the keyframe they are
relative to, the landmarks and the v1 PARAMS bytes; per keyframe its original crop, rig landmarks
and v1 sizes. Persons (MANIFEST.md labels) are split into a fitting and a held-out set.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from codec import profiles, wire
from codec.api import Estimator
from codec.encoder import FaceEncoder
from codec.params import FrameParams, QuantSpec
from codec.profiles import DEFAULT_PROFILE
from models.face import N_LANDMARKS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLIPS = ROOT.parent / "shared" / "data" / "raw"
DEFAULT_CACHE = ROOT / "results" / "entropy"
DEFAULT_FRAMES = 300  # per clip: 10-12 s is enough to see a person's range of motion
HOLDOUT_EVERY = 4  # every 4th person (sorted labels) is held out of the fit
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


class RecordingEstimator:
    """Wraps the profile's estimator and keeps what it produced (codec.api.Estimator)."""

    def __init__(self, inner: Estimator) -> None:
        self.inner = inner
        self.n_expr = inner.n_expr
        self.last: FrameParams | None = None
        self.kf_landmarks: list[np.ndarray] = []
        self.kf_aux_bytes: list[int] = []

    def set_keyframe(self, image: np.ndarray) -> bytes:
        aux = self.inner.set_keyframe(image)
        rig = getattr(self.inner, "rig", None)
        self.kf_landmarks.append(np.zeros((0, 3)) if rig is None else np.asarray(rig.landmarks, np.float32))
        self.kf_aux_bytes.append(len(aux))
        return aux

    def estimate(self, crop: np.ndarray) -> FrameParams | None:
        self.last = self.inner.estimate(crop)
        return self.last

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close:
            close()


def persons(manifest: Path) -> dict[str, str]:
    """clip path relative to the data root ('raw/...') -> person label, from MANIFEST.md's tables."""
    out = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            m = re.match(r"\|\s*(raw/[^|]+?)\s*\|\s*([PN]\d+)", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def extract(path: Path, frames: int) -> dict[str, np.ndarray]:
    """Run the real sender over one clip; returns the arrays cached for it."""
    rec = RecordingEstimator(profiles.get(DEFAULT_PROFILE).estimator(256, None, QuantSpec()))
    # one message per frame: "sent" belongs to this frame; references change no parameter
    enc = FaceEncoder(estimator=rec, batch=1, references=False)
    vec, sent, kf, lms, v1_bytes, kf_crops, h264_bytes = [], [], [], [], [], [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        for i, f in enumerate(c.decode(stream)):
            if i >= frames:
                break
            rec.last = None
            n_kf = enc.stats.keyframes
            packets = enc.encode(f.to_ndarray(format="rgb24"), int(round(i * 1000 / fps)))
            if enc.stats.keyframes > n_kf and enc.last_crop is not None:
                kf_crops.append(enc.last_crop)
                h264_bytes.append(int(enc.events[-1].split(": ")[1].split()[0]))
            params = [wire.decode(p.data) for p in packets if not p.reliable]
            shown = [m for m in params if isinstance(m, wire.Params) and m.flags == wire.Flags.NONE]
            p = rec.last
            vec.append(np.full(6 + rec.n_expr, np.nan) if p is None else p.vector())
            sent.append(bool(shown))
            kf.append(enc.kf_id)
            v1_bytes.append(sum(len(pk.data) for pk in packets if not pk.reliable))
            lm = getattr(rec.inner, "last_landmarks", None)
            lms.append(np.full((N_LANDMARKS, 3), np.nan) if lm is None or p is None else lm)
    enc.close()
    return {
        "vec": np.asarray(vec, np.float32),
        "sent": np.asarray(sent),
        "kf": np.asarray(kf, np.int16),
        "landmarks": np.asarray(lms, np.float16),
        "v1_params_bytes": np.asarray(v1_bytes, np.int32),
        "kf_landmarks": np.asarray(rec.kf_landmarks, np.float32),
        "kf_crops": np.asarray(kf_crops, np.uint8).reshape(-1, 256, 256, 3),
        "kf_h264_bytes": np.asarray(h264_bytes, np.int32),
        "kf_aux_bytes": np.asarray(rec.kf_aux_bytes, np.int32),
        "fps": np.float32(fps),
        "n_expr": np.int32(rec.n_expr),
    }


@dataclass
class ClipData:
    """One clip's cached extraction."""

    clip: str
    """Path relative to the data root."""
    person: str
    """Person label (MANIFEST.md), or the clip path where the manifest has none."""
    arrays: dict[str, np.ndarray]
    """What extract() returned."""


def load_all(clips: Path, cache: Path, frames: int) -> list[ClipData]:
    who = persons(clips.parent / "MANIFEST.md")
    paths = sorted(p for p in clips.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    out = []
    (cache / "params").mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        rel = path.relative_to(clips.parent).as_posix()
        key = f"{profiles.get(DEFAULT_PROFILE).basis_id()}__{frames}"  # a new estimator or basis: extract again
        f = cache / "params" / (re.sub(r"[^A-Za-z0-9._-]+", "-", rel) + f"__{key}.npz")
        if not f.exists():
            t0 = time.perf_counter()
            arrays = extract(path, frames)
            np.savez_compressed(f, **arrays)
            print(
                f"[{i + 1}/{len(paths)}] {rel}: {len(arrays['vec'])} frames, {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        with np.load(f) as z:
            out.append(ClipData(rel, who.get(rel, rel), {k: z[k] for k in z.files}))
    return out


def split(data: list[ClipData]) -> tuple[list[ClipData], list[ClipData]]:
    labels = sorted({d.person for d in data})
    held = set(labels[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY])
    return [d for d in data if d.person not in held], [d for d in data if d.person in held]


def sequences(data: list[ClipData]) -> list[np.ndarray]:
    """The sent frames' unquantized vectors, one array per run of frames with the same keyframe."""
    out = []
    for d in data:
        a = d.arrays
        for k in np.unique(a["kf"][a["sent"]]):
            sel = a["sent"] & (a["kf"] == k)
            if sel.any():
                out.append(a["vec"][sel].astype(np.float64))
    return out
