"""Estimator of the `mesh` profile: MediaPipe face mesh -> pose and expression."""

from __future__ import annotations

import numpy as np

from models.face import FaceMesh
from models.mesh import expression
from models.mesh import landmarks as wire_landmarks
from models.mesh.rig import Rig
from models.types import FrameParams, NoFaceError

# MediaPipe's landmarks depend on the region they are computed in: a picture seen on its own (region
# from the face detector) comes out 0.7-0.9 px off, consistently, from the same picture tracked from
# its own landmarks, and every frame is tracked. The keyframe is tracked too, or each frame's warp
# carries that offset: its region settles in ~3 passes (landmarks move 1.2, 0.5, 0.2 px), and on 6
# held-out clips AKD68 fell 10% (1.77 -> 1.59 px) against a keyframe seen on its own.
KEYFRAME_TRACK_PASSES = 3


class MeshEstimator:
    """models.types.ReferenceEstimator for the mesh profile."""

    def __init__(
        self,
        size: int,
        model: expression.ExpressionModel | None = None,
        keyframe_passes: int = KEYFRAME_TRACK_PASSES,
    ) -> None:
        """`keyframe_passes`: tracker passes over each keyframe picture (0: MediaPipe's static-image
        mode alone, as before KEYFRAME_TRACK_PASSES; kept for comparisons)."""
        self.size = size
        self.keyframe_passes = keyframe_passes
        self.model = model or expression.get()
        """Expression model (its id goes in the session header)."""
        self.n_expr = self.model.n_expr
        self.model_id = self.model.model_id
        self.rig: Rig | None = None
        self._still = FaceMesh(video=False)  # a keyframe the tracker loses: on its own
        self._video = FaceMesh(video=True)  # frames and keyframes: tracking is faster and steadier
        self.last_landmarks: np.ndarray | None = None
        """Landmarks of the last estimated frame (for diagnostics and keyframe decisions)."""

    def set_keyframe(self, image: np.ndarray) -> bytes:
        lm = None
        for _ in range(self.keyframe_passes):
            lm = self._video.landmarks(image)
            if lm is None:
                break
        if lm is None:
            lm = self._still.landmarks(image)
        if lm is None:
            raise NoFaceError("no face in the keyframe")
        aux = wire_landmarks.encode(lm, self.size)
        self.rig = Rig(wire_landmarks.decode(aux, self.size), self.size, self.model)
        return aux

    def estimate(self, crop: np.ndarray) -> FrameParams | None:
        if self.rig is None:
            raise RuntimeError("estimate before set_keyframe")
        lm = self._video.landmarks(crop)
        self.last_landmarks = lm
        return None if lm is None else self.rig.params(lm)

    def reference_aux(self) -> bytes:
        """The last estimated crop's landmarks, coded like a keyframe's (a reference picture's rig)."""
        if self.last_landmarks is None:
            raise NoFaceError("no face in the last crop")
        return wire_landmarks.encode(self.last_landmarks, self.size)

    def close(self) -> None:
        self._still.close()
        self._video.close()
