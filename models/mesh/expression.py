"""Expression models of the mesh profile: coefficients <-> landmark motion in the keyframe's frame.

The default model is learned (models/mesh/fit.py): a linear basis of how the 478 refined
face-mesh landmarks (irises included) move relative to the skull, found by PCA of real
clips' landmark motion after rigid alignment, normalised per face (eye line along x, unit
= outer eye-corner distance). It carries what the hand-placed Gaussian bases it replaced
could not: brow furrows, lower lids, lid closure, gaze, lip shapes, cheeks.

Each component is scaled to a peak landmark displacement of 1, so a coefficient is "how far
the most-moved landmark of that component goes", in crop widths on the wire, in pixels here.
Per keyframe the components are turned into the keyframe's image frame (its eye line); both
sides do this from the same quantized keyframe landmarks, so their bases agree exactly.
The sender fits the coefficients to the pose-free residual of all landmarks (least squares).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from models.face import N_LANDMARKS
from models.mesh import gaussian

DATA_DIR = Path(__file__).resolve().parent / "data"
LEARNED_PATH = DATA_DIR / "expression.npz"
PROVENANCE_PATH = DATA_DIR / "expression.json"
RIDGE = 1e-2  # px^2: keeps the fit stable where two components nearly coincide on a face
EYE_CORNERS = (33, 263)  # outer eye corners: the face frame's x axis and unit length


class ExpressionModel(Protocol):
    """What the rig needs from an expression model."""

    model_id: str
    """Names the model in the session header: both sides must use the same one."""
    n_expr: int
    """Number of coefficients."""
    moves_irises: bool
    """True when the model moves the 10 iris landmarks (the renderer then meshes them)."""

    def basis(self, landmarks: np.ndarray) -> np.ndarray:
        """(n_expr, 478, 2) pixels of landmark motion per pixel of coefficient, for these keyframe landmarks."""


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(2, 2) rotation from the face frame to the image (columns: eye line, face down) and the
    outer eye-corner distance in pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    x = lm[EYE_CORNERS[1], :2] - lm[EYE_CORNERS[0], :2]
    unit = float(np.linalg.norm(x)) + 1e-9
    ex = x / unit
    return np.array([[ex[0], -ex[1]], [ex[1], ex[0]]]), unit


class LearnedModel:
    """The PCA expression basis shipped in models/mesh/data/expression.npz."""

    moves_irises = True

    def __init__(self, components: np.ndarray, model_id: str) -> None:
        c = np.asarray(components, dtype=np.float64)
        if c.ndim != 3 or c.shape[1:] != (N_LANDMARKS, 2) or not np.all(np.isfinite(c)):
            raise ValueError(f"expression components must be (K, {N_LANDMARKS}, 2) finite, got {c.shape}")
        self.components = c
        """(K, 478, 2) motion per unit coefficient in the face frame (peak 1)."""
        self.n_expr = len(c)
        self.model_id = model_id

    def basis(self, landmarks: np.ndarray) -> np.ndarray:
        rot, _ = face_frame(landmarks)
        return self.components @ rot.T


@cache
def learned(path: Path = LEARNED_PATH) -> LearnedModel:
    """The shipped learned model (loaded once); its id carries the data's hash."""
    raw = path.read_bytes()
    with np.load(path, allow_pickle=False) as data:
        components = data["components"]
    return LearnedModel(components, f"pca{len(components)}-{hashlib.sha256(raw).hexdigest()[:8]}")


def provenance() -> dict:
    """What the learned model was fitted on (clips, frames, held-out persons, the rate/quality sweep)."""
    return json.loads(PROVENANCE_PATH.read_text())


MODELS: dict[str, Callable[[], ExpressionModel]] = {
    "learned": learned,
    gaussian.MODEL_ID: gaussian.GaussianModel,
}
"""Expression models by name; "learned" is the default."""
DEFAULT_MODEL = "learned"


def get(name: str = DEFAULT_MODEL) -> ExpressionModel:
    if name not in MODELS:
        raise KeyError(f"unknown expression model {name!r} (known: {', '.join(MODELS)})")
    return MODELS[name]()


def by_id(model_id: str) -> ExpressionModel | None:
    """The model a session header names ('' = the default), or None when this build lacks it."""
    if not model_id:
        return get()
    for make in MODELS.values():
        model = make()
        if model.model_id == model_id:
            return model
    return None


def fit_matrix(b: np.ndarray) -> np.ndarray:
    """(K, 478*2) ridge least-squares map from a residual field to coefficients."""
    a = b.reshape(len(b), -1).T  # (956, K)
    return np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T)


def apply(b: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """(478, 2) displacement in pixels for coefficients in pixels."""
    return np.tensordot(np.asarray(coeffs, np.float64), b, axes=1)
