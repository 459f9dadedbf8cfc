"""The first expression model of the mesh profile: 11 hand-placed Gaussian bases.

Kept as the reference the learned model (models.mesh.expression) is measured against, and for
callers that announce it. Why it was chosen: pose already moves the whole head, so the expression only has to carry
what the skull does not: the mouth (corners x/y, upper lip, lower lip, jaw), the upper
eyelids (blinks) and the brows. Each coefficient is the offset, in the keyframe's own
frame, of one keypoint along one axis; its basis field spreads that offset over the
neighbouring landmarks with a Gaussian, masked so that e.g. the lower lip never drags
the upper one. The sender fits all 11 coefficients to the residual of all 468 landmarks
(least squares), which averages away landmark noise; the receiver rebuilds the same
basis from the same (transmitted) keyframe landmarks, so both sides agree exactly.
Eleven int8 values keep a parameter packet near 30 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.face import N_LANDMARKS, N_MESH_LANDMARKS
from models.mesh.pose import STABLE, face_down

MODEL_ID = "gauss11"
# The expression never moves the landmarks the head pose is fitted to: otherwise a smile
# (nostrils, cheeks) would leak into the pose, and params(move(p)) would not return p.
FREEZE_STABLE = True

UPPER_LIP = np.array([185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415])
LOWER_LIP = np.array([146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324])
RIGHT_UPPER_LID = np.array([246, 161, 160, 159, 158, 157, 173])
LEFT_UPPER_LID = np.array([466, 388, 387, 386, 385, 384, 398])
RIGHT_EYE_CORNERS = np.array([33, 133])
LEFT_EYE_CORNERS = np.array([263, 362])


@dataclass(frozen=True)
class Keypoint:
    """One expression coefficient."""

    name: str
    """Human-readable name."""
    index: int
    """Face-mesh landmark the coefficient moves."""
    axis: int
    """0 = x, 1 = y, in the keyframe's image frame."""
    sigma: float
    """Gaussian radius, in units of the reference length (mouth or eye width)."""
    region: str
    """Which landmarks may move: 'mouth', 'above_mouth', 'below_mouth', 'right_lid', ..."""


KEYPOINTS: tuple[Keypoint, ...] = (
    Keypoint("mouth_right_x", 61, 0, 0.45, "mouth"),
    Keypoint("mouth_right_y", 61, 1, 0.45, "mouth"),
    Keypoint("mouth_left_x", 291, 0, 0.45, "mouth"),
    Keypoint("mouth_left_y", 291, 1, 0.45, "mouth"),
    Keypoint("upper_lip_y", 13, 1, 0.35, "above_mouth"),
    Keypoint("lower_lip_y", 14, 1, 0.35, "below_mouth"),
    Keypoint("jaw_y", 152, 1, 0.9, "below_mouth"),
    Keypoint("right_lid_y", 159, 1, 0.35, "right_lid"),
    Keypoint("left_lid_y", 386, 1, 0.35, "left_lid"),
    Keypoint("right_brow_y", 105, 1, 0.5, "right_brow"),
    Keypoint("left_brow_y", 334, 1, 0.5, "left_brow"),
)
N_EXPR = len(KEYPOINTS)


def _masks(lm: np.ndarray) -> dict[str, np.ndarray]:
    down = face_down(lm)
    mouth_c = (lm[13, :2] + lm[14, :2]) / 2
    y_mouth = (lm[:, :2] - mouth_c) @ down
    upper, lower = np.zeros(N_MESH_LANDMARKS, bool), np.zeros(N_MESH_LANDMARKS, bool)
    upper[UPPER_LIP], lower[LOWER_LIP] = True, True
    above = ((y_mouth < 0) | upper) & ~lower
    below = ((y_mouth > 0) | lower) & ~upper
    masks = {"mouth": np.ones(N_MESH_LANDMARKS, bool), "above_mouth": above, "below_mouth": below}
    for side, lid, corners in (
        ("right", RIGHT_UPPER_LID, RIGHT_EYE_CORNERS),
        ("left", LEFT_UPPER_LID, LEFT_EYE_CORNERS),
    ):
        eye_c = lm[corners, :2].mean(0)
        above_eye = (lm[:, :2] - eye_c) @ down < 0
        lid_mask = np.zeros(N_MESH_LANDMARKS, bool)
        lid_mask[lid] = True
        brow = above_eye & ~lid_mask
        brow[corners] = False
        masks[f"{side}_lid"] = lid_mask
        masks[f"{side}_brow"] = brow
    if FREEZE_STABLE:
        for m in masks.values():
            m[STABLE] = False
    return masks


def basis(landmarks: np.ndarray) -> np.ndarray:
    """(N_EXPR, 478, 2) displacement field, in pixels, per pixel of coefficient (irises never move)."""
    lm = np.asarray(landmarks, dtype=np.float64)[:N_MESH_LANDMARKS]
    mouth_w = np.linalg.norm(lm[291, :2] - lm[61, :2]) + 1e-6
    eye_w = (np.linalg.norm(lm[133, :2] - lm[33, :2]) + np.linalg.norm(lm[362, :2] - lm[263, :2])) / 2 + 1e-6
    masks = _masks(lm)
    out = np.zeros((N_EXPR, N_LANDMARKS, 2))
    for j, kp in enumerate(KEYPOINTS):
        ref = eye_w if kp.region.endswith(("lid", "brow")) else mouth_w
        d2 = ((lm[:, :2] - lm[kp.index, :2]) ** 2).sum(1)
        weight = np.exp(-d2 / (2 * (kp.sigma * ref) ** 2)) * masks[kp.region]
        out[j, :N_MESH_LANDMARKS, kp.axis] = weight / max(weight[kp.index], 1e-6)
    return out


class GaussianModel:
    """models.mesh.expression.ExpressionModel of the 11 Gaussian bases."""

    model_id = MODEL_ID
    n_expr = N_EXPR
    moves_irises = False

    def basis(self, landmarks: np.ndarray) -> np.ndarray:
        return basis(landmarks)
