"""The keyframe's face rig: landmarks <-> parameters, shared by sender and receiver.

    moved = s * R @ (L0 + E(c) - mu) + mu + t

L0: keyframe landmarks (478, 3) px; mu: centre of the stable landmarks; E(c): expression
field (x, y only) from the expression model's coefficients (models.mesh.expression); s, R, t:
the head's scale, rotation and translation relative to the keyframe. Rotating about mu (not the
image origin) keeps t small and meaningful: it is how far the head centre moved.
"""

from __future__ import annotations

import numpy as np

from models.mesh import expression
from models.mesh.pose import STABLE, euler_angles, rotation_matrix, similarity
from models.types import FrameParams


class Rig:
    def __init__(self, landmarks: np.ndarray, size: int, model: expression.ExpressionModel | None = None) -> None:
        self.size = size
        """Crop size in pixels."""
        self.landmarks = np.asarray(landmarks, dtype=np.float64)
        """Keyframe landmarks (478, 3), pixels."""
        self.center = self.landmarks[STABLE].mean(0)
        """Rotation centre (3,), pixels."""
        self.model = model or expression.get()
        """Expression model the coefficients belong to."""
        self.basis = self.model.basis(self.landmarks)
        """Expression basis (n_expr, 478, 2), pixels per pixel."""
        self._fit = expression.fit_matrix(self.basis)

    def params(self, landmarks: np.ndarray) -> FrameParams:
        """Parameters that best explain a frame's landmarks."""
        lm = np.asarray(landmarks, dtype=np.float64)
        s, rot, t = similarity(self.landmarks[STABLE], lm[STABLE])
        shift = t + s * rot @ self.center - self.center  # translation of the head centre
        yaw, pitch, roll = euler_angles(rot)
        # Residual in the keyframe's frame: undo the pose, compare with the keyframe.
        back = ((lm - self.center - shift) @ rot) / s + self.center
        coeffs_px = self._fit @ (back[:, :2] - self.landmarks[:, :2]).reshape(-1)
        return FrameParams(
            yaw,
            pitch,
            roll,
            shift[0] / self.size,
            shift[1] / self.size,
            float(np.log(s)),
            expression=(coeffs_px / self.size).astype(np.float32),
        )

    def pose(self, params: FrameParams) -> tuple[float, np.ndarray, np.ndarray]:
        """(s, R, t): moved = s * R @ (p - center) + center + t for any keyframe point p."""
        rot = rotation_matrix(params.yaw, params.pitch, params.roll)
        t = np.array([params.tx * self.size, params.ty * self.size, 0.0])
        return float(np.exp(params.log_scale)), rot, t

    def move(self, params: FrameParams) -> np.ndarray:
        """Landmarks (478, 3) for the parameters."""
        s, rot, t = self.pose(params)
        lm = self.landmarks.copy()
        if len(params.expression):
            lm[:, :2] += expression.apply(self.basis, np.asarray(params.expression) * self.size)
        return s * (lm - self.center) @ rot.T + self.center + t
