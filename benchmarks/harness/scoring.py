"""Every quality metric of one output sequence against its reference, in one call per point.

Pixel fidelity and MediaPipe keypoints come from metrics.Reference; dlib landmarks, identity and
expression from face_metrics.FaceReference; LPIPS / DISTS from perceptual.Perceptual when the user
supplied its backbone weights. Everything about the reference is computed once per clip and crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from codec import metrics as met
from models.face import FaceMesh

from . import face_metrics as fm
from . import perceptual as pm

METRICS = (*met.METRICS, *fm.FACE_METRICS, *pm.METRICS)
HIGHER_IS_BETTER = {**met.HIGHER_IS_BETTER, **fm.HIGHER_IS_BETTER, **pm.HIGHER_IS_BETTER}
UNITS = {**met.UNITS, **fm.UNITS, **pm.UNITS}
IDENTITY_SHARE = 4  # dlib's embedding (80 ms a frame) on every 4th scored frame


@dataclass
class Scores:
    """All metrics of one point."""

    means: dict[str, float]
    """METRICS -> value (NaN where not computed or undefined)."""
    per_frame: dict[str, list[float]]
    """Per scored frame values of the metrics that have them."""
    kp_missing: int
    """Scored frames whose output lost the MediaPipe face."""
    face_missing: int
    """Scored frames whose output has no face dlib's detector finds (input has one)."""


class Scorer:
    """The reference crops of one clip, analysed once; score() rates one codec's outputs."""

    def __init__(
        self,
        crops: list[np.ndarray],
        scored: list[int],
        mesh: FaceMesh,
        use_vmaf: bool,
        analyzer: fm.FaceAnalyzer | None,
        perceptual: pm.Perceptual | None,
    ) -> None:
        self.scored = scored
        self.base = met.Reference(crops, scored, mesh, use_vmaf)
        ref = {i: crops[i] for i in scored}
        self.face = fm.FaceReference(analyzer, ref, scored[::IDENTITY_SHARE]) if analyzer is not None else None
        self.perceptual = perceptual
        self._ref_stack = np.stack([crops[i] for i in scored]) if perceptual is not None else None

    def score(self, outputs: dict[int, np.ndarray]) -> Scores:
        base = self.base.score(outputs)
        means = dict.fromkeys(METRICS, math.nan) | base.means
        per_frame = dict(base.per_frame)
        face_missing = 0
        if self.face is not None:
            f = self.face.score(outputs)
            means |= f.means
            per_frame |= f.per_frame
            face_missing = f.face_missing
        if self.perceptual is not None and self._ref_stack is not None:
            values = self.perceptual.score(self._ref_stack, np.stack([outputs[i] for i in self.scored]))
            for k, v in values.items():
                per_frame[k] = v
                means[k] = float(np.mean(v))
        return Scores(means, per_frame, base.kp_missing, face_missing)
