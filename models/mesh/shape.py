"""A lean keyframe rig: the keyframe's landmarks as a pose plus the coefficients of a face-shape model.

    landmarks = s * R @ (mean + basis.T @ c) + t        (crop widths; times the crop size for pixels)

mean and basis (a PCA of similarity-aligned face-mesh landmarks of real clips, fitted by
benchmarks/fit_entropy.py with its provenance in shape_model.json) are data shipped with the
package; per keyframe only s, R, t (7 numbers) and N_COMPONENTS coefficients travel, range-coded
with a Gaussian per coefficient (constriction): about 100 bytes instead of ~2 KB of zlib-packed
coordinates. The sender builds its rig from the decoded copy, so both sides use the same rig;
the reconstruction is rounded to a 1/64-px grid so float noise of different BLAS builds cannot
make them differ. Each message names the model (its digest): a receiver with another model refuses
it with one line instead of building a wrong rig.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import constriction
import numpy as np

from models.mesh.pose import euler_angles, rotation_matrix, similarity
from models.types import ModelMismatchError

MODEL_PATH = Path(__file__).resolve().parent / "shape_model.npz"
FORMAT = 2  # first byte of the rig data (zlib data, the older form, starts with 0x78)
N_COMPONENTS = 64  # residual ~0.08 px RMS at 256x256 (the 0.25 px grid of the older form: 0.07)
COEF_STEP = 1e-3  # crop widths: ~0.01 px per landmark coordinate from all coefficients together
ANGLE_STEP_DEG = 0.01
LOG_SCALE_STEP = 1e-4
TRANSLATION_STEP = 1e-4  # crop widths
POSE_RANGE = 1 << 20  # symbols of the pose values (uniform: no prior on where the head is)
COEF_RANGE = 1 << 15
GRID_PX = 1.0 / 64.0
ID_BYTES = 4


@dataclass(frozen=True)
class ShapeModel:
    """The face-shape model both sides share."""

    mean: np.ndarray
    """(N, 3) mean landmarks in the canonical frame, crop widths."""
    basis: np.ndarray
    """(K, N * 3) orthonormal components (float32)."""
    coef_std: np.ndarray
    """(K,) standard deviation of each coefficient on the fitting clips, crop widths."""

    @property
    def model_id(self) -> bytes:
        h = hashlib.sha256()
        for a in (self.mean, self.basis, self.coef_std):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.digest()[:ID_BYTES]


_cache: dict[str, ShapeModel | None] = {}


def shipped(path: Path = MODEL_PATH) -> ShapeModel | None:
    """The packaged shape model, None where it is missing."""
    key = str(path)
    if key not in _cache:
        if not path.is_file():
            _cache[key] = None
        else:
            with np.load(path, allow_pickle=False) as z:
                mean = z["mean"].astype(np.float64)
                basis = z["basis"].astype(np.float64)
                _cache[key] = ShapeModel(mean, basis, z["coef_std"].astype(np.float64))
    return _cache[key]


def _pose_symbols(s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    yaw, pitch, roll = euler_angles(rot)
    v = [yaw / ANGLE_STEP_DEG, pitch / ANGLE_STEP_DEG, roll / ANGLE_STEP_DEG, np.log(s) / LOG_SCALE_STEP]
    v += list(t / TRANSLATION_STEP)
    return np.clip(np.rint(v), -POSE_RANGE // 2, POSE_RANGE // 2 - 1).astype(np.int32)


_UNIFORM = constriction.stream.model.Uniform(POSE_RANGE)
_COEF = constriction.stream.model.QuantizedGaussian(-COEF_RANGE, COEF_RANGE)


def encode(landmarks_px: np.ndarray, size: int, model: ShapeModel) -> bytes:
    lm = np.asarray(landmarks_px, np.float64) / size
    s, rot, t = similarity(model.mean, lm)
    canon = ((lm - t) @ rot) / s
    coefs = model.basis[:N_COMPONENTS] @ (canon - model.mean).reshape(-1)
    q = np.clip(np.rint(coefs / COEF_STEP), -COEF_RANGE, COEF_RANGE).astype(np.int32)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(_pose_symbols(s, rot, t) + POSE_RANGE // 2, _UNIFORM)
    enc.encode(q, _COEF, np.zeros(len(q)), _stds(model, len(q)))
    body = enc.get_compressed().astype(">u4").tobytes()
    return bytes([FORMAT]) + model.model_id + body


def _stds(model: ShapeModel, k: int) -> np.ndarray:
    return np.maximum(model.coef_std[:k] / COEF_STEP, 0.5).astype(np.float64)


def decode(data: bytes, size: int, model: ShapeModel | None) -> np.ndarray:
    """(N, 3) float32 pixels; raises ModelMismatchError (a ValueError) on data another model coded,
    ValueError on data no model coded."""
    if len(data) < 1 + ID_BYTES + 4 or data[0] != FORMAT:
        raise ValueError("keyframe rig: not shape-coded data")
    if model is None:
        raise ModelMismatchError("keyframe rig: coded with a face-shape model this receiver does not have")
    if data[1 : 1 + ID_BYTES] != model.model_id:
        raise ModelMismatchError(
            f"keyframe rig: coded with face-shape model {data[1 : 1 + ID_BYTES].hex()}, "
            f"this receiver has {model.model_id.hex()}"
        )
    body = data[1 + ID_BYTES :]
    if len(body) % 4:
        raise ValueError("keyframe rig: truncated")
    k = min(N_COMPONENTS, len(model.basis))
    try:
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(body, ">u4").astype(np.uint32))
        pose = dec.decode(_UNIFORM, 7).astype(np.float64) - POSE_RANGE // 2
        q = dec.decode(_COEF, np.zeros(k), _stds(model, k)).astype(np.float64)
    except Exception as exc:  # constriction asserts on data no model could produce
        raise ValueError(f"keyframe rig: undecodable ({type(exc).__name__})") from None
    rot = rotation_matrix(*(pose[:3] * ANGLE_STEP_DEG))
    s = float(np.exp(pose[3] * LOG_SCALE_STEP))
    t = pose[4:] * TRANSLATION_STEP
    canon = model.mean + (q * COEF_STEP @ model.basis[:k]).reshape(model.mean.shape)
    lm = (s * canon @ rot.T + t) * size
    return (np.rint(lm / GRID_PX) * GRID_PX).astype(np.float32)


def fit(shapes: np.ndarray, provenance: dict, path: Path = MODEL_PATH, iterations: int = 3) -> ShapeModel:
    """PCA of similarity-aligned landmark sets (M, N, 3) in crop widths; writes path and its .json."""
    ref = shapes[0]
    for _ in range(iterations):  # generalised Procrustes: align to the mean, re-estimate it
        aligned = []
        for lm in shapes:
            s, rot, t = similarity(lm, ref)
            aligned.append(s * lm @ rot.T + t)
        ref = np.mean(aligned, axis=0)
    d = (np.asarray(aligned) - ref).reshape(len(shapes), -1)
    _, sing, vt = np.linalg.svd(d, full_matrices=False)
    basis = vt[:N_COMPONENTS].astype(np.float32)
    coef_std = (sing[:N_COMPONENTS] / np.sqrt(len(d))).astype(np.float32)
    np.savez_compressed(path, mean=ref, basis=basis, coef_std=coef_std)
    _cache.pop(str(path), None)
    loaded = shipped(path)
    assert loaded is not None
    doc = provenance | {"model_id": loaded.model_id.hex(), "components": N_COMPONENTS, "shapes": len(shapes)}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    return loaded
