"""Head pose from face-mesh landmarks: rigid (similarity) alignment and Euler angles.

Convention: image axes x right, y down, z away from the camera (MediaPipe's z grows
away from the camera too). yaw about y, pitch about x, roll about z, R = Rz(roll) Ry(yaw) Rx(pitch).
"""

from __future__ import annotations

import numpy as np

# Landmarks that move with the skull, not with the expression: forehead, nose bridge and
# tip, temples, upper cheekbones, face-oval top half. Mouth, jaw, brows and lids excluded.
STABLE = np.array(
    [
        10,
        109,
        338,
        67,
        297,
        151,
        9,
        8,
        168,
        6,
        197,
        195,
        5,
        4,
        1,  # midline forehead -> nose tip
        21,
        251,
        54,
        284,
        103,
        332,
        162,
        389,
        127,
        356,
        234,
        454,  # oval, upper half
        33,
        263,
        133,
        362,
        130,
        359,  # eye corners (they do not move when blinking)
        116,
        345,
        117,
        346,
        118,
        347,
        119,
        348,
        100,
        329,
        47,
        277,  # cheekbones, nose sides
        98,
        327,
        129,
        358,
        64,
        294,  # nostrils
    ],
    dtype=np.int64,
)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation from angles in degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def euler_angles(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of a rotation made by rotation_matrix."""
    yaw = np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))
    pitch = np.arctan2(rot[2, 1], rot[2, 2])
    roll = np.arctan2(rot[1, 0], rot[0, 0])
    return tuple(float(v) for v in np.degrees([yaw, pitch, roll]))  # type: ignore[return-value]


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with dst ~= s * R @ src + t (Umeyama), points as rows (N, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # a reflection is not a head pose
    rot = u @ np.diag(d) @ vt
    var = (a**2).sum() / len(src)
    s = float((sig * d).sum() / max(var, 1e-12))
    return s, rot, mu_d - s * rot @ mu_s


CHIN, NOSE_BRIDGE = 152, 168  # face-mesh landmark indices


def face_down(landmarks: np.ndarray, dims: int = 2) -> np.ndarray:
    """Unit vector from the nose bridge to the chin, the face's own "down", over the first `dims`
    coordinates (2: in the image, 3: in space)."""
    d = landmarks[CHIN, :dims] - landmarks[NOSE_BRIDGE, :dims]
    return d / (np.linalg.norm(d) + 1e-9)


def absolute_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Approximate (yaw, pitch, roll) degrees of a face from its own landmarks.

    Builds the face frame from the eye corners (x) and nose bridge -> chin (y); used as
    the head-pose teacher for training, where a relative pose is not enough."""
    lm = np.asarray(landmarks, dtype=np.float64)
    x = lm[263] - lm[33]
    y = face_down(lm, 3)
    x /= np.linalg.norm(x) + 1e-9
    y -= x * (x @ y)
    y /= np.linalg.norm(y) + 1e-9
    z = np.cross(x, y)
    return euler_angles(np.stack([x, y, z], axis=1))
